"""Device names: checked where they are given, resolved to a torch device where a model runs.

The one home of device handling for training, evaluation and prediction. Torch is imported only
when a device is named, so a command's ``--help`` stays fast, and not at all where the answer is
plain (:func:`resolve_device_name`: the CPU asked for, or ``auto`` on a Linux machine without a
GPU driver), so a prediction that runs a kept OpenVINO graph never imports it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from groundbreak.datasets.errors import InputError

if TYPE_CHECKING:
    import torch


def check_device_name(name: object) -> str:
    """``name`` when it is ``auto`` or a device torch knows; ValueError (one line) otherwise."""
    if name == "auto":
        return name
    if not isinstance(name, str) or not name:
        raise ValueError(f"device must be a name such as auto, cpu or cuda:0, got {name!r}")
    import torch  # only when a device is named

    try:
        torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N, ...)") from err
    return name


def resolve_device(name: str) -> torch.device:
    """The device a name stands for: ``auto`` is CUDA when available, else the CPU.

    Raises:
        InputError: (a ``ValueError``) For a name torch does not know, or CUDA asked for where
            it is not available.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(check_device_name(name))
    except ValueError as err:
        raise InputError(None, str(err)) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(None, f"device {name!r} requested but CUDA is not available")
    return device


GPU_DRIVER_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")
"""Device nodes of the drivers through which torch sees a GPU on Linux (NVIDIA's, ROCm's, WSL's
GPU paravirtualisation); where none exists, ``torch.cuda.is_available()`` is False."""


def gpu_driver_absent() -> bool:
    """Whether this is a Linux machine on which torch can see no GPU (no driver device node), known
    without importing torch; False where it cannot be told so (other systems)."""
    return sys.platform.startswith("linux") and not any(Path(n).exists() for n in GPU_DRIVER_NODES)


def resolve_device_name(name: str) -> str:
    """The name of the device ``name`` stands for (``"cpu"``, ``"cuda"``, ``"cuda:1"``...), as
    :func:`resolve_device` resolves it; without importing torch for ``cpu``, and for ``auto``
    on a machine whose torch can see no GPU (:func:`gpu_driver_absent`) unless torch is already
    imported.

    Raises:
        InputError: As :func:`resolve_device`.
    """
    if name == "cpu" or (name == "auto" and "torch" not in sys.modules and gpu_driver_absent()):
        return "cpu"
    return str(resolve_device(name))
