"""The change model run by ONNX Runtime on a CPU (``runtime="onnx"`` of the predictor).

:class:`OnnxChangeModel` is called like the torch model (``model(before, after) -> logits``).
It exports the torch model to ONNX the first time it sees an input shape (a few seconds, with
``torch.onnx.export(dynamo=True)``) and runs an ONNX Runtime session of it from then on. A
predictor sees one window shape for scenes of at least a window, so it exports once.
"""

from __future__ import annotations

import re
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import onnxruntime

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


class OnnxChangeModel:
    """A torch change model run by ONNX Runtime on the CPU, exported per input shape.

    Args:
        model: The torch change model (float32, on the CPU). It is not modified.
        threads: ONNX Runtime's intra-op threads; default ``torch.get_num_threads()``.
    """

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        self.model = model
        self.threads = int(threads or torch.get_num_threads())
        self._sessions: dict[tuple[int, ...], onnxruntime.InferenceSession] = {}
        self.export_seconds = 0.0
        """Time spent exporting the model and starting its sessions so far."""

    def __call__(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` of normalised float32 windows ``(B, C, H, W)``."""
        session = self._session_for(before, after)
        feeds = {
            name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            for name, x in zip(INPUT_NAMES, (before, after), strict=True)
        }
        return torch.from_numpy(session.run(None, feeds)[0])

    def _session_for(
        self, before: torch.Tensor, after: torch.Tensor
    ) -> onnxruntime.InferenceSession:
        """The session for these inputs' shape, exporting the model on first sight.

        Raises:
            RuntimeError: When the model does not export to ONNX.
        """
        shape = tuple(before.shape)
        if shape in self._sessions:
            return self._sessions[shape]
        import onnxruntime as ort

        started = time.perf_counter()
        try:
            graph = export_onnx(self.model, before.cpu(), after.cpu())
        except Exception as err:  # the exporter raises many kinds
            said = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
            raise RuntimeError(
                f"could not export the model to ONNX; run it with runtime 'torch' "
                f"({type(err).__name__}: {said[0][:200] if said else 'no message'})"
            ) from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        # Idle ORT threads would spin between windows and take the cores that read the next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._sessions[shape] = session
        self.export_seconds += time.perf_counter() - started
        return session
