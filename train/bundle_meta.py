"""What a model bundle's ``model.json`` must hold, checked before anything is built.

:func:`validate_meta` (which imports no torch, timm or smp) refuses a ``model.json`` whose
bands, normalisation, chip size, thresholds, radiometry, date matching, versions or architecture
are missing, of the wrong type or out of range, with one error naming the file and the key;
widths and band counts are bounded so a hostile file cannot make loading allocate without limit.
:func:`check_encoders` adds, where the model is built, that each U-Net's encoder is one smp can
build.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundbreak.datasets.bands import normalize_band_names
from groundbreak.datasets.date_matching import DATE_MATCHING_MODES
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.radiometry import Radiometry
from groundbreak.train.architecture import (
    ENSEMBLE,
    ENSEMBLE_KEYS,
    FC_KEYS,
    FUSIONS,
    MAX_MEMBERS,
    NETWORKS,
    UNET_KEYS,
)

ARCHITECTURE_KEYS = UNET_KEYS
"""The architecture keys of a U-Net bundle (an FC network's are ``model.FC_KEYS``)."""
REQUIRED_META_KEYS = ("bands", "normalization", "chip_size", "threshold")
MAX_DECODER_CHANNELS = 1024
"""Widest decoder block accepted (smp's default U-Net is 256 wide); bounds memory on load."""
MAX_IN_CHANNELS = 256
"""Most bands per date accepted in a bundle."""
MAX_WINDOW = 4096
"""Largest prediction window a bundle may ask for (``window``), in pixels."""


def validate_meta(meta: Mapping[str, Any], meta_path: Path) -> None:
    """Check the keys every bundle needs; raise an InputError naming model.json."""
    missing = [key for key in ("architecture", *REQUIRED_META_KEYS) if key not in meta]
    if missing:
        raise InputError(meta_path, f"missing key(s): {', '.join(missing)}")
    bands = meta["bands"]
    if (
        isinstance(bands, str)
        or not isinstance(bands, Sequence)
        or not bands
        or not all(isinstance(b, str) and b.strip() for b in bands)
    ):
        raise InputError(meta_path, f"bands must be a non-empty list of names, got {bands!r}")
    try:
        normalize_band_names(bands)
    except ValueError as err:
        raise InputError(meta_path, str(err)) from err
    _validate_record(meta["architecture"], meta_path, "architecture")
    in_channels = meta["architecture"]["in_channels"]
    if in_channels != len(bands):
        raise InputError(
            meta_path,
            f"lists {len(bands)} bands but the architecture has in_channels = {in_channels}",
        )
    norm = meta["normalization"]
    if not isinstance(norm, Mapping) or "mean" not in norm or "std" not in norm:
        raise InputError(meta_path, "normalization must be an object with 'mean' and 'std'")
    for key in ("mean", "std"):
        values = norm[key]
        if not _is_number_list(values) or len(values) != len(bands):
            raise InputError(
                meta_path,
                f"normalization.{key} must list one number per band ({len(bands)}), got {values!r}",
            )
    if not all(s > 0 for s in norm["std"]):
        raise InputError(meta_path, f"normalization.std must be positive, got {norm['std']}")
    _check_float32_normalization(norm["mean"], norm["std"], meta_path)
    chip_size = meta["chip_size"]
    if isinstance(chip_size, bool) or not isinstance(chip_size, int) or chip_size < 1:
        raise InputError(meta_path, f"chip_size must be a positive integer, got {chip_size!r}")
    threshold = meta["threshold"]
    if not _is_number(threshold) or not 0.0 < threshold < 1.0:
        raise InputError(meta_path, f"threshold must be a number in (0, 1), got {threshold!r}")
    _validate_window(meta, meta_path)
    tta_threshold = meta.get("tta_threshold")  # optional: the threshold with flip TTA
    if tta_threshold is not None and (not _is_number(tta_threshold)
                                      or not 0.0 < tta_threshold < 1.0):
        raise InputError(
            meta_path, f"tta_threshold must be a number in (0, 1) or null, got {tta_threshold!r}"
        )
    pixel_size = meta.get("pixel_size_m")
    if pixel_size is not None and (not _is_number(pixel_size) or pixel_size <= 0):
        raise InputError(meta_path, f"pixel_size_m must be positive or null, got {pixel_size!r}")
    for key in ("training", "metrics"):
        if not isinstance(meta.get(key, {}), Mapping):
            raise InputError(meta_path, f"{key} must be an object")
    versions = meta.get("versions", {})
    if not isinstance(versions, Mapping) or not all(
        isinstance(v, str) or v is None for v in versions.values()
    ):
        raise InputError(meta_path, f"versions must map library names to strings, got {versions!r}")
    radiometry = meta.get("radiometry")
    if radiometry is not None:
        if not isinstance(radiometry, Mapping):
            raise InputError(meta_path, f"radiometry must be an object, got {radiometry!r}")
        try:
            Radiometry.from_dict(radiometry)
        except (TypeError, ValueError) as err:
            raise InputError(meta_path, f"radiometry: {err}") from err
    matching = meta.get("date_matching", "none")
    if matching not in DATE_MATCHING_MODES:
        raise InputError(
            meta_path,
            f"date_matching must be one of {', '.join(DATE_MATCHING_MODES)}, got {matching!r}",
        )


def _validate_record(architecture: Any, meta_path: Path, key: str) -> None:
    """Check an architecture record (``key`` names it in errors): an object with its network's
    keys, each of the right type and in bounds; an ensemble's members each in turn."""
    if not isinstance(architecture, Mapping):
        raise InputError(meta_path, f"{key} must be an object")
    network = architecture.get("network", "unet")
    networks = (*NETWORKS, ENSEMBLE) if key == "architecture" else NETWORKS
    if network not in networks:
        raise InputError(
            meta_path, f"{key}.network must be one of {', '.join(networks)}, got {network!r}"
        )
    keys = {"unet": ARCHITECTURE_KEYS, ENSEMBLE: ENSEMBLE_KEYS}.get(network, FC_KEYS)
    missing = [name for name in keys if name not in architecture]
    if missing:
        raise InputError(meta_path, f"{key} is missing key(s): {', '.join(missing)}")
    _validate_in_channels(architecture["in_channels"], meta_path, key)
    if network == ENSEMBLE:
        _validate_ensemble(architecture, meta_path, key)
    else:
        _validate_architecture(architecture, meta_path, key)


def _validate_ensemble(architecture: Mapping[str, Any], meta_path: Path, key: str) -> None:
    """An ensemble's members (2 to MAX_MEMBERS plain records reading its bands) and offsets."""
    members, offsets = architecture["members"], architecture["logit_offsets"]
    if not isinstance(members, list) or not 2 <= len(members) <= MAX_MEMBERS:
        raise InputError(
            meta_path, f"{key}.members must list 2 to {MAX_MEMBERS} architectures, got {members!r}"
        )
    if not _is_number_list(offsets) or len(offsets) != len(members):
        raise InputError(
            meta_path,
            f"{key}.logit_offsets must list one finite number per member ({len(members)}), got "
            f"{offsets!r}",
        )
    for i, member in enumerate(members):
        _validate_record(member, meta_path, f"{key}.members[{i}]")
        if member["in_channels"] != architecture["in_channels"]:
            raise InputError(
                meta_path,
                f"{key}.members[{i}].in_channels {member['in_channels']} differs from "
                f"{key}.in_channels {architecture['in_channels']}",
            )


def _validate_architecture(architecture: Mapping[str, Any], meta_path: Path, key: str) -> None:
    """Check each value of a U-Net's or FC network's record (before anything is built)."""
    fusion = architecture["fusion"]
    if fusion not in FUSIONS:
        raise InputError(
            meta_path, f"{key}.fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}"
        )
    network = architecture.get("network", "unet")
    if network == "fc_res" and fusion != "early":
        raise InputError(
            meta_path, f"{key}.fusion of network fc_res must be 'early', got {fusion!r}"
        )
    if network != "unet":
        return
    full_resolution = architecture.get("full_resolution", False)
    if not isinstance(full_resolution, bool):
        raise InputError(
            meta_path, f"{key}.full_resolution must be true or false, got {full_resolution!r}"
        )
    if not isinstance(architecture["encoder_name"], str) or not architecture["encoder_name"]:
        raise InputError(
            meta_path,
            f"{key}.encoder_name must name a segmentation-models-pytorch encoder, got "
            f"{architecture['encoder_name']!r}",
        )
    depth = architecture["encoder_depth"]
    if not _is_int(depth) or not 1 <= depth <= 5:
        raise InputError(
            meta_path, f"{key}.encoder_depth must be an integer 1 to 5, got {depth!r}"
        )
    channels = architecture["decoder_channels"]
    if (
        not isinstance(channels, list)
        or len(channels) != depth
        or not all(_is_int(c) and 1 <= c <= MAX_DECODER_CHANNELS for c in channels)
    ):
        raise InputError(
            meta_path,
            f"{key}.decoder_channels must list {depth} integers (one per encoder stage) "
            f"from 1 to {MAX_DECODER_CHANNELS}, got {channels!r}",
        )


def check_encoders(
    architecture: Mapping[str, Any], meta_path: Path, key: str = "architecture"
) -> None:
    """Check that every U-Net of a validated record names an encoder smp can build (it imports
    smp and timm, so it runs where the model is built, not in :func:`validate_meta`)."""
    from groundbreak.train.model import is_known_encoder

    if architecture.get("network", "unet") == ENSEMBLE:
        for i, member in enumerate(architecture["members"]):
            check_encoders(member, meta_path, f"{key}.members[{i}]")
    elif architecture.get("network", "unet") == "unet":
        encoder = architecture["encoder_name"]
        if not is_known_encoder(encoder):
            raise InputError(
                meta_path,
                f"{key}.encoder_name must name a segmentation-models-pytorch encoder, got "
                f"{encoder!r}",
            )


def _validate_in_channels(in_channels: Any, meta_path: Path, key: str) -> None:
    """Bands per date: an integer 1 to MAX_IN_CHANNELS."""
    if not _is_int(in_channels) or not 1 <= in_channels <= MAX_IN_CHANNELS:
        raise InputError(
            meta_path,
            f"{key}.in_channels must be an integer 1 to {MAX_IN_CHANNELS}, got {in_channels!r}",
        )


def _validate_window(meta: Mapping[str, Any], meta_path: Path) -> None:
    """The optional prediction defaults: ``window`` (pixels) and ``overlap`` (smaller)."""
    window, overlap = meta.get("window"), meta.get("overlap")
    if window is not None and (not _is_int(window) or not 1 <= window <= MAX_WINDOW):
        raise InputError(
            meta_path, f"window must be an integer 1 to {MAX_WINDOW} or null, got {window!r}"
        )
    if overlap is None:
        return
    if window is None:
        raise InputError(meta_path, "overlap is set but window is not; give both or neither")
    if not _is_int(overlap) or not 0 <= overlap < window:
        raise InputError(
            meta_path, f"overlap must be an integer from 0 to window - 1 ({window - 1}), got "
            f"{overlap!r}"
        )


def _check_float32_normalization(mean: list[float], std: list[float], meta_path: Path) -> None:
    """Refuse mean/std that are not usable in float32, the dtype ``normalize`` computes in."""
    with np.errstate(over="ignore", divide="ignore"):
        mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        scale = np.float32(1) / std32
    tiny = np.finfo(np.float32).tiny
    if not np.isfinite(mean32).all() or not (std32 >= tiny).all() or not np.isfinite(scale).all():
        raise InputError(
            meta_path,
            f"normalization is not usable in float32 (mean {mean}, std {std}): every mean must "
            f"lie within +-{float(np.finfo(np.float32).max):.3g} and every std from {tiny:.3g} "
            "up",
        )


def _is_int(value: Any) -> bool:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_number_list(values: Any) -> bool:
    """A list of finite numbers."""
    return isinstance(values, list) and all(_is_number(v) for v in values)
