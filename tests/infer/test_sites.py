"""Watch-lists, sites on a pair grid (reprojected, windowed) and discovered change regions."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid, geometry_window
from groundbreak.datasets.scene import dataset_grid
from groundbreak.infer.sites.sites import (
    WGS84,
    discover_change_regions,
    load_watch_list,
    measure_watch_site,
    site_on_grid,
    to_crs,
    to_crs_many,
)

UTM = CRS.from_epsg(32636)
ORIGIN = (700_000.0, 3_760_000.0)  # near Beirut, 10 m pixels
TRANSFORM = from_origin(*ORIGIN, 10.0, 10.0)


def write_raster(path: Path, data: np.ndarray, crs: CRS | None = UTM, nodata=None) -> Path:
    profile = {
        "driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
        "dtype": data.dtype.name, "nodata": nodata,
    }
    if crs is not None:
        profile.update(crs=crs, transform=TRANSFORM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
    return path


def pixel_box(row0: float, col0: float, row1: float, col1: float):
    """A box over grid pixels [row0, row1) x [col0, col1) in UTM coordinates."""
    x0, y0 = TRANSFORM @ (col0, row0)
    x1, y1 = TRANSFORM @ (col1, row1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def feature(site_id, name, geometry) -> dict:
    properties = {k: v for k, v in (("site_id", site_id), ("name", name)) if v is not None}
    return {"type": "Feature", "properties": properties, "geometry": geometry}


def write_watch_list(path: Path, features: list[dict], crs_name: str | None = None) -> Path:
    document: dict = {"type": "FeatureCollection", "features": features}
    if crs_name is not None:
        document["crs"] = {"type": "name", "properties": {"name": crs_name}}
    path.write_text(json.dumps(document))
    return path


def to_wgs84(geometry) -> dict:
    return transform_geom(UTM, WGS84, mapping(geometry))


@pytest.fixture()
def probability_raster(tmp_path: Path) -> Path:
    """200x200 px UTM probabilities: 0.05 background, a 10x20 px block at 0.9, nodata corner."""
    data = np.full((200, 200), 0.05, dtype=np.float32)
    data[50:60, 80:100] = 0.9
    data[:10, :10] = np.nan
    return write_raster(tmp_path / "probability.tif", data, nodata=float("nan"))


# ---------------------------------------------------------------------------------------------
# Watch-lists
# ---------------------------------------------------------------------------------------------


def test_watch_list_defaults_to_wgs84(tmp_path: Path) -> None:
    path = write_watch_list(
        tmp_path / "sites.geojson",
        [feature("a", "Site A", to_wgs84(pixel_box(0, 0, 5, 5))),
         feature(7, "Site B", to_wgs84(pixel_box(10, 10, 20, 20)))],
    )
    sites = load_watch_list(path)
    assert [s.site_id for s in sites] == ["a", "7"]
    assert [s.name for s in sites] == ["Site A", "Site B"]
    assert all(s.crs == WGS84 for s in sites)


def test_watch_list_reads_a_named_crs(tmp_path: Path) -> None:
    utm = write_watch_list(
        tmp_path / "utm.geojson",
        [feature("a", "A", mapping(pixel_box(0, 0, 5, 5)))],
        "urn:ogc:def:crs:EPSG::32636",
    )
    assert load_watch_list(utm)[0].crs == UTM
    crs84 = write_watch_list(
        tmp_path / "crs84.geojson",
        [feature("a", "A", to_wgs84(pixel_box(0, 0, 5, 5)))],
        "urn:ogc:def:crs:OGC:1.3:CRS84",
    )
    assert load_watch_list(crs84)[0].crs == WGS84


SQUARE = {"type": "Polygon", "coordinates": [[[35.5, 33.9], [35.6, 33.9], [35.6, 34.0],
                                               [35.5, 34.0], [35.5, 33.9]]]}


@pytest.mark.parametrize(
    ("features", "crs_name", "problem"),
    [
        ([feature(None, "no id", SQUARE)], None, "no 'site_id'"),
        ([feature("a", None, SQUARE)], None, "no 'name'"),
        ([feature("a", "point", {"type": "Point", "coordinates": [35.5, 33.9]})], None,
         "must be a Polygon or MultiPolygon, found Point"),
        ([feature("a", "none", None)], None, "must be a Polygon or MultiPolygon"),
        ([feature("a", "A", SQUARE), feature("a", "again", SQUARE)], None,
         "site_id 'a' appears more than once"),
        ([], None, "holds no sites"),
        ([feature("a", "flat", {"type": "Polygon", "coordinates": [[[1, 1], [2, 2], [1, 1],
                                                                     [1, 1]]]})],
         None, "no area"),
        ([feature("a", "A", SQUARE)], "EPSG:999999", "unknown CRS"),
        ([{"type": "Feature", "properties": ["a", "A"], "geometry": SQUARE}], None,
         "feature 1: 'properties' must be an object, not list"),
    ],
)
def test_bad_watch_list_names_the_file(
    tmp_path: Path, features: list[dict], crs_name: str | None, problem: str
) -> None:
    path = write_watch_list(tmp_path / "bad.geojson", features, crs_name)
    with pytest.raises(InputError, match=problem) as info:
        load_watch_list(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "cannot be read as GeoJSON"),
        ('{"type": "Point", "coordinates": [0, 0]}', "expected a GeoJSON FeatureCollection"),
        ('{"type": "FeatureCollection"}', "no 'features' list"),
    ],
)
def test_unreadable_watch_list_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "broken.geojson"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as info:
        load_watch_list(path)
    assert str(path) in str(info.value)


def test_a_watch_list_that_is_a_device_or_a_fifo_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="/dev/zero: watch-list file is not a regular file"):
        load_watch_list("/dev/zero")
    fifo = tmp_path / "sites.geojson"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_watch_list(fifo)


def test_missing_watch_list_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        load_watch_list(tmp_path / "nowhere.geojson")
    assert "nowhere.geojson" in str(info.value)


def test_self_intersecting_polygon_is_repaired(tmp_path: Path) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    site = load_watch_list(write_watch_list(tmp_path / "w.geojson", [feature("b", "B", bowtie)]))
    assert site[0].geometry.is_valid
    assert site[0].geometry.area == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# Sites on a grid
# ---------------------------------------------------------------------------------------------


def test_watch_site_is_reprojected_and_measured_over_its_box_only(
    tmp_path: Path, probability_raster: Path
) -> None:
    path = write_watch_list(
        tmp_path / "w.geojson", [feature("s1", "Block", to_wgs84(pixel_box(45, 75, 65, 105)))]
    )
    (site,) = load_watch_list(path)
    with rasterio.open(probability_raster) as src:
        grid = dataset_grid(src)
        geometry = site_on_grid(site, grid)
        assert geometry is not None
        assert geometry.area == pytest.approx(20 * 30 * 100.0, rel=1e-6)
        measure, window = measure_watch_site(src, geometry, threshold=0.5)
    assert (window.col_off, window.row_off, window.width, window.height) == (75, 45, 30, 20)
    assert measure.pixels == 600
    assert measure.changed_pixels == 200
    assert measure.changed_area == pytest.approx(200 * 100.0, rel=1e-3)  # geodesic, UTM scale
    assert measure.confidence == pytest.approx(0.9)


def test_site_partly_outside_the_grid_is_clipped(tmp_path: Path, probability_raster) -> None:
    path = write_watch_list(
        tmp_path / "w.geojson", [feature("edge", "Edge", to_wgs84(pixel_box(-20, -20, 20, 20)))]
    )
    (site,) = load_watch_list(path)
    with rasterio.open(probability_raster) as src:
        measure, window = measure_watch_site(src, site_on_grid(site, dataset_grid(src)), 0.5)
    assert (window.col_off, window.row_off, window.width, window.height) == (0, 0, 20, 20)
    assert measure.pixels == 400
    assert measure.valid_pixels == 400 - 100  # the nodata corner
    assert measure.changed_pixels == 0


def test_tiny_site_still_covers_a_pixel(tmp_path: Path, probability_raster: Path) -> None:
    # a 3 m x 3 m site inside pixel (row 55, col 90), much smaller than the 10 m pixel
    x, y = TRANSFORM @ (90.4, 55.4)
    tiny = box(x, y - 3, x + 3, y)
    path = write_watch_list(tmp_path / "w.geojson", [feature("t", "Tiny", to_wgs84(tiny))])
    (site,) = load_watch_list(path)
    with rasterio.open(probability_raster) as src:
        measure, _ = measure_watch_site(src, site_on_grid(site, dataset_grid(src)), 0.5)
    assert measure.pixels == 1
    assert measure.changed_pixels == 1


def test_site_off_the_grid_or_on_a_plain_image_is_not_placed(
    tmp_path: Path, probability_raster: Path
) -> None:
    far = write_watch_list(
        tmp_path / "far.geojson", [feature("f", "Far", to_wgs84(pixel_box(500, 500, 510, 510)))]
    )
    (site,) = load_watch_list(far)
    with rasterio.open(probability_raster) as src:
        assert site_on_grid(site, dataset_grid(src)) is None
    plain = write_raster(tmp_path / "plain.tif", np.zeros((8, 8), np.float32), crs=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(plain) as src:
            assert site_on_grid(site, dataset_grid(src)) is None


def test_geometry_window_on_north_up_and_plain_image_grids() -> None:
    north_up = Grid(200, 200, TRANSFORM, UTM)
    window = geometry_window(pixel_box(10.5, 20, 30, 40.2), north_up)
    assert (window.row_off, window.col_off, window.height, window.width) == (10, 20, 20, 21)
    plain = Grid(256, 256, rasterio.Affine.identity(), None)  # rows grow downwards
    window = geometry_window(box(5, 40, 10, 41), plain)
    assert (window.row_off, window.col_off, window.height, window.width) == (40, 5, 1, 5)
    assert geometry_window(box(300, 300, 310, 310), plain) is None


# ---------------------------------------------------------------------------------------------
# Discovered change regions
# ---------------------------------------------------------------------------------------------


def change_mask() -> np.ndarray:
    mask = np.zeros((60, 60), dtype=np.uint8)
    mask[10:14, 10:14] = 1  # 16 px ...
    mask[14:17, 14:17] = 1  # ... + 9 px touching only at a corner: one region in 8-connectivity
    mask[40, 5:10] = 1  # a 5 px line: kept (>= 3 px of 100 m²)
    mask[50:52, 50] = 1  # 2 px: smaller than the minimum area, dropped
    mask[0:3, 50:60] = 255  # nodata is not change
    return mask


def test_discovery_uses_eight_connectivity_and_minimum_area(tmp_path: Path) -> None:
    mask = write_raster(tmp_path / "mask.tif", change_mask(), nodata=255)
    probability = np.where(change_mask() == 1, 0.8, 0.1).astype(np.float32)
    probability[40, 5:10] = 0.6
    probability_path = write_raster(tmp_path / "probability.tif", probability)
    regions = discover_change_regions(mask, probability_path, "pair", 0.5, min_area_m2=300.0)
    assert [r.region_id for r in regions] == ["pair-c0001", "pair-c0002"]
    first, second = regions
    assert first.measure.changed_pixels == 25
    assert first.measure.changed_area == pytest.approx(2_500.0, rel=1e-3)  # geodesic
    assert first.measure.confidence == pytest.approx(0.8)
    assert first.geometry.is_valid  # the two blocks touch at one corner only
    assert first.geometry.area == pytest.approx(25 * 100.0)
    assert (first.window.row_off, first.window.col_off) == (10, 10)
    assert (first.window.height, first.window.width) == (7, 7)
    assert second.measure.changed_pixels == 5
    assert second.measure.confidence == pytest.approx(0.6)
    assert first.measure.score > second.measure.score
    x, y = TRANSFORM @ (5, 40)
    assert second.geometry.equals(box(x, y - 10, x + 50, y))


def test_discovery_minimum_area_is_in_square_metres(tmp_path: Path) -> None:
    mask = write_raster(tmp_path / "mask.tif", change_mask(), nodata=255)
    probability = write_raster(tmp_path / "p.tif", change_mask().astype(np.float32))
    assert len(discover_change_regions(mask, probability, "p", 0.5, min_area_m2=0)) == 3
    assert len(discover_change_regions(mask, probability, "p", 0.5, min_area_m2=600)) == 1
    assert discover_change_regions(mask, probability, "p", 0.5, min_area_m2=5_000) == []


def test_discovery_on_a_plain_image_counts_pixels(tmp_path: Path) -> None:
    mask = write_raster(tmp_path / "mask.tif", change_mask(), crs=None, nodata=255)
    probability = write_raster(tmp_path / "p.tif", change_mask().astype(np.float32), crs=None)
    regions = discover_change_regions(mask, probability, "png", 0.5, min_area_m2=3)
    assert [r.measure.changed_area for r in regions] == [25.0, 5.0]
    assert regions[1].geometry.equals(box(5, 40, 10, 41))  # pixel coordinates


def test_discovery_rejects_rasters_of_different_sizes(tmp_path: Path) -> None:
    mask = write_raster(tmp_path / "mask.tif", change_mask(), nodata=255)
    other = write_raster(tmp_path / "small.tif", np.zeros((30, 30), np.float32))
    with pytest.raises(InputError, match="differs from the mask") as info:
        discover_change_regions(mask, other, "p", 0.5)
    assert "small.tif" in str(info.value)


def test_discovery_of_a_missing_mask_names_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as info:
        discover_change_regions(tmp_path / "mask.tif", tmp_path / "p.tif", "p", 0.5)
    assert "mask.tif" in str(info.value)


def test_region_polygon_round_trips_through_geojson(tmp_path: Path) -> None:
    mask = write_raster(tmp_path / "mask.tif", change_mask(), nodata=255)
    probability = write_raster(tmp_path / "p.tif", change_mask().astype(np.float32))
    region = discover_change_regions(mask, probability, "p", 0.5)[0]
    assert shape(json.loads(json.dumps(mapping(region.geometry)))).equals(region.geometry)


def test_outlines_reprojected_together_have_each_one_s_coordinates() -> None:
    """One coordinate transformation for many outlines: the same coordinates, bit for bit, as
    one call per outline (polygons with holes and multipolygons included)."""
    rng = np.random.default_rng(5)
    x0, y0 = ORIGIN
    outlines = []
    for _ in range(40):
        x, y = x0 + 10 * rng.integers(0, 2000), y0 - 10 * rng.integers(0, 2000)
        outer = box(x, y, x + 10 * rng.integers(2, 40), y + 10 * rng.integers(2, 40))
        outlines.append(outer.difference(box(x + 10, y + 10, x + 15, y + 15)))
    outlines.append(outlines[0].union(outlines[1]))
    together = to_crs_many(outlines, UTM, WGS84)
    assert [g.wkt for g in together] == [to_crs(g, UTM, WGS84).wkt for g in outlines]
    assert to_crs_many(outlines, UTM, UTM) == outlines
    assert to_crs_many([], UTM, WGS84) == []
