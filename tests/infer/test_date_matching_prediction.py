"""The shipped bundle matches dates (``date_matching: mean_std``); on the real Beirut fixture a
scene-wide brightness and contrast change of the after date does not change its prediction; the
same weights without matching are moved by it; bundles with an unknown mode are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import open_scene
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle


def bundle_with(tmp: Path, **changes: object) -> Path:
    """A copy of the shipped bundle with ``model.json`` keys changed."""
    folder = tmp / "bundle"
    shutil.copytree(default_bundle_path(), folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, **changes}))
    return folder


def brightened(source: Path, out: Path, gain: float, offset: float) -> Path:
    """Every band file of an OSCD image folder as ``gain * x + offset`` (float32)."""
    out.mkdir(parents=True)
    for path in sorted(source.glob("*.tif")):
        with rasterio.open(path) as src:
            profile = {**src.profile, "dtype": "float32"}
            data = src.read().astype(np.float32) * gain + offset
        with rasterio.open(out / path.name, "w", **profile) as dst:
            dst.write(data)
    return out


def probability(bundle: ModelBundle, pair: TilePair, out: Path) -> np.ndarray:
    result = TiledPredictor(bundle, device="cpu", cloud_mask="none").predict_pair(pair, out)
    with rasterio.open(result.probability_path) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def pairs(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TilePair]:
    beirut = fixtures_dir / "oscd" / "beirut"
    hazy = brightened(beirut / "imgs_2", tmp_path_factory.mktemp("hazy") / "imgs_2", 0.7, 400.0)
    before = open_scene(beirut / "imgs_1")
    return {
        "plain": TilePair("plain", before, open_scene(beirut / "imgs_2")),
        "hazy": TilePair("hazy", before, open_scene(hazy)),
    }


def test_matching_bundle_ignores_a_scene_wide_change_of_the_after_date(
    pairs: dict[str, TilePair], tmp_path: Path
) -> None:
    bundle = load_bundle(default_bundle_path())
    assert bundle.date_matching == "mean_std"
    plain = probability(bundle, pairs["plain"], tmp_path / "plain")
    hazy = probability(bundle, pairs["hazy"], tmp_path / "hazy")
    np.testing.assert_allclose(hazy, plain, atol=1e-3)
    meta = json.loads((default_bundle_path() / "model.json").read_text())
    del meta["date_matching"]  # a bundle that does not say matches nothing
    folder = bundle_with(tmp_path)
    (folder / "model.json").write_text(json.dumps(meta))
    unmatched = load_bundle(folder)
    assert unmatched.date_matching == "none"
    assert not np.allclose(probability(unmatched, pairs["plain"], tmp_path / "u"), plain,
                           atol=0.05)


def test_without_matching_the_same_change_moves_the_prediction(
    pairs: dict[str, TilePair], tmp_path: Path
) -> None:
    """The check above can fail: the same weights without matching see the brightened date
    as it is."""
    bundle = load_bundle(bundle_with(tmp_path, date_matching="none"))
    plain = probability(bundle, pairs["plain"], tmp_path / "plain")
    hazy = probability(bundle, pairs["hazy"], tmp_path / "hazy")
    assert np.abs(hazy - plain).max() > 0.1


def test_matching_asked_at_prediction_overrides_the_bundle(
    pairs: dict[str, TilePair], fixtures_dir: Path, tmp_path: Path
) -> None:
    """``predict --date-matching mean_std`` with a bundle that does not match."""
    bundle = load_bundle(bundle_with(tmp_path, date_matching="none"))
    predictor = TiledPredictor(bundle, device="cpu", cloud_mask="none", date_matching="mean_std")
    assert predictor.date_matching == "mean_std"
    plain = predictor.predict_pair(pairs["plain"], tmp_path / "plain").probability_path
    with rasterio.open(plain) as src:
        expected = src.read(1)
    out = tmp_path / "cli"
    code = groundbreak([
        "predict", "--model", str(bundle.path), "--before",
        str(fixtures_dir / "oscd/beirut/imgs_1"), "--after", str(pairs["hazy"].after.path),
        "--out", str(out), "--cloud-mask", "none",
        "--date-matching", "mean_std", "--device", "cpu",
    ])
    assert code == 0
    with rasterio.open(out / "probability.tif") as src:
        np.testing.assert_allclose(src.read(1), expected, atol=1e-3)
    with pytest.raises(ValueError, match="unknown date matching 'z'"):
        TiledPredictor(bundle, device="cpu", date_matching="z")


def test_unknown_date_matching_is_refused_naming_model_json(tmp_path: Path) -> None:
    folder = bundle_with(tmp_path, date_matching="histogram")
    with pytest.raises(InputError, match=r"model.json.*date_matching must be one of none, "
                       "mean_std, got 'histogram'"):
        load_bundle(folder)
