"""Cloud and shadow masks (groundbreak.datasets.clouds): the SCL path on synthetic and real
Sen2Cor classifications."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from groundbreak.datasets.clouds import mask_at, scene_cloud_mask
from groundbreak.datasets.scene import Scene, open_scene, single_band_source

CLOUDS = Path(__file__).resolve().parents[1] / "fixtures" / "clouds"
BARBELLINO_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12"]
UTM = "EPSG:32631"
ORIGIN = (500_000.0, 4_800_000.0)


def write(path: Path, data: np.ndarray, pixel_m: float) -> Path:
    """A single-band GeoTIFF (uint8 or uint16) with its top-left corner at :data:`ORIGIN`."""
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype.name, "crs": UTM,
               "transform": Affine(pixel_m, 0, ORIGIN[0], 0, -pixel_m, ORIGIN[1])}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def scene_with_scl(tmp_path: Path, scl: np.ndarray) -> Scene:
    """A 10 m scene (one band) with ``scl`` as its 20 m scene classification."""
    band = np.full((scl.shape[0] * 2, scl.shape[1] * 2), 1200, np.uint16)
    scene = open_scene(write(tmp_path / "B02.tif", band, 10.0), band_names=["B02"])
    scene.scl = single_band_source(write(tmp_path / "SCL.tif", scl, 20.0), nodata=0.0)
    return scene


def covered(scene: Scene, pixels: np.ndarray) -> np.ndarray:
    """For each 20 m SCL pixel (row, col), whether the SCL mask hides all four 10 m pixels."""
    mask = scene_cloud_mask(scene, scene.grid, "scl")
    assert mask is not None and mask.method == "scl"
    return np.array([
        mask_at(mask.unobserved, mask.factor, np.arange(2 * r, 2 * r + 2),
                np.arange(2 * c, 2 * c + 2)).all()
        for r, c in pixels
    ])


def test_scl_mask_hides_isolated_cloud_and_shadow_pixels(tmp_path: Path) -> None:
    scl = np.full((90, 90), 4, np.uint8)  # vegetation
    rng = np.random.default_rng(0)
    pixels = rng.choice(90 * 90, 60, replace=False)
    pixels = np.stack(np.unravel_index(pixels, scl.shape), axis=1)
    for i, (r, c) in enumerate(pixels):
        scl[r, c] = (3, 8, 9, 10)[i % 4]  # shadow, cloud (medium, high), cirrus
    hidden = covered(scene_with_scl(tmp_path, scl), pixels)
    assert hidden.all(), f"{(~hidden).sum()} of {len(pixels)} isolated pixels stay visible"


def test_scl_mask_is_dilated_like_the_s2cloudless_mask_and_spares_clear_classes(
    tmp_path: Path,
) -> None:
    scl = np.tile(np.array([2, 4, 5, 6, 7, 11], np.uint8), (90, 15))  # no cloud, no shadow
    (tmp_path / "clear").mkdir()
    clear = scene_with_scl(tmp_path / "clear", scl)
    assert not scene_cloud_mask(clear, clear.grid, "scl").unobserved.any()
    scl[45, 45] = 9  # one 20 m cloud pixel: 60 m block (15, 15), dilated by 120 m
    scene = scene_with_scl(tmp_path, scl)
    mask = scene_cloud_mask(scene, scene.grid, "scl")
    assert mask.cloud[15, 13] and mask.cloud[15, 17] and mask.cloud[13, 15]
    assert not mask.cloud[15, 12] and not mask.cloud[18, 18] and mask.cloud.sum() == 13


def test_real_sen2cor_clouds_are_all_masked(fixtures_dir: Path) -> None:
    """Barbellino 2017-07-03 (real L2A, clouds in its upper part): every 20 m pixel Sen2Cor
    calls cloud or cirrus is hidden; the clear 2019 date keeps most of its pixels."""
    cloudy = open_scene(CLOUDS / "S2A2A_20170703_022_Barbellino_BOA_10.tif",
                        band_names=BARBELLINO_BANDS)
    cloudy.scl = single_band_source(CLOUDS / "S2A2A_20170703_022_Barbellino_SCL_10.tif", 0.0)
    with rasterio.open(cloudy.scl.path) as src:
        classes = src.read(1)
    pixels = np.argwhere(np.isin(classes, (3, 8, 9, 10)))
    assert len(pixels) > 20
    hidden = covered(cloudy, pixels)
    assert hidden.all(), f"{(~hidden).sum()} of {len(pixels)} Sen2Cor cloud pixels visible"
