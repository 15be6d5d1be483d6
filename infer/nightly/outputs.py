"""A night's outputs: its new observations applied to the alerts, then its run folder.

``sites.csv`` and ``changes.geojson`` hold what the night newly observed (the pairs it scored
itself; a reused pair is no new observation); ``alerts.csv``, ``alerts.geojson`` and the report
hold every open alert of the state with its latest observation, when its change began and its
score over time. The pictures of an alert scored on an earlier night come from the scenes stored
with its pair (:mod:`.evidence`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.nightly.config import NightlyConfig
from groundbreak.infer.nightly.hashing import ContentHasher
from groundbreak.infer.nightly.state import NightlyState, best_per_site
from groundbreak.infer.nightly.timeline import site_timeline
from groundbreak.infer.prediction.raster_io import MASK_FILE, PROBABILITY_FILE
from groundbreak.infer.sites.alerts_io import FAILURE_COLUMNS
from groundbreak.infer.sites.ranking import (
    REPORT_HTML,
    RankResult,
    rank_sites,
    write_run_tables,
)

if TYPE_CHECKING:
    from groundbreak.infer.nightly.records import NightSummary


def outputs_exist(outputs: str | None) -> bool:
    """Whether a done pair's published rasters are still there (an operator may prune nights)."""
    return outputs is not None and all(
        (Path(outputs) / name).is_file() for name in (PROBABILITY_FILE, MASK_FILE)
    )


def write_night_outputs(
    config: NightlyConfig,
    state: NightlyState,
    summary: NightSummary,
    specs: Sequence[PairSpec],
    bundle: Any,
    threshold: float | None = None,
) -> None:
    """Apply the night's new observations to the alerts, then write the run folder: the sites
    of the pairs this night scored (``sites.csv``) and every open alert (``alerts.csv``)."""
    run_dir = summary.run_dir
    rows = _expanded(state.night_scores(config.run_id, new_only=True))
    summary.alerts = state.update_alerts(config.run_id, rows, config.policy)
    summary.sites = len(rows)
    ranked = rank_sites(rows)
    alerts = rank_sites([with_timeline(state, r) for r in _expanded(state.open_alert_rows())])
    fresh = set(summary.alerts.new) | set(summary.alerts.realerted)
    summary.new_alerts = [
        {k: _plain(row.get(k)) for k in ("site_id", "name", "pair_id", "score",
                                         "changed_area_m2", "lon", "lat")}
        for row in best_per_site(rows) if str(row["site_id"]) in fresh
    ]
    # changes.geojson is all the night's regions are written to: their lon/lat outlines only
    changes = pd.DataFrame(_with_geometries(state.night_changes(config.run_id, new_only=True),
                                            keys=("geometry",)))
    failures = pd.DataFrame(summary.failures, columns=list(FAILURE_COLUMNS))
    write_run_tables(run_dir, ranked, alerts, changes, failures)
    if config.report:
        from groundbreak.infer.report.report import write_report

        outputs = {p.pair_id: p.outputs for p in summary.pairs if p.outputs}
        specs = {s.pair_id: s for s in specs}
        for pair_id, (spec, stored) in earlier_alert_pairs(state, alerts, specs).items():
            specs[pair_id], outputs[pair_id] = spec, stored
        result = RankResult(
            out_dir=run_dir, sites=ranked, alerts=alerts, changes=changes, failures=failures,
            timings=pd.DataFrame([vars(p) for p in summary.pairs]),
            probability_paths={k: Path(v) / "probability.tif" for k, v in outputs.items()},
        )
        write_report(
            run_dir / REPORT_HTML, result, pairs=specs,
            settings={
                "model": getattr(bundle, "name", "model"),
                "threshold": threshold or getattr(bundle, "threshold", None),
                "alert threshold": config.alert_threshold,
                "minimum region area": config.min_area_m2,
                "area scale": config.area_scale,
                "night": config.run_id,
            },
            title=f"Construction alerts, night {config.run_id}",
        )


def with_timeline(state: NightlyState, row: dict[str, Any]) -> dict[str, Any]:
    """An alert row with when its change began and its score over time (for the report)."""
    timeline = site_timeline(state.observations(str(row["site_id"])))
    return {**row, "change_began": timeline.began(), "score_history": timeline.scores()}


def earlier_alert_pairs(
    state: NightlyState, alerts: pd.DataFrame, known: Mapping[str, PairSpec]
) -> dict[str, tuple[PairSpec, str]]:
    """(spec, outputs) of the pairs that scored open alerts on earlier nights, from the scenes
    stored with them (:mod:`.evidence`); a pair whose scenes changed or are gone is left out,
    so its card says the imagery is not available."""
    from groundbreak.infer.nightly.evidence import stored_pair_spec

    hasher = ContentHasher(state)
    out: dict[str, tuple[PairSpec, str]] = {}
    for pair_id in sorted(set(alerts.get("pair_id", pd.Series(dtype=str))) - set(known)):
        row = state.db.execute(
            "SELECT * FROM pairs WHERE pair_id = ? AND status = 'done' ORDER BY id DESC",
            (pair_id,),
        ).fetchone()
        spec = stored_pair_spec(dict(row), hasher) if row is not None else None
        if isinstance(spec, PairSpec) and outputs_exist(row["outputs"]):
            out[pair_id] = (spec, row["outputs"])
    return out


def _expanded(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stored site scores as ranking rows: details unpacked, geometries parsed (each row's
    ``pair_row`` kept: the state links each observation to the pair that made it)."""
    out = []
    for row in rows:
        expanded = {k: v for k, v in row.items() if k != "details"}
        expanded.update(json.loads(row.get("details") or "{}"))
        out.append(expanded)
    return _with_geometries(out)


def _with_geometries(
    rows: list[dict[str, Any]], keys: Sequence[str] = ("geometry", "grid_geometry")
) -> list[dict[str, Any]]:
    """``rows`` with their WKT geometries under ``keys`` parsed, one vectorised parse a key."""
    for key in keys:
        at = [i for i, row in enumerate(rows) if isinstance(row.get(key), str)]
        if at:
            # an object array: a list of str would become one fixed-width unicode array, each
            # element as wide as the longest outline (1.2 GB more on a full tile's 23 000 sites)
            parsed = shapely.from_wkt(np.array([rows[i][key] for i in at], dtype=object))
            for i, geometry in zip(at, parsed, strict=True):
                rows[i][key] = geometry
    return rows


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and value != value else value
