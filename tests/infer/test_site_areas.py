"""Site areas are geodesic and per site, right outside equal-area grids (issue 12, item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Geod
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping

from groundbreak.datasets.scene import dataset_grid
from groundbreak.infer.sites.sites import (
    WGS84,
    discover_change_regions,
    load_watch_list,
    measure_watch_site,
    site_on_grid,
)

GEOD = Geod(ellps="WGS84")


def write(path: Path, data: np.ndarray, crs: CRS, transform) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype.name, "crs": crs, "transform": transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def test_discovered_region_area_in_web_mercator_is_geodesic(tmp_path: Path) -> None:
    # 10 m Web Mercator pixels at Las Vegas: a 20x20 px region is ~26,000 m², not 40,000 m².
    crs, transform = CRS.from_epsg(3857), from_origin(-12_817_000, 4_324_000, 10, 10)
    mask = np.zeros((100, 100), np.uint8)
    mask[30:50, 40:60] = 1
    mask_path = write(tmp_path / "mask.tif", mask, crs, transform)
    prob_path = write(tmp_path / "prob.tif", np.where(mask, 0.9, 0.1).astype(np.float32),
                      crs, transform)
    (region,) = discover_change_regions(mask_path, prob_path, "p", 0.5, min_area_m2=300.0)
    outline = transform_geom(crs, WGS84, mapping(region.geometry))
    lon, lat = np.array(outline["coordinates"][0]).T
    truth = abs(GEOD.polygon_area_perimeter(lon, lat)[0])
    assert region.measure.changed_area == pytest.approx(truth, rel=1e-3)
    assert region.measure.changed_area == pytest.approx(400 * 65.1, rel=0.01)


def test_min_area_is_geodesic(tmp_path: Path) -> None:
    # 5 Web Mercator px at 36 N are ~326 m²: under a 400 m² minimum, though 5 x 100 "m²" is not.
    crs, transform = CRS.from_epsg(3857), from_origin(-12_817_000, 4_324_000, 10, 10)
    mask = np.zeros((20, 20), np.uint8)
    mask[5, 2:7] = 1
    mask_path = write(tmp_path / "mask.tif", mask, crs, transform)
    prob_path = write(tmp_path / "prob.tif", mask.astype(np.float32), crs, transform)
    assert discover_change_regions(mask_path, prob_path, "p", 0.5, min_area_m2=400.0) == []
    assert len(discover_change_regions(mask_path, prob_path, "p", 0.5, min_area_m2=300.0)) == 1


def test_watch_site_area_is_measured_where_the_site_lies(tmp_path: Path) -> None:
    # A geographic grid from 60 N to the equator; the site at 59.9 N is measured there, not at
    # the raster's centre (30 N), where pixels are 1.7x larger.
    crs, transform = CRS.from_epsg(4326), from_origin(10.0, 60.0, 0.01, 0.01)
    probability = np.full((6000, 20), 0.9, np.float32)
    prob_path = write(tmp_path / "prob.tif", probability, crs, transform)
    site = box(10.05, 59.85, 10.15, 59.95)
    watch = tmp_path / "watch.geojson"
    watch.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": "n", "name": "North"},
         "geometry": mapping(site)}]}))
    (loaded,) = load_watch_list(watch)
    with rasterio.open(prob_path) as src:
        geometry = site_on_grid(loaded, dataset_grid(src))
        measure, _ = measure_watch_site(src, geometry, threshold=0.5)
    lon, lat = np.array(site.exterior.coords).T
    truth = abs(GEOD.polygon_area_perimeter(lon, lat)[0])
    assert measure.changed_pixels == 100
    assert measure.changed_area == pytest.approx(truth, rel=1e-3)
