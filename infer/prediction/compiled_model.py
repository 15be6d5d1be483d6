"""What the predictor's compiled CPU runtimes (ONNX Runtime, OpenVINO) share.

A :class:`CompiledChangeModel` is called like the torch model (``model(before, after) ->
logits``). It compiles the torch model the first time it sees an input shape and keeps one
compiled model per shape from then on (a predictor sees one window shape for scenes of at least
a window); the time spent compiling is counted in ``export_seconds``, a model that does not
compile gets one clear error, and :meth:`release` gives a compiled model's memory back once a
night's pairs are scored.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


class CompileError(RuntimeError):
    """A model that does not compile for a runtime (torch runs it)."""


class CompiledChangeModel(ABC):
    """A torch change model run by another CPU runtime, compiled once per input shape.

    Args:
        model: The torch change model (float32, on the CPU). It is not modified.
        threads: The runtime's inference threads; default ``torch.get_num_threads()``.
    """

    compiling: ClassVar[str]
    """What compiling is called in an error, e.g. ``"export the model to ONNX"``."""

    def __init__(self, model: nn.Module, threads: int | None = None) -> None:
        self.model = model
        self.threads = int(threads or torch.get_num_threads())
        self._compiled: dict[tuple[int, ...], Any] = {}
        self.export_seconds = 0.0
        """Time spent compiling the model (export, conversion, session or plan) so far."""

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes a compiled model is held for."""
        return sorted(self._compiled)

    def __call__(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, H, W)`` of normalised float32 windows ``(B, C, H, W)``.

        Raises:
            ValueError: When the two dates' windows differ in shape.
            CompileError: When the model does not compile for this runtime.
        """
        shape = tuple(before.shape)
        if tuple(after.shape) != shape:
            raise ValueError(f"before {shape} and after {tuple(after.shape)} differ in shape")
        compiled = self._compiled.get(shape)
        if compiled is None:
            compiled = self._compiled[shape] = self._timed_compile(before.cpu(), after.cpu())
        inputs = [
            np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            for x in (before, after)
        ]
        return torch.from_numpy(self._run(compiled, inputs))

    def release(self) -> None:
        """Drop the compiled models and the working memory they planned; a later call compiles
        again (OpenVINO reads its converted graph back from the cache)."""
        self._compiled.clear()

    def _timed_compile(self, before: torch.Tensor, after: torch.Tensor) -> Any:
        """:meth:`_compile`, timed, its many kinds of failure turned into one CompileError."""
        started = time.perf_counter()
        try:
            compiled = self._compile(before, after)
        except Exception as err:  # exporters and converters raise many kinds
            said = _ANSI_CODES.sub("", str(err)).strip().splitlines()
            raise CompileError(
                f"could not {self.compiling}; run it with runtime 'torch' "
                f"({type(err).__name__}: {said[0][:200] if said else 'no message'})"
            ) from err
        self.export_seconds += time.perf_counter() - started
        return compiled

    @abstractmethod
    def _compile(self, before: torch.Tensor, after: torch.Tensor) -> Any:
        """The runtime's compiled model for these example inputs' shape."""

    @abstractmethod
    def _run(self, compiled: Any, inputs: list[np.ndarray]) -> np.ndarray:
        """Logits of ``[before, after]`` (float32, C-contiguous) from a compiled model; the
        returned array is the caller's own (not a view of the runtime's buffers)."""
