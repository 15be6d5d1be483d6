"""``groundbreak alerts``: list, confirm, dismiss and the history of alerts in a nightly state."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.alert_policy import AlertPolicy
from groundbreak.infer.nightly.state import NightlyState


def record_night(state_dir: Path, run_id: str, sites: list[dict]) -> None:
    """One night's site scores into the state: each site at or above 0.5 alerts at once."""
    with NightlyState(state_dir) as state:
        state.update_alerts(run_id, sites, AlertPolicy(threshold=0.5, confirm_score=0.5))


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A state with two alerts from one night and one site below the threshold."""
    sites = [
        {"site_id": "dubai-c0001", "name": "Marina lot", "pair_id": "dubai", "score": 0.81,
         "lon": 55.2, "lat": 25.05},
        {"site_id": "beirut-c0002", "name": "Port road", "pair_id": "beirut", "score": 0.62,
         "lon": 35.5, "lat": 33.9},
        {"site_id": "quiet", "name": "Quiet", "pair_id": "beirut", "score": 0.1},
    ]
    record_night(tmp_path / "state", "2024-05-01", sites)
    return tmp_path / "state"


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = groundbreak(["alerts", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_formats(state_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "list", "--state", str(state_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["site_id", "name", "status"]
    assert lines[1].startswith("dubai-c0001") and "new" in lines[1] and len(lines) == 3
    code, out, _ = run(capsys, "list", "--state", str(state_dir), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["site_id"], r["status"]) for r in rows] == [
        ("dubai-c0001", "new"), ("beirut-c0002", "new")]
    code, out, _ = run(capsys, "list", "--state", str(state_dir), "--format", "json")
    assert json.loads(out)[0]["score"] == pytest.approx(0.81)


def test_confirm_and_dismiss_with_notes(state_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(capsys, "confirm", "dubai-c0001", "--state", str(state_dir),
               "--note", "new tower")[0] == 0
    code, out, _ = run(capsys, "dismiss", "beirut-c0002", "--state", str(state_dir),
                       "--note", "harbour crane")
    assert code == 0 and out.strip() == "beirut-c0002: dismissed (score 0.620)"
    _, out, _ = run(capsys, "list", "--state", str(state_dir), "--status", "dismissed",
                    "--format", "json")
    (dismissed,) = json.loads(out)
    assert dismissed["note"] == "harbour crane"
    assert dismissed["dismissed_score"] == pytest.approx(0.62)
    _, out, _ = run(capsys, "list", "--state", str(state_dir), "--status", "confirmed")
    assert "dubai-c0001" in out and "new tower" in out
    _, out, _ = run(capsys, "history", "beirut-c0002", "--state", str(state_dir))
    observations, events = out.split("events:\n")
    assert [line.split()[1] for line in observations.splitlines()[2:]] == ["detection"]
    assert [line.split()[2] for line in events.splitlines()[1:]] == ["new", "dismissed"]
    # the next night, a little higher: it stays dismissed (below the re-alerting margin)
    record_night(state_dir, "2024-05-02",
                 [{"site_id": "beirut-c0002", "pair_id": "beirut-2", "score": 0.7}])
    _, out, _ = run(capsys, "list", "--state", str(state_dir), "--status", "dismissed")
    assert out.splitlines()[1].split()[:3] == ["beirut-c0002", "Port", "road"]


def test_unknown_site_and_missing_state_are_clear_errors(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, err = run(capsys, "dismiss", "nope", "--state", str(state_dir))
    assert code == 2 and "no alert for site 'nope'" in err and "state.sqlite" in err
    code, _, err = run(capsys, "list", "--state", str(tmp_path / "elsewhere"))
    assert code == 2 and "elsewhere: not a nightly state directory" in err
    code, _, err = run(capsys, "list")
    assert code == 2 and "--state" in err and "GROUNDBREAK_STATE" in err
    code, _, _ = run(capsys, "list", "--state", str(state_dir), "--status", "maybe")
    assert code == 2


def test_empty_state_lists_no_alerts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    NightlyState(tmp_path / "s").close()
    assert run(capsys, "list", "--state", str(tmp_path / "s")) == (0, "no alerts\n", "")


def test_reading_commands_do_not_write_the_state(state_dir: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    database = state_dir / "state.sqlite"
    before = database.read_bytes()
    assert run(capsys, "list", "--state", str(state_dir))[0] == 0
    assert run(capsys, "history", "dubai-c0001", "--state", str(state_dir))[0] == 0
    assert database.read_bytes() == before


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_damaged_state_is_one_line_and_exit_5(state_dir: Path, damage: str,
                                              capsys: pytest.CaptureFixture) -> None:
    database = state_dir / "state.sqlite"
    data = database.read_bytes()
    database.write_bytes({"empty": b"", "garbage": b"not a database " * 300,
                          "truncated": data[: len(data) // 2]}[damage])
    damaged = database.read_bytes()
    for args in (["list"], ["history", "dubai-c0001"], ["dismiss", "dubai-c0001"]):
        code, out, err = run(capsys, *args, "--state", str(state_dir))
        assert code == 5, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "state.sqlite" in err and "Backup and recovery" in err
    assert database.read_bytes() == damaged  # nothing was written into it
    if damage != "empty":  # a 0-byte file holds no state yet: the night starts a new one
        code = groundbreak(["nightly", "--state", str(state_dir), "--pairs", str(database)])
        assert code == 5 and "Traceback" not in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0,
                    reason="mounting a read-only file system needs root")
def test_list_works_on_a_read_only_file_system(state_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    import shutil
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(state_dir, mount / "state")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        code, out, err = run(capsys, "list", "--state", str(mount / "state"))
        assert (code, err) == (0, "") and "Marina lot" in out
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_state_from_the_environment(state_dir: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("GROUNDBREAK_STATE", str(state_dir))
    assert run(capsys, "confirm", "dubai-c0001", "--note", "tower")[0] == 0
    code, out, _ = run(capsys, "history", "dubai-c0001")
    assert code == 0 and "confirmed" in out.splitlines()[-1]
    assert "Port road" in run(capsys, "list")[1]
    # --state wins over the environment
    code, _, err = run(capsys, "list", "--state", str(tmp_path / "elsewhere"))
    assert code == 2 and "elsewhere: not a nightly state directory" in err
    monkeypatch.setenv("GROUNDBREAK_STATE", "")
    code, _, err = run(capsys, "dismiss", "beirut-c0002")
    assert code == 2 and "--state" in err and "GROUNDBREAK_STATE" in err


def test_list_shows_open_alerts_unless_asked(state_dir: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    assert run(capsys, "confirm", "dubai-c0001", "--state", str(state_dir))[0] == 0

    def listed(*args: str) -> list[str]:
        code, out, err = run(capsys, "list", "--state", str(state_dir), *args)
        assert code == 0, err
        return [line.split()[0] for line in out.splitlines()[1:]]

    assert listed() == ["beirut-c0002"]  # open: new and ongoing
    assert listed("--status", "open") == ["beirut-c0002"]
    assert listed("--status", "all") == ["dubai-c0001", "beirut-c0002"]
    assert listed("--status", "confirmed,new") == ["dubai-c0001", "beirut-c0002"]
    assert listed("--status", "confirmed") == ["dubai-c0001"]
    code, out, _ = run(capsys, "list", "--state", str(state_dir), "--status", "cleared,candidate")
    assert code == 0 and out.startswith("no cleared or candidate alerts (2 with other statuses")
    code, out, _ = run(capsys, "list", "--state", str(state_dir), "--format", "json")
    assert [row["site_id"] for row in json.loads(out)] == ["dubai-c0001", "beirut-c0002"]
    code, out, _ = run(capsys, "list", "--state", str(state_dir), "--format", "json",
                       "--status", "open")
    assert [row["site_id"] for row in json.loads(out)] == ["beirut-c0002"]
    code, _, err = run(capsys, "list", "--state", str(state_dir), "--status", "new,maybe")
    assert code == 2 and "unknown status 'maybe'" in err


def test_tables_fit_100_columns_and_print_no_control_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    escape = "\x1b[31mRED\x1b[0m\x1b]0;owned\x07\u202e"
    sites = [{"site_id": "lv-03", "name": "North Las Vegas Boulevard housing tract " * 4 + escape,
              "pair_id": "las-vegas-2024-03-05", "score": 0.93, "lon": -115.1, "lat": 36.2}]
    record_night(tmp_path / "state", "2024-05-01", sites)
    state = str(tmp_path / "state")
    note = "permit 2024-117, " * 10 + escape + "\nsecond line"
    assert run(capsys, "confirm", "lv-03", "--state", state, "--note", note,
               "--analyst", "Ada\x1b[2J")[0] == 0
    outputs = [run(capsys, "list", "--state", state, "--status", "all")[1],
               run(capsys, "history", "lv-03", "--state", state)[1],
               run(capsys, "list", "--state", state, "--format", "csv")[1]]
    for out in outputs:
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    for out in outputs[:2]:
        assert max(len(line) for line in out.splitlines()) <= 100
    row = outputs[0].splitlines()[1]
    assert row.split()[:4] == ["lv-03", "North", "Las", "Vegas"] and "\u2026" in row
    assert "[31mRED" in outputs[2] and "second line" in outputs[2]  # the text stays, inert
