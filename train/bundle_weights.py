"""The weights of a model bundle (``model.safetensors``): checked from the header before the
model is built, and tensor by tensor after.

The header check refuses weights that do not fit the architecture ``model.json`` records (decoder
widths, the head, the first convolution of an FC network) and any tensor that is not floating
point, without allocating the model; the tensor check refuses missing, extra, misshapen and
non-finite tensors. No pickle is ever read. The header check imports no torch.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from groundbreak.datasets.errors import InputError

if TYPE_CHECKING:
    import torch

    from groundbreak.train.model import ChangeModel

_LISTED = 5  # how many offending tensor names an error message lists
_MAX_HEADER_BYTES = 100_000_000
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I64", "I32"}


def read_weights_header(weights_path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file holds, ``{name: {"dtype", "shape"}}``, from its header only.

    Raises:
        InputError: When the file is not a readable safetensors file.
    """
    weights_path = Path(weights_path)
    try:
        with open(weights_path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            (length,) = struct.unpack("<Q", handle.read(8).ljust(8, b"\xff"))
            if length > min(size - 8, _MAX_HEADER_BYTES):
                raise ValueError(f"header of {length} bytes in a {size} byte file")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise InputError(weights_path, f"cannot be read as safetensors ({err})") from err
    if not isinstance(header, dict):
        raise InputError(weights_path, "cannot be read as safetensors (header is not an object)")
    header.pop("__metadata__", None)
    tensors = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
            raise InputError(weights_path, f"cannot be read as safetensors (entry {name!r})")
        tensors[name] = {"dtype": entry.get("dtype"), "shape": entry["shape"]}
    return tensors


def check_weights_header(weights_path: Path, architecture: Mapping[str, Any]) -> None:
    """Check the recorded architecture against the weights' shapes and dtypes, from the header.

    Runs before the model is built: the decoder widths, the head and the tensor dtypes must
    match the file, so a ``model.json`` that asks for more than its weights hold is refused
    without allocating anything.
    """
    tensors = read_weights_header(weights_path)
    wrong_dtype = [
        f"{name} ({t['dtype']})" for name, t in tensors.items() if not _header_dtype_ok(name, t)
    ]
    if wrong_dtype:
        listed = ", ".join(wrong_dtype[:_LISTED]) + (", ..." if len(wrong_dtype) > _LISTED else "")
        raise InputError(
            weights_path,
            f"{len(wrong_dtype)} tensor(s) of an unsupported dtype (weights must be floating "
            f"point, F16/BF16/F32/F64): {listed}",
        )
    _check_header(weights_path, tensors, architecture)


def _check_header(
    weights_path: Path, tensors: Mapping[str, Any], architecture: Mapping[str, Any]
) -> None:
    """The widths a record asks for against the tensors' shapes (an ensemble's per member,
    from its ``members.<i>.`` tensors)."""
    network = architecture.get("network", "unet")
    if network == "ensemble":
        for i, member in enumerate(architecture["members"]):
            prefix = f"members.{i}."
            own = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
            _check_header(weights_path, own, member)
        return
    if network != "unet":
        _check_fc_header(weights_path, tensors, architecture)
        return
    channels = list(architecture["decoder_channels"])
    # (tensor, axis, size): the output widths of each decoder block and the head's input width.
    expected = [("segmentation_head.0.weight", 1, channels[-1])]
    for i, width in enumerate(channels):
        expected += [(f"decoder.blocks.{i}.conv{k}.0.weight", 0, width) for k in (1, 2)]
    problems = []
    for name, axis, size in expected:
        shape = tensors.get(name, {}).get("shape") or []
        if len(shape) <= axis:
            problems.append(f"{name} is missing")
        elif shape[axis] != size:
            problems.append(f"{name} has shape {tuple(shape)}, not {size} channels on axis {axis}")
    if problems:
        listed = "; ".join(problems[:_LISTED]) + ("; ..." if len(problems) > _LISTED else "")
        raise InputError(
            weights_path,
            f"does not fit the architecture in model.json (decoder_channels {channels}): {listed}",
        )


def _check_fc_header(
    weights_path: Path, tensors: Mapping[str, Any], architecture: Mapping[str, Any]
) -> None:
    """The first convolution of an FC network must read the recorded bands (both dates for
    early fusion); its other layers are fixed, and checked tensor by tensor after the build."""
    dates = 2 if architecture["fusion"] == "early" else 1
    name = "encoder.0.0.0.weight" if architecture["network"] == "fc" else "encoder.0.0.conv1.weight"
    shape = tensors.get(name, {}).get("shape") or []
    size = dates * architecture["in_channels"]
    if len(shape) < 2 or shape[1] != size:
        found = "is missing" if len(shape) < 2 else f"has shape {tuple(shape)}"
        raise InputError(
            weights_path,
            f"does not fit the architecture in model.json ({architecture['network']} "
            f"{architecture['fusion']}, {architecture['in_channels']} bands): {name} {found}, "
            f"not {size} input channels",
        )


def _header_dtype_ok(name: str, entry: Mapping[str, Any]) -> bool:
    """Floating-point weights; integer batch-norm counters."""
    allowed = _INT_DTYPES if name.endswith("num_batches_tracked") else _FLOAT_DTYPES
    return entry["dtype"] in allowed


def read_weights(weights_path: Path, model: ChangeModel) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` and check its tensors against the model's state dict."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise InputError(weights_path, f"cannot be read as safetensors ({err})") from err
    check_state_dict(state, model, weights_path, "the architecture in model.json")
    return state


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    model: ChangeModel,
    source: str | os.PathLike[str],
    what: str = "the model's architecture",
) -> None:
    """Raise an InputError naming ``source`` when tensors are missing, extra or misshapen.

    Floating-point tensors must be floating point (not integer, bool or complex) and finite;
    integer buffers (batch-norm counters) must be integers. The message lists a few of each
    kind, so a mismatched architecture is easy to spot.
    """
    import torch

    expected = model.state_dict()
    missing = [name for name in expected if name not in state]
    extra = [name for name in state if name not in expected]
    wrong = [
        f"{name} {tuple(state[name].shape)} != {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    wrong_dtype = [
        f"{name} ({state[name].dtype})"
        for name, tensor in expected.items()
        if name in state and not _same_kind(state[name], tensor)
    ]
    non_finite = [
        name
        for name, tensor in state.items()
        if name in expected and tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    problems = []
    for label, names in (
        ("missing", missing),
        ("unexpected", extra),
        ("wrong shape", wrong),
        ("wrong dtype", wrong_dtype),
        ("non-finite (NaN or inf)", non_finite),
    ):
        if names:
            listed = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
            problems.append(f"{len(names)} {label} tensor(s): {listed}")
    if problems:
        raise InputError(source, f"does not fit {what}: " + "; ".join(problems))


def _same_kind(tensor: torch.Tensor, reference: torch.Tensor) -> bool:
    """Whether a loaded tensor may stand for the model's: real floats for floats, ints for ints."""
    import torch

    if reference.is_floating_point():
        return tensor.is_floating_point()
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)
