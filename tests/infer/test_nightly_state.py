"""The nightly building blocks: state, alert rules, lock, atomic writes, hashing, config."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from groundbreak.datasets.errors import InputError
from groundbreak.infer.atomic import (
    atomic_write_json,
    publish_dir,
    remove_temps,
    temp_sibling,
)
from groundbreak.infer.cli.nightly import build_parser as build_nightly_parser
from groundbreak.infer.cli.nightly import predictor_flags
from groundbreak.infer.nightly.alert_policy import AlertPolicy
from groundbreak.infer.nightly.config import KEYS, build_config, read_config_file
from groundbreak.infer.nightly.hashing import ContentHasher
from groundbreak.infer.nightly.lock import LockHeldError, RunLock
from groundbreak.infer.nightly.logging import NightLog
from groundbreak.infer.nightly.pairing import PairingRule
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.nightly.timeline import site_timeline

OSCD = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"


def _site(site_id: str, score: float, pair_id: str = "p", after_date: str | None = None,
          area: float | None = None) -> dict:
    return {"site_id": site_id, "name": site_id, "pair_id": pair_id, "score": score,
            "lon": 1.0, "lat": 2.0, "after_date": after_date, "changed_area_m2": area}


@pytest.fixture
def state(tmp_path: Path):
    with NightlyState(tmp_path / "state") as opened:
        yield opened


def test_state_uses_wal_and_creates_tables(state: NightlyState) -> None:
    assert state.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in state.db.execute("SELECT name FROM sqlite_master")}
    assert {"runs", "pairs", "site_scores", "acquisitions", "alerts", "alert_events",
            "file_hashes", "night_pairs"} <= tables


def test_pair_is_done_at_most_once(state: NightlyState) -> None:
    attempt = state.start_run("n1", os.getpid(), {}, "m")
    row = state.record_done("n1", attempt, "p1", "h", "m", "out", 1.0, [_site("s1", 0.7)])
    assert state.find_done("p1", "h", "m") == row
    assert state.find_done("p1", "h", "other-model") is None
    # scored again (its outputs were pruned): the same row, with the new outputs and scores
    assert state.record_done("n2", attempt, "p1", "h", "m", "out2", 1.0, [_site("s2", 0.6)]) == row
    assert [(r["status"], r["outputs"]) for r in state.pair_rows()] == [("done", "out2")]
    assert [s["site_id"] for s in state.night_scores("n2")] == ["s2"]
    assert [s["site_id"] for s in state.night_scores("n1")] == ["s2"]


def test_reused_pair_joins_a_later_night(state: NightlyState) -> None:
    attempt = state.start_run("n1", os.getpid(), {}, "m")
    row = state.record_done("n1", attempt, "p1", "h", "m", "out", 1.0, [_site("s1", 0.7)])
    assert state.link_reused("n2", row)
    assert not state.link_reused("n2", row)
    scores = state.night_scores("n2")
    assert [(s["site_id"], s["reused"], s["scored_by"]) for s in scores] == [("s1", 1, "n1")]


def test_interrupted_attempt_is_marked_by_the_next_one(state: NightlyState) -> None:
    state.start_run("n1", 111, {}, "m")
    state.start_run("n1", 222, {}, "m")
    assert [r["status"] for r in state.runs("n1")] == ["interrupted", "running"]


ONE_DETECTION = AlertPolicy(confirm_detections=1)
"""A policy where one detection is an alert (the lifecycle after confirmation)."""


def test_alert_lifecycle_new_ongoing_confirmed(state: NightlyState) -> None:
    outcome = state.update_alerts("n1", [_site("a", 0.8), _site("b", 0.2)], ONE_DETECTION)
    assert outcome.new == ["a"] and state.alert("b") is None
    again = state.update_alerts("n1", [_site("a", 0.8)], ONE_DETECTION)  # the same night re-run
    assert again.new == ["a"] and len(state.alert_events("a")) == 1
    assert state.update_alerts("n2", [_site("a", 0.9, "p2")], ONE_DETECTION).ongoing == ["a"]
    state.set_alert_status("a", "confirmed", "crane on site")
    state.update_alerts("n3", [_site("a", 0.95, "p3")], ONE_DETECTION)
    alert = state.alert("a")
    assert alert["status"] == "confirmed" and alert["note"] == "crane on site"
    assert alert["max_score"] == pytest.approx(0.95)


def test_first_detection_is_a_candidate_until_a_second_confirms_it(state: NightlyState) -> None:
    policy = AlertPolicy()
    first = state.update_alerts("n1", [_site("a", 0.6, "p1", "2024-01-01")], policy)
    assert first.candidates == ["a"] and first.new == []
    assert state.alert("a")["status"] == "candidate"
    second = state.update_alerts("n2", [_site("a", 0.7, "p2", "2024-02-10")], policy)
    assert second.new == ["a"] and state.alert("a")["status"] == "new"
    sure = state.update_alerts("n2", [_site("b", 0.99, "p2", "2024-02-10")], policy)
    assert sure.new == ["b"]  # one detection above confirm_score is enough


def test_an_alert_from_one_bad_night_clears_after_two_clear_nights(state: NightlyState) -> None:
    """Failure 2 of the monitoring issue: an alert raised by one bad night stayed forever."""
    policy = AlertPolicy(confirm_detections=1)
    state.update_alerts("n1", [_site("a", 0.8, "p1", "2024-01-01")], policy)
    assert state.alert("a")["status"] == "new"
    state.update_alerts("n2", [_site("a", 0.1, "p2", "2024-02-01")], policy)
    hidden = dict(_site("a", 0.0, "p3", "2024-03-01"), observed=False)
    assert state.update_alerts("n3", [hidden], policy).unobserved == ["a"]
    assert state.alert("a")["status"] == "new"  # one clear, one unobserved: not yet
    cleared = state.update_alerts("n4", [_site("a", 0.2, "p4", "2024-04-01")], policy)
    assert cleared.cleared == ["a"] and state.alert("a")["status"] == "cleared"
    events = [e["event"] for e in state.alert_events("a")]
    assert events == ["new", "unobserved", "cleared"]


def test_dismissed_site_comes_back_when_it_grows_whatever_its_score(
    state: NightlyState,
) -> None:
    """Failure 3: a site dismissed at 0.96 could never come back (0.96 + 0.15 > 1)."""
    policy = AlertPolicy(confirm_detections=1)
    state.update_alerts("n1", [_site("a", 0.96, "p1", area=2000.0)], policy)
    state.set_alert_status("a", "dismissed", "spoil heap")
    quiet = state.update_alerts("n2", [_site("a", 0.97, "p2", area=2500.0)], policy)
    assert quiet.suppressed == ["a"] and state.alert("a")["status"] == "dismissed"
    grown = state.update_alerts("n3", [_site("a", 0.96, "p3", area=8000.0)], policy)
    assert grown.realerted == ["a"] and state.alert("a")["status"] == "new"
    events = [e["event"] for e in state.alert_events("a")]
    assert events == ["new", "dismissed", "suppressed", "realerted"]


def test_dismissed_site_comes_back_on_a_share_of_the_headroom(state: NightlyState) -> None:
    policy = AlertPolicy(confirm_detections=1)
    state.update_alerts("n1", [_site("a", 0.6, "p1")], policy)
    state.set_alert_status("a", "dismissed", "shadow")
    assert state.update_alerts("n2", [_site("a", 0.79, "p2")], policy).suppressed == ["a"]
    assert state.update_alerts("n3", [_site("a", 0.8, "p3")], policy).realerted == ["a"]


def test_a_site_in_two_pairs_counts_as_two_observations(state: NightlyState) -> None:
    outcome = state.update_alerts(
        "n1", [_site("a", 0.6, "p1", "2024-05-01"), _site("a", 0.9, "p2", "2024-05-03")],
        AlertPolicy(),
    )
    assert outcome.new == ["a"] and state.alert("a")["score"] == pytest.approx(0.9)
    assert [o["kind"] for o in state.observations("a")] == ["detection", "detection"]


def test_rerunning_an_older_night_changes_nothing(state: NightlyState) -> None:
    policy = AlertPolicy(confirm_detections=1)
    state.update_alerts("n1", [_site("a", 0.8, "p1", "2024-01-01")], policy)
    state.update_alerts("n2", [_site("a", 0.9, "p2", "2024-02-01")], policy)
    before = (state.alert("a"), state.alert_events("a"))
    state.update_alerts("n1", [_site("a", 0.8, "p1", "2024-01-01")], policy)
    assert (state.alert("a"), state.alert_events("a")) == before
    assert state.alert("a")["last_run_id"] == "n2"


def test_set_status_of_unknown_site_raises(state: NightlyState) -> None:
    with pytest.raises(KeyError):
        state.set_alert_status("nope", "dismissed")


def test_lock_refuses_a_second_holder_and_names_its_pid(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from groundbreak.infer.nightly.lock import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeldError, match=f"process {holder.pid} holds the lock"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the kernel dropped the dead holder's lock
        pass


def test_publish_dir_replaces_whole_and_temps_are_cleaned(tmp_path: Path) -> None:
    final = tmp_path / "runs" / "pairs" / "p1"
    for content in ("old", "new"):
        staging = temp_sibling(final)
        staging.mkdir(parents=True)
        (staging / "probability.tif").write_text(content)
        publish_dir(staging, final)
    assert (final / "probability.tif").read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["p1"]
    leftover = temp_sibling(final.parent / "p2")
    leftover.mkdir()
    (tmp_path / "runs" / ".sites.csv.tmp-999").write_text("half")
    atomic_write_json(tmp_path / "runs" / "summary.json", {"ok": True})
    assert len(remove_temps(tmp_path / "runs")) == 2
    names = sorted(p.name for p in (tmp_path / "runs").rglob("*"))
    assert names == ["p1", "pairs", "probability.tif", "summary.json"]


def test_file_hashes_are_cached_by_size_and_mtime(state: NightlyState, tmp_path: Path) -> None:
    hasher = ContentHasher(state)
    band = next((OSCD / "beirut" / "imgs_1").glob("*_B02.tif"))
    first = hasher.file_sha256(band)
    read = hasher.hashed_bytes
    assert hasher.file_sha256(band) == first and hasher.hashed_bytes == read  # cached
    copy = tmp_path / "copy.tif"
    copy.write_bytes(band.read_bytes())
    assert hasher.file_sha256(copy) == first
    copy.write_bytes(band.read_bytes()[:-1] + b"\x00")
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert hasher.file_sha256(copy) != first
    with pytest.raises(InputError, match="missing.tif: file does not exist"):
        hasher.file_sha256(tmp_path / "missing.tif")


def test_scene_digest_covers_every_band_file(state: NightlyState) -> None:
    digest = ContentHasher(state).scene_digest(OSCD / "beirut" / "imgs_2")
    assert len(digest) == 13 and all(len(sha) == 64 for _, sha in digest)


def test_config_file_keys_resolve_and_flags_override(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("pair_id,before,after\n")
    (tmp_path / "other.csv").write_text("pair_id,before,after\n")
    config_path = tmp_path / "nightly.yaml"
    config_path.write_text("state_dir: state\npairs: pairs.csv\nalert_threshold: 0.4\n")
    config = build_config(read_config_file(config_path), config_path)
    assert config.state_dir == tmp_path / "state" and config.pairs == tmp_path / "pairs.csv"
    assert config.alert_threshold == 0.4 and config.policy.threshold == 0.4
    assert len(config.run_id) == 10  # today's UTC date
    override = build_config(read_config_file(config_path), config_path,
                            {"pairs": str(tmp_path / "other.csv"), "alert_threshold": 0.9})
    assert override.pairs == tmp_path / "other.csv" and override.alert_threshold == 0.9


def test_device_and_runtime_do_not_change_the_scoring_settings(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("pair_id,before,after\n")
    config_path = tmp_path / "nightly.yaml"
    settings = []
    for predictor in ("{window: 64}", "{window: 64, device: cpu, runtime: onnx}"):
        config_path.write_text(f"state_dir: state\npairs: pairs.csv\npredictor: {predictor}\n")
        config = build_config(read_config_file(config_path), config_path)
        settings.append(config.scoring_settings())
    assert settings[0] == settings[1] == {
        "min_area_m2": settings[0]["min_area_m2"], "area_scale": settings[0]["area_scale"],
        "cloudy_fraction": settings[0]["cloudy_fraction"], "predictor": {"window": 64},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("state_dir: s\npairs: p.csv\nbogus: 1\n", "unknown key.*bogus"),
        ("pairs: p.csv\n", "key 'state_dir' is required"),
        ("state_dir: s\n", "exactly one source key"),
        ("state_dir: s\npairs: missing.csv\n", "key 'pairs': file .*missing.csv does not exist"),
        ("state_dir: s\npairs: p.csv\nalert_threshold: 2\n", "key 'alert_threshold': must lie"),
        ("state_dir: s\npairs: p.csv\ndismiss_margin: high\n", "key 'dismiss_margin': expected"),
        ("state_dir: s\npairs: p.csv\npairing: {rule: latest}\n", "key 'pairing': rule must"),
        ("state_dir: s\npairs: p.csv\npairing: {window_days: 2.5}\n", "whole number"),
        ("state_dir: s\npairs: p.csv\nalerts: {clear_after: 0}\n", "key 'alerts': clear_after"),
        ("state_dir: s\npairs: p.csv\nalerts: {k: 3}\n", "key 'alerts': unknown option"),
        ("state_dir: s\npairs: p.csv\npredictor: {speed: 3}\n", "key 'predictor': unknown"),
        ("state_dir: s\npairs: p.csv\npredictor: {runtime: tvm}\n", "key 'predictor': runtime"),
        ("state_dir: s\npairs: p.csv\nlog_format: xml\n", "key 'log_format'"),
        ("state_dir: [unclosed\n", "cannot be read as valid YAML"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_bad_config_names_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "p.csv").write_text("pair_id,before,after\n")
    path = tmp_path / "nightly.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        build_config(read_config_file(path), path)
    assert str(err.value).startswith(str(path))


def test_example_config_documents_every_key() -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "nightly.example.yaml"
    text = example.read_text()
    keys = read_config_file(example)
    assert set(keys) <= set(KEYS)
    assert all(f"{key}:" in text for key in KEYS)
    assert set(keys["pairing"]) == {f.name for f in dataclasses.fields(PairingRule)}
    assert set(keys["alerts"]) | {"threshold"} == {f.name for f in dataclasses.fields(AlertPolicy)}


def test_log_writes_json_lines_or_a_progress_bar(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = NightLog("json", stream)
    log.log_to(tmp_path / "log.jsonl")
    log.event("pair_scored", pair_id="p1", seconds=1.5)
    log.close_file()
    record = json.loads(stream.getvalue())
    assert record["event"] == "pair_scored" and record["pair_id"] == "p1"
    assert json.loads((tmp_path / "log.jsonl").read_text()) == record
    bar_stream = io.StringIO()
    bar = NightLog("progress", bar_stream)
    bar.start_progress(2)
    bar.advance("p1")
    bar.event("pair_failed", level="warning", pair_id="p2")
    bar.advance("p2")
    bar.end_progress()
    assert "2/2" in bar_stream.getvalue() and "[warning] pair_failed pair_id=p2" in (
        bar_stream.getvalue())
    assert NightLog("auto", io.StringIO()).format == "json"  # not a terminal


def test_timeline_says_when_the_change_began(state: NightlyState) -> None:
    policy = AlertPolicy()
    for night, (day, score) in enumerate(
        [("2024-02-01", 0.1), ("2024-03-03", 0.2), ("2024-03-23", 0.6), ("2024-04-12", 0.7)]
    ):
        state.update_alerts(f"n{night}", [_site("a", score, f"p{night}", day)], policy)
    timeline = site_timeline(state.observations("a"))
    assert timeline.began() == "between 2024-03-03 and 2024-03-23"
    assert timeline.first_detection["pair_id"] == "p2"
    assert timeline.latest_detection["pair_id"] == "p3"
    assert timeline.scores() == [("2024-02-01", 0.1), ("2024-03-03", 0.2),
                                 ("2024-03-23", 0.6), ("2024-04-12", 0.7)]
    assert state.alert("a")["status"] == "new"


def test_device_and_runtime_flags_go_to_the_predictor_key_over_the_configs() -> None:
    parser = build_nightly_parser()
    args = parser.parse_args(["--state", "s", "--pairs", "p.csv", "--runtime", "openvino"])
    assert predictor_flags(args) == {"runtime": "openvino"}
    args = parser.parse_args(["--config", "c.yaml", "--device", "cpu", "--runtime", "onnx"])
    assert predictor_flags(args) == {"device": "cpu", "runtime": "onnx"}
    assert predictor_flags(parser.parse_args(["--state", "s"])) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["--state", "s", "--runtime", "tvm"])


def test_stored_outlines_are_parsed_without_a_copy_as_wide_as_the_longest() -> None:
    """One long outline among many short ones: the WKT parse must not pad every string to the
    longest (a fixed-width unicode array cost 1.2 GB on a full tile's 23 000 sites)."""
    import tracemalloc

    from shapely.geometry import Point

    from groundbreak.infer.nightly.outputs import _with_geometries

    long_outline = Point(0, 0).buffer(1, quad_segs=2000).wkt  # about 200 kB of WKT
    rows = [{"geometry": long_outline}] + [{"geometry": "POINT (1 2)"} for _ in range(500)]
    tracemalloc.start()
    parsed = _with_geometries(rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert parsed[1]["geometry"].equals(Point(1, 2)) and parsed[0]["geometry"].area > 3
    assert peak < 20_000_000  # a padded copy would take 501 x 200 kB x 4 bytes = 400 MB
