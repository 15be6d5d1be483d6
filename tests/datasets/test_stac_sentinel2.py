"""Sentinel-2 STAC items as catalogues serve them: band names, SCL, offsets, sun angles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from groundbreak.datasets.bands import sentinel2_band_of
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.radiometry import OSCD_CONVENTION
from groundbreak.datasets.scene import open_scene

EARTH_SEARCH_KEYS = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B11": "swir16", "B12": "swir22",
}


@pytest.mark.parametrize(
    ("name", "band"),
    [("blue", "B02"), ("nir08", "B8A"), ("swir16", "B11"), ("rededge2", "B06"),
     ("red-jp2", "B04"), ("B8A", "B8A"), ("b2", "B02"), ("scl", "SCL"), ("visual", None)],
)
def test_catalogue_names_map_onto_sentinel2_bands(name: str, band: str | None) -> None:
    assert sentinel2_band_of(name) == band


def test_rededge_common_name_is_told_apart_by_wavelength() -> None:
    assert sentinel2_band_of("rededge", 0.74) == "B06"
    assert sentinel2_band_of("rededge") is None


def earth_search_item(folder: Path, tmp_path: Path, **properties: object) -> Path:
    """An Earth Search v1 style L2A item over a real OSCD scene (its GeoTIFFs as assets)."""
    scene = open_scene(folder)
    assets: dict[str, dict] = {}
    for band, source in scene.sources.items():
        if band not in EARTH_SEARCH_KEYS:
            continue  # L2A has no B10
        key = EARTH_SEARCH_KEYS[band]
        raster = [{"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]
        assets[key] = {"href": str(source.path), "type": "image/tiff; application=geotiff",
                       "roles": ["data"], "raster:bands": raster,
                       "eo:bands": [{"name": key, "common_name": key}]}
        assets[f"{key}-jp2"] = {"href": str(source.path).replace(".tif", ".jp2"),
                                "type": "image/jp2", "roles": ["data"]}
    assets["scl"] = {"href": str(scene.sources["B05"].path), "type": "image/tiff",
                     "roles": ["data"]}
    assets["thumbnail"] = {"href": "thumb.jpg", "type": "image/jpeg", "roles": ["thumbnail"]}
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2B_36SYC_20230601_0_L2A",
        "collection": "sentinel-2-l2a", "geometry": None, "bbox": None,
        "properties": {"datetime": "2023-06-01T08:27:39Z", "platform": "sentinel-2b",
                       "s2:processing_baseline": "05.09", "view:sun_azimuth": 140.0,
                       "view:sun_elevation": 60.0, **properties},
        "assets": assets, "links": [],
    }
    path = tmp_path / "item.json"
    path.write_text(json.dumps(item))
    return path


def test_earth_search_item_is_a_sentinel2_scene(fixtures_dir: Path, tmp_path: Path) -> None:
    folder = fixtures_dir / "oscd" / "beirut" / "imgs_2"
    scene = open_scene(earth_search_item(folder, tmp_path))
    assert scene.band_names == list(EARTH_SEARCH_KEYS)
    assert all(str(s.path).endswith(".tif") for s in scene.sources.values())  # COG over JP2
    assert scene.scl is not None
    assert scene.date == "2023-06-01"
    assert scene.sun_angles == (140.0, 30.0)
    assert scene.radiometry.offset("B04") == -1000.0  # raster:bands offset / scale
    assert scene.radiometry.quantification == pytest.approx(10000.0)


@pytest.mark.parametrize(
    ("properties", "offset"),
    [
        ({"earthsearch:boa_offset_applied": True}, 0.0),  # pixels already harmonised
        ({"earthsearch:boa_offset_applied": False}, -1000.0),  # baseline 05.09 says so
    ],
)
def test_earth_search_offset_flag_wins_over_raster_bands(
    fixtures_dir: Path, tmp_path: Path, properties: dict, offset: float
) -> None:
    folder = fixtures_dir / "oscd" / "beirut" / "imgs_2"
    scene = open_scene(earth_search_item(folder, tmp_path, **properties))
    assert scene.radiometry.offset("B02") == offset
    values = scene.read(["B02"], radiometry=OSCD_CONVENTION)
    np.testing.assert_allclose(values, open_scene(folder).read(["B02"]) + offset, atol=1e-3)


def test_two_cogs_of_one_band_are_ambiguous(fixtures_dir: Path, tmp_path: Path) -> None:
    path = earth_search_item(fixtures_dir / "oscd" / "beirut" / "imgs_2", tmp_path)
    item = json.loads(path.read_text())
    item["assets"]["blue-copy"] = dict(item["assets"]["blue"], href="/elsewhere/B02.tif")
    path.write_text(json.dumps(item))
    with pytest.raises(InputError, match="band B02 is ambiguous"):
        open_scene(path)
