"""One pair of a night: skip it when done before, else predict, publish, then mark it done.

:class:`PairScorer` is shared by the night run in one process
(:mod:`~groundbreak.infer.nightly.runner`) and by the driver of a Dask cluster
(:mod:`~groundbreak.infer.nightly.cluster`), so both record a pair the same way.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.atomic import publish_dir, temp_sibling
from groundbreak.infer.nightly.composite import composite_evidence
from groundbreak.infer.nightly.config import NightlyConfig
from groundbreak.infer.nightly.hashing import ContentHasher, digest_of
from groundbreak.infer.nightly.outputs import outputs_exist
from groundbreak.infer.nightly.records import PairRecord
from groundbreak.infer.nightly.remote import refusal
from groundbreak.infer.nightly.revisits import footprint_lonlat, revisit_sites
from groundbreak.infer.nightly.site_clouds import hidden_near
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.prediction.raster_io import MASK_FILE, PROBABILITY_FILE
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
        self.digests: dict[str, list[tuple[str, str]]] = {}

    def scene_digest(self, scene: Path) -> list[tuple[str, str]]:
        """A scene's file hashes, taken once per night: the scenes stored as a pair's evidence
        are those its inputs hash was made of."""
        key = str(scene)
        if key not in self.digests:
            self.digests[key] = self.hasher.scene_digest(scene)
        return self.digests[key]

    def inputs_hash(self, spec: PairSpec) -> str:
        """The hash of everything a pair's scores depend on, besides the model."""
        return digest_of({
            "before": self.scene_digest(spec.before),
            "after": self.scene_digest(spec.after),
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
        sites, revisits = self.with_hidden_near(final, sites, revisits)
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

    def with_hidden_near(
        self, final: Path, sites: list[dict[str, Any]], revisits: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Site and revisit rows with ``hidden_near``: how much of each site lies near ground
        the pair did not see (the alert policy confirms no detection beside a cloud; see
        :mod:`~groundbreak.infer.nightly.site_clouds`), measured in one pass over the mask."""
        rows = [*sites, *revisits]
        if not rows:
            return sites, revisits
        shares = hidden_near(final / MASK_FILE, [row.get("grid_geometry") for row in rows],
                             self.config.alerts.confirm_margin_m)
        marked = [dict(row, hidden_near=share) for row, share in zip(rows, shares, strict=True)]
        return marked[: len(sites)], marked[len(sites):]

    def scenes(self, spec: PairSpec) -> dict[str, Any]:
        """Which scenes a pair was read from: paths and content hashes (the evidence kept)."""
        scenes: dict[str, dict[str, Any]] = {
            "before": {"path": str(spec.before), "sha256": self.scene_digest(spec.before),
                       "date": spec.before_date},
            "after": {"path": str(spec.after), "sha256": self.scene_digest(spec.after),
                      "date": spec.after_date},
        }
        composite = composite_evidence(spec.before, self.scene_digest)
        if composite:  # a composite 'before': its files, hashes and members
            scenes["before"]["composite"] = composite
        return scenes

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
