"""The default runtime ``auto``: :data:`CPU_RUNTIME` (OpenVINO) for float32 on a CPU, torch
elsewhere, ``$GROUNDBREAK_CPU_RUNTIME`` over both; what it chose is in the night's log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.prediction import inference
from groundbreak.infer.prediction.inference import CPU_RUNTIME_ENV, check_runtime
from groundbreak.infer.prediction.openvino_model import openvino_available
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import default_bundle_path, load_bundle

CPU = torch.device("cpu")


@pytest.fixture
def no_pin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``auto`` as a user gets it (the suite pins torch), converting into this test's cache."""
    monkeypatch.delenv(CPU_RUNTIME_ENV, raising=False)
    monkeypatch.setenv("GROUNDBREAK_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.usefixtures("no_pin")
def test_auto_is_the_cpu_runtime_in_float32_when_installed_else_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert inference.CPU_RUNTIME == "openvino"
    assert check_runtime(CPU, "auto", None) == ("openvino" if openvino_available() else "torch")
    monkeypatch.setattr(inference, "CPU_RUNTIME", "torch")
    assert check_runtime(CPU, "auto", None) == "torch"
    monkeypatch.setattr(inference, "CPU_RUNTIME", "openvino")
    assert check_runtime(CPU, "auto", torch.bfloat16) == "torch"  # OpenVINO runs float32 only
    assert check_runtime(torch.device("cuda"), "auto", None) == "torch"
    monkeypatch.setattr(inference, "runtime_available", lambda runtime: runtime == "torch")
    assert check_runtime(CPU, "auto", None) == "torch"  # the extra not installed


@pytest.mark.usefixtures("no_pin")
def test_the_environment_variable_chooses_for_auto_and_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inference, "CPU_RUNTIME", "openvino")
    monkeypatch.setenv(CPU_RUNTIME_ENV, "torch")
    assert check_runtime(CPU, "auto", None) == "torch"  # the variable over the default
    monkeypatch.setenv(CPU_RUNTIME_ENV, "tensorflow")
    with pytest.raises(ValueError, match=r"\$GROUNDBREAK_CPU_RUNTIME is 'tensorflow'"):
        check_runtime(CPU, "auto", None)
    monkeypatch.setenv(CPU_RUNTIME_ENV, "openvino")
    monkeypatch.setattr(inference, "runtime_available", lambda runtime: runtime == "torch")
    with pytest.raises(ValueError, match=r"needs OpenVINO: pip install 'groundbreak\[openvino\]'"):
        check_runtime(CPU, "auto", None)


@pytest.mark.skipif(not openvino_available(), reason="the openvino extra is not installed")
@pytest.mark.usefixtures("no_pin")
def test_a_night_left_to_auto_runs_what_the_variable_names_and_says_so(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CPU_RUNTIME_ENV, "openvino")
    root = fixtures_dir / "oscd" / "beirut"
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"pair_id,before,after\nbeirut,{root / 'imgs_1'},{root / 'imgs_2'}\n")
    state = tmp_path / "state"
    args = ["nightly", "--pairs", str(pairs), "--state", str(state), "--run-id", "n1",
            "--device", "cpu", "--no-report"]
    assert groundbreak(args) == 0
    events = [json.loads(line) for line in (state / "runs" / "n1" / "nightly.log.jsonl").open()]
    ready = [e for e in events if e["event"] == "predictor_ready"]
    assert [(e["device"], e["runtime"]) for e in ready] == [("cpu", "openvino")]
    assert list((tmp_path / "cache" / "openvino").iterdir())  # the converted graph was kept


class SignChecked(nn.Module):
    """A change model whose forward branches on its input's values, which torch.export (so
    OpenVINO's conversion) refuses; the branch taken never changes the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        logits = self.model(before, after)
        return logits if bool(torch.isfinite(logits).all()) else torch.nan_to_num(logits)


@pytest.mark.skipif(not openvino_available(), reason="the openvino extra is not installed")
@pytest.mark.usefixtures("no_pin")
def test_auto_runs_torch_when_the_model_does_not_convert(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    shipped = load_bundle(default_bundle_path())
    bundle = shipped.with_model(SignChecked(shipped.model))
    root = fixtures_dir / "oscd" / "beirut"

    def predict(runtime: str, out: str) -> tuple[TiledPredictor, np.ndarray]:
        predictor = TiledPredictor(bundle, device="cpu", runtime=runtime)  # type: ignore[arg-type]
        result = predictor.predict_pair(
            PairSpec("beirut", root / "imgs_1", root / "imgs_2").open(), tmp_path / out)
        with rasterio.open(result.probability_path) as src:
            return predictor, src.read(1)

    with pytest.warns(RuntimeWarning, match="runtime 'auto' runs the model with torch: could "
                      "not convert the model to OpenVINO"):
        auto, probability = predict("auto", "auto")
    assert auto.runtime == "torch" and auto.runner is auto.model
    _, expected = predict("torch", "torch")
    np.testing.assert_allclose(probability, expected, atol=1e-5)  # memory formats differ
    with pytest.raises(RuntimeError, match="could not convert the model to OpenVINO"):
        predict("openvino", "openvino")  # asked for by name: no fallback
