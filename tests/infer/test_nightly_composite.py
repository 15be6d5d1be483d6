"""``pairing: {composite: median}``: the 'before' is the per-pixel median of the same-season
window's usable acquisitions, clouds left out (real OSCD beirut scenes, real cumulus)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from groundbreak.datasets.clouds import coarse_factor, scene_cloud_mask, window_of
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.radiometry import OSCD_CONVENTION
from groundbreak.datasets.scene import open_scene
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.composite import CompositeBuilder
from groundbreak.infer.nightly.config import build_config, describe_keys
from groundbreak.infer.nightly.pairing import (
    CompositePairSpec,
    PairingRule,
    composite_pair,
    composite_pair_of,
    pair_acquisitions,
)
from groundbreak.infer.nightly.state import AcquisitionRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BEIRUT = FIXTURES / "oscd" / "beirut"
S2_13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12"]
MEDIAN = PairingRule(composite="median")


def write_scene(path: Path, source: str = "imgs_2", gain: float = 1.0,
                cloudy: bool = False) -> Path:
    """A real beirut date (``imgs_1`` or ``imgs_2``) as one 13-band GeoTIFF, times ``gain``,
    with the real cumulus sample's clouds and shadows pasted when ``cloudy`` (as in
    test_nightly_clouds.py)."""
    scene = open_scene(BEIRUT / source)
    data = scene.read(S2_13) * np.float32(gain)
    if cloudy:
        with rasterio.open(FIXTURES / "clouds" / "cumulus_l1c_13band.tif") as src:
            block = src.read().astype(np.float32)[:, 64:160, 64:160]
        median = np.median(block, axis=(1, 2), keepdims=True)
        cloud = block[1] > 1800
        shadow = ~cloud & (block[7] < 0.75 * median[7, 0, 0])
        data[:, cloud] = block[:, cloud]
        data[:, shadow] *= np.clip(block / median, 0, 1)[:, shadow]
    profile = {"driver": "GTiff", "width": 96, "height": 96, "count": 13, "dtype": "uint16",
               "crs": scene.grid.crs, "transform": scene.grid.transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.clip(np.rint(np.nan_to_num(data)), 0, 65535).astype(np.uint16))
        dst.descriptions = tuple(S2_13)
    return path


def record(day: str, scene: Path | str, ground: str = "beirut") -> AcquisitionRecord:
    return AcquisitionRecord(ground, day, str(scene), "drop_folder")


def build(tmp_path: Path, scenes: list[Path]) -> tuple[CompositePairSpec, Path]:
    """The composite of ``scenes`` (dated 2016-09-01, -11, -21; grid: the first) for an
    acquisition of 2017-09-15; the folder it was written to."""
    members = [record(f"2016-09-{1 + 10 * i:02d}", s) for i, s in enumerate(scenes)]
    spec = composite_pair(record("2017-09-15", scenes[0]), members[0], members, "median",
                          tmp_path / "composites")
    assert CompositeBuilder("auto", lambda p: [(p.name, "x")]).ensure(spec)
    return spec, Path(spec.before).parent


def hidden_of(scene: Path) -> np.ndarray:
    opened = open_scene(scene)
    mask = scene_cloud_mask(opened, opened.grid, "auto", coarse_factor(opened.grid))
    assert mask is not None
    return window_of(mask.unobserved, mask.factor, opened.grid.full_window())


def values(scene: Path) -> np.ndarray:
    return open_scene(scene).read(S2_13, radiometry=OSCD_CONVENTION)


def test_composite_is_the_per_pixel_median_where_every_member_is_clear(tmp_path: Path) -> None:
    scenes = [write_scene(tmp_path / "a.tif", "imgs_1"),
              write_scene(tmp_path / "b.tif", "imgs_2"),
              write_scene(tmp_path / "c.tif", "imgs_1", gain=1.05)]
    spec, folder = build(tmp_path, scenes)
    composite = open_scene(spec.before)
    assert composite.band_names == S2_13 and composite.grid.same_as(open_scene(scenes[0]).grid)
    got = composite.read(S2_13)
    clear = ~np.any([hidden_of(s) for s in scenes], axis=0)
    assert clear.mean() > 0.9  # real clear scenes: (almost) nothing hidden
    expected = np.rint(np.median([values(s) for s in scenes], axis=0))
    np.testing.assert_array_equal(got[:, clear], expected[:, clear])
    manifest = json.loads(Path(spec.before).read_text())
    assert [m["date"] for m in manifest["composite"]["members"]] == [
        "2016-09-01", "2016-09-11", "2016-09-21"]
    assert manifest["composite"]["grid"] == {"date": "2016-09-01", "path": str(scenes[0])}
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{folder.name}_{b}.tif" for b in S2_13] + [f"{folder.name}_unseen.tif",
                                                      "composite.json"])


def test_a_pixel_under_a_cloud_in_one_member_takes_the_median_of_the_others(
    tmp_path: Path,
) -> None:
    scenes = [write_scene(tmp_path / "a.tif", "imgs_2"),
              write_scene(tmp_path / "b.tif", "imgs_2", cloudy=True),
              write_scene(tmp_path / "c.tif", "imgs_1")]
    spec, _ = build(tmp_path, scenes)
    hidden = [hidden_of(s) for s in scenes]
    under_cloud = hidden[1] & ~hidden[0] & ~hidden[2]
    assert under_cloud.mean() > 0.1  # the real cumulus is masked on a good part of the scene
    got = open_scene(spec.before).read(S2_13)
    a, c = values(scenes[0]), values(scenes[2])
    np.testing.assert_allclose(got[:, under_cloud], np.rint((a + c) / 2)[:, under_cloud],
                               atol=1)  # halves round either way
    cloudy = values(scenes[1])
    assert np.abs(got[1][under_cloud] - cloudy[1][under_cloud]).mean() > 500  # no cloud left
    unseen = open_scene(spec.before).read(S2_13[:1])  # every pixel has a value
    assert np.isfinite(unseen).all()


def test_one_usable_member_or_the_min_gap_fallback_keeps_the_single_reference() -> None:
    known = [record("2016-09-01", "/d/a"), record("2016-09-11", "/d/b"),
             record("2016-09-21", "/d/c")]
    after = record("2017-09-15", "/d/new")
    composites = Path("/state/composites")
    pairs, _ = pair_acquisitions([after], known, MEDIAN, {}, 0.5, composites)
    assert isinstance(pairs[0], CompositePairSpec)
    assert pairs[0].pair_id.startswith("beirut_20160911-median3-")  # nearest the anniversary
    assert pairs[0].pair_id.endswith("_20170915")
    assert pairs[0].before.parent.parent == composites
    again, _ = pair_acquisitions([after], known, MEDIAN, {}, 0.5, composites)
    assert again == pairs  # deterministic
    cloudy = {"/d/b": 0.9, "/d/c": 0.7}  # one usable left in the window: the single reference
    pairs, _ = pair_acquisitions([after], known, MEDIAN, cloudy, 0.5, composites)
    assert type(pairs[0]) is not CompositePairSpec
    assert pairs[0].pair_id == "beirut_20160901_20170915"
    late = record("2017-05-01", "/d/late")  # 7 months later: the min-gap fallback
    pairs, _ = pair_acquisitions([late], known, MEDIAN, {}, 0.5, composites)
    assert type(pairs[0]) is not CompositePairSpec
    assert pairs[0].pair_id == "beirut_20160901_20170501"
    single, _ = pair_acquisitions([after], known, PairingRule(), {}, 0.5)
    assert single[0].pair_id == "beirut_20160911_20170915"


def test_composite_option_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="composite must be one of none, median"):
        PairingRule(composite="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs rule reference"):
        PairingRule(rule="consecutive", composite="median")
    drop = tmp_path / "drop"
    drop.mkdir()
    config = build_config({"state_dir": "s", "drop_folder": str(drop),
                           "pairing": {"composite": "median"}}, tmp_path / "n.yaml")
    assert config.pairing == PairingRule(composite="median")
    for bad, message in (({"composite": "mean"}, "composite must be one of none, median"),
                         ({"composite": 2}, "composite must be one of"),
                         ({"rule": "consecutive", "composite": "median"}, "rule reference")):
        with pytest.raises(InputError, match=f"key 'pairing': .*{message}"):
            build_config({"state_dir": "s", "drop_folder": str(drop), "pairing": bad},
                         tmp_path / "n.yaml")
    assert "composite (none; median" in describe_keys()


def test_an_unreadable_member_is_an_error_naming_its_file(tmp_path: Path) -> None:
    scenes = [write_scene(tmp_path / "a.tif"), write_scene(tmp_path / "b.tif")]
    broken = tmp_path / "c.tif"
    broken.write_bytes(b"not a tiff at all")
    members = [record(f"2016-09-{1 + 10 * i:02d}", s) for i, s in enumerate([*scenes, broken])]
    spec = composite_pair(record("2017-09-15", scenes[0]), members[0], members, "median",
                          tmp_path / "composites")
    with pytest.raises(InputError, match="c.tif"):
        CompositeBuilder("auto", lambda p: [(p.name, "x")]).ensure(spec)
    assert not (tmp_path / "composites").exists() or not any(
        (tmp_path / "composites").iterdir())  # nothing half-written is left


def night(config: Path, run_id: str, code: int = 0) -> dict:
    assert groundbreak(["nightly", "--config", str(config), "--run-id", run_id]) == code
    return json.loads((config.parent / "state" / "runs" / run_id / "summary.json").read_text())


def stored_scenes(state_dir: Path, pair_id: str) -> dict:
    with sqlite3.connect(state_dir / "state.sqlite") as db:
        row = db.execute("SELECT scenes FROM pairs WHERE pair_id = ? AND scenes IS NOT NULL "
                         "ORDER BY id DESC", (pair_id,)).fetchone()
    return json.loads(row[0])


def test_nightly_compares_with_the_composite_and_a_rerun_reuses_it(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    write_scene(drop / "beirut_20160901.tif", "imgs_1")
    write_scene(drop / "beirut_20160911.tif", "imgs_1", gain=1.03)
    write_scene(drop / "beirut_20160921.tif", "imgs_1", cloudy=True)
    config = tmp_path / "nightly.yaml"
    config.write_text("state_dir: state\ndrop_folder: drop\nlog_format: json\nreport: false\n"
                      "cloudy_fraction: 0.9\npairing: {composite: median}\n")
    first = night(config, "n1")
    assert len(first["baselines"]) == 3 and not first["pairs"]
    write_scene(drop / "beirut_20170915.tif", "imgs_2")
    second = night(config, "n2")
    [pair] = second["pairs"]
    assert pair["status"] == "scored", pair
    assert pair["pair_id"].startswith("beirut_20160911-median3-")
    folder = tmp_path / "state" / "composites" / pair["pair_id"].rsplit("_", 1)[0]
    manifest = folder / "composite.json"
    written = manifest.stat().st_mtime_ns
    scenes = stored_scenes(tmp_path / "state", pair["pair_id"])
    evidence = scenes["before"]["composite"]
    assert scenes["before"]["path"] == str(manifest)
    assert [m["date"] for m in evidence["members"]] == ["2016-09-01", "2016-09-11", "2016-09-21"]
    assert all(m["sha256"] for m in evidence["members"])
    assert evidence["members"][2]["hidden"] > 0.1  # the cloudy member's clouds were left out
    assert {name for name, _ in evidence["files"]} >= {"composite.json", f"{folder.name}_B02.tif"}
    assert scenes["after"]["date"] == "2017-09-15"

    rerun = night(config, "n3")  # the same drop folder again: nothing is done twice
    assert [(p["pair_id"], p["status"]) for p in rerun["pairs"]] == [(pair["pair_id"], "reused")]
    assert manifest.stat().st_mtime_ns == written


def test_a_missing_member_fails_only_its_pair(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    for day in ("20160901", "20160911"):
        write_scene(drop / f"beirut_{day}.tif", "imgs_1")
    write_scene(drop / "other_20160101.tif", "imgs_1")
    config = tmp_path / "nightly.yaml"
    config.write_text("state_dir: state\ndrop_folder: drop\nlog_format: json\nreport: false\n"
                      "pairing: {composite: median}\n")
    night(config, "n1")
    (drop / "beirut_20160901.tif").unlink()  # a member the state knows is gone
    write_scene(drop / "beirut_20170915.tif", "imgs_2")
    write_scene(drop / "other_20170915.tif", "imgs_2")
    summary = night(config, "n2", code=1)
    pairs = {p["pair_id"]: p for p in summary["pairs"]}
    assert pairs["other_20160101_20170915"]["status"] == "scored"
    [failed] = [p for p in pairs.values() if p["status"] == "failed"]
    assert failed["pair_id"].startswith("beirut_20160911-median2-")
    assert "reference composite" in failed["reason"]
    assert "beirut_20160901.tif" in failed["reason"]


def test_composite_pair_ids_parse_back(tmp_path: Path) -> None:
    import importlib.util

    known = [record("2016-09-01", "/d/a"), record("2016-09-11", "/d/b")]
    after = record("2017-09-15", "/d/new")
    [pair], _ = pair_acquisitions([after], known, MEDIAN, {}, 0.5, tmp_path / "composites")
    again = composite_pair_of(pair.pair_id, tmp_path / "composites", [*known, after])
    assert again is not None and again.before == pair.before and again.after == pair.after
    assert (again.before_date, again.after_date) == ("2016-09-11", "2017-09-15")
    assert composite_pair_of("beirut_20160911_20170915", tmp_path, [*known, after]) is None
    bench = Path(__file__).resolve().parents[2] / "bench" / "sequence_bench.py"
    spec = importlib.util.spec_from_file_location("sequence_bench_ids", bench)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    assert module.pair_dates(pair.pair_id) == ["2016-09-11", "2017-09-15"]
    assert module.pair_dates("beirut_20160911_20170915") == ["2016-09-11", "2017-09-15"]
