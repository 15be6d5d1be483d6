"""The review app's HTML: the queue page (filters, counts, the queue, one alert with its crops,
facts, decision form and history) and the pages of errors and conflicts.

Every value from the state is HTML-escaped; links carry the view's filters.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from groundbreak.infer.nightly.timeline import site_timeline
from groundbreak.infer.report.report import score_line_svg
from groundbreak.infer.review.queue import STATUS_CHOICES, QueueFilter
from groundbreak.infer.sites.ranking import DEFAULT_ALERT_THRESHOLD

MAP_URL = "https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=17/{lat:.6f}/{lon:.6f}"
"""The external map a location opens in (only when the analyst follows the link)."""

STATUS_LABELS = {"open": "open", "new": "new", "ongoing": "ongoing", "confirmed": "confirmed",
                 "dismissed": "dismissed", "all": "all"}

esc = html.escape


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
    nav = (f' data-next="{esc(alert_url(following, page.view))}"' if following else "") + (
        f' data-prev="{esc(alert_url(previous, page.view))}"' if previous else "")
    body = (
        _header(page)
        + (f'<div class="flash" id="flash" role="status">{esc(page.flash)}</div>'
           if page.flash else "")
        + '<pre id="page-errors" hidden></pre><div class="layout"><aside>'
        + _filters(page.view) + _queue(rows, selected, page.view) + "</aside>"
        + f'<section id="detail">{_detail(page, after_decision)}</section></div>'
        + "<footer>Keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous alert · <kbd>c</kbd> confirm · "
        "<kbd>d</kbd> dismiss · <kbd>r</kbd> reopen · <kbd>n</kbd> write a note · "
        "<kbd>Esc</kbd> leave the note. Decisions are written to the nightly state with your "
        "name and the time; <code>groundbreak alerts history SITE_ID</code> shows them.</footer>"
    )
    title = f"{selected['site_id']} · review" if selected else "Alert queue · review"
    return _document(title, body, nav)


def message_page(title: str, message: str, link: tuple[str, str] | None = ("/", "the queue"),
                 extra: str = "") -> str:
    """A page that says what went wrong (no traceback), with a way back."""
    back = f'<p><a class="button" href="{esc(link[0])}">Back to {esc(link[1])}</a></p>' \
        if link else ""
    return _document(title, f'<div class="error-box" id="message"><h1>{esc(title)}</h1>'
                            f"<p>{esc(message)}</p>{extra}{back}</div>")


def conflict_page(site_id: str, message: str, note: str | None, view: QueueFilter) -> str:
    """Another analyst decided first: say who and what; keep the analyst's note to copy."""
    kept = ""
    if note:
        kept = ('<p>Your note (not saved):</p><textarea readonly rows="3" cols="60">'
                f"{esc(note)}</textarea>")
    return message_page(
        "Conflict: not saved", f"{message}. Look at the alert again and decide anew.",
        (alert_url(site_id, view), f"alert {site_id}"), kept,
    )


def _document(title: str, body: str, body_attrs: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="stylesheet" href="/static/review.css">'
        f"</head><body{body_attrs}>{body}"
        '<script src="/static/review.js"></script></body></html>\n'
    )


def _header(page: QueuePage) -> str:
    query = page.view.query()
    stats = []
    for status in ("open", "new", "ongoing", "confirmed", "dismissed", "all"):
        count = sum(page.counts.get(s, 0) for s in ("new", "ongoing", "confirmed",
                                                    "dismissed")) if status == "all" \
            else page.counts.get(status, 0)
        current = " current" if page.view.status == status else ""
        stats.append(
            f'<a class="stat{current}" id="count-{status}" href="/?status={status}">'
            f"<b>{count}</b><span>{esc(STATUS_LABELS.get(status, status))}</span></a>"
        )
    suffix = f"?{query}" if query else ""
    analyst = (
        f'<b id="analyst-name">{esc(page.analyst)}</b>' if page.analyst_fixed
        else f'<input id="analyst" value="{esc(page.analyst)}" size="12" maxlength="80" '
        'aria-label="analyst name">'
    )
    return (
        '<header><h1><span>groundbreak</span> review</h1>'
        f'<div class="sub">state <code>{esc(page.state_name)}</code> · analyst {analyst}</div>'
        f'<div class="stats">{"".join(stats)}<span class="stat" id="count-view"><b>'
        f'{len(page.rows)}</b><span>in this view</span></span></div>'
        f'<div class="exports">export view <a class="button" id="export-csv" '
        f'href="/export.csv{esc(suffix)}">CSV</a><a class="button" id="export-geojson" '
        f'href="/export.geojson{esc(suffix)}">GeoJSON</a></div></header>'
    )


def _filters(view: QueueFilter) -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if s == view.status else ""}>'
        f"{STATUS_LABELS.get(s, s)}</option>"
        for s in STATUS_CHOICES
    )

    def field(name: str, label: str, kind: str = "text", extra: str = "") -> str:
        return (f'<label>{label}<input type="{kind}" name="{name}" '
                f'value="{esc(getattr(view, name))}"{extra}></label>')

    return (
        '<form class="filters" id="filters" method="get" action="/">'
        f'<label>status<select name="status">{options}</select></label>'
        + field("site", "site id or name")
        + field("ground", "ground / pair")
        + field("date_from", "after date from", "date")
        + field("date_to", "after date to", "date")
        + field("min_score", "score ≥", "number", ' step="any" min="0" max="1"')
        + field("max_score", "score ≤", "number", ' step="any" min="0" max="1"')
        + '<button type="submit">Filter</button><a class="button" href="/">Reset</a></form>'
    )


def _queue(rows: Sequence[Mapping[str, Any]], selected: Mapping[str, Any] | None,
           view: QueueFilter) -> str:
    if not rows:
        return '<p class="none" id="empty-queue">No alert in this view.</p>'
    items = []
    for number, row in enumerate(rows, start=1):
        site_id = str(row["site_id"])
        css = ' class="selected"' if selected and selected["site_id"] == site_id else ""
        items.append(
            f'<li{css} data-site-id="{esc(site_id)}" data-status="{esc(row["status"])}">'
            f'<a href="{esc(alert_url(site_id, view))}"><span class="qname">{number}. '
            f'{esc(str(row["name"] or site_id))}</span><span class="score">{row["score"]:.2f}'
            f'</span><span class="qmeta">{esc(site_id)} · <span class="badge '
            f'{esc(row["status"])}">{esc(row["status"])}</span> · '
            f'{esc(row.get("after_date") or "")}</span></a></li>'
        )
    return f'<ol id="queue">{"".join(items)}</ol>'


def _detail(page: QueuePage, after_decision: str | None) -> str:
    alert = page.selected
    if alert is None:
        return '<p class="none">Nothing to review here. Change the filters to see more.</p>'
    site_id = str(alert["site_id"])
    status = str(alert["status"])
    return (
        f'<div id="alert" data-site-id="{esc(site_id)}" data-status="{esc(status)}">'
        f'<h2>{esc(str(alert["name"] or site_id))}</h2>'
        f'<div class="sub">site <code>{esc(site_id)}</code> · <span class="badge {esc(status)}" '
        f'id="status">{esc(status)}</span> · score <span class="score">{alert["score"]:.3f}'
        f"</span></div>"
        + _facts(alert) + _coordinates(alert) + _crops(page, alert)
        + _decision_form(page, alert, after_decision) + _history(page) + "</div>"
    )


def _facts(alert: Mapping[str, Any]) -> str:
    observed = alert.get("observed_fraction")
    facts = [
        ("score (max)", f"{alert['score']:.3f} ({alert['max_score']:.3f})"),
        ("observed", "–" if observed is None else f"{observed:.0%} of the site"),
        ("changed area", _area(alert.get("changed_area_m2"), alert.get("area_unit") or "m2")),
        ("before", alert.get("before_date") or "?"),
        ("after", alert.get("after_date") or "?"),
        ("pair", alert.get("pair_id") or "–"),
        ("nights", f"{alert['first_run_id']} → {alert['last_run_id']}"),
        ("updated (UTC)", alert["updated_at"]),
    ]
    if alert.get("note"):
        facts.append(("note", alert["note"]))
    return '<div class="facts">' + "".join(
        f'<div class="fact"><span>{esc(k)}</span><b>{esc(str(v))}</b></div>' for k, v in facts
    ) + "</div>"


def _coordinates(alert: Mapping[str, Any]) -> str:
    lat, lon = alert.get("lat"), alert.get("lon")
    if not _finite(lat) or not _finite(lon):
        return '<div class="coords sub">no coordinates (the pair has no CRS)</div>'
    text = f"{lat:.6f}, {lon:.6f}"
    link = MAP_URL.format(lat=lat, lon=lon)
    return (
        f'<div class="coords"><input id="coords" readonly value="{esc(text)}" '
        'aria-label="latitude, longitude"><button type="button" id="copy-coords">Copy</button>'
        f'<a class="button" id="map-link" href="{esc(link)}" target="_blank" '
        'rel="noopener noreferrer">Open in map ↗</a></div>'
    )


def _crops(page: QueuePage, alert: Mapping[str, Any]) -> str:
    if page.crops_problem:
        return f'<p class="none" id="no-crops">{esc(page.crops_problem)}</p>'
    site_id = str(alert["site_id"])
    captions = (("before", f"Before {alert.get('before_date') or ''}"),
                ("after", f"After {alert.get('after_date') or ''}"),
                ("probability", "Change probability on after"))
    return '<div class="crops">' + "".join(
        f'<figure><img src="{esc(alert_url(site_id, page.view, f"/{kind}.png"))}" '
        f'alt="{kind}" width="300"><figcaption>{esc(caption)}</figcaption></figure>'
        for kind, caption in captions
    ) + "</div>"


def _decision_form(page: QueuePage, alert: Mapping[str, Any], after: str | None) -> str:
    status = alert["status"]
    is_open = status in ("new", "ongoing")
    buttons = (
        ("confirm", "Confirm", "c", status == "confirmed"),
        ("dismiss", "Dismiss", "d", status == "dismissed"),
        ("reopen", "Reopen", "r", is_open),
    )
    button_html = "".join(
        f'<button type="submit" name="action" value="{value}" class="{value}" id="{value}"'
        f'{" disabled" if off else ""}>{label} <kbd>{key}</kbd></button>'
        for value, label, key, off in buttons
    )
    hidden = {"token": page.token, "version": str(page.version), "next": after or "",
              "view": page.view.query()}
    if not page.analyst_fixed:
        hidden["analyst"] = page.analyst
    fields = "".join(
        f'<input type="hidden" name="{k}" value="{esc(v)}">' for k, v in hidden.items()
    )
    action = esc(alert_url(str(alert["site_id"]), QueueFilter(), "/decision"))
    return (
        f'<form class="decide" id="decision" method="post" action="{action}">{fields}'
        '<textarea id="note" name="note" maxlength="2000" placeholder="note (n): why, '
        f'permit, what you saw…" aria-label="note"></textarea>{button_html}</form>'
    )


def _history(page: QueuePage) -> str:
    observations = "".join(_observation_row(h) for h in page.history)
    events = "".join(
        f"<tr><td>{esc(str(e['at']))}</td><td>{esc(str(e.get('run_id') or '–'))}</td>"
        f"<td>{esc(str(e['event']))}</td><td>{esc(str(e['status']))}</td>"
        f"<td>{'' if e.get('score') is None else format(e['score'], '.3f')}</td>"
        f"<td>{esc(str(e.get('note') or ''))}</td><td>{esc(str(e.get('analyst') or ''))}</td>"
        "</tr>"
        for e in page.events
    )
    timeline = site_timeline([h for h in page.history if "kind" in h])
    began = (f'<p class="began">Change began {esc(timeline.began())}</p>'
             if timeline.began() else "")
    points = timeline.scores()
    line = score_line_svg(points, page.alert_threshold) if len(points) > 1 else ""
    return (
        f'<h3>Observations</h3>{began}{line}<table id="nights"><thead><tr><th>acquired</th>'
        "<th>night</th><th>pair</th><th>kind</th><th>score</th><th>changed</th>"
        f"<th>observed</th></tr></thead><tbody>{observations}</tbody>"
        '</table><h3>History</h3><table id="events"><thead><tr><th>at (UTC)</th><th>night</th>'
        "<th>event</th><th>status</th><th>score</th><th>note</th><th>analyst</th></tr></thead>"
        f"<tbody>{events}</tbody></table>"
    )


def _observation_row(row: Mapping[str, Any]) -> str:
    observed = row.get("observed_fraction")
    seen = "–" if observed is None else f"{observed:.0%}"
    if not row.get("observed", True):
        seen += " (not observed)"
    score = row.get("score")
    return (
        f"<tr><td>{esc(str(row.get('acquired') or '–'))}</td>"
        f"<td>{esc(str(row['run_id']))}</td><td>{esc(str(row['pair_id']))}</td>"
        f"<td>{esc(str(row.get('kind') or '–'))}</td>"
        f"<td>{'–' if score is None else format(score, '.3f')}</td>"
        f"<td>{_area(row.get('changed_area_m2'), 'm2')}</td><td>{esc(seen)}</td></tr>"
    )


def _area(value: Any, unit: str) -> str:
    if not _finite(value):
        return "–"
    if unit == "px":
        return f"{value:,.0f} px"
    return f"{value / 10_000:,.2f} ha" if value >= 10_000 else f"{value:,.0f} m²"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
