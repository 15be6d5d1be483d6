"""Two-process prediction through Lightning (CPU, gloo) equals the single-process predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from groundbreak.datasets.bands import SENTINEL2_L2A_BANDS
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.prediction.distributed import SHARD_FOLDER, DistributedPredictor
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import ModelBundle, load_bundle, save_bundle
from groundbreak.train.ensemble_network import ChangeEnsemble
from groundbreak.train.fc_networks import FCEFRes
from groundbreak.train.model import ChangeUNet


@pytest.fixture(scope="module")
def pair(fixtures_dir: Path) -> TilePair:
    """The abudhabi fixture: its after-scene is resampled from its own grid."""
    root = fixtures_dir / "oscd" / "abudhabi"
    return PairSpec("abudhabi", root / "imgs_1", root / "imgs_2").open()


@pytest.fixture(scope="module")
def bundle(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pair: TilePair
) -> ModelBundle:
    """A seeded, untrained two-stage ChangeUNet (or its ensemble with FC-EF-Res, as the default
    bundle is) normalised with the pair's statistics."""
    before, after = pair.read(list(SENTINEL2_L2A_BANDS))
    both = np.concatenate([before, after], axis=2)
    torch.manual_seed(0)
    model: torch.nn.Module = ChangeUNet(10, encoder_depth=2, decoder_channels=(16, 8))
    if request.param == "ensemble":
        model = ChangeEnsemble([model, FCEFRes(10)], [0.3, -1.5])
    meta = {
        "bands": list(SENTINEL2_L2A_BANDS),
        "normalization": {
            "mean": np.nanmean(both, axis=(1, 2)).tolist(),
            "std": np.nanstd(both, axis=(1, 2)).tolist(),
        },
        "chip_size": 32,
        "threshold": 0.5,
    }
    return load_bundle(save_bundle(model, meta, tmp_path_factory.mktemp("bundle")))


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(1), dict(src.profile)


@pytest.mark.parametrize(
    ("bundle", "strategy"),
    [("unet", "ddp_fork"), pytest.param("unet", "ddp_spawn", marks=pytest.mark.slow),
     pytest.param("ensemble", "ddp_fork", marks=pytest.mark.slow)],
    indirect=["bundle"],
)
def test_two_processes_write_what_one_process_writes(
    bundle: ModelBundle, pair: TilePair, tmp_path: Path, strategy: str
) -> None:
    predictor = TiledPredictor(bundle, window=64, overlap=16, batch_size=2, device="cpu", tta=True)
    single = predictor.predict_pair(pair, tmp_path / "single")
    threads = torch.get_num_threads()
    shared = DistributedPredictor(
        predictor, devices=2, accelerator="cpu", strategy=strategy  # type: ignore[arg-type]
    ).predict_pair(pair, tmp_path / "shared")
    torch.set_num_threads(threads)

    assert shared is not None
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [
        "mask.tif",
        "probability.tif",
    ]
    assert not (tmp_path / "shared" / SHARD_FOLDER).exists()
    assert shared.grid == single.grid
    assert shared.valid_fraction == pytest.approx(single.valid_fraction)
    expected, expected_profile = read(single.probability_path)
    actual, actual_profile = read(shared.probability_path)
    assert np.isnan(actual_profile.pop("nodata")) and np.isnan(expected_profile.pop("nodata"))
    assert actual_profile == expected_profile
    np.testing.assert_allclose(actual, expected, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(read(shared.mask_path)[0], read(single.mask_path)[0])
