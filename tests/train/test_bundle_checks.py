"""What load_bundle and export refuse before a model runs: a model.json that does not fit its
weights (checked from the safetensors header, before anything is built), weights of the wrong
dtype or not finite, and a normalisation that float32 cannot apply (issue 12, items 15 and 20)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from groundbreak.datasets.errors import InputError
from groundbreak.train.bundle import load_bundle, save_bundle
from groundbreak.train.bundle_weights import read_weights_header
from groundbreak.train.export import checkpoint_model
from groundbreak.train.model import ChangeUNet

ARCHITECTURE = {"fusion": "siamese_diff", "encoder_name": "resnet18", "encoder_depth": 2,
                "decoder_channels": [16, 8], "in_channels": 4}


def small_model() -> ChangeUNet:
    torch.manual_seed(0)
    return ChangeUNet(**ARCHITECTURE)


def meta(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "bands": ["B02", "B03", "B04", "B08"],
        "normalization": {"mean": [1000.0] * 4, "std": [300.0] * 4},
        "chip_size": 32,
        "threshold": 0.4,
    }
    record.update(overrides)
    return record


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_bundle(small_model(), meta(), tmp_path / "bundle")


def edit_meta(folder: Path, **architecture: Any) -> None:
    record = json.loads((folder / "model.json").read_text())
    record["architecture"].update(architecture)
    (folder / "model.json").write_text(json.dumps(record))


def edit_weights(folder: Path, name: str, tensor: torch.Tensor) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name] = tensor
    save_file(tensors, str(folder / "model.safetensors"))


# --- item 20: the architecture in model.json -----------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"decoder_channels": [100_000, 8]}, "decoder_channels must list 2 integers"),
        ({"decoder_channels": [16]}, "decoder_channels must list 2 integers"),
        ({"decoder_channels": [16.5, 8]}, "decoder_channels must list 2 integers"),
        ({"decoder_channels": "16,8"}, "decoder_channels must list 2 integers"),
        ({"encoder_name": 18}, "encoder_name must name a segmentation-models-pytorch encoder"),
        ({"encoder_name": ["resnet18"]}, "encoder_name must name"),
        ({"encoder_name": "tu-not_a_timm_model"}, "encoder_name must name"),
        ({"encoder_depth": True}, "encoder_depth must be an integer 1 to 5"),
        ({"encoder_depth": "2"}, "encoder_depth must be an integer 1 to 5"),
        ({"encoder_depth": 9}, "encoder_depth must be an integer 1 to 5"),
        ({"fusion": 3}, "fusion must be one of"),
        ({"in_channels": 4.0}, "in_channels must be an integer"),
    ],
)
def test_architecture_values_are_validated(saved: Path, changes: dict, message: str) -> None:
    edit_meta(saved, **changes)
    with pytest.raises(InputError, match=message) as raised:
        load_bundle(saved)
    assert raised.value.path == str(saved / "model.json")


def test_architecture_is_checked_against_the_weight_shapes_before_building(saved: Path) -> None:
    # Within bounds, but wider than the weights: refused from the header, naming the weights.
    edit_meta(saved, decoder_channels=[1024, 1024])
    with pytest.raises(InputError, match=r"decoder_channels \[1024, 1024\]") as raised:
        load_bundle(saved)
    assert raised.value.path == str(saved / "model.safetensors")
    assert "decoder.blocks.0.conv1.0.weight has shape (16," in str(raised.value)


def test_weights_header_is_read_without_loading(saved: Path) -> None:
    header = read_weights_header(saved / "model.safetensors")
    assert header["segmentation_head.0.weight"] == {"dtype": "F32", "shape": [1, 8, 3, 3]}
    (saved / "model.safetensors").write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(InputError, match="cannot be read as safetensors"):
        load_bundle(saved)


# --- item 15: weights and normalisation ------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_on_load(saved: Path, value: float) -> None:
    tensor = load_file(str(saved / "model.safetensors"))["decoder.blocks.1.conv2.0.weight"]
    tensor[0, 0, 0, 0] = value
    edit_weights(saved, "decoder.blocks.1.conv2.0.weight", tensor)
    with pytest.raises(InputError, match=r"non-finite \(NaN or inf\) tensor\(s\): decoder"):
        load_bundle(saved)


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.uint8, torch.int64])
def test_weights_of_a_non_float_dtype_are_refused(saved: Path, dtype: torch.dtype) -> None:
    edit_weights(saved, "segmentation_head.0.weight", torch.ones(1, 8, 3, 3, dtype=dtype))
    with pytest.raises(InputError, match="unsupported dtype .*segmentation_head.0.weight"):
        load_bundle(saved)


def test_complex_and_integer_tensors_are_refused_by_the_state_check() -> None:
    model = small_model()
    state = model.state_dict()
    state["segmentation_head.0.weight"] = state["segmentation_head.0.weight"].to(torch.complex64)
    with pytest.raises(InputError, match=r"wrong dtype tensor\(s\): segmentation_head.0.weight"):
        checkpoint_model(checkpoint(state), Path("complex.ckpt"))


def checkpoint(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A task checkpoint's contents, as ``torch.load`` returns them."""
    return {"state_dict": {f"model.{k}": v for k, v in state.items()},
            "hyper_parameters": dict(ARCHITECTURE)}


def test_export_refuses_non_finite_weights(tmp_path: Path) -> None:
    model = small_model()
    state = model.state_dict()
    state["decoder.blocks.0.conv1.0.weight"][0, 0, 0, 0] = math.nan
    with pytest.raises(InputError, match="non-finite"):
        checkpoint_model(checkpoint(state), tmp_path / "nan.ckpt")
    with torch.no_grad():
        model.segmentation_head[0].bias.fill_(math.inf)
    with pytest.raises(InputError, match="non-finite .*segmentation_head.0.bias"):
        save_bundle(model, meta(), tmp_path / "b")
    assert not (tmp_path / "b" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "normalization",
    [{"mean": [0.0] * 4, "std": [1e-50, 1, 1, 1]},  # positive in float64, 0 in float32
     {"mean": [0.0] * 4, "std": [1e-40, 1, 1, 1]},  # subnormal in float32: 1/std overflows
     {"mean": [1e300, 0, 0, 0], "std": [1.0] * 4}],  # inf in float32
)
def test_normalisation_is_range_checked_in_float32(saved: Path, normalization: dict) -> None:
    record = json.loads((saved / "model.json").read_text())
    record["normalization"] = normalization
    (saved / "model.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="normalization is not usable in float32"):
        load_bundle(saved)
    with pytest.raises(InputError, match="normalization is not usable in float32"):
        save_bundle(small_model(), meta(normalization=normalization), saved.parent / "other")
