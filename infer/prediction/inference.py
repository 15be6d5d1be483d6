"""Running the change model on batches of windows: device, precision, memory format, flip TTA.

Torch is imported where a torch model runs, not before: a device may be given by name
(``"cpu"``), and a compiled runtime's windows go through :func:`compiled_probabilities` in numpy.
Shared by the single-process :class:`~groundbreak.infer.prediction.predictor.TiledPredictor` and the
Lightning module of :mod:`groundbreak.infer.prediction.distributed`, so both compute the same
numbers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

if TYPE_CHECKING:
    import torch

ChangeModel = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
"""``model(before, after) -> logits``: a torch change model, or an ONNX Runtime or OpenVINO one."""
NumpyChangeModel = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``run(before, after) -> logits`` on float32 arrays: a compiled runtime's model
(:meth:`~groundbreak.infer.prediction.compiled_model.CompiledChangeModel.run`)."""
Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

CPU_PRECISION: Precision = "fp32"
"""What ``precision="auto"`` means on a CPU; on CUDA it means bf16 autocast. Measured with
``bench/predict_bench.py --size 2048`` on a 2-core AMD EPYC (AVX2, no native bf16): bf16
autocast ran the shipped model 8x slower than channels-last float32 (0.333 s vs 0.042 s a
256 px window)."""
CPU_CHANNELS_LAST = True
"""Whether ``channels_last=None`` means channels-last for the torch runtime on a CPU (on CUDA it
always does). Measured as above: 0.042 s a window against 0.050 s in the default format."""

Runtime = Literal["auto", "torch", "onnx", "openvino"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
"""What runs the model: ``"auto"`` (the default: :data:`CPU_RUNTIME`, or
``$GROUNDBREAK_CPU_RUNTIME``, for float32 on a CPU; torch elsewhere), ``"torch"``, ``"onnx"``
(float32 on a CPU, the ``onnx`` extra: exports the model, then runs it with ONNX Runtime) or
``"openvino"`` (float32 on a CPU, the ``openvino`` extra: converts the model, then runs it with
OpenVINO)."""

CPU_RUNTIME: Runtime = "openvino"
"""What ``runtime="auto"`` runs float32 on a CPU with, when its package is installed (else
torch); ``$GROUNDBREAK_CPU_RUNTIME`` (torch, onnx, openvino) overrides it for every command.
OpenVINO: on the 2-core AMD EPYC (AVX2) the 4096^2 COG night of ``bench/country_bench.py`` with
the default ensemble took 27.0-30.6 s with it against 37.5-48.5 s with torch (the model at 76-95
% of the matmul peak against 34-54 %) and the 4096^2 ``.SAFE`` night 53.8 s against 67.7 s. Its
compiled model keeps its planned activations (148 MB) between windows, so the night and ``rank``
give them back once the pairs are scored (:meth:`TiledPredictor.release_runtime`); on a full
10980^2 ``.SAFE`` pair ``nightly`` then peaked at 1851 MB (1849 MB with a watch-list; torch 1842
MB) and ``predict`` and ``rank`` at 1817 and 1840 MB, every COG row at 1678-1708 MB: under the
2 GB goal (``bench/README.md``, "OpenVINO the CPU default"). The first process to run a bundle
at a window size converts it (4-6 s, kept in a cache folder); later processes read the graph back
and never import torch (the 4096^2 COG night's start 0.7-0.9 s instead of 2.8-3.3 s, its peak
about 350 MB lower: "A night without torch"). Alone, ONNX Runtime ran a 256 px window of the
U-Net faster than torch, but inside the predictor it lost (4096^2 pairs, ``python
bench/predict_bench.py --size 4096 --runtimes torch,onnx``: torch 28.4 and 25.9 s, ONNX Runtime
32.7 and 31.0 s)."""
CPU_RUNTIME_ENV = "GROUNDBREAK_CPU_RUNTIME"


CPU_FORWARD_BATCH = 1
"""Windows per forward pass on a CPU: larger batches are no faster there and each 512^2 window
of the default model holds ~0.3 GB of activations."""


def device_type(device: torch.device | str) -> str:
    """``"cpu"``, ``"cuda"``...: the type of a torch device or of a device's name."""
    return device.split(":")[0] if isinstance(device, str) else device.type


def forward_batch_for(device: torch.device | str, batch_size: int) -> int:
    """Windows per forward pass: the whole batch on an accelerator, CPU_FORWARD_BATCH on a CPU."""
    return batch_size if device_type(device) != "cpu" else min(batch_size, CPU_FORWARD_BATCH)


def autocast_dtype(device: torch.device | str, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for a device and precision choice, or None for plain float32 (torch is
    imported only for bf16)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto":
        precision = "bf16" if device_type(device) == "cuda" else CPU_PRECISION
    if precision != "bf16":
        return None
    import torch

    return torch.bfloat16


def check_runtime(
    device: torch.device | str, runtime: Runtime, autocast: torch.dtype | None
) -> Runtime:
    """The runtime that will run the model: ``runtime`` itself when it can run on this device
    with this autocast, or what ``"auto"`` means here (:data:`CPU_RUNTIME`).

    Raises:
        ValueError: For an unknown runtime (or ``$GROUNDBREAK_CPU_RUNTIME``), or ``"onnx"`` or
            ``"openvino"`` where it cannot run (CUDA, bf16, its package not installed).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return _auto_runtime(device, autocast)
    if runtime != "torch" and (device_type(device) != "cpu" or autocast is not None):
        raise ValueError(f"runtime {runtime!r} runs float32 on a CPU only; use runtime 'torch'")
    if runtime != "torch" and not runtime_available(runtime):
        extra = "onnx" if runtime == "onnx" else "openvino"
        needs = "onnxruntime, onnx and onnxscript" if runtime == "onnx" else "OpenVINO"
        raise ValueError(f"runtime {runtime!r} needs {needs}: pip install 'groundbreak[{extra}]'")
    return runtime


def _auto_runtime(device: torch.device | str, autocast: torch.dtype | None) -> Runtime:
    """What ``"auto"`` runs on: torch off the CPU or with autocast; else
    ``$GROUNDBREAK_CPU_RUNTIME`` when set, or :data:`CPU_RUNTIME` when its package is
    installed, or torch."""
    if device_type(device) != "cpu" or autocast is not None:
        return "torch"
    chosen = os.environ.get(CPU_RUNTIME_ENV, "").strip()
    if chosen:
        if chosen == "auto" or chosen not in RUNTIMES:
            raise ValueError(
                f"${CPU_RUNTIME_ENV} is {chosen!r}; expected torch, onnx or openvino"
            )
        return check_runtime(device, chosen, autocast)  # type: ignore[arg-type]
    return CPU_RUNTIME if CPU_RUNTIME == "torch" or runtime_available(CPU_RUNTIME) else "torch"


def runtime_available(runtime: Runtime) -> bool:
    """Whether ``runtime``'s package is installed (torch always is)."""
    if runtime == "onnx":
        from groundbreak.infer.prediction.onnx_model import onnx_runtime_available

        return onnx_runtime_available()
    if runtime == "openvino":
        from groundbreak.infer.prediction.openvino_model import openvino_available

        return openvino_available()
    return True


def use_channels_last(device: torch.device | str, channels_last: bool | None = None) -> bool:
    """Whether to run in channels-last memory format (``None`` = the device's default)."""
    if channels_last is not None:
        return channels_last
    return device_type(device) == "cuda" or CPU_CHANNELS_LAST


def predict_probabilities(
    model: ChangeModel,
    before: torch.Tensor,
    after: torch.Tensor,
    *,
    tta: bool = False,
    autocast: torch.dtype | None = None,
    channels_last: bool = False,
    forward_batch: int | None = None,
) -> torch.Tensor:
    """Change probabilities ``(B, H, W)`` float32 of normalised windows ``(B, C, H, W)``.

    With ``tta``, the average of the probabilities of the identity, the horizontal flip and the
    vertical flip (each flipped back). ``autocast`` runs the model under ``torch.autocast`` with
    that dtype. ``forward_batch`` caps the windows per forward pass (activation memory grows
    with it); None = all at once.
    """
    import torch

    step = forward_batch or before.shape[0]
    if step < before.shape[0]:
        return torch.cat(
            [
                predict_probabilities(
                    model,
                    before[i : i + step],
                    after[i : i + step],
                    tta=tta,
                    autocast=autocast,
                    channels_last=channels_last,
                )
                for i in range(0, before.shape[0], step)
            ]
        )
    flips: list[tuple[int, ...]] = [()]
    if tta:
        flips += [(-1,), (-2,)]
    total = torch.zeros(before.shape[0], *before.shape[-2:], device=before.device)
    for dims in flips:
        b, a = (before.flip(dims), after.flip(dims)) if dims else (before, after)
        if channels_last:
            b = b.contiguous(memory_format=torch.channels_last)
            a = a.contiguous(memory_format=torch.channels_last)
        context = (
            torch.autocast(device_type=before.device.type, dtype=autocast)
            if autocast is not None
            else contextlib.nullcontext()
        )
        with context:
            logits = model(b, a)
        probability = torch.sigmoid(logits.float())[:, 0]
        total += probability.flip(dims) if dims else probability
    return total / len(flips)


def compiled_probabilities(
    run: NumpyChangeModel,
    before: np.ndarray,
    after: np.ndarray,
    *,
    tta: bool = False,
    forward_batch: int | None = None,
) -> np.ndarray:
    """:func:`predict_probabilities` for a compiled runtime, in numpy (no torch): change
    probabilities ``(B, H, W)`` float32 of normalised float32 windows ``(B, C, H, W)``, ``run``
    giving the logits ``(b, 1, H, W)`` of ``forward_batch`` windows at a time (None: all)."""
    step = forward_batch or before.shape[0]
    flips: list[int | None] = [None, -1, -2] if tta else [None]
    total = np.zeros((before.shape[0], *before.shape[-2:]), dtype=np.float32)
    for first in range(0, before.shape[0], step):
        windows = slice(first, first + step)
        for axis in flips:
            b, a = before[windows], after[windows]
            if axis is not None:
                b, a = np.flip(b, axis), np.flip(a, axis)
            probability = sigmoid(run(b, a))[:, 0]
            total[windows] += probability if axis is None else np.flip(probability, axis)
    return total / np.float32(len(flips))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function of float32 logits, in float32, without overflow."""
    small = np.exp(-np.abs(logits))
    return np.where(logits >= 0, 1 / (1 + small), small / (1 + small)).astype(np.float32)
