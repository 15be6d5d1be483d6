"""Scenes: per-band folders, multi-band rasters, plain images; windowed reads; bad input."""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio.windows import Window

from groundbreak.datasets import InputError, open_scene
from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.datasets.grid import Grid

UTM = "EPSG:32636"


def _band_file(folder: Path, band: str) -> Path:
    return next(folder.glob(f"*_{band}.tif"))


def test_band_folder_has_all_bands_on_the_finest_grid(oscd_dir: Path) -> None:
    folder = oscd_dir / "beirut" / "imgs_1"
    scene = open_scene(folder, date="2015-08-20")
    assert scene.band_names == list(SENTINEL2_BANDS)
    with rasterio.open(_band_file(folder, "B02")) as src:
        assert scene.grid.shape == (src.height, src.width)
        assert scene.grid.transform == src.transform
        raw = src.read(1)
    assert scene.date == "2015-08-20"
    np.testing.assert_array_equal(scene.read(["B02"])[0], raw.astype(np.float32))


def test_coarse_bands_are_resampled_onto_the_finest_grid(oscd_dir: Path) -> None:
    folder = oscd_dir / "beirut" / "imgs_1"
    scene = open_scene(folder)
    data = scene.read(["B01", "B05", "B8A"])
    assert data.shape == (3, 96, 96)
    assert np.isfinite(data).all()
    for i, band in enumerate(["B01", "B05", "B8A"]):
        with rasterio.open(_band_file(folder, band)) as src:
            raw = src.read(1)
        assert raw.min() <= data[i].min() and data[i].max() <= raw.max()


def test_windowed_read_matches_the_full_read(oscd_dir: Path) -> None:
    scene = open_scene(oscd_dir / "abudhabi" / "imgs_1")
    full = scene.read(["B02", "B11"])
    window = Window(17, 40, 33, 21)
    part = scene.read(["B02", "B11"], scene.grid.subgrid(window))
    np.testing.assert_array_equal(part[0], full[0, 40:61, 17:50])
    np.testing.assert_allclose(part[1], full[1, 40:61, 17:50], rtol=1e-3)


def test_mixed_resolutions_land_on_the_right_pixels(tmp_path: Path, make_raster) -> None:
    # a 20 m band holding its own pixel-centre x coordinate; bilinear onto 10 m is exact inside
    centres_20 = 10.0 + 20.0 * np.arange(4, dtype=np.float32)
    make_raster(tmp_path / "s" / "T_B05.tif", np.tile(centres_20, (4, 1)),
                Affine(20, 0, 0, 0, -20, 80), UTM)
    make_raster(tmp_path / "s" / "T_B02.tif", np.zeros((8, 8), np.uint16),
                Affine(10, 0, 0, 0, -10, 80), UTM)
    scene = open_scene(tmp_path / "s")
    assert scene.grid.shape == (8, 8) and scene.grid.transform.a == 10
    b05 = scene.read(["B05"])[0]
    centres_10 = 5.0 + 10.0 * np.arange(8)
    np.testing.assert_allclose(b05[:, 1:7], np.tile(centres_10[1:7], (8, 1)), atol=1e-3)


def test_multiband_raster_names_bands_from_descriptions(tmp_path: Path, make_raster) -> None:
    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    path = make_raster(tmp_path / "x.tif", data, Affine(10, 0, 0, 0, -10, 40), UTM,
                       descriptions=["B4", "b3", "B02"])
    scene = open_scene(path)
    assert scene.band_names == ["B04", "B03", "B02"]
    np.testing.assert_array_equal(scene.read(["B02", "B04"]), data[[2, 0]].astype(np.float32))


def test_multiband_raster_band_names_given_or_numbered(tmp_path: Path, make_raster) -> None:
    data = np.ones((2, 4, 4), dtype=np.float32)
    path = make_raster(tmp_path / "x.tif", data, Affine(10, 0, 0, 0, -10, 40), UTM)
    assert open_scene(path).band_names == ["band1", "band2"]
    assert open_scene(path, band_names=["NIR", "red"]).band_names == ["nir", "red"]
    with pytest.raises(InputError, match=r"x\.tif: 3 band names were given"):
        open_scene(path, band_names=["a", "b", "c"])
    with pytest.raises(InputError, match=r"x\.tif: .*duplicate"):
        open_scene(path, band_names=["red", "RED"])


def test_descriptions_naming_a_band_twice_are_not_band_names(tmp_path: Path, make_raster) -> None:
    data = np.ones((2, 4, 4), dtype=np.uint16)
    path = make_raster(tmp_path / "x.tif", data, Affine(10, 0, 0, 0, -10, 40), UTM,
                       descriptions=["B2", "B02"])
    assert open_scene(path).band_names == ["band1", "band2"]


def test_png_is_an_rgb_scene_without_georeference(levir_dir: Path) -> None:
    path = levir_dir / "A" / "train_36_0512_0512.png"
    scene = open_scene(path)
    assert scene.band_names == ["red", "green", "blue"]
    assert not scene.grid.georeferenced and scene.grid.shape == (256, 256)
    expected = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(scene.read(), expected.astype(np.float32))


def test_nodata_and_outside_pixels_are_nan(tmp_path: Path, make_raster) -> None:
    data = np.full((4, 4), 7, dtype=np.uint16)
    data[0, 0] = 0
    path = make_raster(tmp_path / "x.tif", data, Affine(10, 0, 0, 0, -10, 40), UTM, nodata=0)
    scene = open_scene(path)
    wider = scene.grid.subgrid(Window(-1, 0, 6, 4))
    out = scene.read(grid=wider)[0]
    assert np.isnan(out[0, 1]) and np.isnan(out[:, 0]).all() and np.isnan(out[:, 5]).all()
    assert (out[1:, 1:5] == 7).all()


def test_resampled_reads_keep_nodata_as_nan(tmp_path: Path, make_raster) -> None:
    data = np.full((8, 8), 100, dtype=np.uint16)
    data[:, 4:] = 200
    data[0:2] = 0  # nodata rows
    path = make_raster(tmp_path / "x.tif", data, Affine(10, 0, 0, 0, -10, 80), UTM, nodata=0)
    scene = open_scene(path)
    shifted = Grid(6, 6, Affine(10, 0, 5, 0, -10, 75), scene.grid.crs)  # half a pixel off
    out = scene.read(grid=shifted)[0]
    assert np.isnan(out[0]).all() and np.isfinite(out[2:]).all()
    assert out[3, 3] == pytest.approx(150.0)  # between the 100 and 200 halves: no rounding
    assert out[3, 0] == pytest.approx(100.0) and out[3, 5] == pytest.approx(200.0)
    assert out.dtype == np.float32


def test_require_valid_rejects_an_all_nodata_window(tmp_path: Path, make_raster) -> None:
    data = np.full((8, 8), 5, dtype=np.uint16)
    data[:4] = 0
    path = make_raster(tmp_path / "x.tif", data, Affine(10, 0, 0, 0, -10, 80), UTM, nodata=0)
    scene = open_scene(path)
    top = scene.grid.subgrid(Window(0, 0, 8, 4))
    assert np.isnan(scene.read(grid=top)).all()
    with pytest.raises(InputError, match=r"x\.tif: .*holds no valid pixels"):
        scene.read(grid=top, require_valid=True)
    outside = scene.grid.subgrid(Window(20, 20, 4, 4))
    with pytest.raises(InputError, match="no valid pixels"):
        scene.read(grid=outside, require_valid=True)
    assert np.isfinite(scene.read(grid=scene.grid, require_valid=True)).any()


def test_missing_band_file_is_named(oscd_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs_1"
    shutil.copytree(oscd_dir / "beirut" / "imgs_1", folder)
    _band_file(folder, "B04").unlink()
    scene = open_scene(folder)
    with pytest.raises(InputError, match=r"imgs_1: scene has no band\(s\) B04"):
        scene.read(["B02", "B04"])


@pytest.mark.parametrize("band", ["B99", "nir"])
def test_unknown_band_name(oscd_dir: Path, band: str) -> None:
    scene = open_scene(oscd_dir / "beirut" / "imgs_1")
    with pytest.raises(InputError, match=rf"imgs_1: scene has no band\(s\) {band}"):
        scene.read([band])


def test_truncated_tiff_is_an_input_error_naming_the_file(oscd_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs_1"
    shutil.copytree(oscd_dir / "beirut" / "imgs_1", folder)
    broken = _band_file(folder, "B03")
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    with pytest.raises(InputError) as caught:  # at open or at read: both must be InputError
        open_scene(folder).read(["B02", "B03"])
    assert caught.value.path == str(broken)
    assert "corrupt" in str(caught.value) or "cannot be read" in str(caught.value)


def test_garbage_file_fails_at_open(oscd_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs_1"
    shutil.copytree(oscd_dir / "beirut" / "imgs_1", folder)
    broken = _band_file(folder, "B08")
    broken.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(InputError, match=r"_B08\.tif: cannot be read as a raster"):
        open_scene(folder)


@pytest.mark.parametrize(
    "location", ["https://example.com/scene.tif", "/vsis3/bucket/scene.tif", "s3://b/scene.tif"]
)
def test_a_url_scene_points_to_the_scene_manifest(location: str) -> None:
    for given in (location, Path(location)):  # Path() collapses '//': https:/example.com
        with pytest.raises(InputError, match="remote scene is read through a scene manifest"):
            open_scene(given)


def test_missing_path_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.tif: scene does not exist"):
        open_scene(tmp_path / "nope.tif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: folder holds no raster files"):
        open_scene(tmp_path / "empty")
    (tmp_path / "unnamed").mkdir()
    (tmp_path / "unnamed" / "image.tif").write_bytes(b"")
    with pytest.raises(InputError, match=r"unnamed: no file name names a band"):
        open_scene(tmp_path / "unnamed")


def test_scene_reads_onto_a_grid_in_another_crs(tmp_path: Path, make_raster) -> None:
    # a UTM raster whose left half is 1 and right half is 2, read onto an EPSG:4326 grid
    data = np.ones((100, 100), dtype=np.float32)
    data[:, 50:] = 2
    path = make_raster(tmp_path / "utm.tif", data, Affine(10, 0, 500000, 0, -10, 3700000), UTM)
    scene = open_scene(path)
    from rasterio.warp import calculate_default_transform

    transform, width, height = calculate_default_transform(
        UTM, "EPSG:4326", 100, 100, *scene.grid.bounds
    )
    out = scene.read(grid=Grid(width, height, transform, rasterio.crs.CRS.from_epsg(4326)))[0]
    middle = height // 2
    assert np.nanmean(out[middle, : width // 3]) == pytest.approx(1.0)
    assert np.nanmean(out[middle, -width // 3 :]) == pytest.approx(2.0)


def test_a_raster_declaring_a_huge_size_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200_000, height=200_000, count=1,
                       dtype="uint16", crs="EPSG:32633", tiled=True, compress="deflate",
                       sparse_ok=True, transform=Affine(10, 0, 0, 0, -10, 0)):
        pass  # nothing written: a small file that declares 4e10 pixels
    assert path.stat().st_size < 10_000_000
    with pytest.raises(InputError, match="declares 200000 x 200000 pixels.*GROUNDBREAK_MAX"):
        open_scene(path)
    monkeypatch.setenv("GROUNDBREAK_MAX_RASTER_PIXELS", "5e10")
    assert open_scene(path).grid.shape == (200_000, 200_000)


def test_reading_onto_a_coarser_aligned_grid_averages_whole_blocks(tmp_path: Path) -> None:
    from rasterio.enums import Resampling

    from groundbreak.datasets.scene import read_band, single_band_source

    data = np.arange(36 * 30, dtype=np.float32).reshape(36, 30)
    path = tmp_path / "band.tif"
    transform = Affine(10, 0, 500_000, 0, -10, 4_000_000)
    with rasterio.open(path, "w", driver="GTiff", width=30, height=36, count=1,
                       dtype="float32", crs="EPSG:32633", transform=transform) as dst:
        dst.write(data, 1)
    origin = transform @ Affine.translation(-6, 0)  # one column of cells off the raster
    coarse = Grid(6, 7, origin @ Affine.scale(6), rasterio.crs.CRS.from_epsg(32633))
    values = read_band(single_band_source(path), coarse, Resampling.average)
    blocks = data.reshape(6, 6, 5, 6).mean(axis=(1, 3))
    np.testing.assert_allclose(values[:6, 1:], blocks)
    assert np.isnan(values[:, 0]).all() and np.isnan(values[6]).all()


def test_coarse_aligned_reads_come_from_the_overviews(tmp_path: Path) -> None:
    """Why a coarse aligned read (a cloud mask's grid) is a plain read with ``out_shape`` and not
    the warper: GDAL then takes the file's overviews (JPEG 2000 resolution levels, COG
    overviews) instead of decoding every pixel. Overviews left stale on purpose tell which."""
    from rasterio.enums import Resampling

    from groundbreak.datasets.scene import read_band, single_band_source

    path = tmp_path / "band.tif"
    transform = Affine(10, 0, 500_000, 0, -10, 4_000_000)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=transform, tiled=True, blockxsize=16,
                       blockysize=16) as dst:
        dst.write(np.full((64, 64), 100, np.uint16), 1)
        dst.build_overviews([4], Resampling.average)
    with rasterio.open(path, "r+") as dst:
        dst.write(np.full((64, 64), 700, np.uint16), 1)  # the overview still says 100
    coarse = Grid(16, 16, transform @ Affine.scale(4), rasterio.crs.CRS.from_epsg(32633))
    source = single_band_source(path)
    assert (read_band(source, coarse, Resampling.average) == 100).all()  # from the overview
    assert (read_band(source, coarse, Resampling.bilinear) == 700).all()  # warped, full rows


@pytest.mark.parametrize("form", ["deflate-geotiff", "uncompressed-geotiff", "jp2-product"])
def test_reads_with_files_kept_open_equal_plain_reads(
    fixtures_dir: Path, tmp_path: Path, form: str
) -> None:
    from groundbreak.datasets.product_writer import read_band_images, write_product
    from groundbreak.datasets.scene import files_kept_open

    beirut = fixtures_dir / "oscd" / "beirut" / "imgs_2"
    if form == "jp2-product":
        scene = open_scene(write_product(tmp_path, read_band_images(beirut), zipped=True))
    else:  # real bands as 16 px-tiled GeoTIFFs with nodata 0 and a hole
        folder = tmp_path / "bands"
        folder.mkdir()
        for name in ("B02", "B03", "B05"):
            source = next(beirut.glob(f"*_{name}.tif"))
            with rasterio.open(source) as src:
                data, profile = src.read(1), src.profile
            data[10:30, 5:40] = 0
            profile |= {"tiled": True, "blockxsize": 16, "blockysize": 16, "nodata": 0}
            if form == "uncompressed-geotiff":  # read plainly, without strips
                profile.pop("compress", None)
            else:
                profile["compress"] = "deflate"
            with rasterio.open(folder / source.name, "w", **profile) as dst:
                dst.write(data, 1)
        scene = open_scene(folder)
    bands = ["B02", "B03", "B05"]
    grid = scene.grid
    windows = [Window(c, r, 40, 24) for r in range(-8, grid.height, 20)
               for c in range(-8, grid.width, 30)]  # row by row, as the predictor reads
    plain = [scene.read(bands, grid.subgrid(w)) for w in windows]
    with files_kept_open():
        kept = [scene.read(bands, grid.subgrid(w)) for w in windows]
        again = scene.read(bands, grid.subgrid(windows[0]))  # back up the file: read afresh
        tall = scene.read(bands, grid.subgrid(Window(3, 5, 40, 70)))  # the strip's buffer grows
    with files_kept_open(strips=False):  # as the report reads its crops, in any order
        scattered = [scene.read(bands, grid.subgrid(w)) for w in reversed(windows)][::-1]
    for a, b, c in zip(plain, kept, scattered, strict=True):
        np.testing.assert_array_equal(a, b)  # NaN where NaN
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(again, plain[0])
    np.testing.assert_array_equal(tall, scene.read(bands, grid.subgrid(Window(3, 5, 40, 70))))
    assert any(np.isnan(a).any() for a in plain) and any(np.isfinite(a).any() for a in plain)


def _warped(path: Path, grid: Grid, resampling: str = "bilinear") -> np.ndarray:
    """GDAL's bilinear (or nearest) warp of band 1 onto a grid (the reference of the numpy
    upsampling)."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(path) as src, WarpedVRT(
        src,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling[resampling],
        dtype="float32",
        src_nodata=src.nodata,
        nodata=src.nodata,
        add_alpha=True,
    ) as vrt:
        data, alpha = vrt.read(1), vrt.read(2)
    data[alpha == 0] = np.nan  # outside the band or next to its nodata
    return data


@pytest.mark.parametrize("resampling", ["bilinear", "nearest"])
@pytest.mark.parametrize(
    "case", ["real-20m", "real-20m-with-hole", "generated-60m", "generated-60m-float-nan"]
)
def test_upsampled_bands_equal_gdal_bilinear_warp_bit_for_bit(
    fixtures_dir: Path, tmp_path: Path, case: str, resampling: str, monkeypatch
) -> None:
    """20 and 60 m bands onto a 10 m grid are upsampled in numpy (speed, issue 13; nearest, as
    the date matching samples small pairs, issue 25): the values must be the warper's exactly,
    at the edges, partly outside the band and next to nodata."""
    from rasterio.enums import Resampling

    from groundbreak.datasets.scene import files_kept_open

    beirut = fixtures_dir / "oscd" / "beirut" / "imgs_2"
    folder = tmp_path / "bands"
    folder.mkdir()
    fine = next(beirut.glob("*_B02.tif"))
    shutil.copy(fine, folder / fine.name)
    if case.startswith("real"):  # the real 48 x 48 px 20 m band under the 96 x 96 px 10 m one
        coarse = next(beirut.glob("*_B05.tif"))
        with rasterio.open(coarse) as src:
            data, profile = src.read(1), src.profile
        if case.endswith("hole"):
            data[20:23, 7:30] = 0
            profile |= {"nodata": 0}
        profile |= {"tiled": True, "blockxsize": 16, "blockysize": 16}
    else:  # a 60 m band of random values, 16 x 16 px, over the 10 m grid
        with rasterio.open(fine) as src:
            profile = src.profile | {
                "width": 16,
                "height": 16,
                "transform": src.transform @ Affine.scale(6),
            }
        data = np.random.default_rng(0).integers(1, 10_000, (16, 16), dtype=np.uint16)
        if case.endswith("nan"):  # float values with NaN in them and no nodata declared
            data = data.astype(np.float32)
            data[5:7, 3:9] = np.nan
            profile |= {"dtype": "float32", "nodata": None}
        coarse = folder / "x_B01.tif"
    with rasterio.open(folder / Path(coarse).name, "w", **profile) as dst:
        dst.write(data, 1)
    band = "B05" if case.startswith("real") else "B01"
    scene = open_scene(folder)
    grid = scene.grid
    windows = [
        Window(c, r, 40, 24) for r in range(-7, grid.height, 19) for c in range(-9, grid.width, 29)
    ]  # row by row, as the predictor reads
    expected = [_warped(folder / Path(coarse).name, grid.subgrid(w), resampling) for w in windows]
    if resampling == "nearest":  # every case goes through the kernel, none through the warper
        from groundbreak.datasets.scenes import reading

        monkeypatch.setattr(reading, "_read_warped", None)
    from groundbreak.datasets.scenes import upsample

    monkeypatch.setattr(upsample, "CHUNK_VALUES", 64)  # 1 row a time of these 40 px windows
    method = Resampling[resampling]
    plain = [scene.read([band], grid.subgrid(w), resampling=method)[0] for w in windows]
    with files_kept_open():
        kept = [scene.read([band], grid.subgrid(w), resampling=method)[0] for w in windows]
    for want, a, b in zip(expected, plain, kept, strict=True):
        np.testing.assert_array_equal(a, want)  # NaN where NaN
        np.testing.assert_array_equal(b, want)
    assert any(np.isnan(e).any() for e in expected) and all(np.isfinite(e).any() for e in expected)


@pytest.mark.parametrize("k", [2, 6])
def test_the_upsampling_kernel_gives_the_warpers_pixels(k: int) -> None:
    """Reads onto a nested grid use a hand-written kernel (:mod:`.scenes.upsample`) rather than
    GDAL's warper over the same decoded rows: the pixels are the same (this test), and the kernel
    costs half the warper's time per 256 x 256 px window (``python bench/upsample_bench.py``
    prints both; 1.0 vs 2.0 ms for a 20 m band, 0.8 vs 1.9 ms for a 60 m band, best of 15 on
    one core)."""
    bench = Path(__file__).resolve().parents[2] / "bench" / "upsample_bench.py"
    spec = importlib.util.spec_from_file_location("upsample_bench", bench)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kernel, warper = module.window_reads(k)
    np.testing.assert_array_equal(kernel(), warper())


def test_warped_reads_of_a_band_without_nodata_are_nan_outside_it(
    tmp_path: Path, make_raster
) -> None:
    """Found with the upsampling check: a warped read of a file without nodata gave 0, a
    valid-looking value, outside the file (rasterio's masked read missed the VRT's alpha)."""
    data = np.full((8, 8), 7, dtype=np.uint16)
    path = make_raster(tmp_path / "x.tif", data, Affine(10, 0, 0, 0, -10, 80), UTM)
    scene = open_scene(path)
    shifted = Grid(8, 8, Affine(10, 0, -35, 0, -10, 80), scene.grid.crs)  # 3.5 px to the left
    out = scene.read(grid=shifted)[0]
    assert np.isnan(out[:, :3]).all() and (out[:, 4:] == 7).all()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (Affine(10, 0, 500_000, 0, -10, 4_000_000), (0, 0, 2)),  # 20 m onto 10 m, same origin
        (Affine(10, 0, 499_970, 0, -10, 4_000_040), (-4, -3, 2)),  # origin off by whole 10 m px
        (Affine(20 / 6, 0, 500_000, 0, -20 / 6, 4_000_000), (0, 0, 6)),
        (Affine(10, 0, 500_005, 0, -10, 4_000_000), None),  # half a target pixel off
        (Affine(20 / 1.5, 0, 500_000, 0, -20 / 1.5, 4_000_000), None),  # not a whole ratio
        (Affine(20, 0, 500_000, 0, -20, 4_000_000), None),  # same pixel size: no upsampling
        (Affine(10, 0, 500_000, 0, -20, 4_000_000), None),  # ratio 2 across, 1 down
    ],
)
def test_which_grids_nest_in_a_band_for_numpy_upsampling(
    target: Affine, expected: tuple[int, int, int] | None
) -> None:
    from groundbreak.datasets.scenes.upsample import nesting

    crs = rasterio.crs.CRS.from_epsg(32633)
    band = Grid(100, 100, Affine(20, 0, 500_000, 0, -20, 4_000_000), crs)
    assert nesting(band, Grid(64, 64, target, crs)) == expected
    assert nesting(band, Grid(64, 64, target, rasterio.crs.CRS.from_epsg(32634))) is None


def test_strip_reads_ask_gdal_to_cache_a_block_row_of_pixel_interleaved_files_only(
    tmp_path: Path,
) -> None:
    from groundbreak.datasets.scene import strip_block_cache_bytes

    profile = {"driver": "GTiff", "width": 48, "height": 64, "count": 3, "dtype": "uint16",
               "tiled": True, "blockxsize": 16, "blockysize": 32}
    for interleave in ("pixel", "band"):
        with rasterio.open(tmp_path / f"{interleave}.tif", "w", interleave=interleave,
                           **profile) as dst:
            dst.write(np.ones((3, 64, 48), dtype=np.uint16))
    pixel = list(open_scene(tmp_path / "pixel.tif").sources.values())
    band = list(open_scene(tmp_path / "band.tif").sources.values())
    assert strip_block_cache_bytes(pixel) == 32 * 48 * 3 * 2  # GDAL decodes all 3 bands at once
    assert strip_block_cache_bytes(band) == 0  # each band's strip holds its own rows
    assert strip_block_cache_bytes(band + pixel) == 32 * 48 * 3 * 2
    assert strip_block_cache_bytes(pixel[:1]) == 0  # one band read: no other band waits in cache
    (tmp_path / "pixel.tif").write_bytes(b"not a tiff")  # reported by the read, not here
    assert strip_block_cache_bytes(pixel) == 0


def test_a_band_off_the_scene_is_refused(tmp_path: Path, make_raster) -> None:
    folder = tmp_path / "scene"
    data = np.ones((10, 10), np.float32)
    make_raster(folder / "T_B02.tif", data, Affine(10, 0, 0, 0, -10, 100), UTM)
    make_raster(folder / "T_B03.tif", data, Affine(10, 0, 50, 0, -10, 100), UTM)  # overlaps
    assert open_scene(folder).band_names == ["B02", "B03"]
    make_raster(folder / "T_B04.tif", data, Affine(10, 0, 50_000, 0, -10, 100), UTM)
    with pytest.raises(InputError, match=r"T_B04\.tif: band B04 does not overlap"):
        open_scene(folder)
    (folder / "T_B04.tif").unlink()
    make_raster(folder / "T_B04.tif", data)  # no georeference
    with pytest.raises(InputError, match=r"band B0[24] and the band in .*not both georeferenced"):
        open_scene(folder)


def test_complex_rasters_are_refused(tmp_path: Path, make_raster) -> None:
    values = np.ones((2, 8, 8), np.complex64)
    path = make_raster(tmp_path / "c.tif", values, Affine(10, 0, 0, 0, -10, 80), UTM)
    with pytest.raises(InputError, match=r"c\.tif: holds complex values \(complex64\)"):
        open_scene(path)


def test_infinite_values_are_invalid_without_warnings(tmp_path: Path, make_raster) -> None:
    data = np.full((2, 8, 8), 500.0, np.float32)
    data[:, 2, 3] = np.inf
    data[1, 4, 4] = -np.inf
    path = make_raster(tmp_path / "i.tif", data, Affine(10, 0, 0, 0, -10, 80), UTM)
    folder = tmp_path / "bands"
    make_raster(folder / "T_B02.tif", data[0], Affine(10, 0, 0, 0, -10, 80), UTM)
    make_raster(folder / "T_B05.tif", data[0, :4, :4], Affine(20, 0, 0, 0, -20, 80), UTM)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = open_scene(path).read()
        bands = open_scene(folder).read()
    assert np.isnan(values[:, 2, 3]).all() and np.isnan(values[1, 4, 4])
    assert np.isfinite(values).sum() == 2 * 64 - 3
    assert not np.isinf(bands).any() and np.isnan(bands[1]).any() and np.isfinite(bands[1]).any()
