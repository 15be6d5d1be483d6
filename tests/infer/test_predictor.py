"""TiledPredictor on real fixture scenes and small generated rasters, with a tiny seeded model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from groundbreak.datasets.bands import RGB_BANDS, SENTINEL2_L2A_BANDS
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.datasets.scene import Scene, open_scene
from groundbreak.infer.prediction import predictor as predictor_module
from groundbreak.infer.prediction.inference import predict_probabilities
from groundbreak.infer.prediction.predictor import PredictionResult, TiledPredictor
from groundbreak.infer.prediction.tiling import observed_windows
from groundbreak.train.bundle import ModelBundle, load_bundle, save_bundle
from groundbreak.train.model import ChangeUNet


def tiny_bundle(
    out_dir: Path, bands: list[str], mean: list[float], std: list[float]
) -> ModelBundle:
    """A seeded, untrained one-stage ChangeUNet (output stride 2) saved and loaded as a bundle."""
    torch.manual_seed(0)
    model = ChangeUNet(len(bands), encoder_depth=1, decoder_channels=(8,))
    meta = {
        "bands": bands,
        "normalization": {"mean": mean, "std": std},
        "chip_size": 32,
        "threshold": 0.5,
    }
    return load_bundle(save_bundle(model, meta, out_dir))


def oscd_pair(fixtures_dir: Path, city: str) -> TilePair:
    """A fixture OSCD pair (per-band folders)."""
    root = fixtures_dir / "oscd" / city
    return PairSpec(city, root / "imgs_1", root / "imgs_2").open()


@pytest.fixture(scope="module")
def s2_bundle(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> ModelBundle:
    """A tiny 10-band bundle normalised with the beirut fixture's own statistics."""
    before, after = oscd_pair(fixtures_dir, "beirut").read(list(SENTINEL2_L2A_BANDS))
    both = np.concatenate([before, after], axis=2)
    return tiny_bundle(
        tmp_path_factory.mktemp("s2-bundle"),
        list(SENTINEL2_L2A_BANDS),
        np.nanmean(both, axis=(1, 2)).tolist(),
        np.nanstd(both, axis=(1, 2)).tolist(),
    )


@pytest.fixture(scope="module")
def rgb_bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    """A tiny RGB bundle."""
    return tiny_bundle(
        tmp_path_factory.mktemp("rgb-bundle"), list(RGB_BANDS), [100.0] * 3, [50.0] * 3
    )


def read_raster(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), {
            "profile": src.profile,
            "layout": src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT"),
            "compression": src.compression,
        }


def crop_scene(scene: Scene, window: Window) -> Scene:
    """The same files read on a window of the scene's grid: a crop with no copy."""
    return Scene(scene.path, scene.sources, scene.grid.subgrid(window), scene.date)


def write_raster(path: Path, data: np.ndarray, transform: Affine, nodata: float | None) -> Path:
    """A small multi-band GeoTIFF in EPSG:32633 with band descriptions B02..."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=CRS.from_epsg(32633),
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data)
        dst.descriptions = tuple(SENTINEL2_L2A_BANDS[: data.shape[0]])
    return path


def test_outputs_lie_on_the_pair_grid_as_tiled_compressed_cogs(
    s2_bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    pair = oscd_pair(fixtures_dir, "abudhabi")  # after-scene on its own, offset grid
    result = TiledPredictor(s2_bundle, window=64, overlap=32).predict_pair(pair, tmp_path)

    assert isinstance(result, PredictionResult)
    assert result.grid == pair.grid and result.threshold == 0.5
    assert result.valid_fraction > 0.9 and result.seconds > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "probability.tif"]
    probability, info = read_raster(result.probability_path)
    mask, mask_info = read_raster(result.mask_path)
    for meta in (info, mask_info):
        profile = meta["profile"]
        assert (profile["width"], profile["height"]) == (pair.grid.width, pair.grid.height)
        assert profile["crs"] == pair.grid.crs
        assert profile["transform"].almost_equals(pair.grid.transform, precision=1e-12)
        assert profile["tiled"] and profile["blockxsize"] == 256
        assert meta["compression"].name == "deflate"
        assert meta["layout"] == "COG"
    assert info["profile"]["dtype"] == "float32" and np.isnan(info["profile"]["nodata"])
    assert mask_info["profile"]["dtype"] == "uint8" and mask_info["profile"]["nodata"] == 255
    valid = np.isfinite(probability)
    assert valid.mean() == pytest.approx(result.valid_fraction)
    assert probability[valid].min() >= 0 and probability[valid].max() <= 1
    np.testing.assert_array_equal(mask[valid], probability[valid] >= 0.5)
    assert (mask[~valid] == 255).all()


@pytest.mark.parametrize("city", ["beirut", "abudhabi"])
def test_shifted_crop_agrees_with_the_scene_in_the_interior(
    s2_bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path, city: str
) -> None:
    pair = oscd_pair(fixtures_dir, city)
    # 16 rows and 6 columns off: not a multiple of the window stride (32), so the crop's
    # windows fall elsewhere on the ground than the scene's.
    window = Window(6, 16, 84, 74)
    crop = TilePair("crop", crop_scene(pair.before, window), crop_scene(pair.after, window))

    def difference(**settings: object) -> float:
        predictor = TiledPredictor(s2_bundle, **settings)  # type: ignore[arg-type]
        full, _ = read_raster(predictor.predict_pair(pair, tmp_path / "full").probability_path)
        part, _ = read_raster(predictor.predict_pair(crop, tmp_path / "crop").probability_path)
        shared = full[16 : 16 + 74, 6 : 6 + 84]
        margin = 12
        return float(np.abs(shared - part)[margin:-margin, margin:-margin].max())

    blended = difference(window=64, overlap=32)
    assert blended < 0.05
    # The check has teeth: edge-to-edge windows with no blending leave seams it sees.
    assert difference(window=32, overlap=0, blend="uniform") > 2 * blended


def test_tta_averages_identity_and_flips(s2_bundle: ModelBundle) -> None:
    generator = torch.Generator().manual_seed(1)
    before = torch.randn(2, 10, 32, 32, generator=generator)
    after = torch.randn(2, 10, 32, 32, generator=generator)
    model = s2_bundle.model.cpu().eval()
    with torch.inference_mode():
        plain = torch.sigmoid(model(before, after))[:, 0]
        hflip = torch.sigmoid(model(before.flip(-1), after.flip(-1)))[:, 0].flip(-1)
        vflip = torch.sigmoid(model(before.flip(-2), after.flip(-2)))[:, 0].flip(-2)
        averaged = predict_probabilities(model, before, after, tta=True)
        single = predict_probabilities(model, before, after, tta=False)
    torch.testing.assert_close(single, plain)
    torch.testing.assert_close(averaged, (plain + hflip + vflip) / 3)
    assert not torch.allclose(averaged, plain)


def test_tta_prediction_of_a_pair(
    s2_bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    pair = oscd_pair(fixtures_dir, "dubai")
    options = {"window": 32, "overlap": 16, "cloud_mask": "none"}  # TTA only: every pixel
    plain = TiledPredictor(s2_bundle, **options).predict_pair(pair, tmp_path / "a")
    tta = TiledPredictor(s2_bundle, tta=True, **options).predict_pair(pair, tmp_path / "b")
    p, _ = read_raster(plain.probability_path)
    t, _ = read_raster(tta.probability_path)
    assert p.shape == t.shape == (64, 64)
    assert np.isfinite(t).all() and not np.allclose(p, t)


def test_rgb_image_smaller_than_a_window_is_padded(
    rgb_bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    levir = fixtures_dir / "levir"
    name = "test_2_0000_0000.png"
    pair = TilePair("levir", open_scene(levir / "A" / name), open_scene(levir / "B" / name))
    result = TiledPredictor(rgb_bundle, window=512).predict_pair(pair, tmp_path)
    probability, info = read_raster(result.probability_path)
    assert probability.shape == (256, 256) and np.isfinite(probability).all()
    assert info["profile"]["crs"] is None
    assert result.valid_fraction == 1.0


def test_odd_sized_scene_smaller_than_a_window(s2_bundle: ModelBundle, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(500, 3000, size=(10, 37, 51), dtype=np.uint16)
    transform = Affine(10, 0, 500_000, 0, -10, 4_000_000)
    before = write_raster(tmp_path / "before.tif", data, transform, None)
    after = write_raster(tmp_path / "after.tif", data[:, ::-1].copy(), transform, None)
    pair = TilePair("small", open_scene(before), open_scene(after))
    result = TiledPredictor(s2_bundle, window=64).predict_pair(pair, tmp_path / "out")
    probability, info = read_raster(result.probability_path)
    assert probability.shape == (37, 51) and np.isfinite(probability).all()
    assert info["profile"]["transform"] == transform


def test_nodata_is_nodata_in_the_output_and_empty_windows_are_skipped(
    s2_bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(500, 3000, size=(10, 96, 160), dtype=np.uint16)
    transform = Affine(10, 0, 500_000, 0, -10, 4_000_000)
    before, after = data.copy(), data[:, :, ::-1].copy()
    before[:, :, :96] = 0  # the left 96 columns are nodata in the before-scene
    after[:, 40:50, 120:130] = 0  # a hole in the after-scene
    pair = TilePair(
        "holes",
        open_scene(write_raster(tmp_path / "before.tif", before, transform, 0)),
        open_scene(write_raster(tmp_path / "after.tif", after, transform, 0)),
    )
    predictor = TiledPredictor(s2_bundle, window=32, overlap=0, batch_size=2)
    windows_seen = []
    original = predictor.predict_batch

    def counting(data: predictor_module.BatchInput) -> predictor_module.BatchPrediction:
        windows_seen.append(len(data.kept))
        return original(data)

    monkeypatch.setattr(predictor, "predict_batch", counting)
    result = predictor.predict_pair(pair, tmp_path / "out")

    probability, _ = read_raster(result.probability_path)
    mask, _ = read_raster(result.mask_path)
    assert np.isnan(probability[:, :96]).all() and (mask[:, :96] == 255).all()
    assert np.isnan(probability[40:50, 120:130]).all()
    assert (mask[40:50, 120:130] == 255).all()
    expected_valid = 96 * 64 - 100
    assert np.isfinite(probability).sum() == expected_valid
    assert result.valid_fraction == pytest.approx(expected_valid / (96 * 160))
    # 3 rows x 5 columns of windows; the 3 columns under the nodata never reach the model.
    layout = predictor.layout_for(pair.grid)
    assert layout.window_count == 15
    assert sum(windows_seen) == 6


def test_a_failed_prediction_leaves_no_output_file(
    s2_bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = oscd_pair(fixtures_dir, "beirut")
    predictor = TiledPredictor(s2_bundle, window=32, overlap=0, batch_size=1)
    calls = []
    original = predictor.predict_batch

    def failing(data: predictor_module.BatchInput) -> predictor_module.BatchPrediction:
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("device lost")
        return original(data)

    monkeypatch.setattr(predictor, "predict_batch", failing)
    with pytest.raises(RuntimeError, match="device lost"):
        predictor.predict_pair(pair, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_window_and_overlap_must_fit_the_model(s2_bundle: ModelBundle) -> None:
    predictor = TiledPredictor(s2_bundle)
    assert predictor.window == 64 and predictor.overlap == 16  # 2 x chip size, a quarter
    with pytest.raises(ValueError, match="multiple of 2"):
        TiledPredictor(s2_bundle, window=33)
    with pytest.raises(ValueError, match="overlap"):
        TiledPredictor(s2_bundle, window=64, overlap=64)
    with pytest.raises(ValueError, match="overlap"):
        TiledPredictor(s2_bundle, window=64, overlap=3)
    with pytest.raises(ValueError, match="blend"):
        TiledPredictor(s2_bundle, blend="median")  # type: ignore[arg-type]


S2_13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12"]


def overcast_corner_after(fixtures_dir: Path, path: Path) -> Path:
    """The real beirut after-scene with the real cumulus sample's densest cloud over its
    lower-right 48 x 48 pixels (whole windows hidden) as one 13-band GeoTIFF."""
    after = open_scene(fixtures_dir / "oscd" / "beirut" / "imgs_2")
    data = after.read(S2_13)
    with rasterio.open(fixtures_dir / "clouds" / "cumulus_l1c_13band.tif") as src:
        core = src.read().astype(np.float32)[:, 92:124, 128:160]  # 32 x 32, 80 % bright cloud
    data[:, -48:, -48:] = np.tile(core, (1, 2, 2))[:, :48, :48]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": 13, "dtype": "uint16", "crs": after.grid.crs,
               "transform": after.grid.transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.nan_to_num(data).astype(np.uint16))
        dst.descriptions = tuple(S2_13)
    return path


def test_the_date_matching_is_timed_apart_from_the_cloud_masks(
    s2_bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    """The stage clock counts the date matching in its own stage, only where dates are matched,
    so that the cloud masks' share of a night can be read (issue 25)."""
    pair = oscd_pair(fixtures_dir, "beirut")
    for mode in ("none", "mean_std"):
        predictor = TiledPredictor(s2_bundle, window=16, overlap=4, date_matching=mode)
        stages = predictor.predict_pair(pair, tmp_path / mode).stages
        assert "cloud mask" in stages
        assert ("date matching" in stages) == (mode == "mean_std")


@pytest.mark.parametrize("city", ["beirut", "abudhabi"])
def test_prefetch_and_skipping_unobserved_windows_change_no_output(
    s2_bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path, city: str
) -> None:
    pair = oscd_pair(fixtures_dir, city)
    if city == "beirut":  # clouds hide whole windows of the after-scene
        after = open_scene(overcast_corner_after(fixtures_dir, tmp_path / "after.tif"))
        pair = TilePair(city, pair.before, after)
    outputs = []
    for prefetch, skip in ((0, False), (2, True), (1, False), (0, True)):
        predictor = TiledPredictor(s2_bundle, window=16, overlap=4, batch_size=3,
                                   prefetch=prefetch, skip_unobserved=skip)
        result = predictor.predict_pair(pair, tmp_path / f"out-{prefetch}-{skip}")
        outputs.append((read_raster(result.probability_path)[0],
                        read_raster(result.mask_path)[0]))
        assert {"cloud mask", "read", "model", "blend", "write"} <= set(result.stages)
    reference, reference_mask = outputs[0]
    for probability, mask in outputs[1:]:
        np.testing.assert_allclose(probability, reference, atol=1e-4, rtol=0)  # NaN where NaN
        np.testing.assert_array_equal(mask, reference_mask)
    if city == "beirut":
        source = predictor.prepare(pair)
        layout = predictor.layout_for(pair.grid)
        hidden = sum(int((~observed_windows(source, layout, b)).sum())
                     for b in layout.batches(3))
        assert hidden >= 4  # the test does skip windows
        assert np.isnan(reference[-40:, -40:]).all() and (reference_mask[-40:, -40:] == 255).all()
        assert np.isfinite(reference[:40, :40]).any()


def test_a_scene_cloud_mask_is_computed_once_while_its_files_are_unchanged(
    s2_bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    path = overcast_corner_after(fixtures_dir, tmp_path / "after.tif")
    predictor = TiledPredictor(s2_bundle)
    grid = open_scene(path).grid
    first = predictor.cloud_mask_of(open_scene(path), grid)
    assert first is not None and first.unobserved.any()
    assert predictor.cloud_mask_of(open_scene(path), grid) is first  # a new Scene, same files
    clear = open_scene(fixtures_dir / "oscd" / "beirut" / "imgs_2").read(S2_13)
    with rasterio.open(path, "r+") as dst:  # the file changes: its mask is computed again
        dst.write(np.nan_to_num(clear).astype(np.uint16))
    again = predictor.cloud_mask_of(open_scene(path), grid)
    assert again is not first and not again.unobserved.all()
    assert again.unobserved.sum() < first.unobserved.sum()
