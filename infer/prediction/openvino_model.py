"""The change model run by OpenVINO on a CPU (``runtime="openvino"`` of the predictor).

:class:`OpenVinoChangeModel` is called like the torch model (``model(before, after) -> logits``).
It converts the torch model the first time it sees an input shape (``openvino.convert_model``, a
few seconds) and runs an OpenVINO CPU model compiled for that shape from then on, in float32 (the
CPU plugin would otherwise run bf16 on CPUs that have it). A compiled model plans its
activations' memory once and reuses it for every window, where torch allocates and frees them
per forward pass; that is most of its lead on the 2-core machine (``bench/README.md``).
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import openvino


def openvino_available() -> bool:
    """Whether OpenVINO imports (the ``openvino`` extra)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def convert_to_openvino(
    model: nn.Module, before: torch.Tensor, after: torch.Tensor
) -> openvino.Model:
    """The OpenVINO graph of ``model(before, after)`` at these inputs' shapes.

    The model goes through ``torch.export`` first, which refuses a forward whose control flow
    depends on the data (a trace would keep one branch without a word)."""
    import openvino as ov

    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's chatter
            program = torch.export.export(model, (before, after))
            converted = ov.convert_model(program)
    finally:
        model.train(was_training)
    for port, shape in zip(converted.inputs, (before.shape, after.shape), strict=True):
        port.get_node().set_partial_shape(ov.PartialShape(list(shape)))
    converted.validate_nodes_and_infer_types()
    return converted


class OpenVinoChangeModel:
    """A torch change model run by OpenVINO on the CPU, converted and compiled per input shape.

    Args:
        model: The torch change model (float32, on the CPU). It is not modified.
        threads: OpenVINO's inference threads; default ``torch.get_num_threads()``.
    """

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        self.model = model
        self.threads = int(threads or torch.get_num_threads())
        self._requests: dict[tuple[int, ...], openvino.InferRequest] = {}
        self.export_seconds = 0.0
        """Time spent converting and compiling the model so far."""

    def __call__(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` of normalised float32 windows ``(B, C, H, W)``."""
        request = self._request_for(before, after)
        inputs = [
            np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            for x in (before, after)
        ]
        request.infer(inputs)
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    def _request_for(self, before: torch.Tensor, after: torch.Tensor) -> openvino.InferRequest:
        """The inference request for these inputs' shape, converting the model on first sight.

        Raises:
            RuntimeError: When the model does not convert to OpenVINO.
        """
        shape = tuple(before.shape)
        if shape in self._requests:
            return self._requests[shape]
        import openvino as ov

        started = time.perf_counter()
        try:
            converted = convert_to_openvino(self.model, before.cpu(), after.cpu())
        except Exception as err:  # the converter raises many kinds
            said = str(err).strip().splitlines()
            raise RuntimeError(
                f"could not convert the model to OpenVINO; run it with runtime 'torch' "
                f"({type(err).__name__}: {said[0][:200] if said else 'no message'})"
            ) from err
        config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",  # as torch: no bf16 where the CPU has it
        }
        compiled = ov.Core().compile_model(converted, "CPU", config)
        self._requests[shape] = compiled.create_infer_request()
        self.export_seconds += time.perf_counter() - started
        return self._requests[shape]
