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

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.atomic import (
    atomic_write_json,
    publish_dir,
    remove_temps,
    temp_sibling,
)
from groundbreak.infer.exit_codes import EXIT_BAD_INPUT, EXIT_OK, EXIT_PAIRS_FAILED
from groundbreak.infer.nightly.config import NightlyConfig
from groundbreak.infer.nightly.hashing import ContentHasher, digest_of
from groundbreak.infer.nightly.lock import RunLock
from groundbreak.infer.nightly.logging import NightLog, utc_now
from groundbreak.infer.nightly.outputs import outputs_exist, write_night_outputs
from groundbreak.infer.nightly.pairing import pair_acquisitions
from groundbreak.infer.nightly.remote import refusal
from groundbreak.infer.nightly.revisits import footprint_lonlat, revisit_sites
from groundbreak.infer.nightly.sources import (
    NightInputs,
    pairs_from_csv,
    pairs_from_drop_folder,
    pairs_from_stac,
    read_item_collection,
)
from groundbreak.infer.nightly.state import AlertOutcome, NightlyState
from groundbreak.infer.prediction.raster_io import PROBABILITY_FILE
from groundbreak.infer.sites.ranking import (
    PAIRS_DIR,
    PairOutcome,
    PairScores,
    describe_error,
    process_pair,
    rank_changes,
    rank_sites,
    stops_the_run,
)

RUNS_DIR = "runs"
SUMMARY_JSON = "summary.json"
LOG_JSONL = "nightly.log.jsonl"

EXIT_BAD_CONFIG = EXIT_BAD_INPUT
"""A bad config, model, watch-list or source: nothing was scored."""


@dataclass
class PairRecord:
    """What the night did with one pair."""

    pair_id: str
    status: str
    """``scored`` (predicted now), ``reused`` (done before), ``skipped`` (too cloudy to judge:
    predicted, no sites) or ``failed``."""
    seconds: float
    reason: str | None = None
    outputs: str | None = None
    clouds: dict[str, float] | None = None
    """Share of the pair hidden by clouds or shadows: ``before``, ``after``, ``either``."""
    warnings: tuple[str, ...] = ()
    """Warnings raised while the pair was read, predicted and scored (one line each)."""


@dataclass
class NightSummary:
    """The outcome of a night, as written to ``summary.json``."""

    run_id: str
    attempt: int
    run_dir: Path
    started_at: str
    model: str
    model_hash: str
    source: dict[str, str]
    pairs: list[PairRecord] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    baselines: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    alerts: AlertOutcome = field(default_factory=AlertOutcome)
    new_alerts: list[dict[str, Any]] = field(default_factory=list)
    sites: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    finished_at: str | None = None

    @property
    def failures(self) -> list[dict[str, str]]:
        """Failed pairs and unusable source entries, with their reasons."""
        failed = [{"pair_id": p.pair_id, "reason": p.reason or ""} for p in self.pairs
                  if p.status == "failed"]
        return failed + [{"pair_id": entry, "reason": reason} for entry, reason in self.problems]

    @property
    def exit_code(self) -> int:
        """0 when everything went through, 1 when any pair or source entry failed."""
        return EXIT_PAIRS_FAILED if self.failures else EXIT_OK

    def counts(self) -> dict[str, int]:
        """How many pairs were scored, reused, failed; baselines, sites, alerts."""
        status = [p.status for p in self.pairs]
        return {
            "pairs": len(self.pairs),
            "scored": status.count("scored"),
            "reused": status.count("reused"),
            "failed": status.count("failed"),
            "skipped_cloudy": status.count("skipped"),
            "source_problems": len(self.problems),
            "baselines": len(self.baselines),
            "ignored_entries": len(self.ignored),
            "sites": self.sites,
            "new_alerts": len(self.alerts.new) + len(self.alerts.realerted),
            "ongoing_alerts": len(self.alerts.ongoing),
            "suppressed_alerts": len(self.alerts.suppressed),
            "candidates": len(self.alerts.candidates),
            "cleared_alerts": len(self.alerts.cleared),
            "warnings": sum(len(p.warnings) for p in self.pairs),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``summary.json`` document."""
        return {
            "run_id": self.run_id,
            "attempt": self.attempt,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "exit_code": self.exit_code,
            "model": self.model,
            "model_hash": self.model_hash,
            "source": self.source,
            "counts": self.counts(),
            "timings": self.timings,
            "failures": self.failures,
            "warnings": [{"pair_id": p.pair_id, "warning": w}
                         for p in self.pairs for w in p.warnings],
            "new_alerts": self.new_alerts,
            "baselines": self.baselines,
            "ignored_entries": self.ignored,
            "pairs": [
                {"pair_id": p.pair_id, "status": p.status, "seconds": round(p.seconds, 3),
                 "reason": p.reason, "outputs": p.outputs, "clouds": p.clouds,
                 "warnings": list(p.warnings)}
                for p in self.pairs
            ],
        }


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
    run_dir = config.state_dir / RUNS_DIR / config.run_id
    log.log_to(run_dir / LOG_JSONL)
    try:
        model_path = config.model or default_bundle_path()
        bundle = load_bundle(model_path)
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

        try:  # the predictor options are checked before the first pair
            predictor = build_predictor(bundle, config) if inputs.pairs else None
        except InputError:
            state.finish_run(attempt, "failed", EXIT_BAD_CONFIG, summary.to_dict())
            raise
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

        def repair(scored_afters: set[str]) -> list[PairSpec]:
            return repair_after_clouds(config, state, inputs, scored_afters)

        if config.cluster is not None and inputs.pairs:
            score_on_cluster(config, scorer, inputs.pairs, note,
                             repair if config.pairs is None else None, log, summary, attempt)
        else:
            log.start_progress(len(inputs.pairs))
            try:
                pending, scored_afters = list(inputs.pairs), set()
                while pending:
                    spec = pending.pop(0)
                    record = scorer.process(spec)
                    note(record)
                    scored_afters.add(str(spec.after))
                    if record.status == "skipped" and config.pairs is None:
                        pending = repair(scored_afters)
            finally:
                log.end_progress()
        scored_seconds = time.perf_counter() - started

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
    from groundbreak.infer.nightly.cluster import PairCluster, parse_cluster

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


def read_source(config: NightlyConfig, state: NightlyState) -> NightInputs:
    """The night's pairs from the configured source."""
    if config.pairs is not None:
        return pairs_from_csv(config.pairs)
    clouds = state.cloud_fractions()
    if config.stac is not None:
        return pairs_from_stac(config.stac, config.state_dir, state.acquisitions(),
                               config.footprint_iou, config.pairing, clouds,
                               config.cloudy_fraction)
    assert config.drop_folder is not None
    return pairs_from_drop_folder(config.drop_folder, state.acquisitions(), config.pairing,
                                  clouds, config.cloudy_fraction)


def repair_after_clouds(
    config: NightlyConfig, state: NightlyState, inputs: NightInputs, scored_afters: set[str]
) -> list[PairSpec]:
    """The night's remaining pairs, paired again now that a scene turned out cloudy.

    A cloudy acquisition is no reference: the acquisitions compared with it are paired again
    (see :func:`~groundbreak.infer.nightly.pairing.pair_acquisitions`).
    """
    pairs, _ = pair_acquisitions(inputs.acquisitions, state.acquisitions(), config.pairing,
                                 state.cloud_fractions(), config.cloudy_fraction)
    return [p for p in pairs if str(p.after) not in scored_afters]


def build_predictor(bundle: Any, config: NightlyConfig) -> Any:
    """The night's tiled predictor; an InputError names a predictor option that does not fit."""
    from groundbreak.infer.prediction.predictor import TiledPredictor

    try:
        return TiledPredictor(bundle, **config.predictor)
    except (TypeError, ValueError) as err:
        raise InputError("nightly config", f"key 'predictor': {err}") from err


class PairScorer:
    """Scores one pair at a time: skip it when done, else predict, publish, then mark it done."""

    def __init__(
        self,
        config: NightlyConfig,
        state: NightlyState,
        hasher: ContentHasher,
        bundle: Any,
        predictor: Any,
        sites: Sequence[Any] | None,
        sites_hash: str | None,
        model_hash: str,
        attempt: int,
        run_dir: Path,
    ) -> None:
        self.config, self.state, self.hasher, self.bundle = config, state, hasher, bundle
        self.sites, self.sites_hash, self.model_hash = sites, sites_hash, model_hash
        self.attempt, self.run_dir = attempt, run_dir
        self.predictor = predictor

    def inputs_hash(self, spec: PairSpec) -> str:
        """The hash of everything a pair's scores depend on, besides the model."""
        return digest_of({
            "before": self.hasher.scene_digest(spec.before),
            "after": self.hasher.scene_digest(spec.after),
            "dates": [spec.before_date, spec.after_date],
            "sites": self.sites_hash,
            "settings": self.config.scoring_settings(),
        })

    def examine(self, spec: PairSpec) -> str:
        """A pair's inputs hash, once its band URLs are allowed; an InputError says why not."""
        self.check_remote_bands(spec)
        return self.inputs_hash(spec)

    def done_row(self, spec: PairSpec, inputs_hash: str) -> int | None:
        """The state row of this pair done before with these hashes and outputs still there."""
        done = self.state.find_done(spec.pair_id, inputs_hash, self.model_hash)
        outputs = self.state.pair_outputs(done) if done is not None else None
        return done if done is not None and outputs_exist(outputs) else None

    def reuse(self, spec: PairSpec, inputs_hash: str, started: float) -> PairRecord | None:
        """Link a pair done before into the night (``reused``); None when it must be scored."""
        done = self.done_row(spec, inputs_hash)
        if done is None:
            return None
        self.state.link_reused(self.config.run_id, done)
        return PairRecord(spec.pair_id, "reused", time.perf_counter() - started,
                          outputs=self.state.pair_outputs(done))

    def final_dir(self, spec: PairSpec) -> Path:
        """Where a pair's rasters are published: ``runs/<run_id>/pairs/<pair_id>``."""
        return self.run_dir / PAIRS_DIR / spec.pair_id

    def process(self, spec: PairSpec) -> PairRecord:
        """Skip, score or fail one pair; every outcome is recorded in the state."""
        started = time.perf_counter()
        try:
            inputs_hash = self.examine(spec)
        except Exception as err:  # any error of one pair's inputs fails that pair only
            if stops_the_run(err):
                raise
            return self.fail(spec.pair_id, None, f"pair {spec.pair_id}: {describe_error(err)}",
                             started)
        reused = self.reuse(spec, inputs_hash, started)
        if reused is not None:
            return reused
        staging = temp_sibling(self.final_dir(spec))
        shutil.rmtree(staging, ignore_errors=True)
        try:
            outcome, scores = process_pair(
                spec, staging, self.predictor, self.sites,
                min_area_m2=self.config.min_area_m2, area_scale=self.config.area_scale,
            )
            return self.finish(spec, inputs_hash, outcome, scores, staging, started)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def finish(
        self,
        spec: PairSpec,
        inputs_hash: str,
        outcome: PairOutcome,
        scores: PairScores | None,
        staging: Path,
        started: float,
    ) -> PairRecord:
        """Record a predicted pair: publish its staging folder, then mark it done (or failed)."""
        if scores is None:
            failed = self.fail(spec.pair_id, inputs_hash, outcome.reason or "", started)
            return dataclasses.replace(failed, warnings=outcome.warnings)
        run_id, final = self.config.run_id, self.final_dir(spec)
        clouds = self.record_clouds(spec, outcome)
        publish_dir(staging, final)
        # in ranking order, as a night ranks them (new discovered ids are numbered so)
        sites = rank_sites(scores.sites).drop(columns="rank").to_dict("records")
        changes = rank_changes(scores.changes).to_dict("records")
        cloudy = clouds["either"] >= self.config.cloudy_fraction
        if cloudy:  # too cloudy to judge: its watch-list sites were not observed
            sites = [dict(row, observed=False) for row in sites if row["kind"] == "watch"]
            changes = []
        revisits = [] if cloudy or self.sites is not None else self.revisits(spec, final)
        seconds = time.perf_counter() - started
        match_iou = self.config.site_match_iou if self.sites is None else None
        self.state.record_done(run_id, self.attempt, spec.pair_id, inputs_hash,
                               self.model_hash, str(final), seconds, sites, changes,
                               site_match_iou=match_iou, scenes=self.scenes(spec),
                               revisits=revisits)
        if cloudy:
            reason = (f"cloudy: clouds and shadows hide {clouds['either']:.0%} of the pair "
                      f"(before {clouds['before']:.0%}, after {clouds['after']:.0%})")
            return PairRecord(spec.pair_id, "skipped", seconds, reason=reason,
                              outputs=str(final), clouds=clouds, warnings=outcome.warnings)
        return PairRecord(spec.pair_id, "scored", seconds, outputs=str(final), clouds=clouds,
                          warnings=outcome.warnings)

    def scenes(self, spec: PairSpec) -> dict[str, Any]:
        """Which scenes a pair was read from: paths and content hashes (the evidence kept)."""
        return {
            "before": {"path": str(spec.before), "sha256": self.hasher.scene_digest(spec.before),
                       "date": spec.before_date},
            "after": {"path": str(spec.after), "sha256": self.hasher.scene_digest(spec.after),
                      "date": spec.after_date},
        }

    def revisits(self, spec: PairSpec, final: Path) -> list[dict[str, Any]]:
        """The discovered sites the alert policy follows, measured on this pair
        (:mod:`~groundbreak.infer.nightly.revisits`)."""
        probability = final / PROBABILITY_FILE
        bounds = footprint_lonlat(probability)
        tracked = self.state.tracked_sites(bounds) if bounds is not None else []
        if not tracked:
            return []
        dates = {"before_date": spec.before_date or "", "after_date": spec.after_date or ""}
        threshold = getattr(self.predictor, "threshold", None) or self.bundle.threshold
        return revisit_sites(probability, tracked, spec.pair_id, float(threshold),
                             self.config.area_scale, dates)

    def record_clouds(self, spec: PairSpec, outcome: PairOutcome) -> dict[str, float]:
        """Store how much of each scene clouds hid; return the pair's cloud fractions."""
        before, after = outcome.cloud_fractions
        self.state.record_cloud_fractions(
            {str(spec.before): before, str(spec.after): after}, self.config.run_id
        )
        return {"before": round(before, 4), "after": round(after, 4),
                "either": round(outcome.unobserved_fraction, 4)}

    def check_remote_bands(self, spec: PairSpec) -> None:
        """Refuse a pair whose scenes name band URLs on hosts the night may not read."""
        from groundbreak.datasets.stac_scene import json_scene_bands

        for scene in (Path(spec.before), Path(spec.after)):
            if scene.suffix.lower() != ".json" or not scene.is_file():
                continue
            for band, location in json_scene_bands(scene).items():
                why = refusal(location, self.config.remote_hosts)
                if why is not None:
                    raise InputError(scene, f"band {band}: {location}: {why}")

    def fail(
        self, pair_id: str, inputs_hash: str | None, reason: str, started: float
    ) -> PairRecord:
        """Record a failed pair with its one-line reason."""
        seconds = time.perf_counter() - started
        reason = " ".join(reason.split())
        self.state.record_failed(self.config.run_id, self.attempt, pair_id, inputs_hash,
                                 self.model_hash, reason, seconds)
        return PairRecord(pair_id, "failed", seconds, reason=reason)
