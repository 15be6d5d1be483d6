"""Model bundles: save -> load round trip, normalisation, band checks, and every refused input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scene import open_scene
from groundbreak.train import bundle as bundle_module
from groundbreak.train.bundle import load_bundle, save_bundle
from groundbreak.train.model import ChangeUNet

S2_BANDS = ["B02", "B03", "B04", "B08"]


def small_model(fusion: str = "siamese_concat", in_channels: int = 4) -> ChangeUNet:
    torch.manual_seed(0)
    return ChangeUNet(in_channels, fusion, "resnet18", encoder_depth=2, decoder_channels=(16, 8))


def bundle_meta(**overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "tiny-s2",
        "bands": list(S2_BANDS),
        "normalization": {"mean": [1000.0, 1100.0, 1200.0, 2500.0], "std": [300.0, 310, 320, 900]},
        "chip_size": 32,
        "threshold": 0.35,
        "pixel_size_m": 10.0,
        "training": {"dataset": "oscd fixtures", "epochs": 1},
        "metrics": {"val/f1": 0.42},
    }
    meta.update(overrides)
    return meta


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A valid bundle of a small siamese_concat model."""
    return save_bundle(small_model(), bundle_meta(), tmp_path / "bundle")


def rewrite_meta(folder: Path, **changes: Any) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta.update(changes)
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("fusion", ["early", "siamese_diff", "siamese_concat"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, fusion: str) -> None:
    model = small_model(fusion).eval()
    save_bundle(model, bundle_meta(), tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")

    before, after = torch.randn(2, 4, 32, 32), torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(before, after), model(before, after))
    assert not loaded.model.training
    assert loaded.model.architecture == model.architecture
    assert loaded.bands == S2_BANDS
    assert loaded.mean.dtype == np.float32 and loaded.std.dtype == np.float32
    np.testing.assert_allclose(loaded.std, [300, 310, 320, 900])
    assert (loaded.chip_size, loaded.threshold, loaded.name) == (32, 0.35, "tiny-s2")
    assert loaded.pixel_size_m == 10.0
    assert loaded.meta["metrics"] == {"val/f1": 0.42}


def test_saved_files_follow_the_contract(saved: Path) -> None:
    meta = json.loads((saved / "model.json").read_text())
    assert meta["format_version"] == 3
    assert set(meta["versions"]) == {"segmentation_models_pytorch", "timm", "torch"}
    assert meta["architecture"] == {
        "fusion": "siamese_concat",
        "encoder_name": "resnet18",
        "encoder_depth": 2,
        "decoder_channels": [16, 8],
        "in_channels": 4,
    }
    tensors = load_file(str(saved / "model.safetensors"))
    assert set(tensors) == set(small_model().state_dict())
    assert not list(saved.glob(".*.tmp"))


def test_save_writes_plain_json_from_numpy_values(tmp_path: Path) -> None:
    meta = bundle_meta(
        bands=("b2", "b3", "b4", "b8"),
        normalization={"mean": np.zeros(4, np.float32), "std": np.ones(4, np.float64)},
        chip_size=np.int64(64),
        threshold=np.float32(0.5),
        metrics={"val/f1": float("nan"), "val/iou": np.float64(0.25)},
    )
    meta.pop("name")
    folder = save_bundle(small_model(), meta, tmp_path / "named-by-folder")
    loaded = load_bundle(folder)
    assert loaded.bands == S2_BANDS  # canonical names
    assert loaded.chip_size == 64
    assert loaded.name == "named-by-folder"
    assert loaded.meta["metrics"] == {"val/f1": None, "val/iou": 0.25}


def test_load_accepts_the_model_json_path(saved: Path) -> None:
    assert load_bundle(saved / "model.json").path == saved


def test_normalize_subtracts_mean_divides_std_and_zeroes_nan(saved: Path) -> None:
    loaded = load_bundle(saved)
    two_sigma = loaded.mean + 2 * loaded.std
    chip = np.broadcast_to(two_sigma[:, None, None], (4, 2, 3)).copy()
    chip[1, 0, 0] = np.nan
    out = loaded.normalize(chip.astype(np.float64))
    assert out.dtype == np.float32 and out.shape == (4, 2, 3)
    assert out[1, 0, 0] == 0.0
    np.testing.assert_allclose(np.delete(out.ravel(), 6), 2.0, rtol=1e-6)

    batch = loaded.normalize(np.stack([chip, chip]))
    assert batch.shape == (2, 4, 2, 3)
    np.testing.assert_array_equal(batch[1], out)

    with pytest.raises(ValueError, match="C = 4 bands"):
        loaded.normalize(np.zeros((3, 2, 2), np.float32))


def test_check_scene_bands_returns_model_order(saved: Path) -> None:
    loaded = load_bundle(saved)
    assert loaded.check_scene_bands(["B08", "b4", "B03", "B02", "B11"]) == S2_BANDS


def test_check_scene_bands_names_missing_bands_and_source(saved: Path) -> None:
    loaded = load_bundle(saved)
    with pytest.raises(InputError, match=r"^scene\.tif: .*needs band\(s\) B04, B08"):
        loaded.check_scene_bands(["B02", "B03"], source="scene.tif")


def test_check_scene_bands_names_the_scene_path(saved: Path, fixtures_dir: Path) -> None:
    png = next((fixtures_dir / "levir" / "A").glob("*.png"))
    scene = open_scene(png)
    with pytest.raises(InputError, match="B02, B03, B04, B08 that the input lacks") as err:
        load_bundle(saved).check_scene_bands(scene)
    assert err.value.path == str(png)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".pkl"])
def test_refuses_checkpoints_and_pickles_without_loading_them(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save({"state_dict": small_model().state_dict()}, path)

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load must never run on inference input")

    monkeypatch.setattr(torch, "load", forbidden)
    with pytest.raises(InputError, match="groundbreak export") as err:
        load_bundle(path)
    assert err.value.path == str(path)


def test_refuses_other_files_and_missing_paths(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputError, match="is not a model bundle"):
        load_bundle(other)
    with pytest.raises(InputError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize("missing", ["model.json", "model.safetensors"])
def test_missing_bundle_file(saved: Path, missing: str) -> None:
    (saved / missing).unlink()
    with pytest.raises(InputError, match="missing: not a model bundle") as err:
        load_bundle(saved)
    assert err.value.path == str(saved / missing)


@pytest.mark.parametrize("text", ["{not json", "[" * 200_000])
def test_unparsable_model_json(saved: Path, text: str) -> None:
    """Broken JSON, and JSON nested past the parser's recursion limit (issue 26 item 14), are
    one error naming model.json."""
    (saved / "model.json").write_text(text)
    with pytest.raises(InputError, match="cannot be read as model.json") as err:
        load_bundle(saved)
    assert err.value.path == str(saved / "model.json")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 4}, "format_version 4 is not supported"),
        ({"threshold": None}, "threshold must be a number"),
        ({"threshold": 1.5}, "threshold must be a number"),
        ({"chip_size": "big"}, "chip_size must be a positive integer"),
        ({"chip_size": 30}, "chip_size 30 is not divisible by the model's output stride 4"),
        ({"bands": "B02"}, "bands must be a non-empty list"),
        ({"bands": ["B02", "B03", "B04", "b2"]}, "duplicate band names: B02"),
        ({"bands": ["B02", "B03", "B04"]}, "lists 3 bands but the architecture has in_channel"),
        ({"normalization": {"mean": [0, 0, 0, 0]}}, "normalization must be an object"),
        ({"normalization": {"mean": [0, 0], "std": [1, 1]}}, r"normalization\.mean must list"),
        ({"normalization": {"mean": [0] * 4, "std": [1, 0, 1, 1]}}, "std must be positive"),
        ({"architecture": {"fusion": "early"}}, "architecture is missing key"),
        ({"pixel_size_m": -10}, "pixel_size_m must be positive"),
        ({"metrics": [0.4]}, "metrics must be an object"),
    ],
)
def test_malformed_model_json(saved: Path, changes: dict[str, Any], message: str) -> None:
    rewrite_meta(saved, **changes)
    with pytest.raises(InputError, match=message) as err:
        load_bundle(saved)
    assert err.value.path == str(saved / "model.json")


def test_model_json_missing_keys_are_listed(saved: Path) -> None:
    meta = json.loads((saved / "model.json").read_text())
    del meta["bands"], meta["threshold"]
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="missing key\\(s\\): bands, threshold"):
        load_bundle(saved)


def test_architecture_that_cannot_be_built(saved: Path) -> None:
    meta = json.loads((saved / "model.json").read_text())
    meta["architecture"]["encoder_name"] = "resnet-nope"
    (saved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="encoder_name must name a segmentation-models-pytorch"):
        load_bundle(saved)
    unbuilt = load_bundle(saved, build=False)  # checked where the model is built: the same error
    with pytest.raises(InputError, match="encoder_name must name a segmentation-models-pytorch"):
        unbuilt.model  # noqa: B018


def test_a_bundle_loaded_unbuilt_imports_no_torch_until_its_model_is_asked_for() -> None:
    code = ("import sys\nfrom groundbreak.train.bundle import default_bundle_path, load_bundle\n"
            "bundle = load_bundle(default_bundle_path(), build=False)\n"
            "print(bundle.output_stride, 'torch' in sys.modules, bundle.model_built)\n"
            "print(bundle.model.output_stride, 'torch' in sys.modules, bundle.model_built)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300, check=False)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[-3:] == ["16 False False", "16 True True", ""]


def test_weights_missing_extra_or_misshapen_tensors_are_listed(saved: Path) -> None:
    path = saved / "model.safetensors"
    tensors = load_file(str(path))
    del tensors["segmentation_head.0.bias"]
    tensors["classifier.weight"] = torch.zeros(2)
    tensors["decoder.blocks.0.conv1.0.weight"] = torch.zeros(16, 1, 3, 3)
    save_file(tensors, str(path))
    with pytest.raises(InputError) as err:
        load_bundle(saved)
    message = str(err.value)
    assert err.value.path == str(path)
    assert "1 missing tensor(s): segmentation_head.0.bias" in message
    assert "1 unexpected tensor(s): classifier.weight" in message
    assert "wrong shape tensor(s): decoder.blocks.0.conv1.0.weight (16, 1, 3, 3) !=" in message


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    save_bundle(small_model("early"), bundle_meta(), tmp_path / "early")
    save_bundle(small_model("siamese_diff"), bundle_meta(), tmp_path / "diff")
    (tmp_path / "diff" / "model.safetensors").replace(tmp_path / "early" / "model.safetensors")
    with pytest.raises(InputError, match="does not fit the architecture in model.json"):
        load_bundle(tmp_path / "early")


def test_corrupt_weights_file(saved: Path) -> None:
    (saved / "model.safetensors").write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(InputError, match="cannot be read as safetensors"):
        load_bundle(saved)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": float("nan")}, "threshold must be a number"),
        ({"bands": ["B02", "B03", "B04", "B08", "B11"], "normalization": {
            "mean": [0] * 5, "std": [1] * 5}}, "lists 5 bands but the architecture has in_chan"),
        ({"normalization": {"mean": [0] * 4, "std": [1] * 3}}, "normalization.std must list"),
        ({"chip_size": 50}, "not divisible by the model's output stride 4"),
        ({"architecture": {"fusion": "early", "encoder_name": "resnet18", "encoder_depth": 2,
                           "decoder_channels": [16, 8], "in_channels": 4}},
         "differs from the model's"),
    ],
)
def test_save_refuses_bad_meta(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message) as err:
        save_bundle(small_model(), bundle_meta(**changes), tmp_path / "b")
    assert err.value.path == str(tmp_path / "b" / "model.json")
    assert not (tmp_path / "b" / "model.safetensors").exists()


def test_save_refuses_missing_meta_keys(tmp_path: Path) -> None:
    meta = bundle_meta()
    del meta["normalization"]
    with pytest.raises(InputError, match="missing key\\(s\\): normalization"):
        save_bundle(small_model(), meta, tmp_path / "b")


def test_default_bundle_path(tmp_path: Path, saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_module, "DEFAULT_BUNDLE_DIR", saved)
    assert bundle_module.default_bundle_path() == saved

    monkeypatch.setattr(bundle_module, "DEFAULT_BUNDLE_DIR", tmp_path / "absent")
    with pytest.raises(InputError, match="pass --model BUNDLE") as err:
        bundle_module.default_bundle_path()
    assert err.value.path == str(tmp_path / "absent")


def test_default_bundle_lies_beside_the_packages() -> None:
    repo_root = Path(bundle_module.__file__).resolve().parents[1]
    expected = repo_root / "checkpoints" / "oscd-s2-default"
    assert expected == bundle_module.DEFAULT_BUNDLE_DIR
    assert (repo_root / "pyproject.toml").is_file()
