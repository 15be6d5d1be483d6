"""Rows of a JPEG 2000 band decoded through the strips are spilled to disk and read back from
there, exactly, until the spill ends; other files are not spilled (issue 25 item 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from groundbreak.datasets.grid import Grid
from groundbreak.datasets.scenes.rasters import BandSource
from groundbreak.datasets.scenes.row_spill import rows_spilled, spilled_rows
from groundbreak.datasets.scenes.strips import files_kept_open, opened, strip_rows


def _band(path: Path, driver: str, data: np.ndarray) -> BandSource:
    profile = {"driver": driver, "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype, "crs": CRS.from_epsg(32636),
               "transform": Affine(10, 0, 600_000, 0, -10, 4_000_000)}
    if driver == "JP2OpenJPEG":
        profile.update(quality=100, reversible=True, blockxsize=64, blockysize=64)
    else:
        profile.update(compress="deflate", tiled=True, blockxsize=64, blockysize=64)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    with rasterio.open(path) as src:
        return BandSource(path, 1, Grid(src.width, src.height, src.transform, src.crs), None)


def test_rows_decoded_through_strips_are_read_back_from_the_spill(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 10_000, (200, 150), dtype=np.uint16)
    jp2 = _band(tmp_path / "b.jp2", "JP2OpenJPEG", data)
    tif = _band(tmp_path / "b.tif", "GTiff", data)
    spill_dir = tmp_path / "spill"
    with rows_spilled([jp2, tif], spill_dir) as spilled:
        with files_kept_open():
            for source in (jp2, tif):
                with opened(source.path) as src:
                    strip_rows(src, 1, (0, 70))  # decodes block rows 0-127
                    strip_rows(src, 1, (60, 120))
        assert not spilled.every_band  # the GeoTIFF is not spilled
        with rasterio.open(jp2.path) as src:
            rows, start = spilled_rows(src, 1, (10, 128)) or (None, None)
            assert start == 10 and rows is not None
            np.testing.assert_array_equal(rows, data[10:128])
            assert spilled_rows(src, 1, (100, 140)) is None  # row 128 on was never decoded
        with rasterio.open(tif.path) as src:
            assert spilled_rows(src, 1, (0, 10)) is None
        assert any(spill_dir.iterdir())
    assert not spill_dir.exists()
    with rasterio.open(jp2.path) as src:
        assert spilled_rows(src, 1, (0, 10)) is None
