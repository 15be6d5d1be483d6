"""The nightly batch end to end on real OSCD fixture scenes with a tiny untrained model."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import rasterio

from groundbreak.datasets.layouts import read_oscd_dates
from groundbreak.infer.atomic import is_temp_name
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.state import NightlyState

OSCD = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"
CITIES = {c: read_oscd_dates(OSCD / c / "dates.txt") for c in ("beirut", "abudhabi", "dubai")}


def write_pairs(path: Path, rows: list[tuple[str, Path, Path]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pair_id", "before", "after", "before_date", "after_date"])
        for pair_id, before, after in rows:
            writer.writerow([pair_id, before, after, *CITIES.get(pair_id, ("", ""))])
    return path


def brighten_red_band(scene: Path) -> None:
    """Change a scene's input in place: its B04 band twice as bright in the top half."""
    band = next(scene.glob("*_B04.tif"))
    with rasterio.open(band) as src:
        data, profile = src.read(1), src.profile
    data[: data.shape[0] // 2] *= 2
    with rasterio.open(band, "w", **profile) as dst:
        dst.write(data, 1)


def city_rows(*cities: str) -> list[tuple[str, Path, Path]]:
    return [(c, OSCD / c / "imgs_1", OSCD / c / "imgs_2") for c in cities]


def nightly(state: Path, tiny_bundle: Path, *extra: str, report: bool = False) -> int:
    return groundbreak(["nightly", "--state", str(state), "--model", str(tiny_bundle),
                        "--log-format", "json", *extra, *([] if report else ["--no-report"])])


def summary_of(state: Path, run_id: str) -> dict:
    return json.loads((state / "runs" / run_id / "summary.json").read_text())


def visible_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if not any(is_temp_name(part) for part in p.parts)]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if is_temp_name(p.name)]


class PredictionCounter:
    """Counts calls of TiledPredictor.predict_pair."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from groundbreak.infer.prediction.predictor import TiledPredictor

        self.calls: list[str] = []
        original = TiledPredictor.predict_pair

        def counted(predictor, pair, out_dir):  # noqa: ANN001, ANN202
            self.calls.append(pair.pair_id)
            return original(predictor, pair, out_dir)

        monkeypatch.setattr(TiledPredictor, "predict_pair", counted)


def test_bad_pairs_are_recorded_and_the_night_completes(tmp_path: Path, tiny_bundle: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    corrupt = shutil.copytree(OSCD / "beirut" / "imgs_2", tmp_path / "corrupt")
    broken_band = next(corrupt.glob("*_B03.tif"))
    broken_band.write_bytes(b"II*\x00 this is not a TIFF any more")
    lacking = shutil.copytree(OSCD / "beirut" / "imgs_2", tmp_path / "lacking")
    next(lacking.glob("*_B05.tif")).unlink()
    pairs = write_pairs(tmp_path / "pairs.csv", [
        ("corrupt_tiff", OSCD / "beirut" / "imgs_1", corrupt),
        ("missing_band", OSCD / "beirut" / "imgs_1", lacking),
        ("no_overlap", OSCD / "beirut" / "imgs_1", OSCD / "dubai" / "imgs_2"),
        ("missing_scene", OSCD / "beirut" / "imgs_1", tmp_path / "nowhere"),
        *city_rows("dubai"),
    ])
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1", report=True) == 1
    assert "FAILED corrupt_tiff" in capsys.readouterr().err
    assert "corrupt_tiff" in (state / "runs" / "n1" / "report.html").read_text()
    with (state / "runs" / "n1" / "failures.csv").open() as fh:
        reasons = {row["pair_id"]: row["reason"] for row in csv.DictReader(fh)}
    assert broken_band.name in reasons["corrupt_tiff"]
    assert "B05" in reasons["missing_band"] and "lacking" in reasons["missing_band"]
    assert "does not overlap" in reasons["no_overlap"]
    assert "nowhere" in reasons["missing_scene"]
    summary = summary_of(state, "n1")
    assert summary["exit_code"] == 1
    assert summary["counts"] | {"pairs": 5, "scored": 1, "failed": 4} == summary["counts"]
    assert (state / "runs" / "n1" / "pairs" / "dubai" / "probability.tif").is_file()
    assert not (state / "runs" / "n1" / "pairs" / "corrupt_tiff").exists()
    with NightlyState(state) as db:
        assert sorted((r["pair_id"], r["status"]) for r in db.pair_rows("n1")) == [
            ("corrupt_tiff", "failed"), ("dubai", "done"), ("missing_band", "failed"),
            ("missing_scene", "failed"), ("no_overlap", "failed")]


def test_repeated_night_does_no_work_twice(tmp_path: Path, tiny_bundle: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    counter = PredictionCounter(monkeypatch)
    pairs = write_pairs(tmp_path / "pairs.csv", city_rows("beirut", "dubai"))
    state = tmp_path / "state"
    args = ("--pairs", str(pairs), "--run-id", "n1", "--alert-threshold", "0")
    assert nightly(state, tiny_bundle, *args) == 0
    assert sorted(counter.calls) == ["beirut", "dubai"]
    first_sites = (state / "runs" / "n1" / "sites.csv").read_text()
    assert nightly(state, tiny_bundle, *args) == 0
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n2") == 0
    assert sorted(counter.calls) == ["beirut", "dubai"]  # no prediction was made again
    assert (state / "runs" / "n1" / "sites.csv").read_text() == first_sites
    assert summary_of(state, "n1")["counts"]["reused"] == 2
    n2 = summary_of(state, "n2")
    assert n2["counts"]["scored"] == 0 and n2["counts"]["reused"] == 2
    # a night reports what it newly observed: reused pairs are no new observation (issue 26.6)
    assert n2["counts"]["sites"] == 0 < summary_of(state, "n1")["counts"]["sites"]
    assert pd.read_csv(state / "runs" / "n2" / "sites.csv").empty
    assert {p["outputs"] for p in n2["pairs"]} == {
        str(state / "runs" / "n1" / "pairs" / c) for c in ("beirut", "dubai")}
    with NightlyState(state) as db:
        assert [r["status"] for r in db.runs()] == ["ok", "ok", "ok"]
        assert len(db.pair_rows()) == 2


def test_changed_input_or_model_is_scored_again(tmp_path: Path, tiny_bundle: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    counter = PredictionCounter(monkeypatch)
    after = shutil.copytree(OSCD / "dubai" / "imgs_2", tmp_path / "after")
    pairs = write_pairs(tmp_path / "pairs.csv", [("dubai", OSCD / "dubai" / "imgs_1", after)])
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 0
    brighten_red_band(after)
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n2") == 0
    other = shutil.copytree(tiny_bundle, tmp_path / "other_bundle")
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "threshold": 0.4}))
    assert nightly(state, other, "--pairs", str(pairs), "--run-id", "n3") == 0
    assert counter.calls == ["dubai", "dubai", "dubai"]


def test_input_changed_between_two_attempts_of_a_night_ranks_only_the_new_scores(
        tmp_path: Path, tiny_bundle: Path) -> None:
    after = shutil.copytree(OSCD / "dubai" / "imgs_2", tmp_path / "after")
    pairs = write_pairs(tmp_path / "pairs.csv", [("dubai", OSCD / "dubai" / "imgs_1", after)])
    state = tmp_path / "state"
    args = ("--pairs", str(pairs), "--run-id", "n1")
    assert nightly(state, tiny_bundle, *args) == 0
    first = pd.read_csv(state / "runs" / "n1" / "sites.csv")
    brighten_red_band(after)
    assert nightly(state, tiny_bundle, *args) == 0
    sites = pd.read_csv(state / "runs" / "n1" / "sites.csv")
    assert len(first) > 0 and sites["site_id"].is_unique
    with NightlyState(state) as db:
        done = [r["id"] for r in db.pair_rows("n1") if r["status"] == "done"]
        assert len(done) == 2
        night = db.night_scores("n1")
        assert {r["pair_row"] for r in night} == {done[-1]}
        assert len(night) == len(sites)


def test_full_disk_stops_the_night_and_the_rerun_keeps_what_was_done(
        tmp_path: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    from groundbreak.infer.prediction.predictor import TiledPredictor

    original = TiledPredictor.predict_pair

    def disk_fills_at_dubai(predictor, pair, out_dir):  # noqa: ANN001, ANN202
        if pair.pair_id == "dubai":  # a full disk cannot be made portably: raise what it raises
            raise OSError(errno.ENOSPC, "No space left on device", str(out_dir))
        return original(predictor, pair, out_dir)

    monkeypatch.setattr(TiledPredictor, "predict_pair", disk_fills_at_dubai)
    pairs = write_pairs(tmp_path / "pairs.csv", city_rows("beirut", "dubai", "abudhabi"))
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 4
    err = capsys.readouterr().err
    assert "groundbreak nightly: stopped: [Errno 28] No space left on device" in err
    with NightlyState(state) as db:
        assert [(r["pair_id"], r["status"]) for r in db.pair_rows()] == [("beirut", "done")]
    assert not temp_files(state)

    monkeypatch.setattr(TiledPredictor, "predict_pair", original)
    counter = PredictionCounter(monkeypatch)
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 0
    assert counter.calls == ["dubai", "abudhabi"]  # beirut was kept
    summary = summary_of(state, "n1")
    assert summary["counts"]["scored"] == 2 and summary["counts"]["reused"] == 1


def test_second_run_refuses_while_the_lock_is_held(tmp_path: Path, tiny_bundle: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", city_rows("dubai"))
    state = tmp_path / "state"
    script = ("import sys, time\nfrom groundbreak.infer.nightly.lock import RunLock\n"
              "RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(state)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert nightly(state, tiny_bundle, "--pairs", str(pairs)) == 3
        err = capsys.readouterr().err
        assert "another nightly run is in progress" in err
        assert f"process {holder.pid} holds the lock" in err and "nightly.lock" in err
    finally:
        holder.kill()
        holder.wait()
    assert not (state / "state.sqlite").exists()  # the refused run touched nothing


KILLABLE_RUN = """
import sys, time
from groundbreak.infer.nightly import pair_scorer
publish = pair_scorer.publish_dir
published = []

def publish_slowly(staging, final):
    published.append(final)
    if len(published) == 2:  # the second pair is written, not yet published: get killed here
        time.sleep(300)
    return publish(staging, final)

pair_scorer.publish_dir = publish_slowly
from groundbreak.infer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_mid_run_then_the_next_run_finishes_the_rest(tmp_path: Path,
                                                             tiny_bundle: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", city_rows("beirut", "dubai", "abudhabi"))
    state = tmp_path / "state"
    args = ["nightly", "--state", str(state), "--model", str(tiny_bundle), "--pairs", str(pairs),
            "--run-id", "n1", "--log-format", "json"]
    child = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pairs_dir = state / "runs" / "n1" / "pairs"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert child.poll() is None, "the nightly run ended before it could be killed"
            if _done_pairs(state) == 1 and temp_files(pairs_dir):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the first pair was never marked done")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

    assert [p.name for p in pairs_dir.iterdir() if not is_temp_name(p.name)] == ["beirut"]
    assert not (state / "runs" / "n1" / "summary.json").exists()
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 0

    assert temp_files(state) == []
    with NightlyState(state) as db:
        done = [r["pair_id"] for r in db.pair_rows() if r["status"] == "done"]
        assert sorted(done) == ["abudhabi", "beirut", "dubai"]  # each exactly once
        assert [r["status"] for r in db.runs("n1")] == ["interrupted", "ok"]
        scored_pairs = {s["pair_id"] for s in db.night_scores("n1")}
    counts = summary_of(state, "n1")["counts"]
    assert (counts["scored"], counts["reused"], counts["failed"]) == (2, 1, 0)
    assert sorted(p.name for p in pairs_dir.iterdir()) == ["abudhabi", "beirut", "dubai"]
    assert all((pairs_dir / c / "probability.tif").is_file() for c in CITIES)
    assert scored_pairs <= set(CITIES)


def _done_pairs(state: Path) -> int:
    if not (state / "state.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(f"file:{state / 'state.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM pairs WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_dismissed_site_stays_quiet_until_it_grows(
    tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture
) -> None:
    state = tmp_path / "state"
    dubai = (OSCD / "dubai" / "imgs_1", OSCD / "dubai" / "imgs_2")
    config = tmp_path / "nightly.yaml"
    config.write_text(f"state_dir: {state}\nmodel: {tiny_bundle}\nalert_threshold: 0\n"
                      "log_format: json\nreport: false\nalerts: {confirm_detections: 1}\n")

    def night(run_id: str, *extra: str) -> dict:
        pairs = write_pairs(tmp_path / f"{run_id}.csv", [(f"dubai_{run_id}", *dubai)])
        assert groundbreak(["nightly", "--config", str(config), "--pairs", str(pairs),
                            "--run-id", run_id, *extra]) == 0
        return summary_of(state, run_id)

    night("n1")
    with NightlyState(state) as db:
        top = db.alerts()[0]
    assert summary_of(state, "n1")["new_alerts"][0]["site_id"] == top["site_id"]
    capsys.readouterr()
    assert groundbreak(["alerts", "dismiss", top["site_id"], "--state", str(state),
                        "--note", "cloud shadow"]) == 0
    assert "dismissed" in capsys.readouterr().out

    n2 = night("n2")  # a new acquisition, the same site: neither larger nor surer
    assert n2["counts"]["suppressed_alerts"] == 1
    assert top["site_id"] not in {a["site_id"] for a in n2["new_alerts"]}
    assert top["site_id"] not in (state / "runs" / "n2" / "alerts.csv").read_text()
    assert top["site_id"] in (state / "runs" / "n2" / "sites.csv").read_text()

    config.write_text(config.read_text().replace("{confirm_detections: 1}",
                                                 "{confirm_detections: 1, realert_share: 0}"))
    n3 = night("n3")
    assert top["site_id"] in {a["site_id"] for a in n3["new_alerts"]}
    with NightlyState(state) as db:
        assert db.alert(top["site_id"])["status"] == "new"


def test_reused_pairs_turn_no_alert_ongoing(tmp_path: Path, tiny_bundle: Path) -> None:
    """Failure 4 of the monitoring issue: every open alert turned 'ongoing' on a night that
    scored nothing new, because reused pairs were re-linked into it as evidence."""
    pairs = write_pairs(tmp_path / "pairs.csv", city_rows("dubai"))
    state = tmp_path / "state"
    config = tmp_path / "nightly.yaml"
    config.write_text(f"state_dir: {state}\nmodel: {tiny_bundle}\npairs: {pairs}\n"
                      "alert_threshold: 0\nlog_format: json\nreport: false\n"
                      "alerts: {confirm_detections: 1}\n")
    assert groundbreak(["nightly", "--config", str(config), "--run-id", "n1"]) == 0
    assert groundbreak(["nightly", "--config", str(config), "--run-id", "n2"]) == 0
    n2 = summary_of(state, "n2")
    assert n2["counts"]["reused"] == 1 and n2["counts"]["ongoing_alerts"] == 0
    with NightlyState(state) as db:
        assert {a["status"] for a in db.alerts()} == {"new"}
        assert all(e["run_id"] != "n2" for e in db.alert_events())
    # the night still lists every open alert it knows of
    assert len(pd.read_csv(state / "runs" / "n2" / "alerts.csv")) == n2["counts"]["new_alerts"] \
        + summary_of(state, "n1")["counts"]["new_alerts"]


def stac_item(scene_dir: Path, item_id: str, when: str) -> dict:
    assets = {
        f.stem.rsplit("_", 1)[1]: {"href": str(f), "type": "image/tiff", "roles": ["data"]}
        for f in sorted(scene_dir.glob("*.tif"))
    }
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "geometry": None,
            "properties": {"datetime": f"{when}T08:00:00Z", "s2:mgrs_tile": "36SYC"},
            "assets": assets, "links": []}


def test_stac_night_pairs_the_new_item_with_the_stored_one(tmp_path: Path,
                                                           tiny_bundle: Path) -> None:
    state = tmp_path / "state"
    night1 = tmp_path / "night1.json"
    night1.write_text(json.dumps({"type": "FeatureCollection", "features": [
        stac_item(OSCD / "beirut" / "imgs_1", "before", "2015-08-20")]}))
    assert nightly(state, tiny_bundle, "--stac", str(night1), "--run-id", "n1") == 0
    assert summary_of(state, "n1")["counts"] | {"pairs": 0, "baselines": 1} == \
        summary_of(state, "n1")["counts"]
    night2 = tmp_path / "night2.json"
    night2.write_text(json.dumps({"type": "FeatureCollection", "features": [
        stac_item(OSCD / "beirut" / "imgs_2", "after", "2017-10-03")]}))
    assert nightly(state, tiny_bundle, "--stac", str(night2), "--run-id", "n2") == 0
    n2 = summary_of(state, "n2")
    assert [(p["pair_id"], p["status"]) for p in n2["pairs"]] == [
        ("MGRS-36SYC_20150820_20171003", "scored")]
    assert (state / "runs" / "n2" / "pairs" / "MGRS-36SYC_20150820_20171003"
            / "probability.tif").is_file()


def test_drop_folder_night(tmp_path: Path, tiny_bundle: Path) -> None:
    drop, state = tmp_path / "drop", tmp_path / "state"
    drop.mkdir()
    (drop / "dubai_20151211").symlink_to(OSCD / "dubai" / "imgs_1")
    (drop / "notes.txt").write_text("ignored")
    assert nightly(state, tiny_bundle, "--drop-folder", str(drop), "--run-id", "n1") == 0
    n1 = summary_of(state, "n1")
    assert n1["baselines"] == ["dubai@2015-12-11"] and n1["ignored_entries"] == ["notes.txt"]
    (drop / "dubai_20180330").symlink_to(OSCD / "dubai" / "imgs_2")
    assert nightly(state, tiny_bundle, "--drop-folder", str(drop), "--run-id", "n2") == 0
    assert [p["pair_id"] for p in summary_of(state, "n2")["pairs"]] == [
        "dubai_20151211_20180330"]


def test_config_file_night_and_bad_config_exit_2(tmp_path: Path, tiny_bundle: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    write_pairs(tmp_path / "pairs.csv", city_rows("dubai"))
    config = tmp_path / "nightly.yaml"
    config.write_text(f"state_dir: state\nmodel: {tiny_bundle}\npairs: pairs.csv\nrun_id: n1\n"
                      "log_format: json\nreport: false\n")
    assert groundbreak(["nightly", "--config", str(config)]) == 0
    assert (tmp_path / "state" / "runs" / "n1" / "sites.csv").is_file()
    assert not (tmp_path / "state" / "runs" / "n1" / "report.html").exists()
    config.write_text("state_dir: state\npairs: pairs.csv\nalert_threshold: lots\n")
    assert groundbreak(["nightly", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: key 'alert_threshold': expected a number" in err
    config.write_text(f"state_dir: state\nmodel: {tiny_bundle}\npairs: pairs.csv\nrun_id: n2\n"
                      "predictor: {window: 33}\n")
    assert groundbreak(["nightly", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "key 'predictor': window 33 must be a positive multiple" in err
    assert not (tmp_path / "state" / "runs" / "n2" / "pairs").exists()
    assert groundbreak(["nightly", "--pairs", "x.csv"]) == 2
    assert groundbreak(["nightly", "--state", str(tmp_path / "s2"), "--pairs",
                        str(tmp_path / "pairs.csv"), "--model", str(tmp_path)]) == 2
    assert "model.json" in capsys.readouterr().err


def test_single_stac_item_is_refused_before_anything_is_written(
        tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    item = tmp_path / "item.json"
    item.write_text(json.dumps(stac_item(OSCD / "beirut" / "imgs_1", "one", "2015-08-20")))
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--stac", str(item), "--run-id", "n1") == 2
    assert "is a single STAC Item" in capsys.readouterr().err
    assert not state.exists()


def test_reused_pair_whose_outputs_were_pruned_is_scored_again(
        tmp_path: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = PredictionCounter(monkeypatch)
    pairs = write_pairs(tmp_path / "pairs.csv", city_rows("dubai"))
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 0
    shutil.rmtree(state / "runs" / "n1")  # an operator prunes an old night
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n2") == 0
    assert counter.calls == ["dubai", "dubai"]
    n2 = summary_of(state, "n2")
    assert [(p["status"], p["outputs"]) for p in n2["pairs"]] == [
        ("scored", str(state / "runs" / "n2" / "pairs" / "dubai"))]
    assert (state / "runs" / "n2" / "pairs" / "dubai" / "probability.tif").is_file()
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n3") == 0
    assert counter.calls == ["dubai", "dubai"]  # n2's outputs are there: reused
    with NightlyState(state) as db:
        assert [r["status"] for r in db.pair_rows()] == ["done"]


def test_pair_ids_that_would_leave_their_folder_are_refused(
        tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv", [
        ("../../escaped", OSCD / "dubai" / "imgs_1", OSCD / "dubai" / "imgs_2")])
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 2
    assert "line 2: pair_id '../../escaped' cannot name a folder" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not any(tmp_path.rglob("escaped*"))


def test_fifo_or_device_as_a_band_fails_the_pair_instead_of_hanging(
        tmp_path: Path, tiny_bundle: Path) -> None:
    after = shutil.copytree(OSCD / "dubai" / "imgs_2", tmp_path / "after")
    band = next(after.glob("*_B04.tif"))
    band.unlink()
    os.mkfifo(band)
    zero = shutil.copytree(OSCD / "dubai" / "imgs_2", tmp_path / "zero")
    band = next(zero.glob("*_B03.tif"))
    band.unlink()
    band.symlink_to("/dev/zero")
    pairs = write_pairs(tmp_path / "pairs.csv", [
        ("fifo", OSCD / "dubai" / "imgs_1", after), ("zero", OSCD / "dubai" / "imgs_1", zero),
        *city_rows("dubai")])
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 1
    reasons = {f["pair_id"]: f["reason"] for f in summary_of(state, "n1")["failures"]}
    assert set(reasons) == {"fifo", "zero"}
    assert all("not a regular file" in reason for reason in reasons.values())
    assert groundbreak(["rank", "--pairs", str(pairs), "--out", str(tmp_path / "run"),
                        "--model", str(tiny_bundle), "--no-report", "-q"]) == 1


def test_band_urls_on_private_hosts_are_refused_unless_listed(
        tmp_path: Path, tiny_bundle: Path) -> None:
    scene = tmp_path / "after.json"
    scene.write_text(json.dumps({"bands": {
        "B02": "http://169.254.169.254/latest/meta-data/B02.tif",
        "B03": "/vsicurl/http://localhost:8080/B03.tif"}}))
    pairs = write_pairs(tmp_path / "pairs.csv", [("meta", OSCD / "dubai" / "imgs_1", scene)])
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 1
    (failure,) = summary_of(state, "n1")["failures"]
    assert "169.254.169.254" in failure["reason"] and "non-public address" in failure["reason"]
    config = tmp_path / "nightly.yaml"
    config.write_text(f"state_dir: state\nmodel: {tiny_bundle}\npairs: pairs.csv\nrun_id: n2\n"
                      "log_format: json\nreport: false\nremote_hosts: [data.example.com]\n")
    assert groundbreak(["nightly", "--config", str(config)]) == 1
    (failure,) = summary_of(state, "n2")["failures"]
    assert "is not in the config's remote_hosts" in failure["reason"]


def test_discovered_sites_keep_their_id_across_nights(
        tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture) -> None:
    state = tmp_path / "state"
    before, after = OSCD / "dubai" / "imgs_1", OSCD / "dubai" / "imgs_2"
    night1 = write_pairs(tmp_path / "n1.csv", [("dubai_20151211_20180330", before, after)])
    config = tmp_path / "nightly.yaml"  # every region counts, however small: several sites
    config.write_text(f"state_dir: {state}\nmodel: {tiny_bundle}\nmin_area_m2: 0\n"
                      "alert_threshold: 0\nlog_format: json\nreport: false\n")
    assert groundbreak(["nightly", "--config", str(config), "--pairs", str(night1),
                        "--run-id", "n1"]) == 0
    first = pd.read_csv(state / "runs" / "n1" / "sites.csv")
    assert len(first) > 1 and first["site_id"].str.match(r"^d-\d{6}$").all()
    top = str(first["site_id"].iloc[0])
    capsys.readouterr()
    assert groundbreak(["alerts", "dismiss", top, "--state", str(state)]) == 0
    # the next acquisition of the same ground: a new pair id, the same changed regions
    night2 = write_pairs(tmp_path / "n2.csv", [("dubai_20151211_20190101", before, after)])
    assert groundbreak(["nightly", "--config", str(config), "--pairs", str(night2),
                        "--run-id", "n2"]) == 0
    n2 = summary_of(state, "n2")
    second = pd.read_csv(state / "runs" / "n2" / "sites.csv")
    assert set(second["site_id"]) == set(first["site_id"])  # the same regions, the same ids
    # the first detection made candidates; the second acquisition confirms them
    assert n2["counts"]["suppressed_alerts"] == 1
    assert n2["counts"]["new_alerts"] == len(first) - 1
    assert top not in (state / "runs" / "n2" / "alerts.csv").read_text()
    with NightlyState(state) as db:
        assert db.alert(top)["status"] == "dismissed"
        assert [e["event"] for e in db.alert_events(top)] == [
            "candidate", "dismissed", "suppressed"]
