"""Model bundles: the only form in which inference loads a trained model.

A bundle is a folder with two files::

    model.safetensors   the state dict of the change model (tensors only, no pickle)
    model.json          {"format_version": 2, "name", "architecture": {...}, "bands": [...],
                         "normalization": {"mean": [...], "std": [...]}, "chip_size",
                         "threshold", ["tta_threshold"], "pixel_size_m", "radiometry": {...},
                         "date_matching", "versions": {...}, "training": {...}, "metrics": {...}}

:func:`save_bundle` writes one (``groundbreak export`` calls it), :func:`load_bundle` reads and
checks one. Nothing here ever unpickles a file: Lightning ``.ckpt`` and other torch pickles are
refused with a pointer to ``groundbreak export``.

Format versions (:func:`upgrade_meta` reads every one of them as the current one):

- **2**: ``architecture.encoder_name`` is smp's public name (``tu-regnetx_002``, not the
  deprecated alias ``timm-regnetx_002``); ``versions`` records the segmentation-models-pytorch,
  timm and torch versions that wrote the bundle (null where unknown).
- **1**: the first format; upgraded by mapping the encoder name to its public name (the same
  weights) and adding ``versions`` with unknown (null) values.

``architecture`` holds ``network`` (``"fc"``: FC-EF/FC-Siam-diff/FC-Siam-conc; ``"fc_res"``:
FC-EF-Res), ``fusion`` and ``in_channels`` for the published FC networks; a U-Net's records no
``network`` (bundles written before the FC networks read unchanged) and holds
``full_resolution: true`` only when it has the full-resolution stage.

Before any model is built, the architecture is checked value by value and against the tensor
shapes in the safetensors header (read without loading a tensor), so a crafted ``model.json``
cannot make the loader allocate a huge model; the weights are then checked for shape, dtype
and finiteness.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_weights

from groundbreak.datasets.bands import normalize_band_name, normalize_band_names
from groundbreak.datasets.date_matching import DATE_MATCHING_MODES
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.normalization import normalize_bands
from groundbreak.datasets.radiometry import OSCD_CONVENTION, Radiometry
from groundbreak.datasets.scene import Scene
from groundbreak.datasets.text_files import load_json_file
from groundbreak.train.model import (
    FC_KEYS,
    FUSIONS,
    NETWORKS,
    ChangeModel,
    architecture_record,
    build_change_model,
    is_known_encoder,
    public_encoder_name,
)

FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "oscd-s2-default"
"""The bundle shipped with the source tree (see :func:`default_bundle_path`)."""
ARCHITECTURE_KEYS = ("fusion", "encoder_name", "encoder_depth", "decoder_channels", "in_channels")
"""The architecture keys of a U-Net bundle (an FC network's are ``model.FC_KEYS``)."""
REQUIRED_META_KEYS = ("bands", "normalization", "chip_size", "threshold")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".pkl", ".pickle", ".bin", ".joblib")
_LISTED = 5  # how many offending tensor names an error message lists
MAX_DECODER_CHANNELS = 1024
"""Widest decoder block accepted (smp's default U-Net is 256 wide); bounds memory on load."""
MAX_IN_CHANNELS = 256
"""Most bands per date accepted in a bundle."""
VERSION_KEYS = ("segmentation_models_pytorch", "timm", "torch")
"""The libraries whose versions ``model.json["versions"]`` records."""
_MAX_HEADER_BYTES = 100_000_000
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I64", "I32"}


@dataclass
class ModelBundle:
    """A loaded model bundle: the model in eval mode and what it needs to be used right.

    Attributes:
        path: The bundle folder.
        model: The change model, in eval mode, on the CPU.
        bands: Canonical names of the input bands, in channel order.
        mean: Per-band mean subtracted before the model (float32, one per band).
        std: Per-band standard deviation divided by before the model (float32, one per band).
        chip_size: Side of the square chips the model was trained on (pixels).
        threshold: Operating threshold on the change probability.
        meta: The whole ``model.json``.
    """

    path: Path
    model: ChangeModel = field(repr=False)
    bands: list[str]
    mean: np.ndarray
    std: np.ndarray
    chip_size: int
    threshold: float
    meta: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        """The bundle's name from ``model.json``."""
        return str(self.meta.get("name", self.path.name))

    @property
    def tta_threshold(self) -> float | None:
        """The operating threshold with flip test-time augmentation (``model.json``
        ``tta_threshold``), when the bundle states one."""
        value = self.meta.get("tta_threshold")
        return float(value) if value is not None else None

    def threshold_for(self, tta: bool) -> float:
        """The operating threshold: with ``tta``, the TTA threshold when stated."""
        return self.tta_threshold if tta and self.tta_threshold is not None else self.threshold

    @property
    def pixel_size_m(self) -> float | None:
        """Ground pixel size of the training imagery in metres, when known."""
        value = self.meta.get("pixel_size_m")
        return float(value) if value is not None else None

    @property
    def radiometry(self) -> Radiometry:
        """The input convention the model was trained on (``model.json["radiometry"]``).

        Bundles that do not state one were trained on OSCD: L1C reflectance x 10000, no offset.
        """
        record = self.meta.get("radiometry")
        if record is None:
            return OSCD_CONVENTION
        return Radiometry.from_dict(record, source=f"model {self.name!r}")

    @property
    def date_matching(self) -> str:
        """How the after date is matched to the before date before normalisation
        (``model.json["date_matching"]``; ``none`` when it does not say)."""
        return str(self.meta.get("date_matching", "none"))

    @property
    def seen_pairs(self) -> dict[str, str]:
        """The pairs the model has seen, by id: ``"training"`` (trained on) or ``"validation"``
        (selected on), from ``model.json["training"]``: the chips' pairs by split
        (``dataset.pairs``) and the datamodule's ``train_split``/``val_split``. Empty where the
        bundle does not record them."""
        training = self.meta.get("training")
        training = training if isinstance(training, Mapping) else {}
        dataset = training.get("dataset")
        pairs = dataset.get("pairs") if isinstance(dataset, Mapping) else None
        if not isinstance(pairs, Mapping):
            return {}
        datamodule = training.get("datamodule")
        datamodule = datamodule if isinstance(datamodule, Mapping) else {}
        seen: dict[str, str] = {}
        for key, default, role in (("val_split", "val", "validation"),
                                   ("train_split", "train", "training")):
            names = pairs.get(datamodule.get(key, default))
            if isinstance(names, list):
                seen.update((name, role) for name in names if isinstance(name, str))
        return seen

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Normalise raw band values ``(C, H, W)`` or ``(B, C, H, W)``: ``(x - mean) / std``.

        Invalid (NaN or infinite) values become 0, the normalised mean. Returns float32.

        Raises:
            ValueError: When the channel axis does not hold one value per model band.
        """
        x = np.asarray(x)
        if x.ndim not in (3, 4) or x.shape[-3] != len(self.bands):
            raise ValueError(
                f"expected an array (C, H, W) or (B, C, H, W) with C = {len(self.bands)} bands "
                f"({', '.join(self.bands)}), got shape {x.shape}"
            )
        return normalize_bands(x, self.mean, self.std)

    def check_scene_bands(
        self, scene: Scene | Sequence[str], source: str | os.PathLike[str] | None = None
    ) -> list[str]:
        """The model's bands in channel order, or an InputError naming those the scene lacks.

        Args:
            scene: A :class:`Scene` (its path is named in the error) or a list of band names.
            source: The path to name in the error when ``scene`` is a list of names.
        """
        if isinstance(scene, Scene):
            available, source = scene.band_names, scene.path
        else:
            available = list(scene)
        canonical = {normalize_band_name(band) for band in available}  # repeats are harmless
        missing = [band for band in self.bands if band not in canonical]
        if missing:
            fitting = shipped_bundles_for(canonical)
            hint = (
                f"; use --model {' or '.join(fitting)}, which runs on these bands"
                if fitting
                else ""
            )
            raise InputError(
                source,
                f"model {self.name!r} needs band(s) {', '.join(missing)} that the input lacks "
                f"(it has {', '.join(available) or 'no bands'}){hint}",
            )
        return list(self.bands)


def shipped_bundles_for(bands: set[str]) -> list[str]:
    """The shipped bundles (``checkpoints/*``) whose bands are all in ``bands``, as paths
    relative to the repository (empty where the source tree's checkpoints are not there)."""
    root = DEFAULT_BUNDLE_DIR.parent
    fitting = []
    for meta_path in sorted(root.glob(f"*/{META_FILE}")):
        try:
            wanted = json.loads(meta_path.read_text()).get("bands") or []
            if wanted and {normalize_band_name(str(b)) for b in wanted} <= bands:
                fitting.append(f"{root.name}/{meta_path.parent.name}")
        except (OSError, ValueError, AttributeError):
            continue  # a broken bundle is reported when it is loaded, not here
    return fitting


def save_bundle(
    model: ChangeModel, meta: Mapping[str, Any], out_dir: str | os.PathLike[str]
) -> Path:
    """Write a model bundle (``model.safetensors`` + ``model.json``) into ``out_dir``.

    Args:
        model: The trained change model; its architecture is recorded from the model itself.
        meta: ``bands``, ``normalization`` ({"mean", "std"}), ``chip_size`` and ``threshold``
            (required); ``name`` (default: the folder name), ``pixel_size_m``, ``training`` and
            ``metrics`` (optional). Other keys are kept as they are.
        out_dir: The bundle folder; created if needed, its two files replaced.

    Returns:
        The bundle folder.

    Raises:
        InputError: When ``meta`` is incomplete or disagrees with the model (names model.json).
    """
    out_dir = Path(out_dir)
    meta_path = out_dir / META_FILE
    record = {key: value for key, value in meta.items() if key != "format_version"}
    given = record.pop("architecture", None)
    if given is not None and _given_architecture(given, meta_path) != model.architecture:
        raise InputError(
            meta_path,
            f"meta architecture {dict(given)} differs from the model's {model.architecture}",
        )
    record = {
        "format_version": FORMAT_VERSION,
        "name": str(record.pop("name", None) or out_dir.resolve().name),
        "architecture": model.architecture,
        **record,
    }
    record.setdefault("pixel_size_m", None)
    record.setdefault("radiometry", OSCD_CONVENTION.to_dict())
    record["versions"] = library_versions()
    record.setdefault("training", {})
    record.setdefault("metrics", {})
    record = _json_safe(record)
    _validate_meta(record, meta_path)
    if record["chip_size"] % model.output_stride:
        raise InputError(
            meta_path,
            f"chip_size {record['chip_size']} is not divisible by the model's output stride "
            f"{model.output_stride}",
        )
    record["bands"] = normalize_band_names(record["bands"])

    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    check_state_dict(state, model, out_dir / WEIGHTS_FILE, "the model")  # finite weights only
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_tmp = out_dir / f".{WEIGHTS_FILE}.tmp"
    meta_tmp = out_dir / f".{META_FILE}.tmp"
    weights_tmp.write_bytes(save_weights(state, metadata={"format": "pt"}))
    meta_tmp.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    os.replace(weights_tmp, out_dir / WEIGHTS_FILE)
    os.replace(meta_tmp, meta_path)
    return out_dir


def load_bundle(path: str | os.PathLike[str]) -> ModelBundle:
    """Load and check a model bundle folder (or its ``model.json``); never unpickles anything.

    Raises:
        InputError: For a checkpoint or pickle file, a path that is not a bundle, a missing or
            malformed ``model.json``, or weights that do not fit the recorded architecture.
    """
    folder = _bundle_folder(Path(path))
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    meta = _read_meta(meta_path)
    check_weights_header(weights_path, meta["architecture"])
    try:
        model = build_change_model(_architecture_of(meta["architecture"]))
    except (TypeError, ValueError) as err:
        raise InputError(meta_path, f"architecture cannot be built: {err}") from err
    if meta["chip_size"] % model.output_stride:
        raise InputError(
            meta_path,
            f"chip_size {meta['chip_size']} is not divisible by the model's output stride "
            f"{model.output_stride}",
        )
    model.load_state_dict(_read_weights(weights_path, model))
    model.eval()
    return ModelBundle(
        path=folder,
        model=model,
        bands=normalize_band_names(meta["bands"]),
        mean=np.asarray(meta["normalization"]["mean"], dtype=np.float32),
        std=np.asarray(meta["normalization"]["std"], dtype=np.float32),
        chip_size=int(meta["chip_size"]),
        threshold=float(meta["threshold"]),
        meta=meta,
    )


def library_versions() -> dict[str, str]:
    """The installed versions recorded in ``model.json["versions"]``."""
    return {
        "segmentation_models_pytorch": smp.__version__,
        "timm": timm.__version__,
        "torch": torch.__version__,
    }


def upgrade_meta(meta: dict[str, Any], meta_path: Path) -> dict[str, Any]:
    """``model.json`` of any supported format version, in the current format (a new dict).

    Raises:
        InputError: For a format version that is not supported.
    """
    version = meta.get("format_version")
    if version == 1:
        meta = _upgrade_v1(meta)
        version = meta["format_version"]
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise InputError(
            meta_path,
            f"format_version {version!r} is not supported (expected 1 or {FORMAT_VERSION}; "
            "a newer groundbreak may read it)",
        )
    return meta


def _upgrade_v1(meta: dict[str, Any]) -> dict[str, Any]:
    """Format 1 to 2: the encoder by its public smp name (same weights), versions unknown."""
    upgraded = dict(meta)
    architecture = meta.get("architecture")
    if isinstance(architecture, Mapping) and isinstance(architecture.get("encoder_name"), str):
        architecture = dict(architecture)
        architecture["encoder_name"] = public_encoder_name(architecture["encoder_name"])
        upgraded["architecture"] = architecture
    upgraded.setdefault("versions", dict.fromkeys(VERSION_KEYS))
    upgraded["format_version"] = 2
    return upgraded


def default_bundle_path() -> Path:
    """The bundle shipped with the source tree, ``checkpoints/oscd-s2-default``.

    It is found beside the package folders (the repository root), which is where an editable
    install or a source checkout has it. A regular (wheel) install does not ship
    ``checkpoints/``: pass ``--model BUNDLE`` explicitly there.

    Raises:
        InputError: When the default bundle is not there.
    """
    path = DEFAULT_BUNDLE_DIR
    if not (path / META_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise InputError(
            path,
            "the default model bundle is not there (it ships only with a source checkout); "
            "pass --model BUNDLE",
        )
    return path


def _bundle_folder(path: Path) -> Path:
    """The bundle folder that ``path`` names, or an InputError saying why it is not one."""
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(
                path,
                "is a training checkpoint or pickle; inference loads only model bundles "
                "(a folder with model.json and model.safetensors); make one with "
                "'groundbreak export CKPT --out DIR'",
            )
        if path.name in (META_FILE, WEIGHTS_FILE):
            return path.parent
        raise InputError(
            path, "is not a model bundle (a folder with model.json and model.safetensors)"
        )
    if not path.is_dir():
        raise InputError(path, "model bundle does not exist")
    for name in (META_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise InputError(
                path / name,
                "missing: not a model bundle (a folder with model.json and model.safetensors)",
            )
    return path


MAX_META_BYTES = 4 * 2**20
"""The largest ``model.json`` read (4 MiB; the shipped ones are a few kB)."""


def _read_meta(meta_path: Path) -> dict[str, Any]:
    """Parse and validate ``model.json``."""
    meta = load_json_file(meta_path, "model.json", limit=MAX_META_BYTES)
    if not isinstance(meta, dict):
        raise InputError(meta_path, "must hold a JSON object")
    meta = upgrade_meta(meta, meta_path)
    _validate_meta(meta, meta_path)
    return meta


def _validate_meta(meta: Mapping[str, Any], meta_path: Path) -> None:
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
    if not isinstance(meta["architecture"], Mapping):
        raise InputError(meta_path, "architecture must be an object")
    network = meta["architecture"].get("network", "unet")
    if network not in NETWORKS:
        raise InputError(
            meta_path,
            f"architecture.network must be one of {', '.join(NETWORKS)}, got {network!r}",
        )
    keys = ARCHITECTURE_KEYS if network == "unet" else FC_KEYS
    missing = [key for key in keys if key not in meta["architecture"]]
    if missing:
        raise InputError(meta_path, f"architecture is missing key(s): {', '.join(missing)}")
    _validate_architecture(meta["architecture"], meta_path)
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


def _validate_architecture(architecture: Mapping[str, Any], meta_path: Path) -> None:
    """Check each architecture value's type and bounds (before anything is built)."""
    fusion = architecture["fusion"]
    if fusion not in FUSIONS:
        raise InputError(
            meta_path, f"architecture.fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}"
        )
    network = architecture.get("network", "unet")
    if network == "fc_res" and fusion != "early":
        raise InputError(
            meta_path, f"architecture.fusion of network fc_res must be 'early', got {fusion!r}"
        )
    if network != "unet":
        _validate_in_channels(architecture["in_channels"], meta_path)
        return
    full_resolution = architecture.get("full_resolution", False)
    if not isinstance(full_resolution, bool):
        raise InputError(
            meta_path,
            f"architecture.full_resolution must be true or false, got {full_resolution!r}",
        )
    encoder = architecture["encoder_name"]
    if not is_known_encoder(encoder):
        raise InputError(
            meta_path,
            f"architecture.encoder_name must name a segmentation-models-pytorch encoder, got "
            f"{encoder!r}",
        )
    depth = architecture["encoder_depth"]
    if not _is_int(depth) or not 1 <= depth <= 5:
        raise InputError(
            meta_path, f"architecture.encoder_depth must be an integer 1 to 5, got {depth!r}"
        )
    channels = architecture["decoder_channels"]
    if (
        not isinstance(channels, list)
        or len(channels) != depth
        or not all(_is_int(c) and 1 <= c <= MAX_DECODER_CHANNELS for c in channels)
    ):
        raise InputError(
            meta_path,
            f"architecture.decoder_channels must list {depth} integers (one per encoder stage) "
            f"from 1 to {MAX_DECODER_CHANNELS}, got {channels!r}",
        )
    _validate_in_channels(architecture["in_channels"], meta_path)


def _validate_in_channels(in_channels: Any, meta_path: Path) -> None:
    """Bands per date: an integer 1 to MAX_IN_CHANNELS."""
    if not _is_int(in_channels) or not 1 <= in_channels <= MAX_IN_CHANNELS:
        raise InputError(
            meta_path,
            f"architecture.in_channels must be an integer 1 to {MAX_IN_CHANNELS}, got "
            f"{in_channels!r}",
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
    if architecture.get("network", "unet") != "unet":
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


def _read_weights(weights_path: Path, model: ChangeModel) -> dict[str, torch.Tensor]:
    """Read ``model.safetensors`` and check its tensors against the model's state dict."""
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
    if reference.is_floating_point():
        return tensor.is_floating_point()
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)


def _architecture_of(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture keys in canonical form (lists, ints), for ``build_change_model``."""
    if architecture.get("network", "unet") != "unet":
        record = architecture_record(architecture)
        return {**record, "in_channels": int(record["in_channels"])}
    encoder = architecture.get("encoder_name")
    full_resolution = {"full_resolution": True} if architecture.get("full_resolution") else {}
    return {
        "fusion": architecture.get("fusion"),
        "encoder_name": public_encoder_name(encoder) if isinstance(encoder, str) else encoder,
        "encoder_depth": int(architecture.get("encoder_depth", 0)),
        "decoder_channels": [int(c) for c in architecture.get("decoder_channels", [])],
        "in_channels": int(architecture.get("in_channels", 0)),
        **full_resolution,
    }


def _given_architecture(architecture: Any, meta_path: Path) -> dict[str, Any]:
    """The canonical form of an architecture given to save_bundle, or an InputError."""
    try:
        return _architecture_of(architecture)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise InputError(meta_path, f"meta architecture {architecture!r} is malformed") from err


def _is_int(value: Any) -> bool:
    """An int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_number_list(values: Any) -> bool:
    """A list of finite numbers."""
    return isinstance(values, list) and all(_is_number(v) for v in values)


def _json_safe(value: Any) -> Any:
    """Plain JSON types: numpy values become numbers and lists, NaN/inf null, others strings."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
