"""Cloud and shadow masks (groundbreak.datasets.clouds): the SCL path on synthetic and real
Sen2Cor classifications; the s2cloudless path on real clouds, thin cirrus, bright desert and
roofs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from groundbreak.datasets.clouds import mask_at, scene_cloud_mask
from groundbreak.datasets.scene import Scene, open_scene, single_band_source

CLOUDS = Path(__file__).resolve().parents[1] / "fixtures" / "clouds"
DEMO = Path(__file__).resolve().parents[2] / "infer" / "demo_data"
S2_13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12"]
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


def hidden(scene: Scene, grid=None) -> np.ndarray:
    """The ``auto`` mask's unobserved pixels on ``grid`` (default: the scene's)."""
    grid = grid or scene.grid
    mask = scene_cloud_mask(scene, grid, "auto")
    assert mask is not None and mask.method == "s2cloudless"
    return mask_at(mask.unobserved, mask.factor, np.arange(grid.height), np.arange(grid.width))


def test_clear_desert_and_bright_roofs_are_not_cloud() -> None:
    """Real clear scenes that s2cloudless alone calls partly cloudy: the demo's Dubai (sand and
    bright roofs; 9.2 % and 7.4 % of its dates were hidden) and factory roofs of OSCD's Beihai
    2016 (27 % hidden)."""
    before = open_scene(DEMO / "dubai_before.tif")
    assert hidden(before).mean() < 0.01
    assert hidden(open_scene(DEMO / "dubai_after.tif"), before.grid).mean() < 0.01
    assert hidden(open_scene(CLOUDS / "beihai_roofs")).mean() < 0.01


def test_cloud_rims_and_small_clouds_are_masked() -> None:
    """The real cumulus fixture: its visibly cloudy pixels (B02 TOA above 0.18) are hidden, rims
    and small clouds included (46 % of them stayed visible with the 180 m block mask alone)."""
    path = CLOUDS / "cumulus_l1c_13band.tif"
    with rasterio.open(path) as src:
        cloudy = src.read(S2_13.index("B02") + 1) > 1800
    unobserved = hidden(open_scene(path, band_names=S2_13))
    assert cloudy.mean() > 0.1
    assert (~unobserved[cloudy]).mean() < 0.1


def test_thin_cirrus_is_masked() -> None:
    """A real scene under thin cirrus (B10 TOA 0.02-0.03) that s2cloudless calls clear."""
    assert hidden(open_scene(CLOUDS / "cirrus_T31TDH")).mean() > 0.95


def test_mask_covers_the_last_rows_and_columns_of_a_scene(tmp_path: Path) -> None:
    """A 100 x 100 px scene (not a whole number of 60 m mask pixels) under real thick cloud:
    its partial last mask row and column are masked too."""
    with rasterio.open(CLOUDS / "cumulus_l1c_13band.tif") as src:
        core = src.read()[:, 92:124, 128:160]  # 32 x 32 px of the sample's densest cloud
    data = np.tile(core, (1, 4, 4))[:, :100, :100]
    profile = {"driver": "GTiff", "width": 100, "height": 100, "count": 13, "dtype": "uint16",
               "crs": UTM, "transform": Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])}
    with rasterio.open(tmp_path / "overcast.tif", "w", **profile) as dst:
        dst.write(data)
    assert hidden(open_scene(tmp_path / "overcast.tif", band_names=S2_13)).all()


def test_roofs_stay_clear_beside_a_large_nodata_area(tmp_path: Path) -> None:
    """The Beihai roofs with the left 60 % of every band nodata (a swath edge): the blocks
    without data do not enter the scene's clear statistics."""
    for band in (CLOUDS / "beihai_roofs").iterdir():
        with rasterio.open(band) as src:
            data, profile = src.read(1), src.profile | {"nodata": 0}
        data[:, : int(data.shape[1] * 0.6)] = 0
        with rasterio.open(tmp_path / band.name, "w", **profile) as dst:
            dst.write(data, 1)
    assert hidden(open_scene(tmp_path))[:, 100:].mean() < 0.01
