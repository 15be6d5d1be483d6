"""The pictures of an alert come from the scenes its pair was scored from, or say they are gone
(failure 5 of the monitoring issue: after a cron job rewrote the pairs CSV, an alert's before
and after crops were the same image while its probability overlay showed change)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.review.crops import CropRenderer
from groundbreak.infer.review.queue import alert_rows

OSCD = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"


def write_pairs(path: Path, before: Path, after: Path) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([["pair_id", "before", "after"], ["dubai", before, after]])
    return path


def test_crops_come_from_the_scenes_the_night_scored(tmp_path: Path, tiny_bundle: Path) -> None:
    scenes = tmp_path / "scenes"
    shutil.copytree(OSCD / "dubai" / "imgs_1", scenes / "before")
    shutil.copytree(OSCD / "dubai" / "imgs_2", scenes / "after")
    pairs = write_pairs(tmp_path / "pairs.csv", scenes / "before", scenes / "after")
    state_dir = tmp_path / "state"
    config = tmp_path / "nightly.yaml"
    config.write_text(f"state_dir: {state_dir}\nmodel: {tiny_bundle}\npairs: {pairs}\n"
                      "alert_threshold: 0\nlog_format: json\nreport: false\n"
                      "alerts: {confirm_detections: 1}\n")
    assert groundbreak(["nightly", "--config", str(config), "--run-id", "n1"]) == 0
    write_pairs(pairs, scenes / "after", scenes / "after")  # the cron job rewrites the CSV

    renderer = CropRenderer(state_dir)
    with NightlyState(state_dir, read_only=True) as state:
        alert = next(r for r in alert_rows(state) if r.get("grid_outline"))
        crops = renderer.crops(state, alert)
        stored = state.db.execute("SELECT scenes FROM pairs").fetchone()["scenes"]
    assert str(scenes / "before") in stored
    assert isinstance(crops, dict) and crops["before"] != crops["after"]

    band = next((scenes / "before").glob("*_B04.tif"))
    band.write_bytes(next((scenes / "after").glob("*_B04.tif")).read_bytes())  # replaced
    with NightlyState(state_dir, read_only=True) as state:
        problem = CropRenderer(state_dir).crops(state, alert)
    assert problem == f"the before scene changed since the night scored it ({scenes / 'before'})"
    shutil.rmtree(scenes / "before")
    with NightlyState(state_dir, read_only=True) as state:
        problem = CropRenderer(state_dir).crops(state, alert)
    assert isinstance(problem, str) and problem.startswith("the before scene is gone")
