"""BatchNorm folded into the convolutions for prediction: the same probabilities, no BatchNorm
left in the networks the project ships or trains, and the bundle's own model untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from rasterio.windows import Window
from torch import nn

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.prediction.folding import fold_batch_norms
from groundbreak.infer.prediction.inference import predict_probabilities
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle
from groundbreak.train.model import build_change_model

BANDS = 13
SHIPPED_ENCODER = {"encoder_name": "tu-regnetx_002", "encoder_depth": 4,
                   "decoder_channels": [64, 32, 16, 16]}
NETWORKS: dict[str, dict[str, Any]] = {
    "unet-siamese_diff": {"fusion": "siamese_diff", **SHIPPED_ENCODER},
    "unet-fullres-siamese_diff": {"fusion": "siamese_diff", "full_resolution": True,
                                  **SHIPPED_ENCODER},
    "unet-early": {"fusion": "early", **SHIPPED_ENCODER},
    "fc-ef": {"network": "fc", "fusion": "early"},
    "fc-siam-diff": {"network": "fc", "fusion": "siamese_diff"},
    "fc-siam-conc": {"network": "fc", "fusion": "siamese_concat"},
    "fc-ef-res": {"network": "fc_res", "fusion": "early"},
    "ensemble": {"network": "ensemble", "logit_offsets": [0.3, -1.6], "members": [
        {"fusion": "siamese_diff", "in_channels": BANDS, **SHIPPED_ENCODER},
        {"network": "fc_res", "fusion": "early", "in_channels": BANDS},
    ]},
}


def batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def trained_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine parameters, as training leaves them (a fresh
    BatchNorm, mean 0 and variance 1, would fold to almost nothing)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean = torch.randn(n, generator=generator) * 0.5
            module.running_var = torch.rand(n, generator=generator) * 2 + 0.1
            module.weight.data = torch.rand(n, generator=generator) + 0.5
            module.bias.data = torch.randn(n, generator=generator) * 0.2
    return model.eval()


def real_windows(fixtures_dir: Path, bundle: ModelBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised 64 px window of the real beirut fixture, both dates (no date matching)."""
    root = fixtures_dir / "oscd" / "beirut"
    pair = PairSpec("beirut", root / "imgs_1", root / "imgs_2").open()
    before, after = pair.read(list(bundle.bands), Window(0, 0, 64, 64))
    return (torch.from_numpy(bundle.normalize(before))[None],
            torch.from_numpy(bundle.normalize(after))[None])


@pytest.mark.parametrize("name", list(NETWORKS), ids=list(NETWORKS))
def test_every_network_folds_to_the_same_probabilities(name: str) -> None:
    torch.manual_seed(0)
    model = trained_statistics(build_change_model({"in_channels": BANDS, **NETWORKS[name]}))
    folded, count = fold_batch_norms(model)
    assert count == batch_norms(model) > 0
    assert batch_norms(folded) == 0
    generator = torch.Generator().manual_seed(1)
    before, after = (torch.randn(2, BANDS, 64, 64, generator=generator) for _ in range(2))
    with torch.inference_mode():
        expected = torch.sigmoid(model(before, after))
        got = torch.sigmoid(folded(before, after))
    # float rounding only; random statistics over deep stacks amplify it more than trained
    # ones do (the shipped model below: < 1e-5); the issue's bar is 0.02
    assert (expected - got).abs().max().item() < 5e-4
    assert (expected - 0.5).abs().max().item() > 0.01  # the check sees real outputs, not 0.5


def test_the_shipped_model_on_real_imagery(fixtures_dir: Path) -> None:
    bundle = load_bundle(default_bundle_path())
    before, after = real_windows(fixtures_dir, bundle)
    state = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    present = batch_norms(bundle.model)
    folded, count = fold_batch_norms(bundle.model)
    assert count == present > 0 and batch_norms(folded) == 0
    with torch.inference_mode():
        expected = predict_probabilities(bundle.model.eval(), before, after)
        got = predict_probabilities(folded, before, after)
    assert (expected - got).abs().max().item() < 1e-5
    assert expected.std().item() > 0.01
    # the bundle's model keeps its BatchNorms and weights (training and export read it)
    assert batch_norms(bundle.model) == present
    assert all(torch.equal(v, state[k]) for k, v in bundle.model.state_dict().items())


def test_the_predictor_runs_the_folded_copy() -> None:
    bundle = load_bundle(default_bundle_path())
    predictor = TiledPredictor(bundle, device="cpu")
    assert batch_norms(predictor.model) == 0 < batch_norms(bundle.model)


def test_a_batch_norm_without_running_statistics_is_left_alone() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1)
    norm = nn.BatchNorm2d(4, track_running_stats=False)  # normalises by each batch's own
    model = nn.Sequential(conv, norm, nn.ReLU())
    folded, count = fold_batch_norms(model)
    assert count == 0 and batch_norms(folded) == 1
