"""Running the change model on batches of windows: device, precision, memory format, flip TTA.

Shared by the single-process :class:`~groundbreak.infer.predictor.TiledPredictor` and the
Lightning module of :mod:`groundbreak.infer.distributed`, so both compute the same numbers.
"""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

import torch
from torch import nn

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

CPU_PRECISION: Precision = "fp32"
"""What ``precision="auto"`` means on a CPU (bf16 autocast was slower on the CPUs measured, see
``bench/predict_bench.py``); on CUDA it means bf16 autocast."""
CPU_CHANNELS_LAST = False
"""Whether ``channels_last=None`` means channels-last on a CPU (measured, as above).

On CUDA it does."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device`` reads it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available")
    return resolved


def autocast_dtype(device: torch.device, precision: Precision = "auto") -> torch.dtype | None:
    """The autocast dtype for a device and precision choice, or None for plain float32."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}"
        )
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else CPU_PRECISION
    return torch.bfloat16 if precision == "bf16" else None


def use_channels_last(device: torch.device, channels_last: bool | None = None) -> bool:
    """Whether to run in channels-last memory format (``None`` = the device's default)."""
    if channels_last is not None:
        return channels_last
    return device.type == "cuda" or CPU_CHANNELS_LAST


def predict_probabilities(
    model: nn.Module,
    before: torch.Tensor,
    after: torch.Tensor,
    *,
    tta: bool = False,
    autocast: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Change probabilities ``(B, H, W)`` float32 of normalised windows ``(B, C, H, W)``.

    With ``tta``, the average of the probabilities of the identity, the horizontal flip and the
    vertical flip (each flipped back). ``autocast`` runs the model under ``torch.autocast`` with
    that dtype.
    """
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
