"""The review app's HTML: the queue page (filters, counts, the queue, one alert with its crops,
facts, decision form and history) and the pages of errors and conflicts.

The pages are Jinja2 templates in ``templates/`` (the score line's macro is the report's), with
autoescaping on: every value from the state reaches the HTML escaped. This module only chooses
and formats what they show; links carry the view's filters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from groundbreak.infer.nightly.timeline import site_timeline
from groundbreak.infer.report.report import format_area, score_line
from groundbreak.infer.report.templating import template_environment
from groundbreak.infer.review.queue import STATUS_CHOICES, QueueFilter
from groundbreak.infer.sites.ranking import DEFAULT_ALERT_THRESHOLD

MAP_URL = "https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=17/{lat:.6f}/{lon:.6f}"
"""The external map a location opens in (only when the analyst follows the link)."""

STATUS_LABELS = {"open": "open", "new": "new", "ongoing": "ongoing", "confirmed": "confirmed",
                 "dismissed": "dismissed", "all": "all"}

TEMPLATES = template_environment("groundbreak.infer.review", "groundbreak.infer.report")
"""The review pages' templates, and the report's (for the score line)."""

FILTER_FIELDS = (
    ("site", "site id or name", "text"),
    ("ground", "ground / pair", "text"),
    ("date_from", "after date from", "date"),
    ("date_to", "after date to", "date"),
    ("min_score", "score ≥", "number"),
    ("max_score", "score ≤", "number"),
)
"""The filter form's fields: the :class:`QueueFilter` field, its label and input type."""


@dataclass(frozen=True)
class QueuePage:
    """What the queue page shows."""

    state_name: str
    analyst: str
    token: str
    view: QueueFilter
    rows: Sequence[Mapping[str, Any]]
    counts: Mapping[str, int]
    selected: Mapping[str, Any] | None
    version: int = 0
    history: Sequence[Mapping[str, Any]] = ()
    events: Sequence[Mapping[str, Any]] = ()
    crops_problem: str | None = None
    flash: str | None = None
    analyst_fixed: bool = False
    """True when the analyst is the signed-in one (shown, not editable, not sent)."""
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD
    """Where the score-over-time line draws the alert threshold."""


def alert_url(site_id: str, view: QueueFilter, suffix: str = "") -> str:
    """The URL of an alert (and its crops, with ``suffix``), keeping the view's filters."""
    query = view.query()
    return f"/alerts/{quote(site_id, safe='')}{suffix}" + (f"?{query}" if query else "")


def queue_page(page: QueuePage) -> str:
    """The whole queue page."""
    rows, selected = list(page.rows), page.selected
    ids = [str(r["site_id"]) for r in rows]
    here = ids.index(selected["site_id"]) if selected and selected["site_id"] in ids else -1
    following = ids[here + 1] if here + 1 < len(ids) else None
    previous = ids[here - 1] if here > 0 else None
    after_decision = following or previous if here >= 0 else (ids[0] if ids else None)
    query = page.view.query()
    title = f"{selected['site_id']} · review" if selected else "Alert queue · review"
    return _render(
        "queue.html", title,
        next_url=alert_url(following, page.view) if following else None,
        prev_url=alert_url(previous, page.view) if previous else None,
        page=page,
        stats=_stats(page),
        query_suffix=f"?{query}" if query else "",
        status_choices=STATUS_CHOICES,
        labels=STATUS_LABELS,
        filter_fields=FILTER_FIELDS,
        queue=[_queue_item(row, selected, page.view) for row in rows],
        alert=_alert(page, selected, after_decision) if selected is not None else None,
    )


def message_page(title: str, message: str, link: tuple[str, str] | None = ("/", "the queue"),
                 kept_note: str | None = None) -> str:
    """A page that says what went wrong (no traceback), with a way back (``link``: its URL and
    what it leads to) and the analyst's unsaved note, if any, to copy."""
    back = {"url": link[0], "label": link[1]} if link else None
    return _render("message.html", title, message=message, back=back, kept_note=kept_note)


def conflict_page(site_id: str, message: str, note: str | None, view: QueueFilter) -> str:
    """Another analyst decided first: say who and what; keep the analyst's note to copy."""
    return message_page(
        "Conflict: not saved", f"{message}. Look at the alert again and decide anew.",
        (alert_url(site_id, view), f"alert {site_id}"), note or None,
    )


def _render(template: str, title: str, **context: Any) -> str:
    context.setdefault("next_url", None)
    context.setdefault("prev_url", None)
    return TEMPLATES.get_template(template).render(title=title, **context)


def _stats(page: QueuePage) -> list[dict[str, Any]]:
    """The counts by status (``open`` is new and ongoing; ``all`` every decided one too)."""
    stats = []
    for status in ("open", "new", "ongoing", "confirmed", "dismissed", "all"):
        count = sum(page.counts.get(s, 0) for s in ("new", "ongoing", "confirmed",
                                                    "dismissed")) if status == "all" \
            else page.counts.get(status, 0)
        stats.append({"status": status, "count": count, "current": page.view.status == status,
                      "label": STATUS_LABELS.get(status, status)})
    return stats


def _queue_item(row: Mapping[str, Any], selected: Mapping[str, Any] | None,
                view: QueueFilter) -> dict[str, Any]:
    site_id = str(row["site_id"])
    return {
        "site_id": site_id,
        "status": row["status"],
        "selected": bool(selected and selected["site_id"] == site_id),
        "url": alert_url(site_id, view),
        "name": str(row["name"] or site_id),
        "score": f"{row['score']:.2f}",
        "after_date": row.get("after_date") or "",
    }


def _alert(page: QueuePage, alert: Mapping[str, Any], after: str | None) -> dict[str, Any]:
    """What the detail of the selected alert shows."""
    site_id, status = str(alert["site_id"]), str(alert["status"])
    lat, lon = alert.get("lat"), alert.get("lon")
    located = _finite(lat) and _finite(lon)
    captions = (("before", f"Before {alert.get('before_date') or ''}"),
                ("after", f"After {alert.get('after_date') or ''}"),
                ("probability", "Change probability on after"))
    is_open = status in ("new", "ongoing")
    hidden = {"token": page.token, "version": str(page.version), "next": after or "",
              "view": page.view.query()}
    if not page.analyst_fixed:
        hidden["analyst"] = page.analyst
    timeline = site_timeline([h for h in page.history if "kind" in h])
    points = timeline.scores()
    return {
        "site_id": site_id,
        "status": status,
        "name": str(alert["name"] or site_id),
        "score": f"{alert['score']:.3f}",
        "facts": _facts(alert),
        "coordinates": f"{lat:.6f}, {lon:.6f}" if located else None,
        "map_url": MAP_URL.format(lat=lat, lon=lon) if located else None,
        "crops": [(kind, alert_url(site_id, page.view, f"/{kind}.png"), caption)
                  for kind, caption in captions],
        "decision_url": alert_url(site_id, QueueFilter(), "/decision"),
        "hidden": list(hidden.items()),
        "buttons": (
            ("confirm", "Confirm", "c", status == "confirmed"),
            ("dismiss", "Dismiss", "d", status == "dismissed"),
            ("reopen", "Reopen", "r", is_open),
        ),
        "began": timeline.began(),
        "score_line": score_line(points, page.alert_threshold) if len(points) > 1 else None,
        "observations": [_observation_row(h) for h in page.history],
        "events": [_event_row(e) for e in page.events],
    }


def _facts(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    observed = alert.get("observed_fraction")
    facts = [
        ("score (max)", f"{alert['score']:.3f} ({alert['max_score']:.3f})"),
        ("observed", "–" if observed is None else f"{observed:.0%} of the site"),
        ("changed area",
         format_area(alert.get("changed_area_m2"), alert.get("area_unit") or "m2")),
        ("before", alert.get("before_date") or "?"),
        ("after", alert.get("after_date") or "?"),
        ("pair", alert.get("pair_id") or "–"),
        ("nights", f"{alert['first_run_id']} → {alert['last_run_id']}"),
        ("updated (UTC)", alert["updated_at"]),
    ]
    if alert.get("note"):
        facts.append(("note", alert["note"]))
    return [(term, str(value)) for term, value in facts]


def _event_row(event: Mapping[str, Any]) -> dict[str, str]:
    score = event.get("score")
    return {
        "at": str(event["at"]),
        "run_id": str(event.get("run_id") or "–"),
        "event": str(event["event"]),
        "status": str(event["status"]),
        "score": "" if score is None else format(score, ".3f"),
        "note": str(event.get("note") or ""),
        "analyst": str(event.get("analyst") or ""),
    }


def _observation_row(row: Mapping[str, Any]) -> dict[str, str]:
    observed = row.get("observed_fraction")
    seen = "–" if observed is None else f"{observed:.0%}"
    if not row.get("observed", True):
        seen += " (not observed)"
    score = row.get("score")
    return {
        "acquired": str(row.get("acquired") or "–"),
        "run_id": str(row["run_id"]),
        "pair_id": str(row["pair_id"]),
        "kind": str(row.get("kind") or "–"),
        "score": "–" if score is None else format(score, ".3f"),
        "changed": format_area(row.get("changed_area_m2"), "m2"),
        "seen": seen,
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
