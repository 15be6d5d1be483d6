"""What the OpenVINO runtime adds to the shared runtime tests (``test_cpu_runtimes.py``): its
conversion as a stage of its own, the converted graph kept and read back, refusals by name."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.prediction import openvino_model
from groundbreak.infer.prediction.folding import fold_batch_norms
from groundbreak.infer.prediction.inference import (
    compiled_probabilities,
    predict_probabilities,
    sigmoid,
)
from groundbreak.infer.prediction.openvino_model import (
    OpenVinoChangeModel,
    bundle_key,
    cache_folder,
    model_key,
)
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle
from groundbreak.train.model import build_change_model

openvino = pytest.importorskip(
    "openvino", reason="the openvino extra is not installed (pip install .[openvino])"
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test converts into its own cache folder, never the user's."""
    monkeypatch.setenv("GROUNDBREAK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "openvino"


@pytest.fixture(scope="module")
def shipped() -> ModelBundle:
    return load_bundle(default_bundle_path())


def test_the_conversion_is_its_own_stage_not_the_models(
    shipped: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    root = fixtures_dir / "oscd" / "beirut"
    predictor = TiledPredictor(shipped, device="cpu", runtime="openvino")
    pair = PairSpec("beirut", root / "imgs_1", root / "imgs_2").open()
    first = predictor.predict_pair(pair, tmp_path / "first").stages
    second = predictor.predict_pair(pair, tmp_path / "second").stages
    converted = predictor.runner.export_seconds  # type: ignore[union-attr]
    assert first["export"] == pytest.approx(converted, abs=0.002) and converted > 0.1
    assert first["model"] > 0 and "export" not in second  # converted once per shape


def test_a_converted_graph_is_kept_and_read_back_by_the_next_process(
    shipped: ModelBundle, own_cache: Path
) -> None:
    assert cache_folder() == own_cache
    model = shipped.model.cpu().eval()
    generator = torch.Generator().manual_seed(1)
    before, after = (torch.randn(1, 13, 64, 64, generator=generator) for _ in range(2))
    first = OpenVinoChangeModel(model)(before, after)
    kept = sorted(own_cache.glob("*/*"))  # one folder a model, in it one a shape
    assert len(kept) == 1 and kept[0].name == "1x13x64x64"
    assert (kept[0] / "model.xml").is_file() and (kept[0] / "model.bin").is_file()
    again = OpenVinoChangeModel(model)(before, after)  # read back: the same numbers
    torch.testing.assert_close(again, first)
    graph = openvino.Core().read_model(kept[0] / "model.xml")  # static: planned once
    assert [p.get_partial_shape().is_static for p in graph.inputs] == [True, True]
    assert sorted(own_cache.glob("*/*")) == kept

    (kept[0] / "model.xml").write_text("<not a graph")  # damaged: converted again, replaced
    torch.testing.assert_close(OpenVinoChangeModel(model)(before, after), first)
    assert sorted(own_cache.glob("*/*")) == kept and "<not a graph" not in (
        kept[0] / "model.xml"
    ).read_text()

    shifted = OpenVinoChangeModel(_Scaled(model))(before, after)
    torch.testing.assert_close(shifted, first * 2)  # another graph gets its own entry
    assert len(list(own_cache.iterdir())) == 2


UNET = {"encoder_name": "resnet18", "encoder_depth": 3, "decoder_channels": [16, 8, 8]}
ARCHITECTURES = {
    "unet-early": {**UNET, "fusion": "early"},
    "unet-siamese_diff": {**UNET, "fusion": "siamese_diff"},
    "unet-siamese_concat": {**UNET, "fusion": "siamese_concat"},
    "unet-full_resolution": {**UNET, "fusion": "siamese_diff", "full_resolution": True},
    "fc-early": {"network": "fc", "fusion": "early"},
    "fc-siamese_diff": {"network": "fc", "fusion": "siamese_diff"},
    "fc-siamese_concat": {"network": "fc", "fusion": "siamese_concat"},
    "fc_res-early": {"network": "fc_res", "fusion": "early"},
    "ensemble": {"network": "ensemble", "logit_offsets": [0.3, -1.5], "members": [
        {**UNET, "fusion": "siamese_diff", "in_channels": 4},
        {"network": "fc_res", "fusion": "early", "in_channels": 4},
    ]},
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_every_architecture_a_bundle_can_hold_runs_on_openvino(name: str) -> None:
    """OpenVINO (the CPU default of ``auto``, or ``--runtime openvino``) can run any bundle of
    the project: none of its networks may fail to convert (``auto`` would fall back to torch)."""
    torch.manual_seed(0)
    model, _ = fold_batch_norms(build_change_model({**ARCHITECTURES[name], "in_channels": 4}))
    model.eval()
    before, after = torch.rand(1, 4, 64, 64), torch.rand(1, 4, 64, 64)
    with torch.inference_mode():
        expected = model(before, after)
    got = OpenVinoChangeModel(model, cache=False)(before, after)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_kept_graph_is_read_back_without_exporting_the_model(
    shipped: ModelBundle, own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = shipped.model.cpu().eval()
    x = torch.rand(1, 13, 32, 32)
    first = OpenVinoChangeModel(model)(x, x * 0.5)

    def no_export(*args: object) -> None:
        raise AssertionError("the model was exported although its graph was kept")

    monkeypatch.setattr(openvino_model, "export_program", no_export)
    torch.testing.assert_close(OpenVinoChangeModel(model)(x, x * 0.5), first)
    with pytest.raises(RuntimeError, match="could not convert the model to OpenVINO"):
        OpenVinoChangeModel(model)(torch.rand(1, 13, 16, 16), torch.rand(1, 13, 16, 16))


def test_the_graphs_name_follows_what_the_model_computes(shipped: ModelBundle) -> None:
    model = shipped.model.cpu().eval()
    key = model_key(model)
    assert model_key(copy.deepcopy(model)) == key  # the same model, another object
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3  # one weight
    assert model_key(changed) != key
    scaled = _Scaled(model)
    doubled = model_key(scaled)
    scaled.factor = 3.0  # a setting its forward reads: neither a tensor nor in its repr
    assert model_key(scaled) not in (doubled, key)


def test_a_bundles_graphs_are_named_by_its_files_wherever_it_lies(
    shipped: ModelBundle, tmp_path: Path
) -> None:
    copied = tmp_path / "copied"
    shutil.copytree(default_bundle_path(), copied)
    key = bundle_key(default_bundle_path())
    assert bundle_key(copied) == key  # the content names it, not the folder
    runner = TiledPredictor(shipped, device="cpu", runtime="openvino").runner
    assert runner.key == key  # type: ignore[union-attr]
    changed = shipped.with_model(_Scaled(shipped.model))  # not its files' model: named by itself
    assert shipped.model_from_files and not changed.model_from_files
    runner = TiledPredictor(changed, device="cpu", runtime="openvino").runner
    assert runner.key == model_key(fold_batch_norms(changed.model)[0])  # type: ignore[union-attr]
    meta = copied / "model.json"
    meta.write_text(meta.read_text().replace('"threshold": 0.43', '"threshold": 0.44'))
    assert bundle_key(copied) != key  # model.json is covered (it records the architecture)
    shutil.copy(default_bundle_path() / "model.json", meta)
    weights = bytearray((copied / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # one bit of one weight
    (copied / "model.safetensors").write_bytes(bytes(weights))
    assert bundle_key(copied) != key


def test_a_cache_that_cannot_be_written_is_skipped(shipped: ModelBundle, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    model = shipped.model.cpu().eval()
    x = torch.zeros(1, 13, 32, 32)
    runner = OpenVinoChangeModel(model, cache=blocked / "openvino")
    with torch.inference_mode():
        expected = model(x, x)
    torch.testing.assert_close(runner(x, x), expected, atol=1e-4, rtol=1e-4)
    assert OpenVinoChangeModel(model, cache=False).cache is None


class _Scaled(nn.Module):
    """A model's logits times ``factor``, two by default (another graph, the same weights)."""

    def __init__(self, model: nn.Module, factor: float = 2.0) -> None:
        super().__init__()
        self.model = model
        self.factor = factor

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return self.model(before, after) * self.factor


def test_windows_of_two_shapes_are_refused_by_name() -> None:
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"before \(1, 1, 8, 8\) and after .* differ in shape"):
        OpenVinoChangeModel(nn.Conv2d(1, 1, 1))(x, torch.zeros(1, 1, 8, 9))


KEPT_GRAPHS_PROCESS = """
import sys
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import default_bundle_path, load_bundle
root, out = sys.argv[1:]
bundle = load_bundle(default_bundle_path(), build=False)
predictor = TiledPredictor(bundle, device="cpu", runtime="openvino")
predictor.predict_pair(PairSpec("beirut", root + "/imgs_1", root + "/imgs_2").open(), out)
print(*(name in sys.modules for name in ("torch", "timm", "segmentation_models_pytorch")))
"""


def test_a_process_that_finds_its_graphs_kept_never_imports_torch(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """The first process builds the model and converts it; the next reads the graph back and
    runs it without torch, timm or smp (2.2 s and 200 MB of timm and smp, 1.5 s and 530 MB of
    torch on the 2-core machine), writing the same rasters."""
    root = fixtures_dir / "oscd" / "beirut"
    imported = []
    for run in ("first", "next"):  # the cache folder is the test's (own_cache, inherited)
        child = subprocess.run(
            [sys.executable, "-c", KEPT_GRAPHS_PROCESS, str(root), str(tmp_path / run)],
            capture_output=True, text=True, timeout=600, check=False,
        )
        assert child.returncode == 0, child.stderr
        imported.append(child.stdout.split()[-3:])
    assert imported == [["True"] * 3, ["False"] * 3]
    for name in ("probability.tif", "mask.tif"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "next" / name).read_bytes()


def test_a_bundle_whose_graphs_are_not_kept_is_checked_before_any_pair(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(default_bundle_path(), broken)
    weights = load_file(broken / "model.safetensors")
    name = next(n for n, tensor in sorted(weights.items()) if tensor.is_floating_point())
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    bundle = load_bundle(broken, build=False)  # model.json and the weights' header are sound
    assert not bundle.model_built
    with pytest.raises(InputError, match=r"model\.safetensors.*non-finite"):
        TiledPredictor(bundle, device="cpu", runtime="openvino")


def test_a_compiled_runtime_gives_in_numpy_what_the_torch_path_gives(
    shipped: ModelBundle,
) -> None:
    model, _ = fold_batch_norms(shipped.model)
    runner = OpenVinoChangeModel(model.eval(), cache=False)
    generator = torch.Generator().manual_seed(2)
    before, after = (torch.randn(2, 13, 32, 32, generator=generator) for _ in range(2))
    for tta in (False, True):
        with torch.inference_mode():
            expected = predict_probabilities(runner, before, after, tta=tta, forward_batch=1)
        got = compiled_probabilities(runner.run, before.numpy(), after.numpy(), tta=tta,
                                     forward_batch=1)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected.numpy(), atol=2e-7, rtol=0)
    with np.errstate(over="raise", invalid="raise"):  # no overflow at either end
        assert sigmoid(np.array([-1e4, 0.0, 1e4], dtype=np.float32)).tolist() == [0.0, 0.5, 1.0]
