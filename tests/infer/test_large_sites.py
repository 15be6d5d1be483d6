"""Large sites in bounded memory: a watch-list site too large to read at once is measured in
bands of rows (the same measure), and its report crops are read decimated."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from scipy import ndimage
from shapely.geometry import Polygon, box

from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import open_scene
from groundbreak.infer.report.crops import DISPLAY_PIXELS, render_site_crops
from groundbreak.infer.sites.scoring import SiteMeasure
from groundbreak.infer.sites.sites import measure_watch_site

TRANSFORM = Affine(10.0, 0, 500_000, 0, -10.0, 3_700_000)


@pytest.fixture(scope="module")
def probability_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smooth 240 x 200 probability field with a nodata patch, on a UTM grid."""
    rng = np.random.default_rng(2)
    field = ndimage.gaussian_filter(rng.random((240, 200)), 6)
    field = (field - field.min()) / (field.max() - field.min())
    field[100:130, 40:90] = np.nan
    path = tmp_path_factory.mktemp("prob") / "probability.tif"
    with rasterio.open(path, "w", driver="GTiff", height=240, width=200, count=1,
                       dtype="float32", nodata=float("nan"), crs=CRS.from_epsg(32636),
                       transform=TRANSFORM, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(field.astype(np.float32), 1)
    return path


def at(col: float, row: float) -> tuple[float, float]:
    return TRANSFORM @ (col, row)


SITES = {
    "polygon with a hole": Polygon(
        [at(5, 3), at(190, 20), at(170, 235), at(12, 200)],
        holes=[[at(60, 60), at(120, 60), at(120, 120), at(60, 120)]],
    ),
    "thin sliver": Polygon([at(10, 10), at(10.3, 10), at(190.3, 230), at(190, 230)]),
    "sliver between pixel centres": box(*at(5, 10.7), *at(195, 10.6)),  # all_touched fallback
    "partly outside the raster": box(*at(150, 250), *at(260, 150)),
    "all nodata but one corner": box(*at(40, 129.5), *at(90, 100)),
}


def assert_same(a: SiteMeasure, b: SiteMeasure) -> None:
    assert (a.pixels, a.valid_pixels, a.changed_pixels) == (
        b.pixels, b.valid_pixels, b.changed_pixels
    )
    for name in ("changed_area", "confidence", "mean_probability", "max_probability", "score"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-6, nan_ok=True), name


@pytest.mark.parametrize("name", list(SITES))
@pytest.mark.parametrize("band_rows", [1, 7, 64])
def test_site_measured_in_bands_equals_one_read(
    probability_path: Path, name: str, band_rows: int
) -> None:
    geometry = SITES[name]
    with rasterio.open(probability_path) as src:
        whole = measure_watch_site(src, geometry, 0.5)
        assert whole is not None
        banded = measure_watch_site(src, geometry, 0.5, band_pixels=band_rows * 200)
    assert banded is not None
    assert banded[1] == whole[1]
    assert_same(banded[0], whole[0])
    assert whole[0].pixels > 0


def test_site_on_no_pixel_is_none_in_bands(probability_path: Path) -> None:
    off = box(*at(300, 500), *at(400, 400))
    with rasterio.open(probability_path) as src:
        assert measure_watch_site(src, off, 0.5, band_pixels=200) is None


def test_crops_of_a_large_site_are_read_decimated(fixtures_dir: Path, tmp_path: Path) -> None:
    """A site's crop larger than ``max_read_pixels`` a side is read on a coarser grid."""
    folder = fixtures_dir / "oscd" / "beirut"
    pair = TilePair("beirut", open_scene(folder / "imgs_1"), open_scene(folder / "imgs_2"))
    grid = pair.grid
    probability = tmp_path / "probability.tif"
    with rasterio.open(probability, "w", driver="GTiff", height=grid.height, width=grid.width,
                       count=1, dtype="float32", nodata=float("nan"), crs=grid.crs,
                       transform=grid.transform) as dst:
        dst.write(np.random.default_rng(0).random(grid.shape, dtype=np.float32), 1)
    site = box(*grid.bounds).buffer(-grid.transform.a * 10)
    full = render_site_crops(pair, probability, site)
    coarse = render_site_crops(pair, probability, site, max_read_pixels=40)
    assert full is not None and coarse is not None
    factor = -(-grid.width // 40)
    side = grid.width // factor
    assert (coarse.window.width, coarse.window.height) == (side * factor, side * factor)
    scale = round(DISPLAY_PIXELS / side)
    for png in (coarse.before, coarse.after, coarse.overlay):
        assert Image.open(io.BytesIO(png)).size == (side * scale, side * scale)
    assert Image.open(io.BytesIO(full.before)).size[0] == grid.width * round(
        DISPLAY_PIXELS / grid.width
    )
