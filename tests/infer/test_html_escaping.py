"""Hostile text is inert in every HTML page and comes out as data in every export (issue 24).

A real night runs over a demo pair whose pair id, and a watch-list site whose id and name, carry
markup (``<script>``, ``<img onerror>``, quotes, ``</textarea>``); through the review app an
analyst with such a name writes such a note. The night's report.html and the review app's queue,
alert and conflict pages (the real server) must show them as text only: no element, attribute
or script comes from them, and their escaped form is in the page. The night's CSV and GeoJSON
and the review app's exports must hold them unchanged, as data.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from markupsafe import escape

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.cli.demo import DEMO_PAIRS, DEMO_SITES
from groundbreak.infer.review.app import ReviewServer

NAME = "<script>alert(1)</script> \"Lot\" 'B' </textarea><iframe src=x></iframe>"
SITE_ID = "lv-01\"'><img src=x onerror=alert(2)>"
PAIR_ID = "lasvegas<img src=x onerror=alert(3)>\"'"
NOTE = "</textarea><script>alert(4)</script>\"quoted\" 'single' <iframe>"
ANALYST = "<script>alert(5)</script>'Eve\""
NIGHT = "2024-05-01"
ALERT_PAGE = f"/alerts/{quote(SITE_ID, safe='')}?status=all"
DECISION = f"/alerts/{quote(SITE_ID, safe='')}/decision"


class Markup(HTMLParser):
    """A page's elements, attribute values, script and textarea bodies, hidden fields and
    text, as a browser would parse them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.hidden: dict[str, str] = {}
        self.bodies: dict[str, list[str]] = {"script": [], "textarea": []}
        self.text: list[str] = []
        self._inside: str | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = {name: value or "" for name, value in attrs}
        self.attributes.extend(values.items())
        if tag == "input" and values.get("type") == "hidden":
            self.hidden[values["name"]] = values.get("value", "")
        if tag in self.bodies:
            self._inside = tag
            self.bodies[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._inside:
            self._inside = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._inside:
            self.bodies[self._inside][-1] += data


def assert_inert(page: str, *shown: str) -> Markup:
    """No element, event attribute or script of ``page`` comes from hostile text, and each of
    ``shown`` is in it as text or an attribute value, escaped."""
    markup = Markup(page)
    assert "iframe" not in markup.tags, "hostile text became an element"
    assert not [name for name, _ in markup.attributes if name.startswith("on")]
    assert ("src", "x") not in markup.attributes
    assert not [body for body in markup.bodies["script"] if "alert(" in body]
    assert "<script>alert" not in page and "<img src=x" not in page and "<iframe" not in page
    values = "".join(markup.text) + "".join(value for _, value in markup.attributes)
    for text in shown:
        assert text in values, text
        assert str(escape(text)) in page, text
    return markup


@pytest.fixture(scope="module")
def hostile_night(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> Path:
    """The state of one real night over the Las Vegas demo pair under a hostile pair id, with a
    hostile site id and name on the watch-list, and a second hostile pair that fails."""
    root = tmp_path_factory.mktemp("hostile")
    demo = DEMO_PAIRS.parent
    pairs = root / "pairs.csv"
    with open(pairs, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pair_id", "before", "after", "before_date", "after_date"])
        writer.writerow([PAIR_ID, demo / "lasvegas_before.tif", demo / "lasvegas_after.tif",
                         "2015-08-20", "2018-02-05"])
        writer.writerow([PAIR_ID + "-gone", root / "gone_before.tif", root / "gone_after.tif",
                         "2015-08-20", "2018-02-05"])
    watch = json.loads(DEMO_SITES.read_text())
    watch["features"] = [f for f in watch["features"]
                         if f["properties"]["site_id"].startswith("lv-")]
    watch["features"][0]["properties"].update(site_id=SITE_ID, name=NAME)
    sites = root / "watch_list.geojson"
    sites.write_text(json.dumps(watch))
    config = root / "nightly.yaml"
    config.write_text("alerts:\n  confirm_score: 0.0\n")  # one detection makes an alert
    state = root / "state"
    code = groundbreak(["nightly", "--config", str(config), "--state", str(state),
                        "--model", str(tiny_bundle), "--pairs", str(pairs), "--sites", str(sites),
                        "--alert-threshold", "0", "--run-id", NIGHT, "--device", "cpu",
                        "--log-format", "json"])
    assert code == 1  # the pair without files failed; the other was scored
    return state


@pytest.fixture
def demo_state(hostile_night: Path, tmp_path: Path) -> Path:
    """A copy of the hostile night's state: conftest's ``review_server`` serves it."""
    return Path(shutil.copytree(hostile_night, tmp_path / "state"))


def request(server: ReviewServer, method: str, path: str,
            form: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """One HTTP request to the server: status, headers (lower-case names) and body text."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    body = urlencode(form).encode() if form is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    reply = (response.status, {k.lower(): v for k, v in response.getheaders()},
             response.read().decode("utf-8"))
    connection.close()
    return reply


def decide(server: ReviewServer, form: dict[str, str]) -> int:
    """Confirm the hostile site with the hostile note, as the hostile analyst."""
    fields = {**form, "action": "confirm", "note": NOTE, "analyst": ANALYST}
    return request(server, "POST", DECISION, fields)[0]


def test_report_shows_hostile_names_and_ids_as_text(hostile_night: Path) -> None:
    page = (hostile_night / "runs" / NIGHT / "report.html").read_text(encoding="utf-8")
    markup = assert_inert(page, NAME, SITE_ID, PAIR_ID)
    assert len(markup.bodies["script"]) == 2  # the report's own two inline scripts
    assert ("data-site-id", SITE_ID) in markup.attributes
    assert ("data-pair-id", PAIR_ID) in markup.attributes
    failures = page.split('<ul class="failures">')[1].split("</ul>")[0]
    assert str(escape(PAIR_ID)) in failures  # the failed pair's reason names it, escaped


def test_night_exports_hold_hostile_text_as_data(hostile_night: Path) -> None:
    run = hostile_night / "runs" / NIGHT
    with open(run / "alerts.csv", newline="", encoding="utf-8") as handle:
        rows = {row["site_id"]: row for row in csv.DictReader(handle)}
    assert rows[SITE_ID]["name"] == NAME and rows[SITE_ID]["pair_id"] == PAIR_ID
    features = json.loads((run / "alerts.geojson").read_text(encoding="utf-8"))["features"]
    found = {f["properties"]["site_id"]: f["properties"] for f in features}
    assert found[SITE_ID]["name"] == NAME and found[SITE_ID]["pair_id"] == PAIR_ID


def test_review_pages_show_hostile_names_notes_and_analysts_as_text(
    review_server: ReviewServer,
) -> None:
    status, _, page = request(review_server, "GET", ALERT_PAGE)
    assert status == 200
    assert decide(review_server, Markup(page).hidden) == 303
    for path, shown in (("/?status=all", (NAME, SITE_ID)),  # the queue lists the site
                        (ALERT_PAGE, (NAME, SITE_ID, PAIR_ID, NOTE, ANALYST))):
        status, headers, page = request(review_server, "GET", path)
        assert status == 200 and headers["content-type"].startswith("text/html")
        markup = assert_inert(page, *shown)
        assert markup.bodies["script"] == [""]  # only the app's own script file
        assert markup.bodies["textarea"] == [""]  # the note field is empty and still closes
        assert ("data-site-id", SITE_ID) in markup.attributes


def test_conflict_page_keeps_the_hostile_note_as_text(review_server: ReviewServer) -> None:
    form = Markup(request(review_server, "GET", ALERT_PAGE)[2]).hidden
    assert decide(review_server, form) == 303
    stale = {**form, "action": "dismiss", "note": NOTE}  # the version before the decision
    status, _, page = request(review_server, "POST", DECISION, stale)
    assert status == 409
    markup = assert_inert(page, NOTE, SITE_ID)
    assert markup.bodies["textarea"] == [NOTE]  # kept whole, to copy


def test_review_exports_hold_hostile_text_as_data(review_server: ReviewServer) -> None:
    form = Markup(request(review_server, "GET", ALERT_PAGE)[2]).hidden
    assert decide(review_server, form) == 303
    status, headers, text = request(review_server, "GET", "/export.csv?status=all")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert headers["x-content-type-options"] == "nosniff"
    rows = {row["site_id"]: row for row in csv.DictReader(io.StringIO(text))}
    assert (rows[SITE_ID]["name"], rows[SITE_ID]["note"]) == (NAME, NOTE)
    assert rows[SITE_ID]["pair_id"] == PAIR_ID
    status, headers, text = request(review_server, "GET", "/export.geojson?status=all")
    assert status == 200 and headers["content-type"] == "application/geo+json"
    found = {f["properties"]["site_id"]: f["properties"] for f in json.loads(text)["features"]}
    assert (found[SITE_ID]["name"], found[SITE_ID]["note"]) == (NAME, NOTE)
    assert found[SITE_ID]["pair_id"] == PAIR_ID
