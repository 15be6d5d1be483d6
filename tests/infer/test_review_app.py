"""``groundbreak review`` over HTTP: the real server on 127.0.0.1 over a real nightly state of the
bundled demo pairs: queue, filters, crops, decisions, conflicts, exports and bad input."""

from __future__ import annotations

import http.client
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.cli.demo import DEMO_PAIRS, DEMO_SITES
from groundbreak.infer.nightly.lock import RunLock
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.review.app import ReviewServer, make_server


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def request(server: ReviewServer, method: str, path: str, form: dict | None = None,
            headers: dict[str, str] | None = None) -> Reply:
    """One raw HTTP request (the path is sent as is; redirects are not followed)."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    body = urlencode(form).encode() if form is not None else None
    sent = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    connection.request(method, path, body=body, headers={**sent, **(headers or {})})
    response = connection.getresponse()
    reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                  response.read())
    connection.close()
    return reply


class Page(HTMLParser):
    """The queue page's ids, decision form fields, crops and counts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.queue: list[tuple[str, str]] = []
        self.form: dict[str, str] = {}
        self.images: list[str] = []
        self.alert: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.body: dict[str, str] = {}
        self._count: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag == "li" and "data-site-id" in a:
            self.queue.append((a["data-site-id"], a["data-status"]))
        if tag == "input" and a.get("type") == "hidden":
            self.form[a["name"]] = a.get("value", "")
        if tag == "img":
            self.images.append(a["src"])
        if tag == "div" and a.get("id") == "alert":
            self.alert = a
        if a.get("id", "").startswith("count-"):
            self._count = a["id"][6:]

    def handle_data(self, data: str) -> None:
        if self._count and data.strip().isdigit():
            self.counts[self._count] = int(data)
            self._count = None


def page(server: ReviewServer, path: str = "/") -> Page:
    reply = request(server, "GET", path)
    assert reply.status == 200, reply.text
    return Page(reply.text)


def decide(server: ReviewServer, site_id: str, form: dict[str, str], action: str,
           note: str = "", analyst: str = "") -> Reply:
    fields = {**form, "action": action, "note": note}
    if analyst:
        fields["analyst"] = analyst
    return request(server, "POST", f"/alerts/{site_id}/decision", fields)


def alerts_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = groundbreak(["alerts", *args])
    return code, capsys.readouterr().out


def listed(capsys: pytest.CaptureFixture, state: Path) -> dict[str, dict]:
    code, out = alerts_cli(capsys, "list", "--state", str(state), "--format", "json")
    assert code == 0
    return {row["site_id"]: row for row in json.loads(out)}


def assert_clear_page(reply: Reply, status: int, *words: str) -> None:
    assert reply.status == status, (reply.status, reply.text[:500])
    assert reply.headers["content-type"].startswith("text/html")
    assert "Traceback" not in reply.text and 'File "' not in reply.text
    for word in words:
        assert word in reply.text, (word, reply.text[:800])


def test_queue_lists_open_alerts_highest_score_first_with_counts(
    review_server: ReviewServer, demo_state: Path, capsys: pytest.CaptureFixture
) -> None:
    queue = page(review_server)
    alerts = listed(capsys, demo_state)
    assert [site for site, _ in queue.queue] == list(alerts)  # the CLI's order: score first
    scores = [alerts[site]["score"] for site, _ in queue.queue]
    assert scores == sorted(scores, reverse=True) and len(scores) == 13
    assert queue.counts == {"open": 13, "new": 13, "ongoing": 0, "confirmed": 0,
                            "dismissed": 0, "all": 13, "view": 13}
    assert queue.alert["data-site-id"] == queue.queue[0][0]  # the first is on show
    assert queue.body["data-next"] == f"/alerts/{queue.queue[1][0]}"


@pytest.mark.parametrize(("query", "expected"), [
    ({"site": "lv-"}, {"lv-01", "lv-02", "lv-03", "lv-04"}),
    ({"site": "housing"}, {"lv-02"}),
    ({"ground": "dubai"}, {"dx-01", "dx-02", "dx-03", "dx-04"}),
    ({"date_from": "2018-04-01"}, {"cq-01", "cq-02", "cq-03", "cq-04", "cq-05"}),
    ({"date_to": "2018-03-01", "site": "lv-0"}, {"lv-01", "lv-02", "lv-03", "lv-04"}),
    ({"status": "confirmed"}, set()),
])
def test_filters_narrow_the_queue_and_exports_follow_the_view(
    review_server: ReviewServer, query: dict[str, str], expected: set[str]
) -> None:
    path = "/?" + urlencode(query)
    shown = page(review_server, path)
    assert {site for site, _ in shown.queue} == expected
    assert shown.counts["view"] == len(expected) and shown.counts["all"] == 13
    csv_reply = request(review_server, "GET", "/export.csv?" + urlencode(query))
    assert csv_reply.status == 200 and csv_reply.headers["content-type"].startswith("text/csv")
    assert "attachment" in csv_reply.headers["content-disposition"]
    lines = csv_reply.text.splitlines()
    assert lines[0].startswith("site_id,name,status,score")
    assert [line.split(",")[0] for line in lines[1:]] == [site for site, _ in shown.queue]
    geo = json.loads(request(review_server, "GET", "/export.geojson?" + urlencode(query)).body)
    assert geo["type"] == "FeatureCollection"
    assert [f["properties"]["site_id"] for f in geo["features"]] == [s for s, _ in shown.queue]
    for feature in geo["features"]:  # the watch-list outlines, in lon/lat
        assert feature["geometry"]["type"] == "Polygon"
        lon, lat = feature["geometry"]["coordinates"][0][0]
        assert -180 <= lon <= 180 and -90 <= lat <= 90


def test_min_score_filter(review_server: ReviewServer, demo_state: Path,
                          capsys: pytest.CaptureFixture) -> None:
    scores = sorted(row["score"] for row in listed(capsys, demo_state).values())
    cut = scores[len(scores) // 2]
    shown = page(review_server, f"/?min_score={cut}")
    assert len(shown.queue) == sum(s >= cut for s in scores)
    shown = page(review_server, f"/?max_score={cut}&status=all")
    assert len(shown.queue) == sum(s <= cut for s in scores)


def test_alert_page_has_crops_facts_coordinates_map_and_history(
    review_server: ReviewServer,
) -> None:
    reply = request(review_server, "GET", "/alerts/lv-02")
    shown = Page(reply.text)
    assert shown.alert == {"id": "alert", "data-site-id": "lv-02", "data-status": "new"}
    assert sorted(shown.images) == ["/alerts/lv-02/after.png", "/alerts/lv-02/before.png",
                                    "/alerts/lv-02/probability.png"]
    sizes = set()
    for src in shown.images:
        crop = request(review_server, "GET", src)
        assert crop.status == 200 and crop.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(crop.body))
        assert image.format == "PNG" and image.width >= 64
        sizes.add(image.size)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert (pixels == (0, 229, 255)).all(axis=1).any(), "the site is outlined"
    assert len(sizes) == 1
    text = reply.text
    assert "Las Vegas: southeast housing tract" in text
    assert re.search(r'id="coords" readonly value="36\.\d{6}, -115\.\d{6}"', text)
    assert re.search(r'href="https://www\.openstreetmap\.org/\?mlat=36\.\d+&amp;mlon=-115', text)
    assert "100% of the site" in text  # observed fraction: no cloud over Las Vegas
    assert "2015-08-20" in text and "2018-02-05" in text and " ha<" in text
    assert '<table id="nights">' in text and "<td>2024-05-01</td><td>lasvegas</td>" in text


def test_confirm_dismiss_reopen_are_written_like_the_cli(
    review_server: ReviewServer, demo_state: Path, capsys: pytest.CaptureFixture
) -> None:
    shown = page(review_server, "/alerts/lv-02?site=lv-")
    reply = decide(review_server, "lv-02", shown.form, "confirm", "new housing tract")
    assert reply.status == 303
    ids = [site for site, _ in shown.queue]
    following = ids[ids.index("lv-02") + 1] if ids[-1] != "lv-02" else ids[-2]
    assert reply.headers["location"] == f"/alerts/{following}?site=lv-&saved=lv-02"
    after = request(review_server, "GET", reply.headers["location"])
    assert "Saved: lv-02 is now confirmed." in after.text
    shown = page(review_server, "/alerts/lv-01")
    assert decide(review_server, "lv-01", shown.form, "dismiss", "parking lot",
                  analyst="Bo Second").status == 303
    alerts = listed(capsys, demo_state)
    assert alerts["lv-02"]["status"] == "confirmed"
    assert alerts["lv-02"]["note"] == "new housing tract"
    assert alerts["lv-01"]["status"] == "dismissed"
    assert alerts["lv-01"]["dismissed_score"] == pytest.approx(alerts["lv-01"]["score"])
    code, out = alerts_cli(capsys, "history", "lv-02", "--state", str(demo_state))
    assert code == 0
    last = out.splitlines()[-1]
    assert "confirmed" in last and "new housing tract" in last and "Ada Tester" in last
    _, out = alerts_cli(capsys, "history", "lv-01", "--state", str(demo_state))
    assert "Bo Second" in out.splitlines()[-1]
    shown = page(review_server, "/alerts/lv-01")
    assert shown.alert["data-status"] == "dismissed"
    assert decide(review_server, "lv-01", shown.form, "reopen", "look again").status == 303
    assert listed(capsys, demo_state)["lv-01"]["status"] == "new"
    queue = page(review_server)
    assert "lv-02" not in {s for s, _ in queue.queue} and "lv-01" in {s for s, _ in queue.queue}
    assert queue.counts["confirmed"] == 1 and queue.counts["open"] == 12


def test_two_analysts_on_one_alert_get_a_conflict_not_an_overwrite(
    review_server: ReviewServer, demo_state: Path, capsys: pytest.CaptureFixture
) -> None:
    first, second = page(review_server, "/alerts/dx-01"), page(review_server, "/alerts/dx-01")
    assert decide(review_server, "dx-01", first.form, "dismiss", "cloud edge",
                  analyst="Ann").status == 303
    reply = decide(review_server, "dx-01", second.form, "confirm", "my careful note",
                   analyst="Ben")
    assert_clear_page(reply, 409, "Conflict", "dismissed by Ann", "nothing was changed",
                      "my careful note")
    alert = listed(capsys, demo_state)["dx-01"]
    assert alert["status"] == "dismissed" and alert["note"] == "cloud edge"
    again = page(review_server, "/alerts/dx-01")  # a fresh look may decide
    assert decide(review_server, "dx-01", again.form, "confirm", analyst="Ben").status == 303
    assert listed(capsys, demo_state)["dx-01"]["status"] == "confirmed"


def test_a_decision_during_a_running_night_is_kept(
    review_server: ReviewServer, demo_state: Path, tiny_bundle: Path,
    capsys: pytest.CaptureFixture
) -> None:
    seen = page(review_server, "/alerts/cq-01")
    lock = RunLock(demo_state)
    lock.acquire()  # a night holds the state's lock: decisions still go through
    try:
        shown = page(review_server, "/alerts/cq-02")
        assert decide(review_server, "cq-02", shown.form, "dismiss", "crane").status == 303
    finally:
        lock.release()
    nightly = ["nightly", "--state", str(demo_state), "--model", str(tiny_bundle), "--pairs",
               str(DEMO_PAIRS), "--sites", str(DEMO_SITES), "--alert-threshold", "0",
               "--no-report", "--device", "cpu", "--log-format", "json"]
    assert groundbreak([*nightly, "--run-id", "2024-05-02"]) == 0  # a night updates cq-01
    capsys.readouterr()
    assert listed(capsys, demo_state)["cq-01"]["status"] in ("new", "ongoing")
    # the page was loaded before that night: the night's update is not a conflict
    assert decide(review_server, "cq-01", seen.form, "confirm", "towers").status == 303
    assert groundbreak([*nightly, "--run-id", "2024-05-03"]) == 0
    capsys.readouterr()
    alerts = listed(capsys, demo_state)
    assert alerts["cq-01"]["status"] == "confirmed" and alerts["cq-02"]["status"] == "dismissed"


@pytest.mark.parametrize("path", [
    "/alerts/nope", "/alerts/nope/before.png", "/alerts/%3Cscript%3E", "/alerts/lv-02/mask.png",
    "/alerts/lv-02/before.tif", "/alerts//before.png", "/nothing-here",
])
def test_unknown_alerts_and_pages_are_clear_404_pages(review_server: ReviewServer,
                                                      path: str) -> None:
    reply = request(review_server, "GET", path)
    assert_clear_page(reply, 404)
    assert "<script>" not in reply.text


def test_bad_decisions_and_filters_are_clear_pages(review_server: ReviewServer,
                                                   demo_state: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    form = page(review_server, "/alerts/lv-03").form
    with NightlyState(demo_state, read_only=True) as state:
        before = (state.alerts(), state.alert_events())
    assert_clear_page(decide(review_server, "nope", form, "confirm"), 404, "no alert for site")
    assert_clear_page(decide(review_server, "lv-03", form, "approve"), 400, "Bad decision")
    assert_clear_page(decide(review_server, "lv-03", {**form, "token": "stolen"}, "confirm"),
                      403, "Form expired")
    assert_clear_page(decide(review_server, "lv-03", {**form, "version": "x"}, "confirm"), 400)
    assert_clear_page(decide(review_server, "lv-03", form, "confirm", "x" * 3000), 400,
                      "Note too long")
    assert_clear_page(request(review_server, "POST", "/export.csv", {}), 405)
    assert_clear_page(request(review_server, "PUT", "/alerts/lv-03"), 405)
    assert_clear_page(request(review_server, "GET", "/?min_score=abc"), 400, "min_score")
    assert_clear_page(request(review_server, "GET", "/?status=maybe"), 400, "status")
    assert_clear_page(request(review_server, "GET", "/?date_from=yesterday"), 400, "date")
    assert_clear_page(request(review_server, "GET", "/export.csv?min_score=nan"), 400)
    with NightlyState(demo_state, read_only=True) as state:
        assert (state.alerts(), state.alert_events()) == before  # nothing was decided
    assert listed(capsys, demo_state)["lv-03"]["status"] == "new"


@pytest.mark.parametrize("path", [
    "/state.sqlite", "/../state.sqlite", "/static/../state.sqlite", "/%2e%2e/state.sqlite",
    "/static/%2e%2e/%2e%2e/etc/passwd", "/alerts/..%2F..%2Fstate.sqlite/before.png",
    "/alerts/../../../etc/passwd", "/runs/2024-05-01/sites.csv", "/../../../../etc/passwd",
    "/static/review.css/../../state.sqlite", "//etc/passwd", "/static/",
])
def test_nothing_outside_the_app_routes_is_served(review_server: ReviewServer,
                                                  path: str) -> None:
    reply = request(review_server, "GET", path)
    assert reply.status in (400, 404)
    assert b"SQLite format" not in reply.body and b"root:" not in reply.body
    assert b"site_id,name" not in reply.body


def test_requests_for_another_host_name_are_refused(review_server: ReviewServer) -> None:
    reply = request(review_server, "GET", "/", headers={"Host": "evil.example:8765"})
    assert_clear_page(reply, 421, "Wrong host")
    assert "lv-02" not in reply.text


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_a_damaged_state_is_a_clear_page(review_server: ReviewServer, demo_state: Path,
                                         damage: str) -> None:
    database = demo_state / "state.sqlite"
    if damage == "missing":
        database.unlink()
    else:
        data = database.read_bytes()
        database.write_bytes(b"not a database " * 300 if damage == "garbage"
                             else data[: len(data) // 3])
    for method, path in (("GET", "/"), ("GET", "/alerts/lv-02"), ("GET", "/export.csv"),
                         ("GET", "/alerts/lv-02/before.png")):
        reply = request(review_server, method, path)
        assert_clear_page(reply, 503, "cannot be read", "Backup and recovery")
    reply = request(review_server, "POST", "/alerts/lv-02/decision",
                    {"token": review_server.app.token, "action": "confirm", "version": "0"})
    assert_clear_page(reply, 503, "cannot be read")


def test_cli_refuses_a_missing_or_damaged_state_and_a_bad_port(
    tmp_path: Path, demo_state: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert groundbreak(["review", "--state", str(tmp_path / "none")]) == 2
    assert "not a nightly state directory" in capsys.readouterr().err
    monkeypatch.setenv("GROUNDBREAK_STATE", str(tmp_path / "from-env"))
    assert groundbreak(["review"]) == 2  # the state from the environment, as for 'alerts'
    assert "from-env: not a nightly state directory" in capsys.readouterr().err
    monkeypatch.delenv("GROUNDBREAK_STATE")
    assert groundbreak(["review"]) == 2
    assert "GROUNDBREAK_STATE" in capsys.readouterr().err
    assert groundbreak(["review", "--state", str(demo_state), "--port", "70000"]) == 2
    capsys.readouterr()
    (demo_state / "state.sqlite").write_bytes(b"garbage" * 500)
    assert groundbreak(["review", "--state", str(demo_state)]) == 5
    err = capsys.readouterr().err
    assert "Backup and recovery" in err and "Traceback" not in err


def test_cli_serves_on_localhost_and_stops_on_ctrl_c(demo_state: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "groundbreak.infer.cli", "review", "--state", str(demo_state),
         "--port", "0", "--analyst", "Cli"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line + process.stderr.read()
        connection = http.client.HTTPConnection("127.0.0.1", int(match[1]), timeout=60)
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.status == 200 and b"lv-02" in response.read()
        connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 90  # generous: a loaded 2-core machine once needed > 30 s
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, process.stderr.read()


def test_reopen_and_analyst_through_the_cli_share_the_state_code(
    demo_state: Path, capsys: pytest.CaptureFixture
) -> None:
    state = str(demo_state)
    assert alerts_cli(capsys, "dismiss", "dx-04", "--state", state, "--analyst", "Cy")[0] == 0
    assert alerts_cli(capsys, "reopen", "dx-04", "--state", state, "--note", "new permit")[0] == 0
    _, out = alerts_cli(capsys, "history", "dx-04", "--state", state)
    events = [line.split()[2] for line in out.split("events:\n")[-1].splitlines()[1:]]
    assert events == ["new", "dismissed", "reopened"] and "Cy" in out
    with NightlyState(demo_state, read_only=True) as read:
        assert read.alert("dx-04")["status"] == "new"
        assert read.alert("dx-04")["dismissed_score"] is None


def test_rasters_recorded_outside_the_state_are_never_read(
    review_server: ReviewServer, demo_state: Path, demo_state_template: Path
) -> None:
    # The copy's pairs rows name the template's rasters (outside this state directory); with
    # the copy's own rasters gone, the app shows why instead of reading the template's.
    recorded = demo_state_template / "runs" / "2024-05-01" / "pairs" / "lasvegas"
    assert (recorded / "probability.tif").is_file()
    shutil.rmtree(demo_state / "runs")
    reply = request(review_server, "GET", "/alerts/lv-02")
    assert reply.status == 200 and 'id="no-crops"' in reply.text and "pruned" in reply.text
    assert_clear_page(request(review_server, "GET", "/alerts/lv-02/before.png"), 404, "pruned")


# -- beyond loopback: Host check on every bind, access tokens, the token's analyst ------------

ADA_TOKEN, BO_TOKEN = "ada-" + "a" * 28, "bo-" + "b" * 29


@pytest.fixture
def open_server(demo_state: Path) -> Iterator[ReviewServer]:
    """The review app on every address (0.0.0.0) with one access token per analyst."""
    server = make_server(demo_state, "0.0.0.0", 0, analyst="Server Default", quiet=True,
                         access={ADA_TOKEN: "Ada", BO_TOKEN: "Bo"},
                         allowed_hosts=["review.example.org"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def send(server: ReviewServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, host: str | None = None) -> Reply:
    """One raw request to 127.0.0.1 with the given Host header (default: 127.0.0.1:port)."""
    port = server.server_address[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = {"Host": f"127.0.0.1:{port}" if host is None else host, **(headers or {})}
    if body is not None:
        sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                  response.read())
    connection.close()
    return reply


def signed_in(server: ReviewServer, token: str) -> dict[str, str]:
    """The cookie header a browser sends after following the token link."""
    reply = send(server, "GET", f"/alerts/lv-03?token={token}&status=all")
    assert reply.status == 303, reply.text
    assert reply.headers["location"] == "/alerts/lv-03?status=all"
    cookie = reply.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return {"Cookie": cookie.split(";", 1)[0]}


def test_a_wildcard_bind_keeps_the_host_check(open_server: ReviewServer) -> None:
    bearer = {"Authorization": f"Bearer {ADA_TOKEN}"}
    port = open_server.server_address[1]
    for host in ("evil.example", f"evil.example:{port}", "0.0.0.0", ""):
        reply = send(open_server, "GET", "/", headers=bearer, host=host)
        assert_clear_page(reply, 421, "Wrong host")
        assert "lv-02" not in reply.text
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "review.example.org"):
        assert send(open_server, "GET", "/", headers=bearer, host=host).status == 200


def test_beyond_loopback_every_request_needs_a_token(open_server: ReviewServer) -> None:
    for path in ("/", "/alerts/lv-03", "/export.csv", "/alerts/lv-03/before.png"):
        reply = send(open_server, "GET", path)
        assert_clear_page(reply, 401, "Access token needed")
        assert "lv-03" not in reply.text and reply.headers["www-authenticate"] == "Bearer"
    for headers in ({"Authorization": "Bearer wrong-token-wrong-token"},
                    {"Cookie": "groundbreak_review_token=wrong-token-wrong"},
                    {"Cookie": "groundbreak_review_token=" + ADA_TOKEN[:-1]}):
        assert_clear_page(send(open_server, "GET", "/", headers=headers), 401)
    assert_clear_page(send(open_server, "GET", "/?token=nope-nope-nope-nope"), 401,
                      "not valid")
    with pytest.raises(ValueError, match="needs access tokens"):
        make_server(open_server.app.state_dir, "0.0.0.0", 0, quiet=True)
    cookie = signed_in(open_server, ADA_TOKEN)
    reply = send(open_server, "GET", "/alerts/lv-03", headers=cookie)
    assert reply.status == 200 and 'id="analyst-name">Ada<' in reply.text
    assert 'name="analyst"' not in reply.text  # the name is not the form's to choose
    # the token link never redirects off the app
    reply = send(open_server, "GET", f"/\\evil.example?token={ADA_TOKEN}")
    assert reply.status == 303 and reply.headers["location"] == "/"


def test_decisions_are_recorded_as_the_tokens_analyst(open_server: ReviewServer,
                                                      demo_state: Path) -> None:
    for token, site, analyst in ((ADA_TOKEN, "lv-03", "Ada"), (BO_TOKEN, "dx-04", "Bo")):
        cookie = signed_in(open_server, token)
        shown = Page(send(open_server, "GET", f"/alerts/{site}", headers=cookie).text)
        form = {**shown.form, "action": "confirm", "note": "seen", "analyst": "Mallory"}
        reply = send(open_server, "POST", f"/alerts/{site}/decision",
                     urlencode(form).encode(), headers=cookie)
        assert reply.status == 303, reply.text
        with NightlyState(demo_state, read_only=True) as state:
            assert state.alert_events(site)[-1]["analyst"] == analyst
    shown = Page(send(open_server, "GET", "/alerts/cq-01",
                      headers=signed_in(open_server, ADA_TOKEN)).text)
    reply = send(open_server, "POST", "/alerts/cq-01/decision",
                 urlencode({**shown.form, "action": "confirm"}).encode())
    assert_clear_page(reply, 401)  # a form without the token's cookie is refused


def test_token_file_maps_tokens_to_analysts(tmp_path: Path) -> None:
    from groundbreak.datasets.errors import InputError
    from groundbreak.infer.cli.review import read_token_file

    good = tmp_path / "tokens.txt"
    good.write_text(f"# analysts\n{ADA_TOKEN} Ada Lovelace\n\n{BO_TOKEN}\tBo\n")
    assert read_token_file(str(good)) == {ADA_TOKEN: "Ada Lovelace", BO_TOKEN: "Bo"}
    for text, problem in ((f"{ADA_TOKEN}\n", "line 1: expected 'TOKEN ANALYST NAME'"),
                          ("short Ada\n", "line 1: expected"),
                          (f"{ADA_TOKEN} A\n{ADA_TOKEN} B\n", "line 2: this token is given "
                           "twice"),
                          ("# nothing\n", "holds no token")):
        good.write_text(text)
        with pytest.raises(InputError, match=problem):
            read_token_file(str(good))


def test_cli_beyond_loopback_prints_a_token_and_requires_it(demo_state: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "groundbreak.infer.cli", "review", "--state", str(demo_state),
         "--port", "0", "--host", "0.0.0.0", "--analyst", "Cli"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{20,})", line)
        assert match, line  # (stderr is read once the process has stopped)
        port, token = int(match[1]), match[2]
        for headers, status in (({}, 401), ({"Authorization": f"Bearer {token}"}, 200),
                                ({"Authorization": f"Bearer {token}",
                                  "Host": f"attacker.example:{port}"}, 421)):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("GET", "/", headers=headers)
            response = connection.getresponse()
            assert response.status == status
            response.read()
            connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 90
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, process.stderr.read()


# -- odd input is a 4xx page, never a 500 -------------------------------------------------------

@pytest.mark.parametrize("token", ["é" * 32, "\U0001f3d7", "\x00"])
def test_a_non_ascii_form_token_is_a_403(review_server: ReviewServer, token: str) -> None:
    form = page(review_server, "/alerts/lv-03").form
    reply = decide(review_server, "lv-03", {**form, "token": token}, "confirm")
    assert_clear_page(reply, 403, "Form expired")


def test_invalid_utf8_in_forms_and_tokens_is_a_4xx(review_server: ReviewServer,
                                                   open_server: ReviewServer) -> None:
    form = page(review_server, "/alerts/lv-03").form
    body = urlencode({**form, "action": "confirm"}).encode().replace(
        b"token=", b"token=%FF%FE\xff\xfe", 1)
    reply = request_bytes(review_server, "/alerts/lv-03/decision", body)
    assert_clear_page(reply, 403)
    for headers in ({"Authorization": "Bearer \xe9\xe9\xe9\xe9"},
                    {"Cookie": "groundbreak_review_token=\xff\xfe\xe9"}):
        assert_clear_page(send(open_server, "GET", "/", headers=headers), 401)
    assert_clear_page(send(open_server, "GET", "/?token=%FF%FE%E9"), 401)


def request_bytes(server: ReviewServer, path: str, body: bytes) -> Reply:
    """A POST of raw bytes (not necessarily UTF-8)."""
    return send(server, "POST", path, body)


def test_more_than_32_fields_is_a_400(review_server: ReviewServer,
                                      open_server: ReviewServer) -> None:
    form = page(review_server, "/alerts/lv-03").form
    fields = {**form, "action": "confirm", **{f"f{i}": "x" for i in range(40)}}
    assert_clear_page(decide(review_server, "lv-03", fields, "confirm"), 400, "at most 32")
    many = "&".join(f"f{i}=x" for i in range(40))
    assert_clear_page(request(review_server, "GET", f"/?{many}"), 400, "at most 32")
    assert_clear_page(request(review_server, "GET", f"/export.csv?{many}"), 400)
    assert_clear_page(send(open_server, "GET", f"/?token={ADA_TOKEN}&{many}"), 400)
