"""The predictor's CPU runtimes besides torch (ONNX Runtime, OpenVINO): the same numbers as torch
on the shipped model and a real pair, the model exported once per window shape, clear refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.prediction.onnx_model import OnnxChangeModel, onnx_runtime_available
from groundbreak.infer.prediction.openvino_model import OpenVinoChangeModel, openvino_available
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.infer.sites.ranking import rank_pairs
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle

RUNNERS = {"onnx": OnnxChangeModel, "openvino": OpenVinoChangeModel}


@pytest.fixture(
    params=[
        pytest.param("onnx", marks=pytest.mark.skipif(
            not onnx_runtime_available(), reason="the onnx extra is not installed")),
        pytest.param("openvino", marks=pytest.mark.skipif(
            not openvino_available(), reason="the openvino extra is not installed")),
    ]
)
def runtime(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each runtime in turn (OpenVINO keeping its converted graphs in this test's folder)."""
    monkeypatch.setenv("GROUNDBREAK_CACHE_DIR", str(tmp_path / "cache"))
    return request.param


@pytest.fixture(scope="module")
def shipped() -> ModelBundle:
    return load_bundle(default_bundle_path())


def read_band(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_prediction_matches_torch_on_a_real_pair(
    runtime: str, shipped: ModelBundle, fixtures_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    root = fixtures_dir / "oscd" / "beirut"
    torch_result = TiledPredictor(shipped, device="cpu", runtime="torch").predict_pair(
        PairSpec("beirut", root / "imgs_1", root / "imgs_2").open(), tmp_path / "torch"
    )
    args = ["predict", "--before", str(root / "imgs_1"), "--after", str(root / "imgs_2"),
            "--out", str(tmp_path / runtime), "--device", "cpu", "--runtime", runtime]
    assert groundbreak(args) == 0
    assert str(tmp_path / runtime / "probability.tif") in capsys.readouterr().out

    expected = read_band(torch_result.probability_path)
    got = read_band(tmp_path / runtime / "probability.tif")
    assert got.shape == expected.shape == (96, 96)
    assert np.isfinite(got).all() and 0.0 < got.max() <= 1.0
    np.testing.assert_allclose(got, expected, atol=1e-4)
    near_threshold = np.abs(expected - shipped.threshold) < 1e-4
    masks = read_band(torch_result.mask_path), read_band(tmp_path / runtime / "mask.tif")
    assert (masks[0] == masks[1])[~near_threshold].all()


def test_the_model_is_exported_once_per_shape_and_the_torch_model_kept_as_it_was(
    runtime: str, shipped: ModelBundle
) -> None:
    model = shipped.model.cpu().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    runner = RUNNERS[runtime](model)
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
    torch.testing.assert_close(again, logits)  # an output is copied, not aliased
    assert runner.compiled_shapes == [(1, 13, 64, 64), (2, 13, 64, 64)]
    assert runner.export_seconds > 0
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_released_runtime_compiles_again_for_the_next_pair(
    runtime: str, shipped: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    root = fixtures_dir / "oscd" / "beirut"
    predictor = TiledPredictor(shipped, device="cpu", runtime=runtime)  # type: ignore[arg-type]
    runner = predictor.runner
    assert isinstance(runner, RUNNERS[runtime])
    first = predictor.predict_pair(PairSpec("beirut", root / "imgs_1", root / "imgs_2").open(),
                                   tmp_path / "first")
    shapes, compiled = runner.compiled_shapes, runner.export_seconds
    predictor.release_runtime()
    assert shapes and runner.compiled_shapes == []
    again = predictor.predict_pair(PairSpec("beirut", root / "imgs_1", root / "imgs_2").open(),
                                   tmp_path / "again")
    assert runner.compiled_shapes == shapes and runner.export_seconds > compiled
    np.testing.assert_array_equal(read_band(again.probability_path),
                                  read_band(first.probability_path))


def test_rank_gives_the_compiled_model_back_before_its_outputs(
    runtime: str, shipped: ModelBundle, fixtures_dir: Path, tmp_path: Path
) -> None:
    root = fixtures_dir / "oscd" / "beirut"
    predictor = TiledPredictor(shipped, device="cpu", runtime=runtime)  # type: ignore[arg-type]
    result = rank_pairs([PairSpec("beirut", root / "imgs_1", root / "imgs_2")], tmp_path / "run",
                        shipped, predictor=predictor, write_report=False)
    assert result.failures.empty and predictor.runner.export_seconds > 0  # type: ignore[union-attr]
    assert predictor.runner.compiled_shapes == []  # type: ignore[union-attr]


class BranchOnTheData(nn.Module):
    """A model whose forward branches on its input's values, which torch.export refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 1)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        logits = self.conv(torch.cat([before, after], dim=1))
        return logits if (after - before).mean() > 0 else -logits


def test_a_model_that_does_not_export_gets_a_clear_error(runtime: str) -> None:
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(RuntimeError,
                       match="could not (export|convert) the model to (ONNX|OpenVINO).*'torch'"):
        RUNNERS[runtime](BranchOnTheData())(x, x)


def test_a_runtime_refuses_what_it_cannot_run(
    runtime: str, shipped: ModelBundle, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(ValueError, match=f"runtime '{runtime}' runs float32 on a CPU only"):
        TiledPredictor(shipped, device="cpu", precision="bf16", runtime=runtime)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        TiledPredictor(shipped, device="cpu", runtime="tensorrt")  # type: ignore[arg-type]
    predictor = TiledPredictor(shipped, device="cpu", runtime=runtime)  # type: ignore[arg-type]
    assert predictor.runtime == runtime and not predictor.channels_last
    code = groundbreak(["predict", "--before", "a", "--after", "b", "--out", "c", "--devices", "2",
                        "--runtime", runtime])
    assert code == 2 and "runs the model with torch" in capsys.readouterr().err
