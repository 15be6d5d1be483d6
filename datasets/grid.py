"""The pixel grid that a tile pair and every output raster live on."""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import array_bounds
from rasterio.windows import Window

_EARTH_RADIUS_M = 6_371_008.8


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
        """(left, bottom, right, top) in the grid's CRS."""
        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return (west, south, east, north)

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
        """Approximate ground area of one pixel in square metres (at the grid's centre).

        Geographic CRSs are handled with a spherical-earth approximation; grids without a CRS
        report 1.0 (one pixel is one unit).
        """
        if self.crs is None:
            return 1.0
        a, e = abs(self.transform.a), abs(self.transform.e)
        if self.crs.is_geographic:
            lat = math.radians((self.bounds[1] + self.bounds[3]) / 2)
            dy = math.radians(e) * _EARTH_RADIUS_M
            dx = math.radians(a) * _EARTH_RADIUS_M * math.cos(lat)
            return dx * dy
        factor = self.crs.linear_units_factor[1] if self.crs.is_projected else 1.0
        return a * e * factor * factor

    def same_as(self, other: Grid, tolerance: float = 1e-9) -> bool:
        """True when both grids have the same size, CRS and (almost) the same transform."""
        return (
            self.width == other.width
            and self.height == other.height
            and self.crs == other.crs
            and self.transform.almost_equals(other.transform, precision=tolerance)
        )
