"""The analyst's queue over a nightly state: filtered alerts with their latest scores, one alert's
history, and the view as CSV or GeoJSON.

Every alert row joins the ``alerts`` table with the site's score of the night that last scored it
(its pair's row in ``night_site_scores``): changed area, observed fraction, dates and outline.
Only reads the state (open it with ``read_only=True``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlencode

from shapely import wkt
from shapely.errors import ShapelyError
from shapely.geometry import Point, mapping

from groundbreak.datasets.errors import InputError
from groundbreak.infer.nightly.state import ALERT_STATUSES, OPEN_STATUSES, NightlyState
from groundbreak.infer.sites.alerts_io import rfc7946_winding, spreadsheet_safe

STATUS_CHOICES: tuple[str, ...] = ("open", *ALERT_STATUSES, "all")
"""Values of the status filter: ``open`` (new and ongoing, the default) or one status, or all."""

EXPORT_COLUMNS: tuple[str, ...] = (
    "site_id", "name", "status", "score", "max_score", "changed_area_m2", "area_unit",
    "observed_fraction", "lon", "lat", "before_date", "after_date", "pair_id", "ground",
    "first_run_id", "last_run_id", "note", "updated_at",
)

_PAIR_DATES = re.compile(r"^(?P<ground>.+)_\d{8}_\d{8}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_TEXT = 200


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows: a status (or ``open``/``all``), site and ground text, after-date
    range (ISO dates) and score range."""

    status: str = "open"
    site: str = ""
    ground: str = ""
    date_from: str = ""
    date_to: str = ""
    min_score: str = ""
    max_score: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> QueueFilter:
        """The filter of a URL query (``parse_qs``); raises InputError naming a bad value."""
        values = {f.name: (query.get(f.name) or [""])[-1].strip() for f in fields(cls)}
        values["status"] = values["status"] or "open"
        if values["status"] not in STATUS_CHOICES:
            raise InputError("status", f"must be one of {', '.join(STATUS_CHOICES)}, "
                                       f"not {values['status'][:40]!r}")
        for key in ("site", "ground"):
            if len(values[key]) > _MAX_TEXT:
                raise InputError(key, f"is longer than {_MAX_TEXT} characters")
        for key in ("date_from", "date_to"):
            if values[key] and not _ISO_DATE.match(values[key]):
                raise InputError(key, f"must be a date like 2024-05-31, not {values[key][:40]!r}")
        for key in ("min_score", "max_score"):
            if values[key]:
                try:
                    number = float(values[key])
                except ValueError:
                    number = math.nan
                if not math.isfinite(number):
                    raise InputError(key, f"must be a number, not {values[key][:40]!r}")
        return cls(**values)

    def query(self) -> str:
        """The filter as a URL query string (only what differs from the default)."""
        return urlencode({k: v for k, v in asdict(self).items() if v and v != _DEFAULTS[k]})

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether an alert row (see :func:`alert_rows`) belongs to this view."""
        status = row["status"]
        if self.status == "open" and status not in OPEN_STATUSES:
            return False
        if self.status not in ("open", "all") and status != self.status:
            return False
        if self.site and self.site.lower() not in f"{row['site_id']} {row['name'] or ''}".lower():
            return False
        if self.ground and self.ground.lower() not in str(row["ground"] or "").lower():
            return False
        after = row["after_date"] or ""
        if self.date_from and (not after or after < self.date_from):
            return False
        if self.date_to and (not after or after > self.date_to):
            return False
        if self.min_score and row["score"] < float(self.min_score):
            return False
        return not (self.max_score and row["score"] > float(self.max_score))


_DEFAULTS = asdict(QueueFilter())


def ground_of(pair_id: str | None) -> str:
    """The ground of a pair: its id without the ``_YYYYMMDD_YYYYMMDD`` of a catalogue pair."""
    if not pair_id:
        return ""
    match = _PAIR_DATES.match(pair_id)
    return match["ground"] if match else pair_id


def iso_date(value: Any) -> str:
    """``20150820`` or ``2015-08-20`` -> ``2015-08-20``; empty when missing."""
    text = "" if value is None else str(value).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text[:10] if _ISO_DATE.match(text[:10]) else text


def alert_rows(state: NightlyState) -> list[dict[str, Any]]:
    """Every alert with its latest site score, highest score first."""
    latest = {
        (row["site_id"], row["pair_id"]): row
        for row in state.db.execute(
            "SELECT s.* FROM night_site_scores s JOIN alerts a ON a.site_id = s.site_id "
            "AND a.last_run_id = s.run_id ORDER BY s.score"
        ).fetchall()
    }
    by_site = {site_id: row for (site_id, _), row in latest.items()}
    rows = []
    for alert in state.alerts():
        score_row = latest.get((alert["site_id"], alert["pair_id"])) or by_site.get(
            alert["site_id"]
        )
        rows.append(_alert_row(alert, score_row))
    return rows


def queue(state: NightlyState, view: QueueFilter) -> list[dict[str, Any]]:
    """The alerts of a view, highest score first."""
    return [row for row in alert_rows(state) if view.matches(row)]


def status_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many alerts have each status, plus ``open`` (new and ongoing)."""
    counts = {status: 0 for status in ALERT_STATUSES}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    counts["open"] = sum(counts[s] for s in OPEN_STATUSES)
    return counts


def site_history(state: NightlyState, site_id: str) -> list[dict[str, Any]]:
    """The site's timeline: one row per observation (scored acquisition), oldest first, with
    its acquisition date, kind, score and observed fraction; a state without observations
    (written before schema 3) gives the best score of every night that ranked the site."""
    observations = state.observations(site_id)
    if observations:
        return [
            {"run_id": o["run_id"], "pair_id": o["pair_id"], "acquired": o.get("acquired"),
             "kind": o["kind"], "score": o.get("score"),
             "changed_area_m2": o.get("changed_area_m2"),
             "observed_fraction": _number(o.get("valid_fraction")),
             "observed": o["kind"] != "unobserved"}
            for o in observations
        ]
    rows = state.db.execute(
        "SELECT run_id, pair_id, score, changed_area_m2, details FROM night_site_scores "
        "WHERE site_id = ? ORDER BY run_id, score DESC",
        (site_id,),
    ).fetchall()
    nights: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["run_id"] in nights:
            continue
        details = _details(row["details"])
        nights[row["run_id"]] = {
            "run_id": row["run_id"], "pair_id": row["pair_id"], "score": row["score"],
            "changed_area_m2": row["changed_area_m2"],
            "observed_fraction": _number(details.get("valid_fraction")),
            "observed": details.get("observed", True) not in (False, 0),
        }
    return list(nights.values())


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Alert rows as CSV (:data:`EXPORT_COLUMNS`; cells safe to open in a spreadsheet)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(EXPORT_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({c: spreadsheet_safe(row.get(c)) for c in EXPORT_COLUMNS} for row in rows)
    return buffer.getvalue()


def to_geojson(rows: Sequence[Mapping[str, Any]]) -> str:
    """Alert rows as a GeoJSON FeatureCollection (EPSG:4326): the site outline, else its
    centroid, else a null geometry."""
    features = []
    for row in rows:
        geometry = row.get("outline")
        if geometry is None and row.get("lon") is not None and row.get("lat") is not None:
            geometry = Point(row["lon"], row["lat"])
        features.append({
            "type": "Feature",
            "properties": {c: row.get(c) for c in EXPORT_COLUMNS},
            "geometry": mapping(rfc7946_winding(geometry)) if geometry is not None else None,
        })
    return json.dumps({"type": "FeatureCollection", "features": features}) + "\n"


def _alert_row(alert: Mapping[str, Any], score_row: Mapping[str, Any] | None) -> dict[str, Any]:
    details = _details(score_row["details"]) if score_row else {}
    row = dict(alert)
    row.update(
        ground=ground_of(alert.get("pair_id")),
        changed_area_m2=_number(score_row["changed_area_m2"]) if score_row else None,
        area_unit=details.get("area_unit") or "m2",
        observed_fraction=_number(details.get("valid_fraction")),
        before_date=iso_date(score_row["before_date"]) if score_row else "",
        after_date=iso_date(score_row["after_date"]) if score_row else "",
        max_probability=_number(details.get("max_probability")),
        pair_row=score_row["pair_row"] if score_row else None,
        outline=_geometry(details.get("geometry")),
        grid_outline=details.get("grid_geometry"),
    )
    return row


def _details(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _geometry(text: Any) -> Any:
    if not isinstance(text, str) or not text:
        return None
    try:
        geometry = wkt.loads(text)
    except (ShapelyError, ValueError):
        return None
    return None if geometry.is_empty else geometry


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
