"""The predictor's OpenVINO path: same numbers as torch on the shipped model, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.prediction.openvino_model import OpenVinoChangeModel, cache_folder
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle

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


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_openvino_prediction_matches_torch_on_a_real_pair(
    shipped: ModelBundle, fixtures_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = fixtures_dir / "oscd" / "beirut"
    torch_result = TiledPredictor(shipped, device="cpu", runtime="torch").predict_pair(
        PairSpec("beirut", root / "imgs_1", root / "imgs_2").open(), tmp_path / "torch"
    )
    args = ["predict", "--before", str(root / "imgs_1"), "--after", str(root / "imgs_2"),
            "--out", str(tmp_path / "openvino"), "--device", "cpu", "--runtime", "openvino"]
    assert groundbreak(args) == 0
    assert str(tmp_path / "openvino" / "probability.tif") in capsys.readouterr().out

    expected = read_band(torch_result.probability_path)
    got = read_band(tmp_path / "openvino" / "probability.tif")
    assert got.shape == expected.shape == (96, 96)
    assert np.isfinite(got).all() and 0.0 < got.max() <= 1.0
    np.testing.assert_allclose(got, expected, atol=1e-4)
    near_threshold = np.abs(expected - shipped.threshold) < 1e-4
    masks = read_band(torch_result.mask_path), read_band(tmp_path / "openvino" / "mask.tif")
    assert (masks[0] == masks[1])[~near_threshold].all()


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


def test_openvino_model_converts_once_per_shape_and_keeps_the_torch_model_as_it_was(
    shipped: ModelBundle,
) -> None:
    model = shipped.model.cpu().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runner = OpenVinoChangeModel(model)
    generator = torch.Generator().manual_seed(0)
    before, after = (torch.randn(2, 13, 64, 64, generator=generator) for _ in range(2))
    logits = runner(before, after)
    single = runner(before[:1], after[:1])
    again = runner(before, after)
    with torch.inference_mode():
        expected = model(before, after)
    assert logits.shape == (2, 1, 64, 64) and single.shape == (1, 1, 64, 64)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(single, expected[:1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(again, logits)  # a request's output is copied, not aliased
    assert sorted(runner._requests) == [(1, 13, 64, 64), (2, 13, 64, 64)]
    assert runner.export_seconds > 0
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_converted_graph_is_kept_and_read_back_by_the_next_process(
    shipped: ModelBundle, own_cache: Path
) -> None:
    assert cache_folder() == own_cache
    model = shipped.model.cpu().eval()
    before, after = (torch.randn(1, 13, 64, 64, generator=torch.Generator().manual_seed(1))
                     for _ in range(2))
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
    """A model's logits times two (another graph, the same weights)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        return self.model(before, after) * 2


class BranchOnTheData(nn.Module):
    """A model whose forward branches on its input's values, which a trace cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        logits = self.conv(torch.cat([before, after], dim=1))
        return logits if (after - before).mean() > 0 else -logits


def test_a_model_that_does_not_convert_gets_a_clear_error() -> None:
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"before \(1, 1, 8, 8\) and after .* differ in shape"):
        OpenVinoChangeModel(BranchOnTheData())(x, torch.zeros(1, 1, 8, 9))
    with pytest.raises(RuntimeError, match="could not convert the model to OpenVINO.*'torch'"):
        OpenVinoChangeModel(BranchOnTheData())(x, x)


def test_openvino_runtime_refuses_what_it_cannot_run(
    shipped: ModelBundle, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(ValueError, match="'openvino' runs float32 on a CPU only"):
        TiledPredictor(shipped, device="cpu", precision="bf16", runtime="openvino")
    predictor = TiledPredictor(shipped, device="cpu", runtime="openvino")
    assert predictor.runtime == "openvino" and not predictor.channels_last
    code = groundbreak(["predict", "--before", "a", "--after", "b", "--out", "c", "--devices", "2",
                        "--runtime", "openvino"])
    assert code == 2 and "runs the model with torch" in capsys.readouterr().err
