"""Nightly defects of the outside review and the hostile audit (issue 26: items 5, 14, 15, 16,
19, 25), each reproduced on real fixture scenes with a tiny untrained model."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from groundbreak.datasets.errors import InputError
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.config import build_config, read_config_file
from groundbreak.infer.nightly.sources import pairs_from_stac

OSCD = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"


def write_pairs(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pair_id", "before", "after", "before_date", "after_date"])
        writer.writerows(rows)
    return path


def nightly(state: Path, bundle: Path, *extra: str) -> int:
    return groundbreak(["nightly", "--state", str(state), "--model", str(bundle),
                        "--log-format", "json", "--no-report", *extra])


def summary(state: Path, run_id: str) -> dict:
    return json.loads((state / "runs" / run_id / "summary.json").read_text())


def test_deeply_nested_scene_json_fails_its_pair_only(tmp_path: Path, tiny_bundle: Path) -> None:
    """Item 14: a scene JSON of 200,000 nested '[' ended the night with a traceback."""
    bomb = tmp_path / "bomb.json"
    bomb.write_text("[" * 200_000)
    dubai = OSCD / "dubai"
    pairs = write_pairs(tmp_path / "pairs.csv", [
        ["bad", dubai / "imgs_1", bomb, "", ""],
        ["dubai", dubai / "imgs_1", dubai / "imgs_2", "", ""],
    ])
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 1
    statuses = {p["pair_id"]: p["status"] for p in summary(state, "n1")["pairs"]}
    assert statuses == {"bad": "failed", "dubai": "scored"}
    reason = summary(state, "n1")["failures"][0]["reason"]
    assert reason.startswith("pair bad:") and "nested too deeply" in reason
    with sqlite3.connect(state / "state.sqlite") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("failed",)]


def test_an_emptied_state_is_damage_not_a_fresh_start(tmp_path: Path, tiny_bundle: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Item 15: a 0-byte state.sqlite was silently re-created (all history gone), exit 0."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.sqlite").write_bytes(b"")
    pairs = write_pairs(tmp_path / "pairs.csv", [["dubai", OSCD / "dubai" / "imgs_1",
                                                  OSCD / "dubai" / "imgs_2", "", ""]])
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 5
    assert "state.sqlite" in capsys.readouterr().err
    assert (state / "state.sqlite").stat().st_size == 0
    assert not (state / "runs" / "n1").exists()


def stac_item(item_id: str, when: str) -> dict:
    scene = OSCD / "beirut" / "imgs_1"
    assets = {f.stem.rsplit("_", 1)[1]: {"href": str(f), "type": "image/tiff", "roles": ["data"]}
              for f in sorted(scene.glob("*.tif"))}
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "geometry": None,
            "properties": {"datetime": f"{when}T08:00:00Z", "s2:mgrs_tile": "36SYC"},
            "assets": assets, "links": []}


def test_stac_ids_that_differ_only_in_sanitised_characters_keep_their_own_scene(
    tmp_path: Path,
) -> None:
    """Item 16: 'S2/x' and 'S2_x' shared scenes/<ground>/S2_x.json."""
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps({"type": "FeatureCollection", "features": [
        stac_item("S2/x", "2024-01-01"), stac_item("S2_x", "2025-01-01")]}))
    inputs = pairs_from_stac(collection, tmp_path / "state", [])
    scenes = [a.scene for a in inputs.acquisitions]
    assert len(set(scenes)) == 2 and all(Path(s).is_file() for s in scenes)
    assert {json.loads(Path(s).read_text())["stac_item"] for s in scenes} == {"S2/x", "S2_x"}


def test_a_config_run_from_another_folder_finds_its_work(tmp_path: Path, tiny_bundle: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 19: relative paths of a config made the same night re-predict from elsewhere."""
    home = tmp_path / "ops"
    home.mkdir()
    write_pairs(home / "pairs.csv", [["dubai", OSCD / "dubai" / "imgs_1",
                                      OSCD / "dubai" / "imgs_2", "", ""]])
    (home / "nightly.yaml").write_text(f"state_dir: state\npairs: pairs.csv\n"
                                       f"model: {tiny_bundle}\nreport: false\nlog_format: json\n")
    monkeypatch.chdir(home)
    assert groundbreak(["nightly", "--config", "nightly.yaml", "--run-id", "n1"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert groundbreak(["nightly", "--config", "../ops/nightly.yaml", "--run-id", "n2"]) == 0
    assert summary(home / "state", "n2")["counts"]["reused"] == 1
    assert not (elsewhere / "state").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("predictor: {tta: 'yes'}\n", "tta must be true or false"),
        ("predictor: {window: 0}\n", "window must be a whole number >= 1"),
        ("predictor: {batch_size: 2.5}\n", "batch_size must be a whole number"),
    ],
)
def test_predictor_options_of_the_wrong_type_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    """Item 25: 'predictor: {tta: yes}' was accepted."""
    (tmp_path / "p.csv").write_text("pair_id,before,after\n")
    path = tmp_path / "nightly.yaml"
    path.write_text("state_dir: s\npairs: p.csv\n" + text)
    with pytest.raises(InputError, match=message):
        build_config(read_config_file(path), path)


def test_a_yaml_alias_bomb_or_a_device_as_config_is_one_short_error(tmp_path: Path) -> None:
    """Items 23 and 25: a 700-byte alias bomb gave an 80 MB error line; /dev/zero grew to 7 GB;
    a FIFO hung."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
              f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="anchors and aliases") as err:
        read_config_file(bomb)
    assert len(str(err.value)) < 1000
    with pytest.raises(InputError, match="not a regular file"):
        read_config_file("/dev/zero")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_config_file(fifo)


def test_warnings_of_a_pair_are_events_of_the_night(tmp_path: Path, tiny_bundle: Path) -> None:
    """Item 5: the 'sensed after 2022-01-25, offset unknown' warning went to stderr only."""
    scenes = tmp_path / "scenes"
    for name in ("imgs_1", "imgs_2"):
        shutil.copytree(OSCD / "dubai" / name, scenes / name)
    pairs = write_pairs(tmp_path / "pairs.csv", [["dubai", scenes / "imgs_1",
                                                  scenes / "imgs_2", "2021-05-01", "2023-05-01"]])
    state = tmp_path / "state"
    assert nightly(state, tiny_bundle, "--pairs", str(pairs), "--run-id", "n1") == 0
    night = summary(state, "n1")
    assert night["counts"]["warnings"] == 1
    assert "radiometric offset" in night["warnings"][0]["warning"]
    events = [json.loads(line) for line in
              (state / "runs" / "n1" / "nightly.log.jsonl").read_text().splitlines()]
    warned = [e for e in events if e["event"] == "pair_warning"]
    assert [(e["level"], e["pair_id"]) for e in warned] == [("warning", "dubai")]
