"""A STAC Item JSON file opens as a scene where its bands are unambiguous."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scene import open_scene

OSCD = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"


def item(scene_dir: Path, when: str = "2015-08-20") -> dict:
    assets = {
        f.stem.rsplit("_", 1)[1].lower(): {"href": str(f), "type": "image/tiff",
                                           "roles": ["data"]}
        for f in sorted(scene_dir.glob("*.tif"))
    }
    assets["thumbnail"] = {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}
    return {"type": "Feature", "stac_version": "1.0.0", "id": "S2A_1", "geometry": None,
            "properties": {"datetime": f"{when}T10:00:00Z"}, "assets": assets, "links": []}


def test_stac_item_opens_as_a_scene(tmp_path: Path) -> None:
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item(OSCD / "beirut" / "imgs_1")))
    scene = open_scene(path)
    assert len(scene.band_names) == 13 and scene.date == "2015-08-20"
    assert scene.grid.shape == (96, 96)
    assert scene.read(["B04"]).shape == (1, 96, 96)


def test_ambiguous_item_and_collection_are_clear_errors(tmp_path: Path) -> None:
    document = item(OSCD / "beirut" / "imgs_1")
    document["assets"]["red"] = {**document["assets"]["b03"], "eo:bands": [{"name": "B04"}]}
    path = tmp_path / "item.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match="band B04 is ambiguous"):
        open_scene(path)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [document]}))
    with pytest.raises(InputError, match="nightly --stac"):
        open_scene(path)
    path.write_text(json.dumps({"bands": {"B04": str(next((OSCD / "beirut" / "imgs_1")
                                                          .glob("*_B04.tif")))}}))
    assert open_scene(path).band_names == ["B04"]  # a scene manifest is still one


def test_fifo_is_no_scene(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "scene.tif")
    with pytest.raises(InputError, match="not a regular file"):
        open_scene(tmp_path / "scene.tif")


def test_deeply_nested_scene_json_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "scene.json"
    deep.write_text("[" * 200_000)
    with pytest.raises(InputError, match=r"scene\.json: cannot be read as .*nested too deeply"):
        open_scene(deep)


@pytest.mark.parametrize(("azimuth", "zenith"), [("east", 40), (140, "NaN"), (140, 95)])
def test_unusable_sun_angles_in_a_manifest_are_one_line(
    tmp_path: Path, azimuth: object, zenith: object
) -> None:
    band = next((OSCD / "beirut" / "imgs_1").glob("*_B04.tif"))
    path = tmp_path / "scene.json"
    path.write_text(json.dumps({"bands": {"B04": str(band)}, "sun_azimuth": azimuth,
                                "sun_zenith": zenith}).replace('"NaN"', "NaN"))
    with pytest.raises(InputError, match=r"scene\.json: .*sun"):
        open_scene(path)
