"""How much of each site lies near ground a pair could not see: the alert policy's per-site
cloud check.

Cloud masks miss thin rims and faint shadows, so a detection beside a cloud may be the cloud's.
The alert policy (:mod:`.alert_policy`) lets a detection confirm a site only when no ground
within ``confirm_margin_m`` of the site went unseen on either date. This module measures that
on a published pair's ``mask.tif``, whose nodata (255) marks every pixel hidden by a cloud or a
shadow on either date, or outside either scene, in one pass over the mask: on the cloud masks'
own grid of about 60 m (:func:`~groundbreak.datasets.clouds.coarse_factor`), the unseen cells
are grown by the margin once, and each site's share is the share of its cells in that zone. The
sites' cells are burned a few at a time (:func:`_layers`: sites whose boxes lie more than a cell
apart share one rasterisation), not one rasterisation per site.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import rasterio
from rasterio.features import rasterize
from rasterio.windows import Window
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.clouds import coarse_factor, coarse_grid
from groundbreak.datasets.grid import geometry_window
from groundbreak.datasets.scene import dataset_grid, open_raster
from groundbreak.infer.prediction.raster_io import MASK_NODATA, bounded_gdal_cache

STRIP_CELLS = 64
"""Rows of coarse cells read from the mask at a time (bounded memory on a full tile)."""


def hidden_near(
    mask_path: str | Path, geometries: Sequence[BaseGeometry | None], margin_m: float
) -> list[float | None]:
    """For each site outline (in the mask's CRS), the share of its cells (about 60 m) that lie
    within ``margin_m`` of a cell the pair did not see; None for a missing outline, a site off
    the raster, or a grid without a CRS (no metres to measure the margin in)."""
    if not any(g is not None for g in geometries):
        return [None] * len(geometries)
    with bounded_gdal_cache(), open_raster(mask_path) as src:
        grid = dataset_grid(src)
        if grid.crs is None:
            return [None] * len(geometries)
        factor = coarse_factor(grid)
        coarse = coarse_grid(grid, factor)
        unseen = _unseen_cells(src, factor, coarse.shape)
    margin_cells = math.ceil(margin_m / math.sqrt(coarse.pixel_area_m2()) - 1e-9)
    near = _grown(unseen, margin_cells)
    windows = [None if g is None else geometry_window(g, coarse) for g in geometries]
    shares: list[float | None] = [None] * len(geometries)
    for layer in _layers(windows, coarse.shape):
        labels = rasterize(
            [(mapping(geometries[i]), i + 1) for i in layer], out_shape=coarse.shape,
            transform=coarse.transform, all_touched=True, fill=0, dtype="int32",
        )
        for i in layer:
            rows, cols = windows[i].toslices()
            cells = near[rows, cols][labels[rows, cols] == i + 1]
            shares[i] = round(float(cells.mean()), 4) if cells.size else None
    return shares


def _layers(windows: Sequence[Window | None], shape: tuple[int, int]) -> list[list[int]]:
    """The indices of the windows in groups that one rasterisation can burn together: in a
    group, no window comes within a cell of another (a touched cell just outside a site's box
    cannot land in its neighbour's)."""
    layers: list[list[int]] = []
    taken: list[np.ndarray] = []
    for i, window in enumerate(windows):
        if window is None:
            continue
        rows, cols = window.toslices()
        grown = (slice(max(rows.start - 1, 0), rows.stop + 1),
                 slice(max(cols.start - 1, 0), cols.stop + 1))
        free = next((k for k, used in enumerate(taken) if not used[rows, cols].any()), None)
        if free is None:
            free = len(layers)
            layers.append([])
            taken.append(np.zeros(shape, bool))
        layers[free].append(i)
        taken[free][grown] = True
    return layers


def _unseen_cells(
    src: rasterio.io.DatasetReader, factor: int, shape: tuple[int, int]
) -> np.ndarray:
    """Coarse cells holding at least one unseen (nodata) pixel of the mask, read in strips."""
    unseen = np.zeros(shape, bool)
    height, width = src.height, src.width
    for row0 in range(0, height, STRIP_CELLS * factor):
        rows = min(STRIP_CELLS * factor, height - row0)
        strip = src.read(1, window=Window(0, row0, width, rows)) == MASK_NODATA
        padded = np.zeros((math.ceil(rows / factor) * factor, shape[1] * factor), bool)
        padded[:rows, :width] = strip
        cells = padded.reshape(-1, factor, shape[1], factor).any(axis=(1, 3))
        unseen[row0 // factor: row0 // factor + cells.shape[0]] = cells
    return unseen


def _grown(cells: np.ndarray, margin_cells: int) -> np.ndarray:
    """The cells within ``margin_cells`` of a true cell (a disk around each)."""
    if margin_cells <= 0 or not cells.any():
        return cells
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_cells + 1,) * 2)
    return cv2.dilate(cells.astype(np.uint8), disk).astype(bool)
