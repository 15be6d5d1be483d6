"""The change model run by ONNX Runtime on a CPU (``runtime="onnx"`` of the predictor).

:class:`OnnxChangeModel` is called like the torch model (``model(before, after) -> logits``).
It exports the torch model to ONNX the first time it sees an input shape (a few seconds, with
``torch.onnx.export(dynamo=True)``) and runs an ONNX Runtime session of it from then on. A
predictor sees one window shape for scenes of at least a window, so it exports once.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from groundbreak.infer.prediction.compiled_model import CompiledChangeModel

if TYPE_CHECKING:
    import onnxruntime
    import torch
    from torch import nn

INPUT_NAMES = ("before", "after")


def onnx_runtime_available() -> bool:
    """Whether ONNX Runtime and the exporter's packages (onnx, onnxscript) import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model: nn.Module, before: torch.Tensor, after: torch.Tensor) -> bytes:
    """The serialised ONNX graph of ``model(before, after)`` at these inputs' shapes."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
            program = torch.onnx.export(
                model, (before, after), input_names=list(INPUT_NAMES), dynamo=True,
                verbose=False,
            )
    finally:
        model.train(was_training)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()


class OnnxChangeModel(CompiledChangeModel):
    """A torch change model run by ONNX Runtime on the CPU, exported per input shape.

    Args:
        model: The torch change model (float32, on the CPU). It is not modified.
        threads: ONNX Runtime's intra-op threads; default
            :func:`~groundbreak.infer.prediction.compiled_model.default_threads`.
    """

    compiling = "export the model to ONNX"

    def _compile(self, shape: tuple[int, ...]) -> onnxruntime.InferenceSession:
        """An ONNX Runtime session of the model exported at inputs of ``shape``."""
        import onnxruntime as ort
        import torch

        # two distinct example tensors: one tensor passed twice would export one input
        graph = export_onnx(self.model, torch.zeros(shape), torch.zeros(shape))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or 0  # 0: ONNX Runtime's own choice
        # Idle ORT threads would spin between windows and take the cores that read the next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _run(self, compiled: onnxruntime.InferenceSession, inputs: list[np.ndarray]) -> np.ndarray:
        """The session's logits (a new array)."""
        return compiled.run(None, dict(zip(INPUT_NAMES, inputs, strict=True)))[0]
