"""The analyst's report: one static HTML page that works offline.

``report.html`` shows the alerts in rank order, each as a card with before, after and
probability-overlay crops of the site, its name, place, changed area, score and dates; then a
table of every scored site, and the pairs that failed. Everything is inside the one file: images
are base64 PNGs, the CSS is inline, and a few lines of inline JavaScript only record whether the
page loaded cleanly (``data-ready``, ``data-errors``, ``data-broken-images`` on ``<body>``), for
automated checks. No external URL is referenced.

The crops are :mod:`.crops`'.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
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

MAX_CARDS = 60
"""Alert cards shown at most; the rest are in the table and in alerts.csv."""

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


def format_area(area: float, unit: str = "m2") -> str:
    """``2,300 m²``, ``1.25 ha`` or ``230 px``."""
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


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------

_CSS = """
:root{--bg:#0f1216;--panel:#171c22;--line:#2a323c;--text:#e6e9ee;--muted:#97a1ad;
--accent:#00e5ff;--high:#ff5a36;--mid:#ffb020;--low:#5b6573}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{padding:22px 32px 18px;border-bottom:1px solid var(--line);
background:linear-gradient(180deg,#161c24,#0f1216)}
h1{margin:0 0 4px;font-size:22px;font-weight:650;letter-spacing:.2px}
h1 span{color:var(--accent)}
h2{font-size:16px;margin:28px 0 12px;color:var(--muted);text-transform:uppercase;
letter-spacing:1.2px;font-weight:600}
.sub{color:var(--muted);font-size:13px}
.stats{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.stat{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:8px 14px}
.stat b{display:block;font-size:20px;font-weight:650}
.stat span{color:var(--muted);font-size:12px}
.stat.stat-alert b{color:var(--high)} .stat.stat-fail b{color:var(--mid)}
main{padding:4px 32px 40px;max-width:1320px}
.sub{overflow-wrap:anywhere}
.alert{background:var(--panel);border:1px solid var(--line);border-radius:10px;
margin:0 0 16px;padding:14px 16px;display:grid;grid-template-columns:250px 1fr;gap:16px}
.alert.high{border-left:5px solid var(--high)} .alert.mid{border-left:5px solid var(--mid)}
.alert.low{border-left:5px solid var(--low)}
.rank{font-size:13px;color:var(--muted)} .rank b{font-size:26px;color:var(--text)}
.name{font-size:16px;font-weight:600;margin:2px 0 8px;word-break:break-word}
.score{display:inline-block;font-weight:700;font-size:15px;padding:2px 10px;border-radius:14px;
background:#262d36}
.high .score{background:var(--high);color:#111} .mid .score{background:var(--mid);color:#111}
dl{display:grid;grid-template-columns:auto 1fr;gap:3px 10px;margin:10px 0 0;font-size:13px}
dt{color:var(--muted)} dd{margin:0;font-variant-numeric:tabular-nums}
.crops{display:flex;gap:10px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0;max-width:100%} figure img{display:block;width:240px;max-width:100%;height:auto;
image-rendering:pixelated;border-radius:4px;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:12px;margin-top:4px}
.legend{height:8px;width:240px;max-width:100%;border-radius:4px;margin-top:6px;
background:linear-gradient(90deg,rgba(0,0,4,0),#550f6d,#ba3655,#f98c0a,#fcffa4)}
.legend-scale{display:flex;justify-content:space-between;width:240px;max-width:100%;
color:var(--muted);
font-size:11px}
.none{color:var(--muted);background:var(--panel);border:1px dashed var(--line);border-radius:10px;
padding:18px}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
th{color:var(--muted);font-weight:600;position:sticky;top:0;background:var(--bg)}
.table-wrap{overflow-x:auto;max-width:100%}
tr.is-alert td:first-child{border-left:3px solid var(--high)}
.tag{display:inline-block;margin-left:6px;padding:0 6px;border-radius:8px;font-size:11px;
color:var(--muted);border:1px solid var(--line)}
td.num{text-align:right}
.bar{display:inline-block;height:8px;border-radius:4px;background:var(--accent);
vertical-align:middle;margin-right:8px}
.failures li{margin:4px 0;color:var(--mid)} code{color:var(--text)}
#page-errors{color:#ff8080;white-space:pre-wrap}
footer{color:var(--muted);font-size:12px;padding:0 32px 30px;overflow-wrap:anywhere}
@media (max-width:640px){header{padding:16px 14px 12px} main{padding:4px 12px 28px}
footer{padding:0 12px 24px} .alert{grid-template-columns:minmax(0,1fr);padding:12px}}
"""

_HEAD_SCRIPT = """
window.__reportErrors = [];
window.onerror = function (message, source, line) {
  window.__reportErrors.push(String(message) + (line ? " (line " + line + ")" : ""));
  var box = document.getElementById("page-errors");
  if (box) { box.textContent = window.__reportErrors.join("\\n"); box.hidden = false; }
};
"""

_LOAD_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  var body = document.body;
  body.setAttribute("data-images", String(images.length));
  body.setAttribute("data-broken-images", String(broken.length));
  body.setAttribute("data-errors", String(window.__reportErrors.length));
  var page = document.documentElement;
  body.setAttribute("data-overflow-x", String(Math.max(0, page.scrollWidth - page.clientWidth)));
  var clipped = images.filter(function (img) {
    var box = img.getBoundingClientRect();
    return box.left < 0 || box.right > page.clientWidth + 0.5;
  });
  body.setAttribute("data-clipped-images", String(clipped.length));
  body.setAttribute("data-ready", "true");
});
"""


def write_report(
    path: str | Path,
    result: RankedRun,
    pairs: Mapping[str, PairSpec],
    settings: Mapping[str, Any] | None = None,
    title: str = "Construction alerts",
    max_cards: int = MAX_CARDS,
) -> Path:
    """Write the offline HTML report of a ranking run.

    Args:
        path: Where to write ``report.html`` (atomically).
        result: The ranking run (sites, alerts, failures, probability rasters).
        pairs: The pair specs by id, to read the crops from their scenes.
        settings: Run settings listed in the page footer (model, thresholds, ...).
        title: The page title.
        max_cards: Alert cards shown at most.
    """
    settings = dict(settings or {})
    alert_threshold = float(settings.get("alert threshold", 0.5))
    opened: dict[str, TilePair | None] = {}
    cards = []
    # GDAL's default cache is 5 % of the RAM: unbounded here. Files stay open across crops so
    # that the JPEG 2000 tiles / COG blocks near several sites are decoded once.
    with bounded_gdal_cache(), files_kept_open(strips=False):
        for row in result.alerts.head(max_cards).to_dict("records"):
            crops, problem = _crops_for(row, pairs, result.probability_paths, opened)
            cards.append(_card(row, crops, problem, alert_threshold))
    hidden = len(result.alerts) - len(cards)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = _page(
        title, result, cards, hidden, settings, alert_threshold, generated, len(pairs)
    )
    return atomic_write_text(path, page)


def _crops_for(
    row: Mapping[str, Any],
    pairs: Mapping[str, PairSpec],
    probability_paths: Mapping[str, Path],
    opened: dict[str, TilePair | None],
) -> tuple[SiteCrops | None, str | None]:
    """The crops of one alert, or None and the reason they could not be made."""
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
    try:
        crops = render_site_crops(pair, probability_path, geometry)
    except Exception as err:  # a broken crop must not cost the analyst the whole report
        return None, f"imagery could not be read ({type(err).__name__}: {err})"
    return crops, None if crops is not None else "site lies outside the pair"


def _card(
    row: Mapping[str, Any], crops: SiteCrops | None, problem: str | None, alert_threshold: float
) -> str:
    esc = html.escape
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
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in details)
    history = row.get("score_history")
    if isinstance(history, list) and len(history) > 1:
        dl += f"<dt>score over time</dt><dd>{score_line_svg(history, alert_threshold)}</dd>"
    if crops is not None:
        images = (
            f"<figure>{_img(crops.before, 'before')}<figcaption>Before {esc(before)}"
            f"</figcaption></figure>"
            f"<figure>{_img(crops.after, 'after')}<figcaption>After {esc(after)}"
            f"</figcaption></figure>"
            f"<figure>{_img(crops.overlay, 'change probability')}<figcaption>Change "
            f"probability on after</figcaption><div class=\"legend\"></div>"
            f'<div class="legend-scale"><span>0</span><span>0.5</span><span>1</span></div>'
            f"</figure>"
        )
    else:
        images = f'<p class="none">{esc(problem or "no imagery")}</p>'
    return (
        f'<article class="alert {_score_class(score, alert_threshold)}" '
        f'data-rank="{int(row["rank"])}" data-site-id="{esc(str(row["site_id"]))}" '
        f'data-pair-id="{esc(str(row["pair_id"]))}">'
        f'<div><div class="rank">#<b>{int(row["rank"])}</b></div>'
        f'<div class="name">{esc(str(row["name"]))}</div>'
        f'<span class="score" title="site score">{score:.2f}</span><dl>{dl}</dl></div>'
        f'<div class="crops">{images}</div></article>'
    )


def score_line_svg(
    points: Sequence[tuple[str, float | None]], threshold: float, width: int = 220,
    height: int = 48,
) -> str:
    """An inline SVG of a site's score over its acquisitions (dots; a gap where unobserved),
    with the alert threshold dashed; dates in the tooltips."""
    esc = html.escape
    days = [dt.date.fromisoformat(str(d)[:10]).toordinal() for d, _ in points]
    first, span = min(days), max(1, max(days) - min(days))

    def x(day: int) -> float:
        return 4 + (width - 8) * (day - first) / span

    def y(score: float) -> float:
        return height - 4 - (height - 8) * min(max(score, 0.0), 1.0)

    parts, line = [], []
    for day, (when, score) in zip(days, points, strict=True):
        if score is None:
            if len(line) > 1:
                parts.append(f'<polyline points="{" ".join(line)}" fill="none" '
                             'stroke="#8a96a3" stroke-width="1.5"/>')
            line = []
            parts.append(f'<circle cx="{x(day):.1f}" cy="{height - 4}" r="2" fill="#bbb">'
                         f"<title>{esc(str(when))}: not observed</title></circle>")
            continue
        line.append(f"{x(day):.1f},{y(score):.1f}")
        parts.append(f'<circle cx="{x(day):.1f}" cy="{y(score):.1f}" r="2.5" fill="#c0392b">'
                     f"<title>{esc(str(when))}: {score:.2f}</title></circle>")
    if len(line) > 1:
        parts.insert(0, f'<polyline points="{" ".join(line)}" fill="none" stroke="#8a96a3" '
                        'stroke-width="1.5"/>')
    limit = f'<line x1="0" x2="{width}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" ' \
            'stroke="#999" stroke-dasharray="3,3"/>'
    return (f'<svg class="score-line" width="{width}" height="{height}" role="img" '
            f'aria-label="score over time">{limit}{"".join(parts)}</svg>')


def _table(sites: pd.DataFrame, alerts: pd.DataFrame, alert_threshold: float) -> str:
    """The table of every scored site; only the run's alerts are highlighted as alerts.

    A site that scores above the alert threshold but is not an alert (dismissed by an analyst
    in the nightly state, or otherwise suppressed) is tagged as such, never highlighted.
    """
    esc = html.escape
    if sites.empty:
        return '<p class="none">No site was scored.</p>'
    head = (
        "<tr><th>#</th><th>site</th><th>name</th><th>pair</th><th>score</th>"
        "<th>changed</th><th>confidence</th><th>lat, lon</th><th>before</th><th>after</th></tr>"
    )
    alerted = _alert_keys(alerts)
    rows = []
    for row in sites.to_dict("records"):
        score = float(row["score"])
        is_alert = (str(row["site_id"]), str(row["pair_id"])) in alerted
        css = ' class="is-alert"' if is_alert else ""
        observed = row.get("observed", True)
        if observed is False or observed == 0:  # clouds, shadows or the swath hid most of it
            seen = float(row.get("valid_fraction", 0.0))
            tag = (
                f'<span class="tag" title="seen on {seen:.0%} of its pixels on both dates '
                '(clouds, shadows or outside a scene): no alert">not observed</span>'
            )
        elif not is_alert and score >= alert_threshold:
            tag = (
                '<span class="tag" title="scores above the alert threshold but is not an alert '
                '(dismissed or suppressed)">no alert</span>'
            )
        else:
            tag = ""
        rows.append(
            f"<tr{css}><td class=\"num\">{int(row['rank'])}</td>"
            f"<td>{esc(str(row['site_id']))}{tag}</td><td>{esc(str(row['name']))}</td>"
            f"<td>{esc(str(row['pair_id']))}</td>"
            f'<td><span class="bar" style="width:{max(score, 0.01) * 60:.0f}px"></span>'
            f"{score:.3f}</td>"
            f"<td class=\"num\">{format_area(float(row['changed_area_m2']), str(row['area_unit']))}"
            f"</td><td class=\"num\">{float(row['confidence']):.2f}</td>"
            f"<td>{format_place(float(row['lat']), float(row['lon']))}</td>"
            f"<td>{esc(format_date(row.get('before_date')))}</td>"
            f"<td>{esc(format_date(row.get('after_date')))}</td></tr>"
        )
    return (
        f'<div class="table-wrap"><table id="sites"><thead>{head}</thead>'
        f'<tbody>{"".join(rows)}</tbody></table></div>'
    )


def _alert_keys(alerts: pd.DataFrame) -> set[tuple[str, str]]:
    """The (site_id, pair_id) of every alert row."""
    if alerts.empty:
        return set()
    return set(zip(alerts["site_id"].astype(str), alerts["pair_id"].astype(str), strict=True))


def _page(
    title: str,
    result: RankedRun,
    cards: list[str],
    hidden: int,
    settings: Mapping[str, Any],
    alert_threshold: float,
    generated: str,
    n_pairs: int,
) -> str:
    esc = html.escape
    stats = [
        (str(n_pairs), "tile pairs", ""),
        (str(len(result.sites)), "sites scored", ""),
        (str(len(result.alerts)), f"alerts (score ≥ {alert_threshold:g})", "stat-alert"),
        (str(len(result.failures)), "pairs failed", "stat-fail" if len(result.failures) else ""),
    ]
    stat_html = "".join(
        f'<div class="stat {cls}"><b>{esc(v)}</b><span>{esc(k)}</span></div>'
        for v, k, cls in stats
    )
    if cards:
        alerts_html = "".join(cards)
        if hidden > 0:
            alerts_html += (
                f'<p class="sub">{hidden} more alert(s) are listed in the table below and in '
                f"alerts.csv.</p>"
            )
    else:
        alerts_html = (
            f'<p class="none" id="no-alerts">No site reached the alert threshold '
            f"({alert_threshold:g}). All scored sites are listed below.</p>"
        )
    failures = ""
    if not result.failures.empty:
        items = "".join(
            f"<li>{esc(str(r['reason']))}</li>"
            for r in result.failures.to_dict("records")
        )
        failures = f'<h2>Pairs that failed</h2><ul class="failures">{items}</ul>'
    setting_text = " · ".join(
        f"{esc(str(k))}: {esc(_setting(v))}" for k, v in settings.items() if v is not None
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{_CSS}</style>"
        f"<script>{_HEAD_SCRIPT}</script></head><body>"
        f"<header><h1><span>groundbreak</span> · {esc(title)}</h1>"
        f'<div class="sub">Run folder <code>{esc(result.out_dir.name)}</code> · generated '
        f"{esc(generated)}</div><div class=\"stats\">{stat_html}</div></header><main>"
        '<pre id="page-errors" hidden></pre>'
        f'<h2>Alerts, highest score first</h2><section id="alerts">{alerts_html}</section>'
        f"<h2>All scored sites</h2>{_table(result.sites, result.alerts, alert_threshold)}"
        f"{failures}</main>"
        f"<footer>Score = mean change probability over the site's changed pixels × "
        f"(1 − exp(−changed area / area scale)); outlines in cyan. {setting_text}</footer>"
        f"<script>{_LOAD_SCRIPT}</script></body></html>\n"
    )


def _setting(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
