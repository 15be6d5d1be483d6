"""Model bundles: the only form in which inference loads a trained model.

A bundle is a folder with two files::

    model.safetensors   the state dict of the change model (tensors only, no pickle)
    model.json          {"format_version": 3, "name", "architecture": {...}, "bands": [...],
                         "normalization": {"mean": [...], "std": [...]}, "chip_size",
                         "threshold", ["tta_threshold"], ["window", "overlap"],
                         "pixel_size_m", "radiometry": {...},
                         "date_matching", "versions": {...}, "training": {...}, "metrics": {...}}

:func:`save_bundle` writes one (``groundbreak export`` calls it), :func:`load_bundle` reads and
checks one. Nothing here ever unpickles a file: Lightning ``.ckpt`` and other torch pickles are
refused with a pointer to ``groundbreak export``.

Format versions (:func:`upgrade_meta` reads every one of them as the current one):

- **3**: an ``architecture`` may be an ensemble (``"network": "ensemble"``), and ``window`` and
  ``overlap`` may give the prediction defaults; a groundbreak that reads only format 2 refuses
  such a bundle by its version instead of misreading it. A format-2 file reads unchanged.
- **2**: ``architecture.encoder_name`` is smp's public name (``tu-regnetx_002``, not the
  deprecated alias ``timm-regnetx_002``); ``versions`` records the segmentation-models-pytorch,
  timm and torch versions that wrote the bundle (null where unknown).
- **1**: the first format; upgraded by mapping the encoder name to its public name (the same
  weights) and adding ``versions`` with unknown (null) values.

``architecture`` holds ``network`` (``"fc"``: FC-EF/FC-Siam-diff/FC-Siam-conc; ``"fc_res"``:
FC-EF-Res), ``fusion`` and ``in_channels`` for the published FC networks; a U-Net's records no
``network`` (bundles written before the FC networks read unchanged) and holds
``full_resolution: true`` only when it has the full-resolution stage. An ensemble
(``"network": "ensemble"``, :mod:`.ensemble`) lists its members' records in ``members`` and their
``logit_offsets``; its weights are the members' under ``members.<i>.``. The optional ``window``
and ``overlap`` are the prediction windows the model is meant to run with (the predictor's
defaults for it).

Before any model is built, the architecture is checked value by value
(:mod:`.bundle_meta`) and against the tensor shapes in the safetensors header, read without
loading a tensor (:mod:`.bundle_weights`), so a crafted ``model.json`` cannot make the loader
allocate a huge model; the weights are then checked for shape, dtype and finiteness.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from groundbreak.datasets.bands import normalize_band_name, normalize_band_names
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.normalization import normalize_bands
from groundbreak.datasets.radiometry import OSCD_CONVENTION, Radiometry
from groundbreak.datasets.scene import Scene
from groundbreak.datasets.text_files import load_json_file
from groundbreak.train.architecture import (
    architecture_record,
    output_stride,
    public_encoder_name,
)
from groundbreak.train.bundle_meta import check_encoders, validate_meta
from groundbreak.train.bundle_weights import check_weights_header

if TYPE_CHECKING:
    from groundbreak.train.model import ChangeModel

FORMAT_VERSION = 3
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "oscd-s2-default"
"""The bundle shipped with the source tree (see :func:`default_bundle_path`)."""
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".pkl", ".pickle", ".bin", ".joblib")
VERSION_KEYS = ("segmentation_models_pytorch", "timm", "torch")
"""The libraries whose versions ``model.json["versions"]`` records."""


@dataclass
class ModelBundle:
    """A loaded model bundle: the model in eval mode and what it needs to be used right.

    Attributes:
        path: The bundle folder.
        model: The change model, in eval mode, on the CPU (built on first use: see
            :attr:`model`).
        bands: Canonical names of the input bands, in channel order.
        mean: Per-band mean subtracted before the model (float32, one per band).
        std: Per-band standard deviation divided by before the model (float32, one per band).
        chip_size: Side of the square chips the model was trained on (pixels).
        threshold: Operating threshold on the change probability.
        meta: The whole ``model.json``.
    """

    path: Path
    bands: list[str]
    mean: np.ndarray
    std: np.ndarray
    chip_size: int
    threshold: float
    meta: dict[str, Any] = field(repr=False)
    _model: ChangeModel | None = field(default=None, repr=False)
    _files_model: ChangeModel | None = field(default=None, repr=False, compare=False)

    @property
    def model(self) -> ChangeModel:
        """The change model, in eval mode, on the CPU; built, and its weights read and checked,
        the first time it is asked for (:func:`load_bundle` does so unless ``build=False``).

        Raises:
            InputError: When the architecture cannot be built or the weights do not fit it.
        """
        if self._model is None:
            self._model = self._files_model = _built_model(self.path, self.meta)
        return self._model

    @property
    def model_built(self) -> bool:
        """Whether :attr:`model` has been built (torch, timm and smp imported)."""
        return self._model is not None

    @property
    def model_from_files(self) -> bool:
        """Whether :attr:`model` is (or, not yet built, will be) the one the bundle's files hold,
        rather than one put in its place (:meth:`with_model`)."""
        return self._model is None or self._model is self._files_model

    def with_model(self, model: ChangeModel) -> ModelBundle:
        """This bundle with ``model`` in place of its files' (e.g. a wrapped copy), for the
        tools that run a changed model with the bundle's bands, normalisation and threshold."""
        return replace(self, _model=model, _files_model=None)

    @property
    def output_stride(self) -> int:
        """The factor window sides must be divisible by (the model's ``output_stride``, from the
        architecture record: the model need not be built)."""
        return output_stride(self.meta["architecture"])

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

    @property
    def window(self) -> int | None:
        """The prediction window the model is meant to run with (``model.json`` ``window``),
        when the bundle states one; the predictor's default otherwise."""
        value = self.meta.get("window")
        return int(value) if value is not None else None

    @property
    def overlap(self) -> int | None:
        """The overlap of the bundle's ``window`` (``model.json`` ``overlap``), when stated."""
        value = self.meta.get("overlap")
        return int(value) if value is not None else None

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
    validate_meta(record, meta_path)
    _check_strides(record, model.output_stride, meta_path)
    record["bands"] = normalize_band_names(record["bands"])

    from safetensors.torch import save as save_weights

    from groundbreak.train.bundle_weights import check_state_dict

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


def load_bundle(path: str | os.PathLike[str], build: bool = True) -> ModelBundle:
    """Load and check a model bundle folder (or its ``model.json``); never unpickles anything.

    ``model.json`` and the weights' header are checked here whatever ``build`` says; with
    ``build`` the model is built and its weights read and checked too, else on first use of
    :attr:`ModelBundle.model` (a predictor that runs a kept OpenVINO graph never builds it, so
    torch, timm and smp stay out of its process).

    Raises:
        InputError: For a checkpoint or pickle file, a path that is not a bundle, a missing or
            malformed ``model.json``, or weights that do not fit the recorded architecture.
    """
    folder = _bundle_folder(Path(path))
    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    meta = _read_meta(meta_path)
    check_weights_header(weights_path, meta["architecture"])
    _check_strides(meta, output_stride(meta["architecture"]), meta_path)
    bundle = ModelBundle(
        path=folder,
        bands=normalize_band_names(meta["bands"]),
        mean=np.asarray(meta["normalization"]["mean"], dtype=np.float32),
        std=np.asarray(meta["normalization"]["std"], dtype=np.float32),
        chip_size=int(meta["chip_size"]),
        threshold=float(meta["threshold"]),
        meta=meta,
    )
    if build:
        bundle.model  # noqa: B018  (built and checked now)
    return bundle


def _built_model(folder: Path, meta: Mapping[str, Any]) -> ChangeModel:
    """The model of a loaded bundle's checked ``model.json``, its weights read and checked."""
    from groundbreak.train.bundle_weights import read_weights
    from groundbreak.train.model import build_change_model

    meta_path = folder / META_FILE
    check_encoders(meta["architecture"], meta_path)
    try:
        model = build_change_model(_architecture_of(meta["architecture"]))
    except (TypeError, ValueError) as err:
        raise InputError(meta_path, f"architecture cannot be built: {err}") from err
    expected = output_stride(meta["architecture"])  # what the windows were laid out for
    if model.output_stride != expected:
        raise InputError(meta_path, f"architecture: the built model's output stride "
                         f"{model.output_stride} is not the {expected} its record implies "
                         "(2 ** encoder_depth for a U-Net); this encoder is not supported")
    model.load_state_dict(read_weights(folder / WEIGHTS_FILE, model))
    model.eval()
    return model


def _check_strides(meta: Mapping[str, Any], stride: int, meta_path: Path) -> None:
    """``chip_size``, ``window`` and ``window - overlap`` must be multiples of the model's
    output stride."""
    window, overlap = meta.get("window"), meta.get("overlap")
    sizes = [("chip_size", meta["chip_size"])]
    if window is not None:
        sizes += [("window", window), ("window - overlap", window - (overlap or 0))]
    for name, size in sizes:
        if size % stride:
            raise InputError(
                meta_path,
                f"{name} {size} is not divisible by the model's output stride {stride}",
            )


def library_versions() -> dict[str, str]:
    """The installed versions recorded in ``model.json["versions"]``."""
    import segmentation_models_pytorch as smp
    import timm
    import torch

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
    if version == 2 and not isinstance(version, bool):  # format 3 only adds keys
        meta = {**meta, "format_version": FORMAT_VERSION}
        version = FORMAT_VERSION
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise InputError(
            meta_path,
            f"format_version {version!r} is not supported (expected 1 to {FORMAT_VERSION}; "
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
    validate_meta(meta, meta_path)
    return meta


def _architecture_of(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture keys in canonical form (lists, ints), for ``build_change_model``."""
    network = architecture.get("network", "unet")
    if network == "ensemble":
        return {
            **architecture_record(architecture),
            "members": [_architecture_of(member) for member in architecture["members"]],
        }
    if network != "unet":
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
    if type(value).__name__ == "Tensor" and value.numel() == 1:  # a torch scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
