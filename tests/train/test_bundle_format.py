"""model.json format 2 (public encoder names, library versions), the upgrade from format 1, and
dependency floors that the installed environment meets (issue 12, item 5)."""

from __future__ import annotations

import ast
import json
import shutil
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from groundbreak.train.bundle import (
    DEFAULT_BUNDLE_DIR,
    FORMAT_VERSION,
    load_bundle,
    save_bundle,
)
from groundbreak.train.model import ChangeUNet, public_encoder_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[2]


UNET_DIR = DEFAULT_BUNDLE_DIR.parent / "oscd-s2-unet"
FAST_DIR = DEFAULT_BUNDLE_DIR.parent / "oscd-s2-fast"


def test_shipped_bundles_are_current_and_use_public_smp_names() -> None:
    record = json.loads((DEFAULT_BUNDLE_DIR / "model.json").read_text())
    assert record["format_version"] == FORMAT_VERSION == 3  # the ensemble needs format 3
    unet, fc_res = record["architecture"]["members"]
    assert unet["encoder_name"] == "tu-regnetx_002" and fc_res["network"] == "fc_res"
    assert json.loads((UNET_DIR / "model.json").read_text())["format_version"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # smp warns on deprecated names
        bundle, alone = load_bundle(DEFAULT_BUNDLE_DIR), load_bundle(UNET_DIR)
    assert bundle.model.members[0].encoder_name == alone.model.encoder_name == "tu-regnetx_002"
    assert alone.meta["format_version"] == 3  # format 2 reads as 3: it only adds keys
    # the ensemble's first member is the U-Net bundle itself, weight for weight
    member = bundle.model.members[0].state_dict()
    assert all(torch.equal(t, member[k]) for k, t in alone.model.state_dict().items())


def test_the_fast_bundle_is_the_unet_distilled_from_the_default_with_its_own_windows() -> None:
    """``oscd-s2-fast``: the U-Net's network (the same cost a window) trained with the default
    ensemble as teacher, predicted with 512/64 windows at thresholds with and without TTA, its
    out-of-fold scores above the U-Net's."""
    fast, unet = load_bundle(FAST_DIR), load_bundle(UNET_DIR)
    assert fast.meta["architecture"] == unet.meta["architecture"]
    assert fast.bands == unet.bands and fast.meta["normalization"] == unet.meta["normalization"]
    assert (fast.window, fast.overlap, fast.date_matching) == (512, 64, "mean_std")
    assert fast.threshold == fast.meta["metrics"]["oof/threshold"]
    assert fast.tta_threshold == fast.meta["metrics"]["oof_tta/threshold"]
    assert fast.meta["metrics"]["oof/f1"] > unet.meta["metrics"]["oof/f1"] + 0.02
    hyperparameters = fast.meta["training"]["hyperparameters"]
    assert hyperparameters["distill_weight"] == 0.5 and hyperparameters["teacher"]
    assert not any(key.startswith("_teacher") for key in fast.model.state_dict())


def test_format_1_bundle_is_upgraded_with_the_same_predictions(tmp_path: Path) -> None:
    old = tmp_path / "v1"
    shutil.copytree(UNET_DIR, old)
    record = json.loads((old / "model.json").read_text())
    record["format_version"] = 1
    record["architecture"]["encoder_name"] = "timm-regnetx_002"  # as format 1 recorded it
    del record["versions"]
    (old / "model.json").write_text(json.dumps(record))
    upgraded, current = load_bundle(old), load_bundle(UNET_DIR)
    assert upgraded.meta["format_version"] == 3
    assert upgraded.meta["architecture"]["encoder_name"] == "tu-regnetx_002"
    assert upgraded.meta["versions"] == dict.fromkeys(("segmentation_models_pytorch", "timm",
                                                       "torch"))
    torch.manual_seed(0)
    before, after = torch.randn(1, 13, 64, 64), torch.randn(1, 13, 64, 64)
    with torch.no_grad():
        assert torch.equal(upgraded.model(before, after), current.model(before, after))


def test_save_records_the_library_versions(tmp_path: Path) -> None:
    model = ChangeUNet(4, "early", "resnet18", 2, (16, 8))
    meta = {"bands": ["B02", "B03", "B04", "B08"], "chip_size": 32, "threshold": 0.5,
            "normalization": {"mean": [0.0] * 4, "std": [1.0] * 4}}
    folder = save_bundle(model, meta, tmp_path / "b")
    record = json.loads((folder / "model.json").read_text())
    assert record["versions"] == {"segmentation_models_pytorch": smp.__version__,
                                  "timm": timm.__version__, "torch": torch.__version__}


def test_deprecated_encoder_names_map_to_public_ones() -> None:
    assert public_encoder_name("timm-regnetx_002") == "tu-regnetx_002"
    assert public_encoder_name("timm-mobilenetv3_small_100") == "tu-tf_mobilenetv3_small_100"
    assert public_encoder_name("resnet18") == "resnet18"
    assert ChangeUNet(3, "early", "timm-regnetx_002", 2, (8, 8)).architecture[
        "encoder_name"] == "tu-regnetx_002"


def floors() -> dict[str, Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    return {r.name: r for r in requirements}


def test_installed_versions_meet_the_declared_floors() -> None:
    for name, requirement in floors().items():
        installed = version(name)
        assert requirement.specifier.contains(installed, prereleases=True), (
            f"{name} {installed} does not satisfy {requirement}"
        )


def test_floors_cover_what_the_code_needs() -> None:
    declared = floors()
    assert declared["segmentation-models-pytorch"].specifier.contains("0.5.0")
    assert not declared["segmentation-models-pytorch"].specifier.contains("0.4.1")
    assert "timm" in declared  # imported directly
    assert not declared["pandas"].specifier.contains("2.0.3")  # DataFrame.map is 2.1
    assert Version(smp.__version__) >= Version("0.5")


def test_sources_use_only_public_smp_modules() -> None:
    public = {"segmentation_models_pytorch"}
    for folder in ("datasets", "train", "infer"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    if name.startswith("segmentation_models_pytorch"):
                        assert name in public, f"{path.relative_to(REPO)} imports {name}"
