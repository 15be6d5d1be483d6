"""What the OpenVINO runtime adds to the shared runtime tests (``test_cpu_runtimes.py``): its
conversion as a stage of its own, the converted graph kept and read back, refusals by name."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.prediction import openvino_model
from groundbreak.infer.prediction.folding import fold_batch_norms
from groundbreak.infer.prediction.openvino_model import (
    OpenVinoChangeModel,
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
    kept = sorted(own_cache.iterdir())
    assert len(kept) == 1
    assert (kept[0] / "model.xml").is_file() and (kept[0] / "model.bin").is_file()
    again = OpenVinoChangeModel(model)(before, after)  # read back: the same numbers
    torch.testing.assert_close(again, first)
    graph = openvino.Core().read_model(kept[0] / "model.xml")  # static: planned once
    assert [p.get_partial_shape().is_static for p in graph.inputs] == [True, True]
    assert sorted(own_cache.iterdir()) == kept

    (kept[0] / "model.xml").write_text("<not a graph")  # damaged: converted again, replaced
    torch.testing.assert_close(OpenVinoChangeModel(model)(before, after), first)
    assert sorted(own_cache.iterdir()) == kept and "<not a graph" not in (
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
    shape = (1, 13, 64, 64)
    key = model_key(model, shape)
    assert model_key(copy.deepcopy(model), shape) == key  # the same model, another object
    assert model_key(model, (1, 13, 64, 96)) != key
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3  # one weight
    assert model_key(changed, shape) != key
    scaled = _Scaled(model)
    doubled = model_key(scaled, shape)
    scaled.factor = 3.0  # a setting its forward reads: neither a tensor nor in its repr
    assert model_key(scaled, shape) not in (doubled, key)


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
