"""The pixel grid that a tile pair and every output raster live on, and windows of it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from pyproj import Geod, Transformer
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

_GEOD = Geod(ellps="WGS84")


@lru_cache(maxsize=32)
def _to_wgs84(crs: CRS) -> Transformer:
    """A transformer from ``crs`` to longitude/latitude (WGS84), x/y order."""
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


@dataclass(frozen=True)
class Grid:
    """A raster grid: size, affine transform and CRS (``crs`` is None for plain images)."""

    width: int
    height: int
    transform: Affine
    crs: CRS | None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS, with left < right and bottom < top
        whatever the orientation (a south-up grid's transform has a positive ``e``)."""
        cols = np.array([0.0, self.width, self.width, 0.0])
        rows = np.array([0.0, 0.0, self.height, self.height])
        xs, ys = self.transform @ (cols, rows)  # type: ignore[operator]  # arrays: stubs say floats
        return (float(np.min(xs)), float(np.min(ys)), float(np.max(xs)), float(np.max(ys)))

    @property
    def georeferenced(self) -> bool:
        """True when the grid has a CRS."""
        return self.crs is not None

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window of this grid."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def subgrid(self, window: Window) -> Grid:
        """The grid of a window of this grid."""
        return Grid(int(window.width), int(window.height), self.window_transform(window), self.crs)

    def full_window(self) -> Window:
        """The window covering the whole grid."""
        return Window(0, 0, self.width, self.height)

    def pixel_area_m2(self) -> float:
        """Geodesic ground area of the grid's centre pixel in square metres (WGS84 ellipsoid).

        Grids without a CRS report 1.0 (one pixel is one unit). For areas over many rows, such
        as a site's, use :meth:`row_pixel_areas_m2`.
        """
        if self.crs is None:
            return 1.0
        return float(self._pixel_areas(self.height // 2, 1, self.width // 2)[0])

    def row_pixel_areas_m2(self) -> np.ndarray:
        """Geodesic ground area (m²) of one pixel of each row, shape ``(height, 1)``.

        Measured on the ellipsoid (pyproj ``Geod``) for the pixel in the middle column, so it is
        right in any CRS, equal-area or not (Web Mercator, geographic); within a row the area
        varies only with the projection's scale across columns (under 0.1 % in UTM). Grids
        without a CRS give ones. Multiply by a mask of pixels and sum to get their ground area.
        """
        if self.crs is None:
            return np.ones((self.height, 1))
        return self._pixel_areas(0, self.height, self.width // 2)[:, None]

    def _pixel_areas(self, row0: int, rows: int, col: int) -> np.ndarray:
        """Geodesic areas of the pixels ``(row0 .. row0 + rows - 1, col)``."""
        edge_rows = np.arange(row0, row0 + rows + 1, dtype=float)
        xs = np.concatenate([np.full(rows + 1, float(col)), np.full(rows + 1, col + 1.0)])
        ys = np.concatenate([edge_rows, edge_rows])
        x, y = self.transform @ (xs, ys)  # type: ignore[operator]  # arrays: stubs say floats
        lon, lat = _to_wgs84(self.crs).transform(np.asarray(x), np.asarray(y))
        left, right = slice(0, rows + 1), slice(rows + 1, None)
        lon_l, lat_l, lon_r, lat_r = lon[left], lat[left], lon[right], lat[right]
        areas = np.empty(rows)
        for i in range(rows):
            ring_lon = [lon_l[i], lon_r[i], lon_r[i + 1], lon_l[i + 1]]
            ring_lat = [lat_l[i], lat_r[i], lat_r[i + 1], lat_l[i + 1]]
            areas[i] = abs(_GEOD.polygon_area_perimeter(ring_lon, ring_lat)[0])
        return areas

    def overlaps(self, other: Grid) -> bool:
        """True when two georeferenced grids share ground: ``other``'s bounds, reprojected onto
        this grid's CRS (edges densified), intersect this grid's bounds with a positive area."""
        left, bottom, right, top = transform_bounds(
            other.crs, self.crs, *other.bounds, densify_pts=21
        )
        own_left, own_bottom, own_right, own_top = self.bounds
        return (
            min(right, own_right) > max(left, own_left)
            and min(top, own_top) > max(bottom, own_bottom)
        )

    def same_as(self, other: Grid, tolerance: float = 1e-9) -> bool:
        """True when both grids have the same size, CRS and (almost) the same transform."""
        return (
            self.width == other.width
            and self.height == other.height
            and self.crs == other.crs
            and self.transform.almost_equals(other.transform, precision=tolerance)
        )


def geometry_window(geometry: BaseGeometry, grid: Grid) -> Window | None:
    """The grid pixels covering a geometry's bounding box (rounded outwards, clipped to the grid).

    Works for north-up grids and for plain images (identity transform, rows growing down).
    None when the box misses the grid.
    """
    left, bottom, right, top = geometry.bounds
    inverse = ~grid.transform
    xs, ys = np.array([left, right, right, left]), np.array([top, top, bottom, bottom])
    cols, rows = inverse @ (xs, ys)
    col0 = max(math.floor(cols.min() + 1e-9), 0)
    row0 = max(math.floor(rows.min() + 1e-9), 0)
    col1 = min(math.ceil(cols.max() - 1e-9), grid.width)
    row1 = min(math.ceil(rows.max() - 1e-9), grid.height)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)
