"""What the predictor's compiled CPU runtimes (ONNX Runtime, OpenVINO) share.

A :class:`CompiledChangeModel` runs numpy windows (:meth:`~CompiledChangeModel.run`: the
predictor's path, which needs no torch), or is called like the torch model (``model(before,
after) -> logits``). It compiles the torch model the first time it sees an input shape and keeps
one compiled model per shape from then on (a predictor sees one window shape for scenes of at
least a window); the time spent compiling is counted in ``export_seconds``, a model that does not
compile gets one clear error, and :meth:`release` gives a compiled model's memory back once a
night's pairs are scored.
"""

from __future__ import annotations

import os
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Union, cast

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")

ModelSource = Union["nn.Module", Callable[[], "nn.Module"]]
"""A torch model, or a function that makes it when it is first needed."""


def default_threads() -> int | None:
    """A runtime's inference threads: torch's when torch is imported (what it was told, or its
    default), else ``$OMP_NUM_THREADS`` when set, else None (the runtime's own choice: one a
    physical core)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    told = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(told) if told.isdigit() and int(told) > 0 else None


def _is_module(model: object) -> bool:
    """Whether ``model`` is a torch module (torch is imported if it is one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


class CompileError(RuntimeError):
    """A model that does not compile for a runtime (torch runs it)."""


class CompiledChangeModel(ABC):
    """A torch change model run by another CPU runtime, compiled once per input shape.

    Args:
        model: The torch change model (float32, on the CPU; it is not modified), or a function
            that makes it, called the first time the model is needed (a runtime that reads a
            kept graph back may never need it).
        threads: The runtime's inference threads; default :func:`default_threads`.
    """

    compiling: ClassVar[str]
    """What compiling is called in an error, e.g. ``"export the model to ONNX"``."""

    def __init__(self, model: ModelSource, threads: int | None = None) -> None:
        self._model: nn.Module | None = None
        self._make_model: Callable[[], nn.Module] | None = None
        if _is_module(model):
            self._model = cast("nn.Module", model)
        else:
            self._make_model = cast("Callable[[], nn.Module]", model)
        self.threads = threads or default_threads()
        self._compiled: dict[tuple[int, ...], Any] = {}
        self.export_seconds = 0.0
        """Time spent compiling the model (export, conversion, session or plan) so far."""

    @property
    def model(self) -> nn.Module:
        """The torch model, made the first time it is needed."""
        if self._model is None:
            assert self._make_model is not None  # one of the two is set at construction
            self._model = self._make_model()
        return self._model

    @property
    def compiled_shapes(self) -> list[tuple[int, ...]]:
        """The input shapes a compiled model is held for."""
        return sorted(self._compiled)

    def run(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Logits ``(B, 1, H, W)`` float32 of normalised windows ``(B, C, H, W)`` (numpy; no
        torch unless the model must be compiled for this shape).

        Raises:
            ValueError: When the two dates' windows differ in shape.
            CompileError: When the model does not compile for this runtime.
        """
        shape = tuple(before.shape)
        if tuple(after.shape) != shape:
            raise ValueError(f"before {shape} and after {tuple(after.shape)} differ in shape")
        compiled = self._compiled.get(shape)
        if compiled is None:
            compiled = self._compiled[shape] = self._timed_compile(shape)
        inputs = [np.ascontiguousarray(x, dtype=np.float32) for x in (before, after)]
        return self._run(compiled, inputs)

    def __call__(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """:meth:`run` on torch tensors, as the torch model is called."""
        import torch

        arrays = [x.detach().cpu().numpy() for x in (before, after)]
        return torch.from_numpy(self.run(*arrays))

    def release(self) -> None:
        """Drop the compiled models and the working memory they planned; a later call compiles
        again (OpenVINO reads its converted graph back from the cache)."""
        self._compiled.clear()

    def _timed_compile(self, shape: tuple[int, ...]) -> Any:
        """:meth:`_compile`, timed, its many kinds of failure turned into one CompileError."""
        started = time.perf_counter()
        try:
            compiled = self._compile(shape)
        except Exception as err:  # exporters and converters raise many kinds
            said = _ANSI_CODES.sub("", str(err)).strip().splitlines()
            raise CompileError(
                f"could not {self.compiling}; run it with runtime 'torch' "
                f"({type(err).__name__}: {said[0][:200] if said else 'no message'})"
            ) from err
        self.export_seconds += time.perf_counter() - started
        return compiled

    @abstractmethod
    def _compile(self, shape: tuple[int, ...]) -> Any:
        """The runtime's compiled model for inputs of ``shape`` (both dates')."""

    @abstractmethod
    def _run(self, compiled: Any, inputs: list[np.ndarray]) -> np.ndarray:
        """Logits of ``[before, after]`` (float32, C-contiguous) from a compiled model; the
        returned array is the caller's own (not a view of the runtime's buffers)."""
