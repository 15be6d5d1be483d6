"""How much of the ground around each site a pair could not see: the alert policy's per-site
cloud check.

Cloud masks miss thin rims and the shadows' edges, so a detection right beside a cloud may be
the cloud's. The alert policy (:mod:`.alert_policy`) lets a detection confirm a site only when
the site and the ground within ``confirm_margin_m`` of it were seen on both dates. This module
measures that share on a published pair's ``mask.tif``, whose nodata (255) marks every pixel
hidden by a cloud or a shadow on either date, or outside either scene.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.grid import Grid, geometry_window
from groundbreak.datasets.scene import dataset_grid, open_raster
from groundbreak.infer.prediction.raster_io import MASK_NODATA, bounded_gdal_cache
from groundbreak.infer.sites.sites import site_pixels


def hidden_near(
    mask_path: str | Path, geometries: Sequence[BaseGeometry | None], margin_m: float
) -> list[float | None]:
    """For each site outline (in the mask's CRS), the share of the site and of the ground within
    ``margin_m`` of it that the pair did not see; None for a missing outline, a site off the
    raster, or a grid without a CRS (no metres to measure the margin in)."""
    with bounded_gdal_cache(), open_raster(mask_path) as src:
        grid = dataset_grid(src)
        if grid.crs is None:
            return [None] * len(geometries)
        margin_px = math.ceil(margin_m / math.sqrt(grid.pixel_area_m2()))
        shares: list[float | None] = []
        for geometry in geometries:
            window = None if geometry is None else _grown_window(geometry, grid, margin_px)
            if geometry is None or window is None:
                shares.append(None)
                continue
            zone = _dilated(site_pixels(geometry, grid.subgrid(window)), margin_px)
            if not zone.any():
                shares.append(None)
                continue
            hidden = src.read(1, window=window) == MASK_NODATA
            shares.append(round(float(hidden[zone].mean()), 4))
        return shares


def _grown_window(geometry: BaseGeometry, grid: Grid, margin_px: int) -> Window | None:
    """The site's pixel box grown by the margin on every side, clipped to the grid."""
    box = geometry_window(geometry, grid)
    if box is None:
        return None
    col0, row0 = max(int(box.col_off) - margin_px, 0), max(int(box.row_off) - margin_px, 0)
    col1 = min(int(box.col_off + box.width) + margin_px, grid.width)
    row1 = min(int(box.row_off + box.height) + margin_px, grid.height)
    return Window(col0, row0, col1 - col0, row1 - row0)


def _dilated(inside: np.ndarray, margin_px: int) -> np.ndarray:
    """The pixels within ``margin_px`` of the site (a disk around each of its pixels)."""
    if margin_px <= 0:
        return inside
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_px + 1,) * 2)
    return cv2.dilate(inside.astype(np.uint8), disk).astype(bool)
