"""Grid pixel areas are geodesic (WGS84 ellipsoid), right in any CRS, not a·e·unit²."""

from __future__ import annotations

import pytest
from affine import Affine
from pyproj import Geod
from rasterio.crs import CRS

from groundbreak.datasets.grid import Grid

GEOD = Geod(ellps="WGS84")


def test_web_mercator_pixel_area_is_the_ground_area() -> None:
    # 10 m Web Mercator pixels at Las Vegas (36.2 N) cover about cos²(36.2°) x 100 m² on the ground.
    grid = Grid(100, 100, Affine(10, 0, -12_817_000, 0, -10, 4_324_000), CRS.from_epsg(3857))
    assert grid.pixel_area_m2() == pytest.approx(65.1, rel=0.01)
    assert grid.row_pixel_areas_m2().shape == (100, 1)


def test_utm_pixel_area_is_nominal_within_the_scale_factor() -> None:
    grid = Grid(10, 10, Affine(10, 0, 300_000, 0, -10, 2_770_000), CRS.from_epsg(32640))
    assert grid.pixel_area_m2() == pytest.approx(100.0, rel=1e-3)


def test_geographic_rows_each_have_their_own_area() -> None:
    # 0.01° pixels from 60 N down to the equator: a pixel at 60 N is half one at the equator.
    grid = Grid(10, 6000, Affine(0.01, 0, 10.0, 0, -0.01, 60.0), CRS.from_epsg(4326))
    rows = grid.row_pixel_areas_m2()[:, 0]
    top = GEOD.polygon_area_perimeter([10, 10.01, 10.01, 10], [60, 60, 59.99, 59.99])[0]
    assert rows[0] == pytest.approx(abs(top), rel=1e-9)
    assert rows[0] / rows[-1] == pytest.approx(0.5, rel=0.02)


def test_grid_without_crs_counts_pixels() -> None:
    grid = Grid(4, 3, Affine.identity(), None)
    assert grid.pixel_area_m2() == 1.0
    assert grid.row_pixel_areas_m2().tolist() == [[1.0]] * 3
