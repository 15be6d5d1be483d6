"""Every change network (U-Net, U-Net with the full-resolution stage, FC-EF, FC-Siam-diff,
FC-Siam-conc, FC-EF-Res): forward, backward, padding by the callers, bundle round trip, sizes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from groundbreak.datasets.errors import InputError
from groundbreak.infer.cli import main as groundbreak
from groundbreak.train.architecture import output_stride
from groundbreak.train.bundle import load_bundle, save_bundle
from groundbreak.train.fc_networks import FCEFRes, FCNet
from groundbreak.train.model import ChangeUNet, architecture_record, build_change_model
from groundbreak.train.task import ChangeSegmentationTask

BANDS = 4
TINY_UNET = {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 8]}
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "unet-siamese_diff": {"fusion": "siamese_diff", **TINY_UNET},
    "unet-fullres-early": {"fusion": "early", "full_resolution": True, **TINY_UNET},
    "unet-fullres-siamese_diff": {"fusion": "siamese_diff", "full_resolution": True, **TINY_UNET},
    "unet-fullres-siamese_concat": {
        "fusion": "siamese_concat", "full_resolution": True, **TINY_UNET
    },
    "fc-ef": {"network": "fc", "fusion": "early"},
    "fc-siam-diff": {"network": "fc", "fusion": "siamese_diff"},
    "fc-siam-conc": {"network": "fc", "fusion": "siamese_concat"},
    "fc-ef-res": {"network": "fc_res", "fusion": "early"},
}


def pair(height: int = 32, width: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (2, BANDS, height, width)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def meta() -> dict[str, Any]:
    return {
        "bands": ["B02", "B03", "B04", "B08"],
        "normalization": {"mean": [1000.0] * BANDS, "std": [300.0] * BANDS},
        "chip_size": 32,
        "threshold": 0.5,
    }


@pytest.fixture(params=list(ARCHITECTURES), ids=list(ARCHITECTURES))
def arguments(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"in_channels": BANDS, **ARCHITECTURES[request.param]}


def test_network(arguments: dict[str, Any], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_change_model(arguments)
    before, after = pair()

    # Forward: one logit per pixel; backward: every parameter takes part.
    model.train()
    logits = model(before, after)
    assert logits.shape == (2, 1, 32, 48)
    logits.square().mean().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None]
    assert not dead

    # Sizes that are not multiples of the output stride are refused; the task pads and crops.
    assert model.output_stride == (8 if "encoder_name" in arguments else 16)
    assert output_stride(architecture_record(arguments)) == model.output_stride  # no build
    with pytest.raises(ValueError, match="divisible"):
        model(*pair(height=33, width=47))
    task = ChangeSegmentationTask(
        **{key: value for key, value in arguments.items() if key != "network"},
        network=arguments.get("network", "unet"),
    ).eval()
    with torch.no_grad():
        assert task(*pair(height=33, width=47)).shape == (2, 1, 33, 47)

    # Export to a bundle, load it back (architecture validated): the same output.
    model.eval()
    save_bundle(model, meta(), tmp_path / "bundle")
    recorded = json.loads((tmp_path / "bundle" / "model.json").read_text())["architecture"]
    assert recorded == architecture_record(arguments)
    loaded = load_bundle(tmp_path / "bundle")
    assert type(loaded.model) is type(model)
    assert load_bundle(tmp_path / "bundle", build=False).output_stride == model.output_stride
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(before, after), model(before, after))


@pytest.mark.parametrize(
    ("model", "published"),
    [
        (FCNet(13, "early"), 1.35e6),  # FC-EF, ICIP 2018 table
        (FCNet(13, "siamese_diff"), 1.35e6),  # FC-Siam-diff
        (FCNet(13, "siamese_concat"), 1.55e6),  # FC-Siam-conc
        (FCEFRes(13, "early"), 1.10e6),  # FC-EF-Res (FresUNet), 13 bands
    ],
    ids=["fc-ef", "fc-siam-diff", "fc-siam-conc", "fc-ef-res"],
)
def test_parameter_counts_match_the_papers(model: torch.nn.Module, published: float) -> None:
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - published) < 0.01e6, count


def test_fc_siam_diff_is_faithful_to_the_paper() -> None:
    model = FCNet(13, "siamese_diff")
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128]
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert len(dropouts) == 10 + 9 and all(d.p == 0.2 for d in dropouts)
    # The full-resolution skip: the last decoder level reads the upsampled 16 channels and the
    # 16-channel difference of the first level.
    assert model.decoder[-1][0][0].in_channels == 32
    assert model.upsample[-1].stride == (2, 2)


def test_full_resolution_stage_joins_the_last_decoder_block() -> None:
    plain = ChangeUNet(BANDS, "siamese_diff", **TINY_UNET)
    full = ChangeUNet(BANDS, "siamese_diff", full_resolution=True, **TINY_UNET)
    assert full.decoder.blocks[-1].conv1[0].in_channels == (
        plain.decoder.blocks[-1].conv1[0].in_channels + 16
    )
    assert "full_resolution" not in plain.architecture
    assert not any(name.startswith("full_resolution") for name in plain.state_dict())


def test_a_bundle_whose_weights_are_another_fc_network_is_refused(tmp_path: Path) -> None:
    save_bundle(FCNet(BANDS, "early"), meta(), tmp_path / "b")
    path = tmp_path / "b" / "model.json"
    record = json.loads(path.read_text())
    record["architecture"]["fusion"] = "siamese_diff"
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="encoder.0.0.0.weight has shape .* not 4 input channels"):
        load_bundle(tmp_path / "b")


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ({"network": "transformer", "fusion": "early", "in_channels": 4}, "network must be one"),
        ({"network": "fc_res", "fusion": "siamese_diff", "in_channels": 4}, "must be 'early'"),
        ({"network": "fc", "fusion": "early"}, "missing key.*in_channels"),
        ({"fusion": "early", **TINY_UNET, "in_channels": 4, "full_resolution": "yes"},
         "full_resolution must be true or false"),
    ],
)
def test_bad_architectures_are_refused_naming_model_json(
    tmp_path: Path, architecture: dict[str, Any], message: str
) -> None:
    save_bundle(FCNet(BANDS, "early"), meta(), tmp_path / "b")
    path = tmp_path / "b" / "model.json"
    record = json.loads(path.read_text())
    record["architecture"] = architecture
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match=message) as error:
        load_bundle(tmp_path / "b")
    assert "model.json" in str(error.value)


@pytest.mark.parametrize("network", ["fc", "fc_res"])
def test_fc_bundles_run_in_the_tiled_predictor(
    network: str, fixtures_dir: Path, tmp_path: Path
) -> None:
    """An FC bundle predicts whole fixture scenes (padded to its stride of 16) in evaluate."""
    torch.manual_seed(0)
    model = build_change_model(
        {"network": network, "fusion": "early", "in_channels": BANDS}
    ).eval()
    save_bundle(model, meta(), tmp_path / "bundle")
    out = tmp_path / "metrics.json"
    code = groundbreak([
        "evaluate", "--model", str(tmp_path / "bundle"), "--oscd-root",
        str(fixtures_dir / "oscd"), "--cities", "beirut", "--out", str(out),
        "--maps", str(tmp_path / "maps"), "--cloud-mask", "none",
    ])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["unpredicted_pixels"] == 0 and result["pixels"] > 0
    with rasterio.open(tmp_path / "maps" / "beirut" / "probability.tif") as src:
        probability = src.read(1)
    assert np.isfinite(probability).all() and probability.std() > 0
