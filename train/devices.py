"""Device names: checked where they are given, resolved to a torch device where a model runs.

The one home of device handling for training, evaluation and prediction. Torch is imported only
when a device is named, so a command's ``--help`` stays fast.
"""

from __future__ import annotations

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
