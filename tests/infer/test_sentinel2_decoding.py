"""A .SAFE pair through the predictor decodes each band once (issue 25 item 6), and predicts
what it predicted when the windows decoded again the bands the date matching had decoded whole
(and the date matching's nearest reads went through GDAL's warper)."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.io

from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import open_scene
from groundbreak.datasets.scenes import reading
from groundbreak.infer.prediction import predictor as predictor_module
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import default_bundle_path, load_bundle


def _predict(pair: TilePair, out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Probability and mask of the shipped model (s2cloudless masks, dates matched)."""
    bundle = load_bundle(default_bundle_path())
    result = TiledPredictor(bundle, device="cpu").predict_pair(pair, out)
    with rasterio.open(result.probability_path) as a, rasterio.open(result.mask_path) as b:
        return a.read(1), b.read(1)


def test_each_band_of_a_safe_pair_is_decoded_once(
    beirut_safe: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    jp2_decodes: Counter[str],
) -> None:
    products = beirut_safe
    sizes = {}
    for product in products:
        for band in product.glob("GRANULE/*/IMG_DATA/*.jp2"):
            with rasterio.open(band) as src:
                sizes[src.name] = src.width * src.height

    def pair() -> TilePair:
        return TilePair("p", open_scene(products[0]), open_scene(products[1]))

    decoded = jp2_decodes
    kept = _predict(pair(), tmp_path / "kept")
    assert dict(decoded) == sizes  # every band of both dates, each pixel once
    decoded.clear()
    with monkeypatch.context() as patch:  # as before: nothing kept, nearest reads warped
        patch.setattr(predictor_module, "bands_kept", lambda *scenes: contextlib.nullcontext())
        patch.setattr(reading, "_read_nearest", lambda *args: None)
        again = _predict(pair(), tmp_path / "again")
    assert any(decoded[name] > size for name, size in sizes.items())  # the test sees re-reads
    for a, b in zip(kept, again, strict=True):
        np.testing.assert_array_equal(a, b)  # NaN where NaN


def test_cloud_masks_and_date_match_are_the_same_from_kept_bands(beirut_safe: list[Path]) -> None:
    """The cloud mask keeps the 60 m bands it decodes whole, the date matching reads them (and
    its whole 10 and 20 m bands) from there: the masks and the fitted map are those of plain
    reads."""
    from groundbreak.datasets.clouds import scene_cloud_mask
    from groundbreak.datasets.date_matching import match_pair
    from groundbreak.datasets.scene import bands_kept

    products = beirut_safe
    bundle = load_bundle(default_bundle_path())
    results = []
    for keep in (True, False):
        pair = TilePair("p", open_scene(products[0]), open_scene(products[1]))
        scenes = (pair.before, pair.after)
        with bands_kept(*scenes) if keep else contextlib.nullcontext():
            masks = [scene_cloud_mask(scene, pair.grid, "s2cloudless") for scene in scenes]
            match = match_pair(pair, list(bundle.bands), bundle.radiometry)
            kept = [len(s.kept_bands.bands) if s.kept_bands else 0 for s in scenes]
        results.append((masks, match, kept))
    (masks, match, kept), (plain_masks, plain_match, _) = results
    assert kept == [13, 13]  # every band of both dates decoded whole once, and kept
    for mask, plain in zip(masks, plain_masks, strict=True):
        assert mask is not None and plain is not None
        np.testing.assert_array_equal(mask.cloud, plain.cloud)
        np.testing.assert_array_equal(mask.shadow, plain.shadow)
    np.testing.assert_array_equal(match.gain, plain_match.gain)
    np.testing.assert_array_equal(match.offset, plain_match.offset)
