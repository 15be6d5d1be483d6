"""Prediction on today's Sentinel-2: products with the baseline 04.00 offset, clouds, shadows.

The shipped default model on real OSCD fixture pairs: a pair rewritten as ESA products of
baseline 04.00 (DN + 1000, stated in the metadata) predicts what the original pair does; real
cumulus clouds with their shadows pasted into a real after-scene are unobserved (nodata), not
change.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.product_writer import read_band_images, write_product
from groundbreak.datasets.radiometry import RadiometryWarning
from groundbreak.datasets.scene import Scene, open_scene
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle

S2_13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12"]


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """The shipped default model (13 bands, OSCD convention)."""
    return load_bundle(default_bundle_path())


@pytest.fixture(scope="module")
def beirut(fixtures_dir: Path) -> Path:
    return fixtures_dir / "oscd" / "beirut"


def probability(bundle: ModelBundle, pair: TilePair, out: Path, **options: object) -> np.ndarray:
    predictor = TiledPredictor(bundle, device="cpu", **options)  # type: ignore[arg-type]
    result = predictor.predict_pair(pair, out)
    with rasterio.open(result.probability_path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def plain_probability(bundle: ModelBundle, beirut: Path, tmp_path_factory) -> np.ndarray:
    pair = TilePair("plain", open_scene(beirut / "imgs_1"), open_scene(beirut / "imgs_2"))
    return probability(bundle, pair, tmp_path_factory.mktemp("plain"), cloud_mask="none")


@pytest.mark.parametrize("which", ["both", "after", "before"])
def test_baseline_04_offset_does_not_change_the_prediction(
    bundle: ModelBundle, beirut: Path, tmp_path: Path, plain_probability: np.ndarray, which: str
) -> None:
    scenes = {}
    for date, folder, when in (("before", "imgs_1", "2022-02-10T08:17:39Z"),
                               ("after", "imgs_2", "2023-05-01T08:17:39Z")):
        if which in (date, "both"):
            product = write_product(tmp_path / date, read_band_images(beirut / folder),
                                    sensing_time=when)
            scenes[date] = open_scene(product)
        else:
            scenes[date] = open_scene(beirut / folder)
    pair = TilePair("offset", scenes["before"], scenes["after"])
    shifted = probability(bundle, pair, tmp_path / "out", cloud_mask="none")
    np.testing.assert_allclose(shifted, plain_probability, atol=1e-4)


def test_without_the_offset_removed_the_model_would_be_wrong(
    bundle: ModelBundle, beirut: Path, tmp_path: Path, plain_probability: np.ndarray
) -> None:
    """The check above can fail: reading the product's DN as they are changes the output (with
    the dates matched as they are not, which would otherwise take up much of a scene-wide
    offset)."""
    product = open_scene(write_product(tmp_path, read_band_images(beirut / "imgs_2")))
    product.radiometry = open_scene(beirut / "imgs_2").radiometry  # forget the metadata
    pair = TilePair("raw", open_scene(beirut / "imgs_1"), product)
    raw = probability(bundle, pair, tmp_path / "out", cloud_mask="none", date_matching="none")
    plain = TilePair("plain", open_scene(beirut / "imgs_1"), open_scene(beirut / "imgs_2"))
    expected = probability(bundle, plain, tmp_path / "plain", cloud_mask="none",
                           date_matching="none")
    assert np.abs(raw - expected).max() > 0.1


def test_unknown_convention_after_2022_is_warned_once_per_scene(
    bundle: ModelBundle, beirut: Path, tmp_path: Path
) -> None:
    pair = TilePair("unknown", open_scene(beirut / "imgs_1"),
                    open_scene(beirut / "imgs_2", date="2024-04-01"))
    with pytest.warns(RadiometryWarning, match="imgs_2: sensed 2024-04-01"):
        TiledPredictor(bundle, device="cpu", cloud_mask="none").predict_pair(pair, tmp_path)
    stated = TilePair("stated", open_scene(beirut / "imgs_1"), open_scene(
        write_product(tmp_path / "p", read_band_images(beirut / "imgs_2"))))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RadiometryWarning)
        TiledPredictor(bundle, device="cpu", cloud_mask="none").predict_pair(stated, tmp_path / "o")


def paste_clouds(data: np.ndarray, cumulus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paste the clouds and shadows of a real cloudy sample into a clear scene (same shape).

    Both are 13-band L1C DN (TOA x 10000). Cloud pixels of the sample (B02 above 0.18) replace
    the scene's; shadow pixels (B08 below 0.75 of the sample's median) darken the scene's by the
    sample's own per-band ratio to its median, as a shadow darkens whatever lies under it. Returns
    the masks of pasted cloud and shadow pixels.
    """
    median = np.median(cumulus, axis=(1, 2), keepdims=True)
    cloud = cumulus[S2_13.index("B02")] > 1800
    shadow = ~cloud & (cumulus[S2_13.index("B08")] < 0.75 * median[S2_13.index("B08"), 0, 0])
    data[:, cloud] = cumulus[:, cloud]
    data[:, shadow] *= np.clip(cumulus / median, 0, 1)[:, shadow]
    return cloud, shadow


def cloudy_after(
    beirut: Path, fixtures_dir: Path, tmp_path: Path
) -> tuple[Path, np.ndarray, np.ndarray]:
    """The real beirut after-scene with a real cumulus cloud and its shadow pasted into its
    lower-right part (:func:`paste_clouds`); returns the scene file and the pasted cloud and
    shadow pixels."""
    after = open_scene(beirut / "imgs_2")
    data = after.read(S2_13)
    with rasterio.open(fixtures_dir / "clouds" / "cumulus_l1c_13band.tif") as src:
        cumulus = src.read().astype(np.float32)[:, 80:136, 100:156]  # cloud + shadow
    cloud, shadow = (np.zeros(data.shape[1:], bool) for _ in range(2))
    cloud[40:, 40:], shadow[40:, 40:] = paste_clouds(data[:, 40:, 40:], cumulus)
    path = tmp_path / "cloudy_after.tif"
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": 13, "dtype": "uint16", "crs": after.grid.crs,
               "transform": after.grid.transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.nan_to_num(data).astype(np.uint16))
        dst.descriptions = tuple(S2_13)
    return path, cloud, shadow


@pytest.fixture(scope="module")
def cloudy(
    bundle: ModelBundle, beirut: Path, fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, np.ndarray]:
    """The pasted cloud and shadow pixels, and the probabilities of the cloudy pair without
    and with the default cloud mask (dates matched as the bundle does, and not matched)."""
    tmp_path = tmp_path_factory.mktemp("cloudy")
    path, cloud, shadow = cloudy_after(beirut, fixtures_dir, tmp_path)
    pair = TilePair("cloudy", open_scene(beirut / "imgs_1"), open_scene(path))
    return {
        "cloud": cloud,
        "shadow": shadow,
        "unmasked": probability(bundle, pair, tmp_path / "none", cloud_mask="none"),
        "masked": probability(bundle, pair, tmp_path / "auto", cloud_mask="auto"),
        "unmasked_unmatched": probability(bundle, pair, tmp_path / "none_n", cloud_mask="none",
                                          date_matching="none"),
        "masked_unmatched": probability(bundle, pair, tmp_path / "auto_n", cloud_mask="auto",
                                        date_matching="none"),
    }


def test_real_clouds_are_unobserved_not_change(
    bundle: ModelBundle, cloudy: dict[str, np.ndarray], plain_probability: np.ndarray
) -> None:
    cloud, shadow, masked, unmasked = (cloudy[k] for k in ("cloud", "shadow", "masked", "unmasked"))
    pasted = cloud | shadow
    threshold = bundle.threshold
    assert pasted.mean() > 0.15
    # Without a mask the cloud is change; with it, the cloud and its shadow are nodata.
    assert (unmasked[pasted] >= threshold).mean() > 0.3
    assert np.isnan(masked[pasted]).mean() > 0.5
    assert np.isnan(masked[cloud]).mean() > 0.9
    flagged = np.nan_to_num(masked, nan=0.0) >= threshold
    clean = plain_probability >= threshold
    assert flagged[cloud].mean() <= clean[cloud].mean() + 0.05
    # With the same input (dates not matched), masking changes nothing outside the mask.
    masked, unmasked = cloudy["masked_unmatched"], cloudy["unmasked_unmatched"]
    np.testing.assert_allclose(masked[~pasted & np.isfinite(masked)],
                               unmasked[~pasted & np.isfinite(masked)], atol=0.05)


def test_clouds_are_left_out_of_the_date_matching(
    cloudy: dict[str, np.ndarray], plain_probability: np.ndarray
) -> None:
    """Matched on the pixels both dates observe, the cloudy pair predicts the ground around the
    cloud much as the clear pair does; a match that counts the cloud's pixels does worse."""
    masked, unmasked = cloudy["masked"], cloudy["unmasked"]
    around = ~(cloudy["cloud"] | cloudy["shadow"]) & np.isfinite(masked)
    error_masked = np.abs(masked - plain_probability)[around].mean()
    error_unmasked = np.abs(unmasked - plain_probability)[around].mean()
    assert error_masked < 0.04 and error_masked < 0.7 * error_unmasked


@pytest.mark.xfail(strict=True, reason=(
    "known since 2026-11-30 (issue 11): the mask hides only 17 % of this fixture's pasted shadow "
    "pixels (most are fainter than its darkness limit, SHADOW_NIR_RATIO of the scene's clear "
    "B08), and the models trained with wide per-date gain/offset augmentation flag them as "
    "change: the U-Net 11 % (23 % without date matching; the default before it 0 %), the "
    "default ensemble (2026-12-06) 14 %"
))
def test_cloud_shadows_the_mask_misses_are_not_change(
    bundle: ModelBundle, cloudy: dict[str, np.ndarray], plain_probability: np.ndarray
) -> None:
    shadow, masked = cloudy["shadow"], cloudy["masked"]
    assert shadow.sum() > 300
    flagged = np.nan_to_num(masked, nan=0.0) >= bundle.threshold
    clean = plain_probability >= bundle.threshold
    assert flagged[shadow].mean() <= clean[shadow].mean() + 0.05


def test_user_mask_and_scl_requests(bundle: ModelBundle, beirut: Path, tmp_path: Path) -> None:
    before, after = open_scene(beirut / "imgs_1"), open_scene(beirut / "imgs_2")
    mask = np.zeros(before.grid.shape, np.uint8)
    mask[:20, :30] = 1
    path = tmp_path / "mask.tif"
    with rasterio.open(path, "w", driver="GTiff", width=mask.shape[1], height=mask.shape[0],
                       count=1, dtype="uint8", crs=before.grid.crs,
                       transform=before.grid.transform) as dst:
        dst.write(mask, 1)
    after.cloud_mask = str(path)
    pair = TilePair("masked", before, after)
    result = TiledPredictor(bundle, device="cpu").predict_pair(pair, tmp_path / "out")
    assert result.cloud_masks[1] == "user"
    with rasterio.open(result.mask_path) as src:
        written = src.read(1)
    assert (written[:20, :30] == 255).all()
    with pytest.raises(InputError, match="no SCL layer"):
        TiledPredictor(bundle, device="cpu", cloud_mask="scl").predict_pair(
            TilePair("scl", open_scene(beirut / "imgs_1"), open_scene(beirut / "imgs_2")),
            tmp_path / "scl",
        )
    assert not (tmp_path / "scl" / "probability.tif").exists()


def test_s2cloudless_on_a_scene_without_its_bands_is_refused(
    bundle: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    l2a = fixtures_dir / "clouds" / "S2A2A_20170703_022_Barbellino_BOA_10.tif"
    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12"]
    scene: Scene = open_scene(l2a, band_names=names)
    from groundbreak.datasets.clouds import scene_cloud_mask

    with pytest.raises(InputError, match="needs the L1C band"):
        scene_cloud_mask(scene, scene.grid, "s2cloudless")
    assert scene_cloud_mask(scene, scene.grid, "auto") is None  # nothing to run: no mask


def test_predict_cli_warns_in_one_line_about_an_unstated_offset(
    beirut: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    from groundbreak.infer.cli import main as groundbreak

    scene = open_scene(beirut / "imgs_2")
    manifest = tmp_path / "after.json"
    manifest.write_text(json.dumps({"bands": {b: str(s.path) for b, s in scene.sources.items()},
                                    "date": "2023-05-01"}))
    code = groundbreak(["predict", "--before", str(beirut / "imgs_1"), "--after", str(manifest),
                        "--out", str(tmp_path / "out"), "--cloud-mask", "none"])
    assert code == 0
    err = capsys.readouterr().err
    assert f"groundbreak predict: warning: {manifest}: sensed 2023-05-01" in err
    assert len([line for line in err.splitlines() if "warning" in line]) == 1


def test_watch_site_under_clouds_is_not_observed_and_raises_no_alert(
    bundle: ModelBundle, beirut: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    import json

    from groundbreak.datasets.pair_spec import PairSpec
    from groundbreak.infer.sites.ranking import rank_pairs

    path, _, _ = cloudy_after(beirut, fixtures_dir, tmp_path)
    grid = open_scene(beirut / "imgs_1").grid

    def square(row0: int, col0: int, size: int) -> list[list[float]]:
        corners = [(row0, col0), (row0, col0 + size), (row0 + size, col0 + size),
                   (row0 + size, col0), (row0, col0)]
        return [list(grid.transform @ (c, r)) for r, c in corners]

    sites = tmp_path / "sites.geojson"
    sites.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": "cloud", "name": "Under the cloud"},
         "geometry": {"type": "Polygon", "coordinates": [square(56, 56, 36)]}},
        {"type": "Feature", "properties": {"site_id": "clear", "name": "In the clear"},
         "geometry": {"type": "Polygon", "coordinates": [square(2, 2, 30)]}},
    ]}))
    spec = PairSpec("cloudy", beirut / "imgs_1", path)
    result = rank_pairs([spec], tmp_path / "run", bundle, sites=sites, alert_threshold=0.0)
    rows = result.sites.set_index("site_id")
    assert not rows.loc["cloud", "observed"] and rows.loc["cloud", "valid_fraction"] < 0.5
    assert rows.loc["clear", "observed"]
    assert list(result.alerts["site_id"]) == ["clear"]  # threshold 0: only the observed one


def l2a_product(folder: Path, out: Path, sensing_time: str, cloudy_rows: int = 0) -> Path:
    """A real OSCD scene written as an L2A product of baseline 04.00 (no B10) with its SCL;
    the SCL marks the first ``cloudy_rows`` rows as cloud (class 9), the rest as vegetation."""
    from groundbreak.datasets.product_writer import BandImage

    bands = read_band_images(folder)
    del bands["B10"]  # L2A has no cirrus band
    b05 = bands["B05"]
    scl = np.full(b05.data.shape, 4, np.uint8)
    scl[: cloudy_rows // 2] = 9  # SCL is at 20 m
    return write_product(out, bands, level="L2A", sensing_time=sensing_time,
                         scl=BandImage(scl, b05.transform, b05.crs))


def test_l2a_products_run_on_the_l2a_bundle_with_their_scl(beirut: Path, tmp_path: Path) -> None:
    before = open_scene(l2a_product(beirut / "imgs_1", tmp_path / "b", "2022-06-01T08:00:00Z"))
    after = open_scene(l2a_product(beirut / "imgs_2", tmp_path / "a", "2024-06-01T08:00:00Z",
                                   cloudy_rows=30))
    pair = TilePair("l2a", before, after)
    default = load_bundle(default_bundle_path())
    with pytest.raises(InputError, match="B10.*use --model checkpoints/oscd-s2-l2a"):
        TiledPredictor(default, device="cpu").predict_pair(pair, tmp_path / "default")
    l2a = load_bundle(default_bundle_path().parent / "oscd-s2-l2a")
    result = TiledPredictor(l2a, device="cpu").predict_pair(pair, tmp_path / "out")
    assert result.cloud_masks == ("scl", "scl")
    with rasterio.open(result.probability_path) as src:
        values = src.read(1)
    # the SCL's clouds end at row 30; the mask dilates them by 120 m (two 60 m mask rows)
    assert np.isnan(values[:42]).all() and np.isfinite(values[48:]).all()
