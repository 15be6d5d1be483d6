"""The night: read the source, score every pair not done yet, rank, update alerts, summarise.

A night (``run_id``, by default today's UTC date) writes ``STATE_DIR/runs/<run_id>/`` with the
files of ``groundbreak rank`` (``sites.csv``, ``alerts.csv``, ``alerts.geojson``,
``changes.geojson``, ``failures.csv``, ``report.html``, ``pairs/<pair_id>/probability.tif`` and
``mask.tif``), plus ``summary.json`` and ``nightly.log.jsonl``.

Guarantees:

- **Idempotent.** A pair is identified by its id, the sha256 of its input files (and of the
  watch-list and scoring settings) and the sha256 of the model bundle. A pair already done with
  the same hashes is not predicted again: its stored site scores join the night's ranking.
- **Resumable.** Each pair is predicted into a hidden staging folder, moved to
  ``pairs/<pair_id>/`` with one rename, and only then marked done (one SQLite transaction that
  also stores its site scores). A run killed at any point leaves no visible half-written file or
  row; the next run of the same night cleans the staging leftovers and does the rest.
- **Failure-isolated.** A pair that is corrupt, missing, lacks a band or does not overlap is
  recorded with its reason (``failures.csv``, the state, ``summary.json``); the rest of the night
  completes and the exit code is 1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.atomic import (
    atomic_write_json,
    remove_temps,
)
from groundbreak.infer.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from groundbreak.infer.nightly.baseline_clouds import baseline_cloud_fractions
from groundbreak.infer.nightly.composite import COMPOSITES_DIR, CompositeBuilder
from groundbreak.infer.nightly.config import NightlyConfig
from groundbreak.infer.nightly.hashing import ContentHasher
from groundbreak.infer.nightly.lock import RunLock
from groundbreak.infer.nightly.logging import NightLog, utc_now
from groundbreak.infer.nightly.outputs import write_night_outputs
from groundbreak.infer.nightly.pair_scorer import PairScorer
from groundbreak.infer.nightly.pairing import CompositePairSpec, pair_acquisitions
from groundbreak.infer.nightly.records import NightSummary, PairRecord
from groundbreak.infer.nightly.sources import (
    NightInputs,
    pairs_from_csv,
    pairs_from_drop_folder,
    pairs_from_stac,
    read_item_collection,
)
from groundbreak.infer.nightly.state import AcquisitionRecord, NightlyState
from groundbreak.infer.sites.ranking import describe_error

RUNS_DIR = "runs"
SUMMARY_JSON = "summary.json"
LOG_JSONL = "nightly.log.jsonl"

EXIT_BAD_CONFIG = EXIT_BAD_INPUT
"""A bad config, model, watch-list or source: nothing was scored."""


def run_night(config: NightlyConfig, log: NightLog | None = None) -> NightSummary:
    """Run one night under the state directory's lock.

    Raises:
        LockHeldError: When another run holds ``STATE_DIR/nightly.lock``.
        InputError: For a bad model bundle, watch-list or unreadable source (nothing is scored).
    """
    log = log or NightLog("json")
    if config.stac is not None:  # a single Item or a bad file: refused before anything is written
        read_item_collection(config.stac)
    with RunLock(config.state_dir), NightlyState(config.state_dir) as state:
        return _run_locked(config, state, log)


def _run_locked(config: NightlyConfig, state: NightlyState, log: NightLog) -> NightSummary:
    from groundbreak.infer.sites.sites import load_watch_list
    from groundbreak.train.bundle import default_bundle_path, load_bundle

    started = time.perf_counter()
    removed = remove_temps(config.state_dir / RUNS_DIR) + remove_temps(config.state_dir / "scenes")
    removed += remove_temps(config.state_dir / COMPOSITES_DIR)
    run_dir = config.state_dir / RUNS_DIR / config.run_id
    log.log_to(run_dir / LOG_JSONL)
    try:
        model_path = config.model or default_bundle_path()
        bundle = load_bundle(model_path, build=False)  # built by the predictor if it must
        hasher = ContentHasher(state)
        model_hash = hasher.bundle_hash(bundle.path)
        sites = load_watch_list(config.sites) if config.sites is not None else None
        sites_hash = hasher.optional_file_sha256(config.sites)
        attempt = state.start_run(config.run_id, os.getpid(), config.as_dict(), model_hash)
        summary = NightSummary(
            run_id=config.run_id, attempt=attempt, run_dir=run_dir, started_at=utc_now(),
            model=str(bundle.path), model_hash=model_hash,
            source={"kind": config.source_kind, "path": str(config.source)},
        )
        log.event("night_started", run_id=config.run_id, attempt=attempt, model=str(bundle.path),
                  source=config.source_kind, cleaned_temps=len(removed))
        if config.dismiss_margin is not None:
            log.event("config_deprecated", level="warning", key="dismiss_margin",
                      reason="ignored: a dismissed site comes back when it grows (keys "
                      "alerts.regrow_ratio, alerts.regrow_m2, alerts.realert_share)")
        try:
            inputs = read_source(config, state)
        except InputError:
            state.finish_run(attempt, "failed", EXIT_BAD_CONFIG, summary.to_dict())
            raise
        state.record_acquisitions(inputs.acquisitions, config.run_id)
        summary.problems, summary.ignored = inputs.problems, inputs.ignored
        summary.baselines = [f"{b.ground_id}@{b.acquired}" for b in inputs.baselines]
        for entry, reason in inputs.problems:
            log.event("source_problem", level="warning", entry=entry, reason=reason)
        for name in inputs.ignored:
            log.event("entry_ignored", level="warning", entry=name,
                      reason="name does not follow <ground>_<YYYYMMDD>")
        for baseline in inputs.baselines:
            log.event("baseline_stored", ground=baseline.ground_id, acquired=baseline.acquired)

        def unmeasured(baseline: AcquisitionRecord, err: Exception) -> None:
            log.event("baseline_clouds_failed", level="warning", ground=baseline.ground_id,
                      acquired=baseline.acquired, reason=describe_error(err))

        state.record_cloud_fractions(baseline_cloud_fractions(
            inputs.baselines, set(state.cloud_fractions()),
            config.predictor.get("cloud_mask", "auto"), unmeasured), config.run_id)

        try:  # the predictor options are checked before the first pair
            predictor = build_predictor(bundle, config) if inputs.pairs else None
        except InputError:
            state.finish_run(attempt, "failed", EXIT_BAD_CONFIG, summary.to_dict())
            raise
        if predictor is not None:  # what "auto" chose, for whoever reads the log
            log.event("predictor_ready", device=predictor.device_name, runtime=predictor.runtime)
        scorer = PairScorer(config, state, hasher, bundle, predictor, sites, sites_hash,
                            model_hash, attempt, run_dir)

        def note(record: PairRecord) -> None:
            summary.pairs.append(record)
            level = "warning" if record.status == "failed" else "info"
            log.event(f"pair_{record.status}", level=level, pair_id=record.pair_id,
                      seconds=round(record.seconds, 3), reason=record.reason,
                      clouds=record.clouds)
            for warning in record.warnings:
                log.event("pair_warning", level="warning", pair_id=record.pair_id,
                          warning=warning)
            log.advance(record.pair_id)

        composites = Composites(config, scorer, note)

        def repair(scored_afters: set[str]) -> list[PairSpec]:
            return repair_after_clouds(config, state, inputs, scored_afters)

        if config.cluster is not None and inputs.pairs:
            score_on_cluster(config, scorer, composites.ready(inputs.pairs), note,
                             (lambda s: composites.ready(repair(s))) if config.pairs is None
                             else None, log, summary, attempt)
        else:
            log.start_progress(len(inputs.pairs))
            try:
                pending, scored_afters = list(inputs.pairs), set()
                while pending:
                    spec = pending.pop(0)
                    if not composites.ready([spec]):  # its composite failed: the pair did
                        scored_afters.add(str(spec.after))
                        continue
                    record = scorer.process(spec)
                    note(record)
                    scored_afters.add(str(spec.after))
                    if record.status == "skipped" and config.pairs is None:
                        pending = repair(scored_afters)
            finally:
                log.end_progress()
        scored_seconds = time.perf_counter() - started
        if predictor is not None:  # the outputs need the memory the model planned
            predictor.release_runtime()

        write_night_outputs(config, state, summary, inputs.pairs, bundle,
                            getattr(predictor, "threshold", None))
        summary.finished_at = utc_now()
        summary.timings = {
            "total_s": round(time.perf_counter() - started, 3),
            "pairs_s": round(sum(p.seconds for p in summary.pairs), 3),
            "ranking_s": round(time.perf_counter() - started - scored_seconds, 3),
            "hashed_mb": round(hasher.hashed_bytes / 1e6, 3),
        }
        atomic_write_json(run_dir / SUMMARY_JSON, summary.to_dict())
        status = "ok" if summary.exit_code == EXIT_OK else "failed"
        state.finish_run(attempt, status, summary.exit_code, summary.to_dict())
        log.event("night_finished", run_id=config.run_id, exit_code=summary.exit_code,
                  **summary.counts(), seconds=summary.timings["total_s"])
        return summary
    finally:
        log.close_file()


def score_on_cluster(
    config: NightlyConfig,
    scorer: PairScorer,
    pairs: Sequence[PairSpec],
    note: Callable[[PairRecord], None],
    repair: Callable[[set[str]], list[PairSpec]] | None,
    log: NightLog,
    summary: NightSummary,
    attempt: int,
) -> None:
    """Score the night's pairs on Dask workers (key ``cluster``); this process records them."""
    from groundbreak.infer.nightly.cluster import PairCluster
    from groundbreak.infer.nightly.cluster_spec import parse_cluster

    try:
        cluster = PairCluster(parse_cluster(config.cluster)).start()
    except InputError:  # no scheduler or no worker: nothing was scored
        scorer.state.finish_run(attempt, "failed", EXIT_BAD_CONFIG, summary.to_dict())
        raise
    with cluster:
        log.event("cluster_started", cluster=config.cluster, scheduler=cluster.address,
                  workers=cluster.workers, torch_threads=cluster.torch_threads)
        log.start_progress(len(pairs))
        try:
            cluster.score(scorer, pairs, note, repair)
        finally:
            log.end_progress()


class Composites:
    """The pairing hook of ``pairing: {composite: median}``: writes (or finds) each composite
    pair's 'before' before the pair is scored; a pair whose composite cannot be made (a member
    missing, unreadable or on a host not allowed) fails alone, with the reason."""

    def __init__(self, config: NightlyConfig, scorer: PairScorer,
                 note: Callable[[PairRecord], None]) -> None:
        self.scorer, self.note = scorer, note
        self.builder = CompositeBuilder(config.predictor.get("cloud_mask", "auto"),
                                        scorer.scene_digest)
        self.failed: set[str] = set()

    def ready(self, pairs: Sequence[PairSpec]) -> list[PairSpec]:
        """The pairs whose 'before' can be read (composites written); the others are failed."""
        from groundbreak.infer.sites.ranking import stops_the_run

        out = []
        for spec in pairs:
            if spec.pair_id in self.failed:
                continue
            started = time.perf_counter()
            try:
                if isinstance(spec, CompositePairSpec):
                    for _, member in spec.members:  # band URLs on allowed hosts only
                        self.scorer.check_remote_bands(PairSpec(spec.pair_id, Path(member),
                                                                spec.after))
                self.builder.ensure(spec)
            except Exception as err:  # any error of one pair's inputs fails that pair only
                if stops_the_run(err):
                    raise
                self.failed.add(spec.pair_id)
                self.note(self.scorer.fail(
                    spec.pair_id, None,
                    f"pair {spec.pair_id}: reference composite: {describe_error(err)}", started))
                continue
            out.append(spec)
        return out


def read_source(config: NightlyConfig, state: NightlyState) -> NightInputs:
    """The night's pairs from the configured source."""
    if config.pairs is not None:
        return pairs_from_csv(config.pairs)
    clouds = state.cloud_fractions()
    composites = config.state_dir / COMPOSITES_DIR
    if config.stac is not None:
        return pairs_from_stac(config.stac, config.state_dir, state.acquisitions(),
                               config.footprint_iou, config.pairing, clouds,
                               config.cloudy_fraction, composites)
    assert config.drop_folder is not None
    return pairs_from_drop_folder(config.drop_folder, state.acquisitions(), config.pairing,
                                  clouds, config.cloudy_fraction, composites)


def repair_after_clouds(
    config: NightlyConfig, state: NightlyState, inputs: NightInputs, scored_afters: set[str]
) -> list[PairSpec]:
    """The night's remaining pairs, paired again now that a scene turned out cloudy.

    A cloudy acquisition is no reference: the acquisitions compared with it are paired again
    (see :func:`~groundbreak.infer.nightly.pairing.pair_acquisitions`).
    """
    pairs, _ = pair_acquisitions(inputs.acquisitions, state.acquisitions(), config.pairing,
                                 state.cloud_fractions(), config.cloudy_fraction,
                                 config.state_dir / COMPOSITES_DIR)
    return [p for p in pairs if str(p.after) not in scored_afters]


def build_predictor(bundle: Any, config: NightlyConfig) -> Any:
    """The night's tiled predictor; an InputError names a predictor option that does not fit."""
    from groundbreak.infer.prediction.predictor import TiledPredictor

    try:
        return TiledPredictor(bundle, **config.predictor)
    except (TypeError, ValueError) as err:
        raise InputError("nightly config", f"key 'predictor': {err}") from err
