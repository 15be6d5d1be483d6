"""Ranking: tile pairs -> change maps -> scored sites -> ranked alerts, written to a run folder.

:func:`rank_pairs` is the library function behind ``groundbreak rank`` and the nightly batch. It
predicts each pair with a :class:`~groundbreak.infer.prediction.predictor.TiledPredictor`, then
hands the probability and mask rasters to :func:`score_prediction`, which knows nothing about
models: it turns a probability raster into scored sites (watch-list polygons, or discovered change
regions) and can be used on any probability raster.

A run folder holds::

    sites.csv          every scored site, ranked (see groundbreak.infer.sites.alerts_io for columns)
    alerts.csv         the sites whose score reaches the alert threshold, same columns
    alerts.geojson     the same alerts as EPSG:4326 polygons
    changes.geojson    every discovered change region, EPSG:4326 polygons
    failures.csv       pair_id, reason: the pairs that could not be processed
    report.html        the analyst's offline report
    pairs/<pair_id>/probability.tif, mask.tif
    pairs/<pair_id>/display_crops.npz   the true-colour crops of a JPEG 2000 pair's best sites,
                       cut from the rows its windows decoded (groundbreak.infer.report.stored_crops)

A pair that fails (unreadable, no overlap, missing bands, ...) is recorded in ``failures.csv``
with a one-line reason naming it; the other pairs still complete.

A watch-list site that lies on several pairs is scored on each: one row per (site, pair).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.errors import InputError, is_disk_full
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.pair_spec import PairSpec, check_unique_pair_ids
from groundbreak.datasets.path_ids import check_path_id
from groundbreak.datasets.scene import dataset_grid, open_raster
from groundbreak.infer.prediction.coverage import too_little_valid_data
from groundbreak.infer.prediction.raster_io import bounded_gdal_cache
from groundbreak.infer.report.report import MAX_CARDS
from groundbreak.infer.report.report import write_report as write_html_report
from groundbreak.infer.report.stored_crops import display_rows_spilled, store_display_crops
from groundbreak.infer.sites.alerts_io import (
    FAILURE_COLUMNS,
    write_changes_geojson,
    write_failures_csv,
    write_sites_csv,
    write_sites_geojson,
)
from groundbreak.infer.sites.scoring import (
    DEFAULT_AREA_SCALE_M2,
    MIN_OBSERVED_FRACTION,
    SiteMeasure,
)
from groundbreak.infer.sites.sites import (
    DEFAULT_MIN_AREA_M2,
    WGS84,
    Site,
    discover_change_regions,
    load_watch_list,
    measure_watch_site,
    site_on_grid,
    to_crs,
    to_crs_many,
)

log = logging.getLogger(__name__)

DEFAULT_ALERT_THRESHOLD = 0.5
"""Sites scoring at least this are alerts (e.g. 25 S2 pixels changed at probability 0.8)."""

SITES_CSV = "sites.csv"
ALERTS_CSV = "alerts.csv"
ALERTS_GEOJSON = "alerts.geojson"
CHANGES_GEOJSON = "changes.geojson"
FAILURES_CSV = "failures.csv"
REPORT_HTML = "report.html"
PAIRS_DIR = "pairs"

def stops_the_run(err: BaseException) -> bool:
    """Whether an error is the machine's, not the pair's: a full disk or quota fails every pair,
    so the run stops there (what is finished is kept) instead of failing the rest one by one."""
    return is_disk_full(err)


def describe_error(err: BaseException) -> str:
    """One line saying what went wrong with an input (an InputError names its file)."""
    if isinstance(err, InputError):
        return str(err)
    if isinstance(err, RecursionError):
        return "input nested too deeply to read (RecursionError)"
    return f"{type(err).__name__}: {err}"


class PairPredictor(Protocol):
    """What :func:`rank_pairs` needs of a predictor (``TiledPredictor`` is one)."""

    def predict_pair(self, pair: TilePair, out_dir: Path) -> Any:
        """Write ``probability.tif`` and ``mask.tif`` for a pair; return a PredictionResult."""


@dataclass(frozen=True)
class PairScores:
    """The scored sites and discovered change regions of one pair (rows, not yet ranked)."""

    sites: list[dict[str, Any]]
    changes: list[dict[str, Any]]


@dataclass(frozen=True)
class PairOutcome:
    """What happened to one pair; passed to ``on_pair_done`` as soon as it is known."""

    pair_id: str
    ok: bool
    seconds: float
    reason: str | None = None
    predict_seconds: float | None = None
    sites: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    """The pair's scored sites (not ranked yet); empty when it failed."""
    probability_path: Path | None = None
    mask_path: Path | None = None
    unobserved_fraction: float = 0.0
    """Share of the pair that clouds or shadows hid on either date."""
    cloud_fractions: tuple[float, float] = (0.0, 0.0)
    """Share of the pair that clouds or shadows hid on the before and on the after date."""
    warnings: tuple[str, ...] = ()
    """The warnings raised while the pair was read, predicted and scored (e.g. an unknown
    radiometric offset), one line each: the nightly batch logs them as events of the night."""


@dataclass
class RankResult:
    """The outcome of a ranking run: ranked sites, alerts, change regions, failures, timings."""

    out_dir: Path
    sites: pd.DataFrame
    """Every scored site, best first, with a ``rank`` column (alerts_io columns + geometry)."""
    alerts: pd.DataFrame
    """The sites whose score reaches the alert threshold."""
    changes: pd.DataFrame
    """Every discovered change region (all pairs), best first."""
    failures: pd.DataFrame
    """pair_id, reason."""
    timings: pd.DataFrame
    """pair_id, status, seconds, predict_seconds, sites."""
    probability_paths: dict[str, Path] = field(default_factory=dict)
    """The probability raster of each pair that was processed."""
    report_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every pair was processed."""
        return self.failures.empty


def score_prediction(
    pair_id: str,
    probability_path: str | Path,
    mask_path: str | Path,
    threshold: float,
    sites: Sequence[Site] | None = None,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    area_scale: float = DEFAULT_AREA_SCALE_M2,
    before_date: str | None = None,
    after_date: str | None = None,
) -> PairScores:
    """Score the sites of one pair from its probability and mask rasters.

    With a watch-list, each site that lies on the pair's grid is measured (windowed to its
    bounding box); a site seen on too few of its pixels (clouds, shadows, outside a scene) is
    kept as *not observed* (``observed`` False; see
    :data:`~groundbreak.infer.sites.scoring.MIN_OBSERVED_FRACTION`), and never alerts. Without one,
    the discovered change regions are the sites. Change regions are discovered in both cases (for
    ``changes.geojson``).

    Args:
        pair_id: The pair's id (prefix of discovered region ids).
        probability_path: float32 probability raster on the pair grid (nodata where invalid).
        mask_path: uint8 0/1 change mask on the same grid.
        threshold: Operating threshold of the model.
        sites: Watch-list sites, or None to rank discovered change regions.
        min_area_m2: Smallest discovered region kept (pixels on grids without a CRS).
        area_scale: Area scale of the score (see :mod:`groundbreak.infer.sites.scoring`).
        before_date, after_date: Copied into every row.
    """
    dates = {"before_date": before_date or "", "after_date": after_date or ""}
    regions = discover_change_regions(
        mask_path, probability_path, pair_id, threshold, min_area_m2, area_scale
    )
    # GDAL's default block cache (5 % of the machine's RAM) would break the memory bound
    with bounded_gdal_cache(), open_raster(probability_path) as src:
        grid = dataset_grid(src)
        # every outline reprojected in one call (one per region took most of the scoring)
        lonlat: list[BaseGeometry | None] = [None] * len(regions)
        if grid.crs is not None:
            lonlat = list(to_crs_many([r.geometry for r in regions], grid.crs, WGS84))
        changes = [
            site_row(r.region_id, f"change region {r.region_id}", pair_id, "discovered",
                     r.measure, r.geometry, grid, dates, geometry_wgs84=wgs84)
            for r, wgs84 in zip(regions, lonlat, strict=True)
        ]
        if sites is None:
            rows = [dict(row, name=_region_name(row["site_id"], pair_id)) for row in changes]
            return PairScores(sites=rows, changes=changes)
        rows = []
        for site in sites:
            geometry = site_on_grid(site, grid)
            if geometry is None:
                continue
            measured = measure_watch_site(src, geometry, threshold, area_scale)
            if measured is None:
                continue  # on the grid's bounding box but on none of its pixels
            rows.append(
                site_row(site.site_id, site.name, pair_id, "watch", measured[0], geometry, grid,
                     dates, geometry_wgs84=to_crs(site.geometry, site.crs, WGS84))
            )
    return PairScores(sites=rows, changes=changes)


def _region_name(region_id: str, pair_id: str) -> str:
    number = int(region_id.rsplit("-c", 1)[1])
    return f"Change region {number} in {pair_id}"


def site_row(
    site_id: str,
    name: str,
    pair_id: str,
    kind: str,
    measure: SiteMeasure,
    grid_geometry: BaseGeometry,
    grid: Grid,
    dates: Mapping[str, str],
    geometry_wgs84: BaseGeometry | None = None,
) -> dict[str, Any]:
    """One site row: the alert columns, the measure's details and both geometries."""
    if grid.crs is not None and geometry_wgs84 is None:
        geometry_wgs84 = to_crs(grid_geometry, grid.crs, WGS84)
    centroid = geometry_wgs84.centroid if geometry_wgs84 is not None else None
    return {
        "site_id": site_id,
        "name": name,
        "pair_id": pair_id,
        "score": measure.score,
        "changed_area_m2": measure.changed_area,
        "lon": centroid.x if centroid is not None else float("nan"),
        "lat": centroid.y if centroid is not None else float("nan"),
        **dates,
        "kind": kind,
        "confidence": measure.confidence,
        "max_probability": measure.max_probability,
        "changed_pixels": measure.changed_pixels,
        "valid_fraction": measure.valid_fraction,
        "observed": bool(measure.valid_fraction >= MIN_OBSERVED_FRACTION),
        "area_unit": "m2" if grid.crs is not None else "px",
        "geometry": geometry_wgs84,
        "grid_geometry": grid_geometry,
    }


def _store_card_crops(pair: TilePair, rows: Sequence[Mapping[str, Any]], out_dir: Path) -> None:
    """Store the crops of the pair's card candidates (:mod:`~groundbreak.infer.report.
    stored_crops`); a crop that cannot be cut costs the report a read, not the pair."""
    try:
        store_display_crops(pair, card_candidates(rows), out_dir)
    except Exception as err:
        if stops_the_run(err):
            raise
        log.warning("pair %s: crops not stored (%s); the report reads them from its scenes",
                    pair.pair_id, describe_error(err))


def card_candidates(rows: Sequence[Mapping[str, Any]], limit: int = MAX_CARDS) -> list[Any]:
    """The grid geometries of a pair's sites that can become alert cards: its ``limit`` best
    observed ones, ranked as :func:`rank_sites` ranks a run (a run's best ``limit`` alerts are
    among its pairs' best ``limit`` sites)."""
    ranked = rank_sites(rows)
    if "grid_geometry" not in ranked:
        return []
    return list(ranked[observed_mask(ranked)]["grid_geometry"].head(limit))


def observed_mask(ranked: pd.DataFrame) -> pd.Series:
    """Which sites were observed (every one of a table without an ``observed`` column)."""
    if "observed" not in ranked:
        return pd.Series(True, index=ranked.index)
    return ranked["observed"].fillna(True).astype(bool)


def alert_rows(ranked: pd.DataFrame, alert_threshold: float) -> pd.DataFrame:
    """The ranked sites that are alerts: observed, and scoring at least ``alert_threshold``."""
    if ranked.empty:
        return ranked.iloc[0:0]
    alerts = (ranked["score"] >= alert_threshold) & observed_mask(ranked)
    return ranked[alerts].reset_index(drop=True)


def rank_sites(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Sort site rows best first and number them: score, then changed area, then peak probability.

    Ties left after that are broken by site id and pair id, so a ranking is reproducible.
    """
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["rank", "site_id", "name", "pair_id", "score"])
    table = table.sort_values(
        ["score", "changed_area_m2", "max_probability", "site_id", "pair_id"],
        ascending=[False, False, False, True, True],
        na_position="last",
        kind="mergesort",
    ).reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def rank_changes(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Discovered change-region rows best first (as :func:`rank_sites` orders them), unnumbered,
    keyed by ``region_id``."""
    ranked = rank_sites(rows).drop(columns="rank")
    return ranked.rename(columns={"site_id": "region_id"})


def rank_pairs(
    pairs: Sequence[PairSpec],
    out_dir: str | Path,
    bundle: Any,
    sites: Sequence[Site] | str | Path | None = None,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD,
    predictor_kwargs: Mapping[str, Any] | None = None,
    on_pair_done: Callable[[PairOutcome], None] | None = None,
    area_scale: float = DEFAULT_AREA_SCALE_M2,
    predictor: PairPredictor | None = None,
    write_report: bool = True,
) -> RankResult:
    """Predict, score and rank every pair; write the run folder (see the module docstring).

    Args:
        pairs: The tile pairs to rank (e.g. from ``read_pairs_csv``); ids must be unique.
        out_dir: The run folder; created if needed.
        bundle: A loaded ``ModelBundle`` or the path of a bundle folder.
        sites: Watch-list sites or the path of a watch-list GeoJSON; None ranks discovered
            change regions instead.
        min_area_m2: Smallest discovered change region (pixels on grids without a CRS).
        alert_threshold: Sites scoring at least this are alerts.
        predictor_kwargs: Keyword arguments of ``TiledPredictor`` (window, overlap, batch_size,
            tta, device).
        on_pair_done: Called after each pair, in order, with its :class:`PairOutcome`.
        area_scale: Area scale of the score (see :mod:`groundbreak.infer.sites.scoring`).
        predictor: A ready predictor to use instead of building a ``TiledPredictor``.
        write_report: Write ``report.html`` (the nightly batch may skip it).

    Raises:
        InputError: For a bad bundle or watch-list, or duplicate pair ids. A bad *pair* is not
            raised: it is recorded in ``failures.csv`` and the run goes on.
    """
    out_dir = Path(out_dir)
    check_unique_pair_ids(pairs)
    if not 0.0 <= alert_threshold <= 1.0:
        raise ValueError(f"alert_threshold must lie in [0, 1], got {alert_threshold}")
    if isinstance(bundle, str | Path):
        from groundbreak.train.bundle import load_bundle

        bundle = load_bundle(bundle, build=False)
    if isinstance(sites, str | Path):
        sites = load_watch_list(sites)
    if predictor is None:
        from groundbreak.infer.prediction.predictor import TiledPredictor

        predictor = TiledPredictor(bundle, **dict(predictor_kwargs or {}))
    out_dir.mkdir(parents=True, exist_ok=True)

    outcomes: list[PairOutcome] = []
    site_rows: list[dict[str, Any]] = []
    change_rows: list[dict[str, Any]] = []
    for spec in pairs:
        outcome, scores = process_pair(
            spec, out_dir / PAIRS_DIR / spec.pair_id, predictor, sites, min_area_m2, area_scale
        )
        outcomes.append(outcome)
        if scores is not None:
            site_rows += scores.sites
            change_rows += scores.changes
        if on_pair_done is not None:
            on_pair_done(outcome)
    release_runtime = getattr(predictor, "release_runtime", None)
    if release_runtime is not None:  # the tables and report need the memory the model planned
        release_runtime()

    ranked = rank_sites(site_rows)
    alerts = alert_rows(ranked, alert_threshold)
    changes = rank_changes(change_rows)
    failures = pd.DataFrame(
        [(o.pair_id, o.reason) for o in outcomes if not o.ok], columns=list(FAILURE_COLUMNS)
    )
    timings = pd.DataFrame(
        [
            {"pair_id": o.pair_id, "status": "ok" if o.ok else "failed", "seconds": o.seconds,
             "predict_seconds": o.predict_seconds, "sites": len(o.sites)}
            for o in outcomes
        ]
    )
    write_run_tables(out_dir, ranked, alerts, changes, failures)
    probability_paths = {o.pair_id: o.probability_path for o in outcomes if o.probability_path}
    result = RankResult(out_dir, ranked, alerts, changes, failures, timings, probability_paths)
    if write_report:
        result.report_path = write_html_report(
            out_dir / REPORT_HTML,
            result,
            pairs={spec.pair_id: spec for spec in pairs},
            settings={
                "model": getattr(bundle, "name", "model"),
                "threshold": getattr(predictor, "threshold", None)
                or getattr(bundle, "threshold", None),
                "alert threshold": alert_threshold,
                "minimum region area": min_area_m2,
                "area scale": area_scale,
                "watch-list sites": len(sites) if sites is not None else None,
            },
        )
    return result


def process_pair(
    spec: PairSpec,
    pair_dir: str | Path,
    predictor: PairPredictor,
    sites: Sequence[Site] | None = None,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    area_scale: float = DEFAULT_AREA_SCALE_M2,
) -> tuple[PairOutcome, PairScores | None]:
    """Predict and score one pair: the pair-level step of :func:`rank_pairs` and the nightly batch.

    Writes ``probability.tif`` and ``mask.tif`` into ``pair_dir`` and scores them (see
    :func:`score_prediction`); writes no run table. Any error but a full disk becomes a failed
    outcome with a one-line reason naming the pair, and no scores.

    Raises:
        OSError: When the disk or quota is full (:func:`stops_the_run`): every pair would fail.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome, scores = _process_pair(spec, pair_dir, predictor, sites, min_area_m2,
                                        area_scale)
    for warning in caught:  # shown as before (stderr), and kept with the outcome
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    messages = tuple(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    return replace(outcome, warnings=messages), scores


def _process_pair(
    spec: PairSpec,
    pair_dir: str | Path,
    predictor: PairPredictor,
    sites: Sequence[Site] | None,
    min_area_m2: float,
    area_scale: float,
) -> tuple[PairOutcome, PairScores | None]:
    started = time.perf_counter()
    try:
        check_path_id(spec.pair_id, "pair_id")  # it names the pair's folder
        pair = spec.open(with_label=False)
        with display_rows_spilled(pair, Path(pair_dir)) as spilled:
            prediction = predictor.predict_pair(pair, Path(pair_dir))
            too_little = too_little_valid_data(prediction)
            if too_little:  # an all-nodata map is no evidence of "no change"
                raise InputError(None, too_little)
            scores = score_prediction(
                spec.pair_id,
                prediction.probability_path,
                prediction.mask_path,
                prediction.threshold,
                sites,
                min_area_m2,
                area_scale,
                spec.before_date or pair.before.date,
                spec.after_date or pair.after.date,
            )
            if spilled.every_band:  # the crops of its best sites, while decoding costs nothing
                _store_card_crops(pair, scores.sites, Path(prediction.probability_path).parent)
    except Exception as err:  # one bad pair must not stop the run; the reason is recorded
        if stops_the_run(err):
            raise
        reason = " ".join(f"pair {spec.pair_id}: {describe_error(err)}".split())
        log.debug("pair %s failed", spec.pair_id, exc_info=True)
        log.info("pair %s failed: %s", spec.pair_id, reason)
        return PairOutcome(spec.pair_id, False, time.perf_counter() - started, reason), None
    outcome = PairOutcome(
        spec.pair_id,
        True,
        time.perf_counter() - started,
        predict_seconds=float(prediction.seconds),
        sites=pd.DataFrame(scores.sites),
        probability_path=Path(prediction.probability_path),
        mask_path=Path(prediction.mask_path),
        unobserved_fraction=float(getattr(prediction, "unobserved_fraction", 0.0)),
        cloud_fractions=tuple(getattr(prediction, "cloud_fractions", (0.0, 0.0))),
    )
    return outcome, scores


def write_run_tables(
    out_dir: Path,
    sites: pd.DataFrame,
    alerts: pd.DataFrame,
    changes: pd.DataFrame,
    failures: pd.DataFrame,
) -> None:
    """Write a run folder's tables: sites, alerts (CSV and GeoJSON), changes, failures."""
    write_sites_csv(sites, out_dir / SITES_CSV)
    write_sites_csv(alerts, out_dir / ALERTS_CSV)
    write_sites_geojson(alerts, out_dir / ALERTS_GEOJSON)
    write_changes_geojson(changes, out_dir / CHANGES_GEOJSON)
    write_failures_csv(failures, out_dir / FAILURES_CSV)

