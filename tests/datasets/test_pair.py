"""Tile pairs: both dates on the before-scene's grid, whatever the after-scene's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform as transform_points
from rasterio.windows import Window

from groundbreak.datasets import InputError, TilePair, open_scene
from groundbreak.datasets.pair_spec import PairSpec

UTM = "EPSG:32636"


def test_offset_after_grid_is_resampled_onto_the_before_grid(oscd_dir: Path) -> None:
    city = oscd_dir / "abudhabi"
    pair = PairSpec("abudhabi", city / "imgs_1", city / "imgs_2").open()
    assert not pair.after.grid.same_as(pair.before.grid)  # the after-scene has its own grid
    before, after = pair.read(["B04", "B08"])
    assert before.shape == after.shape == (2, *pair.grid.shape)
    assert np.isfinite(after).all()
    # same ground: the two dates correlate strongly once aligned
    corr = np.corrcoef(before[0].ravel(), after[0].ravel())[0, 1]
    assert corr > 0.6
    window = Window(10, 20, 32, 32)
    b_win, a_win = pair.read(["B04"], window)
    np.testing.assert_array_equal(b_win[0], before[0, 20:52, 10:42])
    np.testing.assert_allclose(a_win[0], after[0, 20:52, 10:42], rtol=1e-3)


def test_after_scene_in_another_crs_lands_on_the_right_pixels(tmp_path: Path, make_raster) -> None:
    # after: UTM 36N, 10 m, zero with a bright 200 m x 200 m square; before: EPSG:4326 grid
    x0, y0 = 700_000.0, 3_760_000.0
    after_data = np.zeros((100, 100), dtype=np.float32)
    after_data[40:60, 30:50] = 1.0
    square = (x0 + 300, y0 - 600, x0 + 500, y0 - 400)  # left, bottom, right, top
    after_path = make_raster(tmp_path / "after.tif", after_data,
                             Affine(10, 0, x0, 0, -10, y0), UTM)
    lon, lat = transform_points(UTM, "EPSG:4326", [x0 + 100], [y0 - 100])
    step = 1e-4
    before_path = make_raster(tmp_path / "before.tif", np.ones((80, 80), np.float32),
                              Affine(step, 0, lon[0], 0, -step, lat[0]), "EPSG:4326")
    pair = TilePair("p", open_scene(before_path), open_scene(after_path))
    _, after = pair.read()
    rows, cols = np.mgrid[0:80, 0:80]
    centre_lon = lon[0] + (cols.ravel() + 0.5) * step
    centre_lat = lat[0] - (rows.ravel() + 0.5) * step
    xs, ys = transform_points("EPSG:4326", UTM, centre_lon, centre_lat)
    xs, ys = np.asarray(xs).reshape(80, 80), np.asarray(ys).reshape(80, 80)
    margin = 15.0
    inside = ((xs > square[0] + margin) & (xs < square[2] - margin)
              & (ys > square[1] + margin) & (ys < square[3] - margin))
    outside = ((xs < square[0] - margin) | (xs > square[2] + margin)
               | (ys < square[1] - margin) | (ys > square[3] + margin))
    assert inside.sum() > 100
    assert np.all(after[0][inside] > 0.99)
    assert np.all(after[0][outside & np.isfinite(after[0])] < 0.01)


def test_whole_pixel_offset_reads_shifted_pixels_exactly(tmp_path: Path, make_raster) -> None:
    data = np.arange(100, dtype=np.float32).reshape(10, 10)
    before = make_raster(tmp_path / "b.tif", data, Affine(10, 0, 0, 0, -10, 100), UTM)
    after = make_raster(tmp_path / "a.tif", data + 1000, Affine(10, 0, 30, 0, -10, 80), UTM)
    pair = TilePair("p", open_scene(before), open_scene(after))
    _, after_on_before = pair.read()
    # before pixel (r, c) is after pixel (r - 2, c - 3)
    np.testing.assert_array_equal(after_on_before[0, 2:, 3:], data[:8, :7] + 1000)
    assert np.isnan(after_on_before[0, :2]).all() and np.isnan(after_on_before[0, :, :3]).all()


def test_pairs_that_do_not_overlap_are_an_error(tmp_path: Path, make_raster) -> None:
    data = np.ones((10, 10), np.float32)
    before = make_raster(tmp_path / "b.tif", data, Affine(10, 0, 0, 0, -10, 100), UTM)
    after = make_raster(tmp_path / "a.tif", data, Affine(10, 0, 5000, 0, -10, 100), UTM)
    with pytest.raises(InputError, match=r"a\.tif: does not overlap the before-scene .*b\.tif"):
        TilePair("p", open_scene(before), open_scene(after))
    far = make_raster(tmp_path / "far.tif", data, Affine(1e-4, 0, 10, 0, -1e-4, 10), "EPSG:4326")
    with pytest.raises(InputError, match="does not overlap"):
        TilePair("p", open_scene(before), open_scene(far))


def test_images_without_georeference_must_match_in_size(tmp_path: Path, make_raster) -> None:
    small = make_raster(tmp_path / "small.tif", np.ones((3, 8, 8), np.uint8))
    large = make_raster(tmp_path / "large.tif", np.ones((3, 9, 8), np.uint8))
    with pytest.raises(InputError, match=r"large\.tif: images without georeference"):
        TilePair("p", open_scene(small), open_scene(large))
    geo = make_raster(tmp_path / "geo.tif", np.ones((3, 8, 8), np.uint8),
                      Affine(10, 0, 0, 0, -10, 80), UTM)
    with pytest.raises(InputError, match=r"geo\.tif: one scene is georeferenced"):
        TilePair("p", open_scene(small), open_scene(geo))


def test_png_pair_and_its_label(levir_dir: Path) -> None:
    name = "val_27_0000_0256.png"
    spec = PairSpec("v", levir_dir / "A" / name, levir_dir / "B" / name, levir_dir / "label" / name)
    pair = spec.open()
    before, after = pair.read(window=Window(0, 0, 64, 64))
    assert before.shape == after.shape == (3, 64, 64)
    label = pair.read_label(Window(0, 0, 256, 256))
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
    assert pair.read_label(Window(200, 200, 64, 64))[60:, 60:].max() == 255  # past the edge
    assert PairSpec("v", spec.before, spec.after).open().read_label() is None


def test_a_south_up_raster_pairs_with_itself(tmp_path: Path, make_raster) -> None:
    data = np.arange(100, dtype=np.float32).reshape(10, 10)
    south_up = make_raster(tmp_path / "s.tif", data, Affine(10, 0, 0, 0, 10, 0), UTM)
    scene = open_scene(south_up)
    left, bottom, right, top = scene.grid.bounds
    assert (left, bottom, right, top) == (0, 0, 100, 100)
    before, after = TilePair("p", scene, open_scene(south_up)).read()
    np.testing.assert_array_equal(before[0], data)
    np.testing.assert_array_equal(after[0], data)


def test_a_cloud_mask_that_cannot_be_placed_on_the_pair_is_refused(
    tmp_path: Path, make_raster
) -> None:
    data = np.ones((10, 10), np.float32)
    grid = Affine(10, 0, 0, 0, -10, 100)
    before = make_raster(tmp_path / "b.tif", data, grid, UTM)
    after = make_raster(tmp_path / "a.tif", data, grid, UTM)
    mask = np.ones((10, 10), np.uint8)
    cases = {
        make_raster(tmp_path / "plain.tif", mask): "cloud mask has no georeference",
        make_raster(tmp_path / "far.tif", mask, Affine(10, 0, 9000, 0, -10, 100), UTM):
            "cloud mask does not overlap the pair",
    }
    for path, problem in cases.items():
        spec = PairSpec("p", before, after, after_mask=path)
        with pytest.raises(InputError, match=problem) as info:
            spec.open()
        assert str(info.value).startswith(str(path))
    near = make_raster(tmp_path / "near.tif", mask, Affine(10, 0, 50, 0, -10, 100), UTM)
    assert PairSpec("p", before, after, after_mask=near).open().after.cloud_mask == str(near)
    plain_b = make_raster(tmp_path / "pb.tif", np.ones((3, 8, 8), np.uint8))
    plain_a = make_raster(tmp_path / "pa.tif", np.ones((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"must have the pair's size \(8, 8\)"):
        PairSpec("p", plain_b, plain_a, before_mask=tmp_path / "plain.tif").open()
