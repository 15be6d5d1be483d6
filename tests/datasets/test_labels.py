"""Labels: raster conventions, colour PNGs, georeferenced and vector labels, bad labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.warp import transform as transform_points
from rasterio.windows import Window

from groundbreak.datasets import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.labels import (
    RasterLabel,
    VectorLabel,
    detect_convention,
    open_label,
)

UTM = CRS.from_epsg(32636)
WGS84 = CRS.from_epsg(4326)
PAIR_GRID = Grid(8, 6, Affine(10, 0, 1000, 0, -10, 2000), UTM)
CHANGE_MASK = np.zeros((6, 8), dtype=bool)
CHANGE_MASK[1:4, 2:6] = True


@pytest.mark.parametrize(
    ("values", "name"),
    [({0, 1}, "0-1"), ({0}, "0-1"), ({0, 255}, "0-255"), ({255}, "0-255"), ({1, 2}, "1-2"),
     ({0, 1, 2}, "1-2"), ({2}, "1-2"), ({0, 1, 255}, "0-1")],
)
def test_convention_detection_rule(values: set[int], name: str) -> None:
    assert detect_convention(values).name == name


@pytest.mark.parametrize("values", [{1}, {0, 3}, {0, 128, 255}, {1, 2, 255}])
def test_ambiguous_or_unknown_values_are_errors(values: set[int]) -> None:
    with pytest.raises(InputError, match="label"):
        detect_convention(values, "lab.tif")


@pytest.mark.parametrize(
    ("no_change", "change"), [(0, 1), (0, 255), (1, 2)], ids=["0-1", "0-255", "1-2"]
)
def test_raster_conventions_read_as_0_1(tmp_path: Path, make_raster, no_change, change) -> None:
    raw = np.where(CHANGE_MASK, change, no_change).astype(np.uint8)
    path = make_raster(tmp_path / "label.tif", raw)  # no georeference: lies on the pair grid
    label = open_label(path, PAIR_GRID)
    np.testing.assert_array_equal(label.read(PAIR_GRID), CHANGE_MASK.astype(np.uint8))


def test_oscd_label_fixture_is_1_2_and_windowed(oscd_dir: Path) -> None:
    path = oscd_dir / "beirut" / "cm" / "beirut-cm.tif"
    with rasterio.open(next((oscd_dir / "beirut" / "imgs_1").glob("*_B02.tif"))) as src:
        grid = Grid(src.width, src.height, src.transform, src.crs)
    with rasterio.open(path) as src:
        raw = src.read(1)
    label = open_label(path, grid)
    assert label.convention.name == "1-2"
    full = label.read(grid)
    np.testing.assert_array_equal(full, (raw == 2).astype(np.uint8))
    part = label.read(grid.subgrid(Window(80, 10, 32, 20)))
    np.testing.assert_array_equal(part[:, :16], full[10:30, 80:96])
    assert (part[:, 16:] == 255).all()  # past the right edge of the pair grid


def test_ignore_value_and_forced_convention(tmp_path: Path, make_raster) -> None:
    raw = np.where(CHANGE_MASK, 1, 0).astype(np.uint8)
    raw[0, 0] = 9
    path = make_raster(tmp_path / "label.tif", raw)
    with pytest.raises(InputError, match=r"label\.tif: label values \{0, 1, 9\}"):
        open_label(path, PAIR_GRID)
    out = open_label(path, PAIR_GRID, ignore_value=9).read(PAIR_GRID)
    assert out[0, 0] == 255 and out[2, 3] == 1 and out[5, 7] == 0
    ones = make_raster(tmp_path / "ones.tif", np.ones((6, 8), np.uint8))
    with pytest.raises(InputError, match="only the value 1"):
        open_label(ones, PAIR_GRID)
    assert (open_label(ones, PAIR_GRID, convention="1-2").read(PAIR_GRID) == 0).all()
    assert (open_label(ones, PAIR_GRID, convention="0-1").read(PAIR_GRID) == 1).all()
    with pytest.raises(InputError, match="the 0-255 convention does not use"):
        open_label(ones, PAIR_GRID, convention="0-255")
    with pytest.raises(InputError, match="unknown label convention"):
        open_label(ones, PAIR_GRID, convention="binary")


def test_rgba_png_label(tmp_path: Path) -> None:
    rgba = np.zeros((6, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[CHANGE_MASK, :3] = 255
    rgba[5, 0, 3] = 0  # transparent: ignore
    path = tmp_path / "cm.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = open_label(path, PAIR_GRID).read(PAIR_GRID)
    expected = CHANGE_MASK.astype(np.uint8)
    expected[5, 0] = 255
    np.testing.assert_array_equal(out, expected)


def test_palette_png_label(tmp_path: Path) -> None:
    image = Image.fromarray(CHANGE_MASK.astype(np.uint8), "P")
    image.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    path = tmp_path / "cm.png"
    image.save(path)
    label = open_label(path, PAIR_GRID)
    assert label.convention.name == "0-255"  # indexes 0/1 map to black/white
    np.testing.assert_array_equal(label.read(PAIR_GRID), CHANGE_MASK.astype(np.uint8))


def test_levir_label_png_is_0_255(levir_dir: Path) -> None:
    path = levir_dir / "label" / "train_36_0512_0512.png"
    grid = Grid(256, 256, Affine.identity(), None)
    out = open_label(path, grid).read(grid)
    np.testing.assert_array_equal(out, (np.asarray(Image.open(path)) == 255).astype(np.uint8))


def test_label_without_georeference_of_the_wrong_size(tmp_path: Path, make_raster) -> None:
    path = make_raster(tmp_path / "label.tif", np.zeros((7, 8), np.uint8))
    with pytest.raises(InputError, match=r"label\.tif: label has no georeference and its size 8x7"):
        open_label(path, PAIR_GRID)


def test_georeferenced_label_on_an_offset_grid(tmp_path: Path, make_raster) -> None:
    # the label covers columns 2.. of the pair grid, at the same resolution
    raw = np.where(CHANGE_MASK[:, 2:], 1, 0).astype(np.uint8)
    path = make_raster(tmp_path / "label.tif", raw, Affine(10, 0, 1020, 0, -10, 2000), UTM)
    out = open_label(path, PAIR_GRID).read(PAIR_GRID)
    assert (out[:, :2] == 255).all()
    np.testing.assert_array_equal(out[:, 2:], CHANGE_MASK[:, 2:8].astype(np.uint8))


def test_georeferenced_label_in_another_crs(tmp_path: Path, make_raster) -> None:
    # a UTM label at 5 m, read onto an EPSG:4326 pair grid by nearest neighbour
    raw = np.zeros((40, 40), np.uint8)
    raw[10:30, 10:30] = 1
    path = make_raster(tmp_path / "label.tif", raw, Affine(5, 0, 600_000, 0, -5, 3_700_000), UTM)
    lon, lat = transform_points(UTM, WGS84, [600_000], [3_700_000])
    grid = Grid(20, 20, Affine(1e-4, 0, lon[0], 0, -1e-4, lat[0]), WGS84)
    out = open_label(path, grid).read(grid)
    xs, ys = transform_points(
        WGS84, UTM,
        list(lon[0] + (np.arange(20) + 0.5) * 1e-4), [lat[0] - 10.5 * 1e-4] * 20,
    )
    col_in_label = ((np.asarray(xs) - 600_000) // 5).astype(int)
    row_in_label = int((3_700_000 - ys[0]) // 5)
    for c in range(20):
        if 0 <= col_in_label[c] < 40:
            assert out[10, c] == raw[row_in_label, col_in_label[c]]
        else:
            assert out[10, c] == 255


def test_georeferenced_label_that_misses_the_pair(tmp_path: Path, make_raster) -> None:
    path = make_raster(tmp_path / "far.tif", np.zeros((4, 4), np.uint8),
                       Affine(10, 0, 90_000, 0, -10, 2000), UTM)
    with pytest.raises(InputError, match=r"far\.tif: label does not overlap"):
        open_label(path, PAIR_GRID)


def _square_geojson(path: Path, crs: CRS, left, bottom, right, top, legacy_crs: bool) -> Path:
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    document = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}],
    }
    if legacy_crs:
        document["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
    path.write_text(json.dumps(document))
    return path


def test_vector_label_in_4326_on_a_utm_grid(tmp_path: Path) -> None:
    # the square covering pair-grid columns 2-5, rows 1-3, written in lon/lat
    xs = [1020.0, 1060.0]
    ys = [1960.0, 1990.0]
    lons, lats = transform_points(UTM, WGS84, xs, ys)
    path = _square_geojson(tmp_path / "sites.geojson", WGS84, lons[0], lats[0], lons[1], lats[1],
                           legacy_crs=False)
    label = open_label(path, PAIR_GRID)
    assert isinstance(label, VectorLabel)
    out = label.read(PAIR_GRID)
    np.testing.assert_array_equal(out, CHANGE_MASK.astype(np.uint8))
    window = label.read(PAIR_GRID.subgrid(Window(4, 2, 6, 3)))
    np.testing.assert_array_equal(window[:, :4], CHANGE_MASK[2:5, 4:8].astype(np.uint8))
    assert (window[:, 4:] == 255).all()


def test_vector_label_crs84_reads_as_no_crs_and_a_crs_it_cannot_name_is_refused(
    tmp_path: Path,
) -> None:
    # RFC 7946: lon/lat on WGS84 (CRS84) whether the file names it or not; a legacy "crs"
    # member that names no CRS (a "link") was silently read as EPSG:4326 before
    lons, lats = transform_points(UTM, WGS84, [1020.0, 1060.0], [1960.0, 1990.0])
    path = _square_geojson(tmp_path / "crs84.geojson", WGS84, lons[0], lats[0], lons[1], lats[1],
                           legacy_crs=False)
    document = json.loads(path.read_text())
    document["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}
    path.write_text(json.dumps(document))
    np.testing.assert_array_equal(
        open_label(path, PAIR_GRID).read(PAIR_GRID), CHANGE_MASK.astype(np.uint8)
    )
    document["crs"] = {"type": "link", "properties": {"href": "data.crs", "type": "proj4"}}
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"crs84\.geojson: unsupported 'crs' member"):
        open_label(path, PAIR_GRID)


def test_vector_label_with_a_named_crs_on_a_4326_grid(tmp_path: Path) -> None:
    # a 100 m x 100 m UTM square, read onto an EPSG:4326 grid of about 9 m x 11 m pixels
    lon, lat = transform_points(UTM, WGS84, [600_000], [3_700_000])
    step = 1e-4
    grid = Grid(30, 30, Affine(step, 0, lon[0], 0, -step, lat[0]), WGS84)
    square = (600_050, 3_699_850, 600_150, 3_699_950)
    path = _square_geojson(tmp_path / "utm.geojson", UTM, *square, legacy_crs=True)
    out = open_label(path, grid).read(grid)
    rows, cols = np.mgrid[0:30, 0:30]
    xs, ys = transform_points(
        WGS84, UTM, lon[0] + (cols.ravel() + 0.5) * step, lat[0] - (rows.ravel() + 0.5) * step
    )
    xs, ys = np.asarray(xs).reshape(30, 30), np.asarray(ys).reshape(30, 30)
    margin = 8.0
    inside = ((xs > square[0] + margin) & (xs < square[2] - margin)
              & (ys > square[1] + margin) & (ys < square[3] - margin))
    outside = ((xs < square[0] - margin) | (xs > square[2] + margin)
               | (ys < square[1] - margin) | (ys > square[3] + margin))
    assert inside.sum() >= 50
    assert (out[inside] == 1).all() and (out[outside] == 0).all()
    assert out.sum() * grid.pixel_area_m2() == pytest.approx(100 * 100, rel=0.2)


def test_bad_vector_labels(tmp_path: Path) -> None:
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(InputError, match=r"broken\.geojson: cannot be read as GeoJSON"):
        open_label(broken, PAIR_GRID)
    points = tmp_path / "points.geojson"
    points.write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(InputError, match=r"points\.geojson: not a GeoJSON"):
        open_label(points, PAIR_GRID)
    lines = tmp_path / "lines.geojson"
    line = {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}
    lines.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": line}))
    with pytest.raises(InputError, match="must be polygons, found a LineString"):
        open_label(lines, PAIR_GRID)
    plain = Grid(8, 6, Affine.identity(), None)
    with pytest.raises(InputError, match="need georeferenced images"):
        open_label(_square_geojson(tmp_path / "ok.geojson", WGS84, 0, 0, 1, 1, False), plain)


@pytest.mark.parametrize(
    "document",
    [
        [1, 2],
        {"type": "FeatureCollection", "features": ["x"]},
        {"type": "Feature", "geometry": "x"},
        {"type": "Polygon", "coordinates": [[1, 2]]},
        {"type": "Polygon"},
    ],
    ids=["list", "feature-not-object", "geometry-not-object", "bad-coordinates", "no-coordinates"],
)
def test_malformed_geojson_is_an_input_error(tmp_path: Path, document) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match=r"bad\.geojson: "):
        open_label(path, PAIR_GRID)


def test_missing_and_corrupt_label_files(tmp_path: Path, oscd_dir: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.tif: label file does not exist"):
        open_label(tmp_path / "nope.tif", PAIR_GRID)
    source = (oscd_dir / "abudhabi" / "cm" / "abudhabi-cm.tif").read_bytes()
    broken = tmp_path / "abudhabi-cm.tif"
    broken.write_bytes(source[: len(source) // 2])
    grid = Grid(96, 96, Affine(1, 0, 0, 0, -1, 96), UTM)
    with pytest.raises(InputError) as caught:
        open_label(broken, grid)
    assert caught.value.path == str(broken)


def test_raster_label_repr_names_the_convention(tmp_path: Path, make_raster) -> None:
    path = make_raster(tmp_path / "label.tif", np.zeros((6, 8), np.uint8))
    label = open_label(path, PAIR_GRID)
    assert isinstance(label, RasterLabel) and "0-1" in repr(label)
