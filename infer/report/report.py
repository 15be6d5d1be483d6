"""The analyst's report: one static HTML page that works offline.

``report.html`` shows the alerts in rank order, each as a card with before, after and
probability-overlay crops of the site, its name, place, changed area, score and dates; then a
table of every scored site, and the pairs that failed. Everything is inside the one file: images
are base64 PNGs, the CSS is inline, and a few lines of inline JavaScript only record whether the
page loaded cleanly (``data-ready``, ``data-errors``, ``data-broken-images`` on ``<body>``), for
automated checks. No external URL is referenced.

The page is the template ``templates/report.html`` (its CSS and scripts are templates it
includes inline; the score line is a macro); autoescaping is on, so every name, id, note or
reason reaches the page escaped. This module chooses and formats what the page shows. The crops
are :mod:`.crops`'.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.datasets.scene import files_kept_open
from groundbreak.infer.atomic import atomic_write_text
from groundbreak.infer.prediction.raster_io import bounded_gdal_cache
from groundbreak.infer.report.crops import SiteCrops, render_site_crops
from groundbreak.infer.report.stored_crops import StoredCrops, stored_display_crops
from groundbreak.infer.report.templating import template_environment

MAX_CARDS = 60
"""Alert cards shown at most; the rest are in alerts.csv (and highlighted in the table when they
rank among its rows)."""

MAX_TABLE_ROWS = 1000
"""Scored sites the page's table lists at most, the best ranked; every site is in sites.csv. A row
is about 350 bytes of the page: a full-tile night scores some 23 000 change regions (8 MB of
rows) and a country night hundreds of thousands, pages no browser opens."""

TEMPLATES = template_environment("groundbreak.infer.report")
"""The report's templates (``templates/``: the page, its CSS and scripts, the score line)."""

class RankedRun(Protocol):
    """What the report shows of a run (a :class:`~groundbreak.infer.sites.ranking.RankResult` is
    one).

    The report depends on these tables only, never on the ranking module, which writes it.
    """

    out_dir: Path
    sites: pd.DataFrame
    """Every scored site, best first (alert columns, ``grid_geometry`` for the crops)."""
    alerts: pd.DataFrame
    """The sites that are alerts, best first."""
    failures: pd.DataFrame
    """pair_id, reason."""
    probability_paths: dict[str, Path]
    """The probability raster of each processed pair, by pair id."""


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def format_area(area: float | None, unit: str = "m2") -> str:
    """``2,300 m²``, ``1.25 ha`` or ``230 px``; ``–`` when unknown."""
    if area is None or not math.isfinite(area):
        return "–"
    if unit == "px":
        return f"{area:,.0f} px"
    if area >= 10_000:
        return f"{area / 10_000:,.2f} ha"
    return f"{area:,.0f} m²"


def format_date(value: Any) -> str:
    """``20150820`` -> ``2015-08-20``; other text unchanged; empty for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def format_place(lat: float, lon: float) -> str:
    """``24.45678, 54.38912`` (lat, lon, 5 decimals: about a metre); ``–`` when unknown."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return "–"
    return f"{lat:.5f}, {lon:.5f}"


def _fraction(value: Any) -> str:
    """A probability with two decimals; ``–`` when missing."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{number:.2f}" if math.isfinite(number) else "–"


def _score_class(score: float, alert_threshold: float) -> str:
    if score >= max(alert_threshold, 0.75):
        return "high"
    if score >= alert_threshold:
        return "mid"
    return "low"


def write_report(
    path: str | Path,
    result: RankedRun,
    pairs: Mapping[str, PairSpec],
    settings: Mapping[str, Any] | None = None,
    title: str = "Construction alerts",
    max_cards: int = MAX_CARDS,
    max_rows: int = MAX_TABLE_ROWS,
) -> Path:
    """Write the offline HTML report of a ranking run.

    Args:
        path: Where to write ``report.html`` (atomically).
        result: The ranking run (sites, alerts, failures, probability rasters).
        pairs: The pair specs by id, to read the crops from their scenes.
        settings: Run settings listed in the page footer (model, thresholds, ...).
        title: The page title.
        max_cards: Alert cards shown at most.
        max_rows: Scored sites the table lists at most (the best ranked).
    """
    settings = dict(settings or {})
    alert_threshold = float(settings.get("alert threshold", 0.5))
    opened: dict[str, TilePair | None] = {}
    stored: dict[str, StoredCrops | None] = {}
    cards: list[dict[str, Any]] = []
    # GDAL's default cache is 5 % of the RAM: unbounded here. Files stay open across crops so
    # that the JPEG 2000 tiles / COG blocks near several sites are decoded once.
    with bounded_gdal_cache(), files_kept_open(strips=False):
        try:
            for row in result.alerts.head(max_cards).to_dict("records"):
                crops, problem = _crops_for(row, pairs, result.probability_paths, opened, stored)
                cards.append(_card(row, crops, problem, alert_threshold))
        finally:
            for crops_file in stored.values():
                if crops_file is not None:
                    crops_file.close()
    hidden = len(result.alerts) - len(cards)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = _page(
        title, result, cards, hidden, settings, alert_threshold, generated, len(pairs), max_rows
    )
    return atomic_write_text(path, page)


def _crops_for(
    row: Mapping[str, Any],
    pairs: Mapping[str, PairSpec],
    probability_paths: Mapping[str, Path],
    opened: dict[str, TilePair | None],
    stored: dict[str, StoredCrops | None],
) -> tuple[SiteCrops | None, str | None]:
    """The crops of one alert, or None and the reason they could not be made; the pair's stored
    crops (:mod:`.stored_crops`) spare reading its scenes where they hold the site's."""
    pair_id = row["pair_id"]
    if pair_id not in opened:
        spec = pairs.get(pair_id)
        try:
            opened[pair_id] = spec.open(with_label=False) if spec is not None else None
        except Exception:  # the pair was readable while ranking; show the card without images
            opened[pair_id] = None
    pair = opened[pair_id]
    probability_path = probability_paths.get(pair_id)
    geometry = row.get("grid_geometry")
    if pair is None or probability_path is None or not isinstance(geometry, BaseGeometry):
        return None, "imagery not available"
    if pair_id not in stored:
        stored[pair_id] = stored_display_crops(Path(probability_path).parent)
    try:
        crops = render_site_crops(pair, probability_path, geometry, stored=stored[pair_id])
    except Exception as err:  # a broken crop must not cost the analyst the whole report
        return None, f"imagery could not be read ({type(err).__name__}: {err})"
    return crops, None if crops is not None else "site lies outside the pair"


def _card(
    row: Mapping[str, Any], crops: SiteCrops | None, problem: str | None, alert_threshold: float
) -> dict[str, Any]:
    """What an alert's card shows (the template escapes every text)."""
    score = float(row["score"])
    before, after = format_date(row.get("before_date")), format_date(row.get("after_date"))
    unit = str(row.get("area_unit") or "m2")
    details = [
        ("site", row["site_id"]),
        ("pair", row["pair_id"]),
        ("lat, lon", format_place(float(row["lat"]), float(row["lon"]))),
        ("changed", format_area(float(row["changed_area_m2"]), unit)),
        ("confidence", _fraction(row.get("confidence"))),
        ("before", before or "?"),
        ("after", after or "?"),
        ("peak p", _fraction(row.get("max_probability"))),
    ]
    if row.get("change_began"):
        details.append(("change began", row["change_began"]))
    history = row.get("score_history")
    pictures = None
    if crops is not None:
        pictures = {kind: base64.b64encode(getattr(crops, kind)).decode("ascii")
                    for kind in ("before", "after", "overlay")}
    return {
        "level": _score_class(score, alert_threshold),
        "rank": int(row["rank"]),
        "site_id": str(row["site_id"]),
        "pair_id": str(row["pair_id"]),
        "name": str(row["name"]),
        "score": f"{score:.2f}",
        "details": [(term, str(value)) for term, value in details],
        "score_line": score_line(history, alert_threshold)
        if isinstance(history, list) and len(history) > 1 else None,
        "crops": pictures,
        "before": before,
        "after": after,
        "problem": problem or "no imagery",
    }


@dataclass(frozen=True)
class ScoreLine:
    """A site's score over its acquisitions, laid out for the ``score_line_svg`` macro of
    ``templates/score_line.html``: coordinates as text made of numbers, and each dot's tooltip
    (its date), which the template escapes."""

    width: int
    height: int
    threshold_y: str
    marks: list[dict[str, str]]
    """Polylines (``points``) and dots (``x``, ``y``, ``radius``, ``fill``, ``title``)."""


def score_line(
    points: Sequence[tuple[str, float | None]], threshold: float, width: int = 220,
    height: int = 48,
) -> ScoreLine:
    """A site's score over its acquisitions: dots joined by a line, a grey dot and a gap where
    unobserved, and the alert threshold's height."""
    days = [dt.date.fromisoformat(str(d)[:10]).toordinal() for d, _ in points]
    first, span = min(days), max(1, max(days) - min(days))

    def x(day: int) -> str:
        return f"{4 + (width - 8) * (day - first) / span:.1f}"

    def y(score: float) -> str:
        return f"{height - 4 - (height - 8) * min(max(score, 0.0), 1.0):.1f}"

    marks: list[dict[str, str]] = []
    line: list[str] = []
    for day, (when, score) in zip(days, points, strict=True):
        if score is None:
            if len(line) > 1:
                marks.append({"points": " ".join(line)})
            line = []
            marks.append({"x": x(day), "y": str(height - 4), "radius": "2", "fill": "#bbb",
                          "title": f"{when}: not observed"})
            continue
        line.append(f"{x(day)},{y(score)}")
        marks.append({"x": x(day), "y": y(score), "radius": "2.5", "fill": "#c0392b",
                      "title": f"{when}: {score:.2f}"})
    if len(line) > 1:
        marks.insert(0, {"points": " ".join(line)})
    return ScoreLine(width, height, y(threshold), marks)


def _table_rows(
    sites: pd.DataFrame, alerts: pd.DataFrame, alert_threshold: float
) -> list[dict[str, Any]]:
    """The rows of the table of every scored site; only the run's alerts are highlighted.

    A site that scores above the alert threshold but is not an alert (dismissed by an analyst
    in the nightly state, or otherwise suppressed) is tagged as such, never highlighted; one
    that clouds, shadows or the swath hid is tagged "not observed".
    """
    alerted = _alert_keys(alerts)
    rows = []
    for row in sites.to_dict("records"):
        score = float(row["score"])
        is_alert = (str(row["site_id"]), str(row["pair_id"])) in alerted
        observed = row.get("observed", True)
        tag = ""
        if observed is False or observed == 0:
            tag = "not observed"
        elif not is_alert and score >= alert_threshold:
            tag = "no alert"
        rows.append({
            "is_alert": is_alert,
            "tag": tag,
            "seen": f"{float(row.get('valid_fraction', 0.0)):.0%}",
            "rank": int(row["rank"]),
            "site_id": str(row["site_id"]),
            "name": str(row["name"]),
            "pair_id": str(row["pair_id"]),
            "bar": f"{max(score, 0.01) * 60:.0f}",
            "score": f"{score:.3f}",
            "changed": format_area(float(row["changed_area_m2"]), str(row["area_unit"])),
            "confidence": f"{float(row['confidence']):.2f}",
            "place": format_place(float(row["lat"]), float(row["lon"])),
            "before": format_date(row.get("before_date")),
            "after": format_date(row.get("after_date")),
        })
    return rows


def _alert_keys(alerts: pd.DataFrame) -> set[tuple[str, str]]:
    """The (site_id, pair_id) of every alert row."""
    if alerts.empty:
        return set()
    return set(zip(alerts["site_id"].astype(str), alerts["pair_id"].astype(str), strict=True))


def _page(
    title: str,
    result: RankedRun,
    cards: list[dict[str, Any]],
    hidden: int,
    settings: Mapping[str, Any],
    alert_threshold: float,
    generated: str,
    n_pairs: int,
    max_rows: int,
) -> str:
    """The whole page, rendered from ``templates/report.html``."""
    listed = result.sites.head(max_rows)  # best first
    stats = [
        (str(n_pairs), "tile pairs", ""),
        (str(len(result.sites)), "sites scored", ""),
        (str(len(result.alerts)), f"alerts (score ≥ {alert_threshold:g})", "stat-alert"),
        (str(len(result.failures)), "pairs failed", "stat-fail" if len(result.failures) else ""),
    ]
    return TEMPLATES.get_template("report.html").render(
        title=title,
        run_folder=result.out_dir.name,
        generated=generated,
        stats=stats,
        cards=cards,
        hidden=hidden,
        alert_threshold=f"{alert_threshold:g}",
        sites=_table_rows(listed, result.alerts, alert_threshold),
        more_sites=len(result.sites) - len(listed),
        failures=[str(r["reason"]) for r in result.failures.to_dict("records")],
        settings=[(str(k), _setting(v)) for k, v in settings.items() if v is not None],
    )


def _setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
