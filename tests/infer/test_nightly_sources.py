"""Nightly sources: STAC ItemCollections and drop folders become dated pairs of the same ground."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import rasterio
from rasterio.warp import transform_bounds

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scene import open_scene
from groundbreak.infer.nightly.pairing import PairingRule, pair_acquisitions
from groundbreak.infer.nightly.sources import (
    drop_folder_acquisitions,
    mgrs_ground,
    pairs_from_drop_folder,
    pairs_from_stac,
)
from groundbreak.infer.nightly.state import AcquisitionRecord

OSCD = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"


def stac_item(scene_dir: Path, item_id: str, when: str, base: Path, **properties) -> dict:
    """A STAC item whose assets are the per-band files of a fixture scene (relative hrefs)."""
    b02 = next(scene_dir.glob("*_B02.tif"))
    with rasterio.open(b02) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    assets = {}
    for band_file in sorted(scene_dir.glob("*.tif")):
        band = band_file.stem.rsplit("_", 1)[1]
        assets[band.lower()] = {
            "href": os.path.relpath(band_file, base), "type": "image/tiff; application=geotiff",
            "roles": ["data"], "eo:bands": [{"name": band}],
        }
    assets["thumbnail"] = {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id,
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "geometry": {"type": "Polygon", "coordinates": [[[west, south], [east, south],
                     [east, north], [west, north], [west, south]]]},
        "bbox": [west, south, east, north],
        "properties": {"datetime": f"{when}T10:00:00Z", **properties},
        "assets": assets, "links": [],
    }


def write_collection(path: Path, items: list[dict]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def test_stac_items_of_one_tile_pair_up_and_open(tmp_path: Path) -> None:
    collection = write_collection(tmp_path / "items.json", [
        stac_item(OSCD / "beirut" / "imgs_2", "S2_after", "2017-10-03", tmp_path,
                  **{"s2:mgrs_tile": "36SYC"}),
        stac_item(OSCD / "beirut" / "imgs_1", "S2_before", "2015-08-20", tmp_path,
                  **{"s2:mgrs_tile": "36SYC"}),
    ])
    inputs = pairs_from_stac(collection, tmp_path / "state", known=[])
    assert [b.acquired for b in inputs.baselines] == ["2015-08-20"]
    (spec,) = inputs.pairs
    assert spec.pair_id == "MGRS-36SYC_20150820_20171003"
    assert spec.before.suffix == ".json" and spec.before.is_relative_to(tmp_path / "state")
    pair = spec.open(with_label=False)
    assert len(pair.common_bands) == 13 and pair.grid.shape == (96, 96)
    before, after = pair.read(["B04", "B8A"])
    assert before.shape == after.shape == (2, 96, 96)


def test_stac_ground_from_footprint_matches_a_stored_acquisition(tmp_path: Path) -> None:
    first = write_collection(tmp_path / "night1.json", [
        stac_item(OSCD / "abudhabi" / "imgs_1", "A1", "2016-01-20", tmp_path)])
    night1 = pairs_from_stac(first, tmp_path / "state", known=[])
    assert night1.pairs == [] and len(night1.baselines) == 1
    ground = night1.baselines[0].ground_id
    assert ground.startswith("fp-")
    second = write_collection(tmp_path / "night2.json", [
        stac_item(OSCD / "abudhabi" / "imgs_2", "A2", "2018-03-28", tmp_path)])
    night2 = pairs_from_stac(second, tmp_path / "state", known=night1.acquisitions,
                             footprint_iou=0.8)
    assert [p.pair_id for p in night2.pairs] == [f"{ground}_20160120_20180328"]
    assert open_scene(night2.pairs[0].after).grid.shape == (97, 97)


def test_stac_item_without_band_assets_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    item = stac_item(OSCD / "beirut" / "imgs_1", "empty", "2015-08-20", tmp_path)
    item["assets"] = {"thumbnail": item["assets"]["thumbnail"]}
    inputs = pairs_from_stac(write_collection(tmp_path / "c.json", [item]), tmp_path / "s", [])
    assert inputs.problems == [
        ("stac item empty",
         "item empty: STAC Item has no single-band raster (GeoTIFF/JP2) data asset")]


def test_bad_stac_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "items.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="items.json: cannot be read as STAC ItemCollection"):
        pairs_from_stac(bad, tmp_path / "s", [])
    bad.write_text(json.dumps({"type": "Collection", "features": "none"}))
    with pytest.raises(InputError, match="items.json: is not a STAC ItemCollection"):
        pairs_from_stac(bad, tmp_path / "s", [])
    bad.write_text(json.dumps(stac_item(OSCD / "beirut" / "imgs_1", "one", "2015-08-20",
                                        tmp_path)))
    with pytest.raises(InputError, match="items.json: is a single STAC Item"):
        pairs_from_stac(bad, tmp_path / "s", [])


def test_one_bad_stac_item_is_recorded_and_the_rest_go_on(tmp_path: Path) -> None:
    def item(item_id: str, when: str = "2017-10-03", **properties) -> dict:
        return stac_item(OSCD / "beirut" / "imgs_2", item_id, when, tmp_path, **properties)

    bad_geometry = item("bad-geometry")
    bad_geometry["geometry"] = {"type": "Polygon", "coordinates": "nope"}
    bad_band = item("bad-band", **{"s2:mgrs_tile": "36SYD"})
    bad_band["assets"]["b02"]["eo:bands"] = [{"name": 42}]
    items = [
        {"id": 1},
        item("bad-zone", **{"mgrs:utm_zone": "x", "mgrs:latitude_band": "S",
                            "mgrs:grid_square": "YC"}),
        bad_geometry,
        bad_band,
        item("escape", **{"s2:mgrs_tile": "../../../outside"}),
        item("escape2", **{"mgrs:utm_zone": 36, "mgrs:latitude_band": "/tmp",
                           "mgrs:grid_square": "x"}),
        item("good", **{"s2:mgrs_tile": "36SYC"}),
    ]
    state = tmp_path / "state"
    inputs = pairs_from_stac(write_collection(tmp_path / "c.json", items), state, [])
    assert [b.ground_id for b in inputs.baselines] == ["MGRS-36SYC"]
    assert [entry for entry, _ in inputs.problems] == [
        "stac item #1", "stac item bad-zone", "stac item bad-geometry", "stac item bad-band",
        "stac item escape", "stac item escape2"]
    assert "cannot be" not in inputs.problems[4][1] and "ground" in inputs.problems[4][1]
    written = [p for p in tmp_path.rglob("*.json") if p.parent != tmp_path]
    assert all(p.is_relative_to(state / "scenes") for p in written)
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize(
    ("properties", "ground"),
    [
        ({"mgrs:utm_zone": 36, "mgrs:latitude_band": "S", "mgrs:grid_square": "YC"},
         "MGRS-36SYC"),
        ({"grid:code": "MGRS-36SYC"}, "MGRS-36SYC"),
        ({"s2:mgrs_tile": "T36SYC"}, "MGRS-36SYC"),
        ({}, None),
    ],
)
def test_mgrs_ground(properties: dict, ground: str | None) -> None:
    assert mgrs_ground(properties) == ground


def test_drop_folder_naming_and_pairing(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "beirut_20150820").symlink_to(OSCD / "beirut" / "imgs_1")
    (drop / "beirut_20150821.partial").mkdir()  # still being copied in
    (drop / "README.txt").write_text("not a scene")
    night1 = pairs_from_drop_folder(drop, known=[])
    assert night1.pairs == [] and [b.ground_id for b in night1.baselines] == ["beirut"]
    assert night1.ignored == ["README.txt"]
    (drop / "beirut_2017-10-03").symlink_to(OSCD / "beirut" / "imgs_2")
    night2 = pairs_from_drop_folder(drop, known=night1.acquisitions)
    (spec,) = night2.pairs
    assert spec.pair_id == "beirut_20150820_20171003"
    assert (spec.before_date, spec.after_date) == ("2015-08-20", "2017-10-03")
    assert spec.open(with_label=False).grid.shape == (96, 96)


def test_drop_folder_pairs_with_a_stored_scene_no_longer_in_the_folder(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "beirut_20171003").symlink_to(OSCD / "beirut" / "imgs_2")
    stored = AcquisitionRecord("beirut", "2015-08-20", str(OSCD / "beirut" / "imgs_1"), "drop")
    later = AcquisitionRecord("beirut", "2019-01-01", "/elsewhere", "drop")
    inputs = pairs_from_drop_folder(drop, known=[stored, later])
    assert [(p.before, p.before_date) for p in inputs.pairs] == [
        (OSCD / "beirut" / "imgs_1", "2015-08-20")]


def test_same_ground_twice_on_one_date_is_a_problem_and_the_rest_go_on(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "beirut_20150820").symlink_to(OSCD / "beirut" / "imgs_1")
    (drop / "beirut_2015-08-20_v2").symlink_to(OSCD / "beirut" / "imgs_1")
    (drop / "dubai_20151211").symlink_to(OSCD / "dubai" / "imgs_1")
    records, ignored, problems = drop_folder_acquisitions(drop)
    assert sorted(r.ground_id for r in records) == ["beirut", "dubai"] and ignored == []
    assert [(entry, reason.split(" (")[0]) for entry, reason in problems] == [
        ("drop entry beirut_20150820", "a second scene of ground beirut on 2015-08-20")]


def test_drop_folder_entry_that_is_no_regular_file_is_a_problem(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    os.mkfifo(drop / "beirut_20150820.tif")
    (drop / "dubai_20151211.tif").symlink_to("/dev/zero")
    (drop / "abudhabi_20160120").symlink_to(OSCD / "abudhabi" / "imgs_1")
    records, _, problems = drop_folder_acquisitions(drop)
    assert [r.ground_id for r in records] == ["abudhabi"]
    assert [(entry, "regular file" in reason) for entry, reason in problems] == [
        ("drop entry beirut_20150820.tif", True), ("drop entry dubai_20151211.tif", True)]


def acq(day: str, ground: str = "g") -> AcquisitionRecord:
    return AcquisitionRecord(ground, day, f"/s/{day}", "x")


def test_consecutive_rule_uses_the_latest_earlier_acquisition() -> None:
    pairs, baselines = pair_acquisitions([acq("2024-03-01"), acq("2024-01-01")],
                                         [acq("2023-06-01"), acq("2024-02-01")],
                                         PairingRule(rule="consecutive"))
    assert [(p.before_date, p.after_date) for p in pairs] == [
        ("2023-06-01", "2024-01-01"), ("2024-02-01", "2024-03-01")]
    assert baselines == []


def test_reference_rule_compares_with_the_same_season_a_year_earlier() -> None:
    """Failure 1 of the monitoring issue: a new acquisition was compared with the one 40 days
    before it, a sliver of gradual construction and a season the model never learned."""
    history = [acq(d) for d in ("2023-01-10", "2023-02-20", "2023-03-30", "2023-12-20",
                                "2024-01-29")]
    pairs, _ = pair_acquisitions([acq("2024-03-05")], history)
    assert [(p.before_date, p.after_date) for p in pairs] == [("2023-02-20", "2024-03-05")]
    assert pairs[0].pair_id == "g_20230220_20240305"
    # the clearest in the window wins over the nearest to the anniversary
    clouds = {"/s/2023-02-20": 0.3, "/s/2023-03-30": 0.0}
    pairs, _ = pair_acquisitions([acq("2024-03-05")], history, clouds=clouds)
    assert pairs[0].before_date == "2023-03-30"
    # a cloudy one is never a reference; two years back when a year back has none
    clouds = {f"/s/{d}": 0.9 for d in ("2023-02-20", "2023-03-30")}
    older = [*history, acq("2022-03-01")]
    pairs, _ = pair_acquisitions([acq("2024-03-05")], older, clouds=clouds, cloudy_fraction=0.5)
    assert pairs[0].before_date == "2022-03-01"


def test_reference_rule_falls_back_to_the_oldest_then_to_a_baseline() -> None:
    history = [acq("2024-01-01"), acq("2024-03-01"), acq("2024-05-01")]
    pairs, baselines = pair_acquisitions([acq("2024-08-01"), acq("2024-05-20")], history)
    assert [(p.before_date, p.after_date) for p in pairs] == [("2024-01-01", "2024-08-01")]
    assert [b.acquired for b in baselines] == ["2024-05-20"]  # 140 days of history: nothing yet
    again, _ = pair_acquisitions([acq("2024-08-01"), acq("2024-05-20")], history)
    assert again == pairs  # deterministic: a rerun pairs the same way
