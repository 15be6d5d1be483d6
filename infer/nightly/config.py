"""The nightly config: a YAML file of documented keys, overridable by command-line flags.

Every key is listed in :data:`KEYS` with its type, default and meaning; ``groundbreak nightly
--help-config`` prints them. Relative paths in a config file resolve against the file's folder.
A bad config raises :class:`InputError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.text_files import load_yaml_text, read_text_file
from groundbreak.infer.nightly.alert_policy import AlertPolicy
from groundbreak.infer.nightly.cluster_spec import parse_cluster
from groundbreak.infer.nightly.logging import LOG_FORMATS
from groundbreak.infer.nightly.pairing import DEFAULT_PAIRING, PairingRule
from groundbreak.infer.sites.ranking import DEFAULT_ALERT_THRESHOLD
from groundbreak.infer.sites.scoring import DEFAULT_AREA_SCALE_M2
from groundbreak.infer.sites.sites import DEFAULT_MIN_AREA_M2

MAX_CONFIG_BYTES = 2**20
"""The largest nightly config read (1 MiB)."""

DEFAULT_FOOTPRINT_IOU = 0.9
"""Two STAC items without a tile id are the same ground when their footprints overlap this much."""

DEFAULT_CLOUDY_FRACTION = 0.5
"""A pair (or an acquisition) hidden this much by clouds and shadows is too cloudy to judge."""

DEFAULT_SITE_MATCH_IOU = 0.3
"""A discovered change region is an earlier discovered site when their IoU reaches this."""

SOURCE_KEYS: tuple[str, ...] = ("pairs", "stac", "drop_folder")
PREDICTOR_KEYS: tuple[str, ...] = (
    "window", "overlap", "batch_size", "tta", "device", "runtime", "cloud_mask"
)
RUNTIME_ONLY_KEYS = ("device", "runtime")
"""Predictor options that change how fast a pair runs, not its scores."""


@dataclass(frozen=True)
class KeySpec:
    """One config key: its kind (``path``, ``dir``, ``file``, ``float``, ...), default, meaning."""

    kind: str
    default: Any
    doc: str


KEYS: dict[str, KeySpec] = {
    "state_dir": KeySpec(
        "path", None,
        "Required. State directory: state.sqlite, nightly.lock, runs/<run_id>/, scenes/. "
        "Created if missing. Flag: --state.",
    ),
    "model": KeySpec(
        "dir", None,
        "Model bundle folder (model.json + model.safetensors). Default: the bundle shipped with "
        "the source tree (checkpoints/oscd-s2-default). Flag: --model.",
    ),
    "pairs": KeySpec(
        "file", None,
        "Source: a pairs CSV (pair_id,before,after[,before_date,after_date,...]) as for "
        "'groundbreak rank'. Exactly one of pairs, stac, drop_folder. Flag: --pairs.",
    ),
    "stac": KeySpec(
        "file", None,
        "Source: a STAC ItemCollection JSON of new acquisitions whose assets are single-band "
        "rasters (paths or URLs); each item is paired with its reference (key pairing) among "
        "the acquisitions of the same ground. Flag: --stac.",
    ),
    "drop_folder": KeySpec(
        "dir", None,
        "Source: a folder that new scenes are dropped into, one per entry named "
        "<ground>_<YYYYMMDD> (a per-band folder or a multi-band raster). Flag: --drop-folder.",
    ),
    "sites": KeySpec(
        "file", None,
        "Watch-list GeoJSON of site polygons; without it, discovered change regions are "
        "the sites. Flag: --sites.",
    ),
    "alert_threshold": KeySpec(
        "probability", DEFAULT_ALERT_THRESHOLD,
        "Sites scoring at least this (0..1) are alerts.",
    ),
    "dismiss_margin": KeySpec(
        "probability", None,
        "Deprecated and ignored (a warning says so): a dismissed site now comes back when it "
        "grows; see alerts.regrow_ratio, alerts.regrow_m2 and alerts.realert_share.",
    ),
    "pairing": KeySpec(
        "pairing", DEFAULT_PAIRING,
        "How a new acquisition (STAC, drop folder) finds the earlier one it is compared with: "
        "rule (reference: the clearest acquisition within window_days of the same date "
        "1..max_years years earlier, else the oldest clear one at least min_gap_days earlier, "
        "else none (a baseline); consecutive: the latest earlier clear one), window_days "
        "(30), max_years (3), min_gap_days (180), composite (none; median: when the "
        "same-season window holds at least 2 usable acquisitions, compare with their "
        "per-pixel median, clouds left out, written once under STATE_DIR/composites). A pairs "
        "CSV keeps its own pairs.",
    ),
    "alerts": KeySpec(
        "alerts", AlertPolicy(),
        "The alert policy (docs/operator.md): confirm_detections (2) within "
        "confirm_window_days (120) make a candidate an alert, or one detection scoring at "
        "least confirm_score (0.75); a detection confirms only when at most "
        "confirm_clear_share (0.0) of its site lies within confirm_margin_m (600) of ground "
        "that clouds, shadows or the scene's edge hid; clear_after (2) clear non-detections "
        "in a row end a candidate or an undecided alert (cleared); a dismissed site comes "
        "back when its changed area grows by regrow_ratio (0.5) and regrow_m2 (5000) or its "
        "score reaches s_d + realert_share (0.5) x (1 - s_d).",
    ),
    "min_area_m2": KeySpec(
        "non_negative", DEFAULT_MIN_AREA_M2,
        "Smallest discovered change region kept, m² (pixels on grids without a CRS).",
    ),
    "area_scale": KeySpec(
        "positive", DEFAULT_AREA_SCALE_M2,
        "Changed area (m²) at which a site's area term reaches 0.63 (see infer/sites/scoring.py).",
    ),
    "predictor": KeySpec(
        "mapping", {},
        "Options of the tiled predictor: window, overlap, batch_size, tta, device, runtime, "
        "cloud_mask "
        "(torch, onnx or openvino).",
    ),
    "footprint_iou": KeySpec(
        "probability", DEFAULT_FOOTPRINT_IOU,
        "STAC items without an MGRS tile id are the same ground when their footprints' "
        "intersection over union reaches this.",
    ),
    "site_match_iou": KeySpec(
        "probability", DEFAULT_SITE_MATCH_IOU,
        "Without a watch-list: a discovered change region keeps the id of the earlier discovered "
        "site whose outline overlaps it with at least this intersection over union, so history, "
        "dismissals and 'ongoing' follow it across nights (above 0, at most 1).",
    ),
    "cloudy_fraction": KeySpec(
        "probability", DEFAULT_CLOUDY_FRACTION,
        "A pair whose clouds and shadows (either date) hide at least this share of it is "
        "'skipped: cloudy' (no sites, no alerts), and an acquisition hidden this much is never "
        "the 'before' of a later pair: the next clear one is compared with the last clear one.",
    ),
    "remote_hosts": KeySpec(
        "hosts", None,
        "Hosts that band URLs (STAC assets, scene manifests) may be read from; '.example.com' "
        "admits subdomains. Default: any public host; loopback, link-local (cloud metadata) "
        "and private addresses are refused unless listed here.",
    ),
    "report": KeySpec("bool", True, "Write the HTML report (report.html) of each night."),
    "cluster": KeySpec(
        "cluster", None,
        "Where pairs are predicted: null (this process, one pair at a time), 'local:N' (N "
        "worker processes on this machine, Dask LocalCluster) or the address of a running Dask "
        "scheduler, 'tcp://host:8786' (its workers must see the same paths). This process alone "
        "writes the state and the night's outputs. Flag: --cluster (--cluster none: in-process).",
    ),
    "run_id": KeySpec(
        "run_id", None,
        "Name of the night (its folder runs/<run_id>/). Default: today's UTC date, YYYY-MM-DD; "
        "re-running the same run_id resumes that night. Flag: --run-id.",
    ),
    "log_format": KeySpec(
        "log_format", "auto",
        "auto (progress bar on a terminal, JSON lines otherwise), progress or json. "
        "Flag: --log-format.",
    ),
}


@dataclass(frozen=True)
class NightlyConfig:
    """A validated nightly config (see :data:`KEYS` for each field's meaning)."""

    state_dir: Path
    model: Path | None = None
    pairs: Path | None = None
    stac: Path | None = None
    drop_folder: Path | None = None
    sites: Path | None = None
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD
    dismiss_margin: float | None = None
    pairing: PairingRule = DEFAULT_PAIRING
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    min_area_m2: float = DEFAULT_MIN_AREA_M2
    area_scale: float = DEFAULT_AREA_SCALE_M2
    predictor: dict[str, Any] = field(default_factory=dict)
    footprint_iou: float = DEFAULT_FOOTPRINT_IOU
    site_match_iou: float = DEFAULT_SITE_MATCH_IOU
    cloudy_fraction: float = DEFAULT_CLOUDY_FRACTION
    remote_hosts: tuple[str, ...] | None = None
    report: bool = True
    cluster: str | None = None
    run_id: str = ""
    log_format: str = "auto"

    @property
    def source_kind(self) -> str:
        """Which source the night reads: ``pairs``, ``stac`` or ``drop_folder``."""
        return next(k for k in SOURCE_KEYS if getattr(self, k) is not None)

    @property
    def source(self) -> Path:
        """The path of the night's source."""
        return getattr(self, self.source_kind)

    def scoring_settings(self) -> dict[str, Any]:
        """The settings that change a pair's site scores (part of its inputs hash)."""
        return {
            "min_area_m2": self.min_area_m2,
            "area_scale": self.area_scale,
            "cloudy_fraction": self.cloudy_fraction,
            "predictor": {
                k: self.predictor[k] for k in sorted(self.predictor) if k not in RUNTIME_ONLY_KEYS
            },
        }

    def as_dict(self) -> dict[str, Any]:
        """Every key with its value (paths as strings), as recorded with each run."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, PairingRule | AlertPolicy):
                value = dataclasses.asdict(value)
            out[key] = value
        return out

    @property
    def policy(self) -> AlertPolicy:
        """The alert policy, with the config's alert threshold."""
        return dataclasses.replace(self.alerts, threshold=self.alert_threshold)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The keys of a YAML config file (not yet validated), or an InputError naming the file.

    Only a regular file of at most 1 MiB is read (never a device or a FIFO), and YAML anchors
    and aliases are refused (no alias bombs).
    """
    path = Path(path)
    text = read_text_file(path, MAX_CONFIG_BYTES, "config file")
    document = load_yaml_text(text, path, "valid YAML")
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise InputError(path, "config must be a mapping of keys (see nightly.example.yaml)")
    return document


def build_config(
    values: Mapping[str, Any],
    origin: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NightlyConfig:
    """Validate config keys (file values, then command-line overrides) into a NightlyConfig.

    Args:
        values: Keys read from a config file (may be empty).
        origin: The config file, named in errors and used to resolve relative paths; None when
            there is no file (paths then resolve against the working directory).
        overrides: Values from command-line flags (None values are ignored); they win.

    Raises:
        InputError: For an unknown key, a missing required key, a value of the wrong type or
            range, a path that does not exist, or not exactly one source.
    """
    where = Path(origin) if origin is not None else None
    base = where.resolve().parent if where is not None else Path.cwd()
    not_names = [repr(k) for k in values if not isinstance(k, str)]
    if not_names:
        raise InputError(where or "config", f"key(s) {', '.join(not_names)} are not names; "
                         f"known keys: {', '.join(KEYS)}")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise InputError(
            where or "config",
            f"unknown key(s) {', '.join(unknown)}; known keys: {', '.join(KEYS)}",
        )
    merged = dict(values)
    cli_keys = {k for k, v in (overrides or {}).items() if v is not None}
    for key in cli_keys:
        merged[key] = overrides[key]  # type: ignore[index]
    if any(merged.get(k) is not None for k in SOURCE_KEYS if k in cli_keys):
        for key in SOURCE_KEYS:  # a source flag replaces the file's source
            if key not in cli_keys:
                merged.pop(key, None)
    parsed: dict[str, Any] = {}
    for key, spec in KEYS.items():
        raw = merged.get(key)
        label = where if key not in cli_keys else f"--{key.replace('_', '-')}"
        relative_to = base if key not in cli_keys else Path.cwd()
        parsed[key] = spec.default if raw is None else _parse(key, spec, raw, label, relative_to)
    if parsed["state_dir"] is None:
        raise InputError(where or "config", "key 'state_dir' is required (or pass --state DIR)")
    sources = [k for k in SOURCE_KEYS if parsed[k] is not None]
    if len(sources) != 1:
        found = ", ".join(sources) or "none"
        raise InputError(
            where or "config",
            f"exactly one source key of {', '.join(SOURCE_KEYS)} is needed (found: {found}); "
            "or pass --pairs, --stac or --drop-folder",
        )
    if parsed["run_id"] is None:
        parsed["run_id"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    parsed["predictor"] = dict(parsed["predictor"])
    return NightlyConfig(**parsed)


def _parse(key: str, spec: KeySpec, raw: Any, where: Any, base: Path) -> Any:
    """One validated value; errors read ``<file>: key '<key>': <problem>``."""

    def fail(problem: str) -> InputError:
        return InputError(where or "config", f"key '{key}': {problem}")

    kind = spec.kind
    if kind in ("path", "file", "dir"):
        if not isinstance(raw, str | os.PathLike) or not str(raw):
            raise fail(f"expected a path, got {raw!r}")
        path = Path(os.path.expanduser(str(raw)))
        path = path if path.is_absolute() else (base / path)
        if kind == "file" and not path.is_file():
            raise fail(f"file {path} does not exist")
        if kind == "dir" and not path.is_dir():
            raise fail(f"folder {path} does not exist")
        return path
    if kind in ("probability", "non_negative", "positive"):
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise fail(f"expected a number, got {raw!r}")
        value = float(raw)
        if kind == "probability" and not 0.0 <= value <= 1.0:
            raise fail(f"must lie in [0, 1], got {value}")
        if kind == "non_negative" and value < 0:
            raise fail(f"must be >= 0, got {value}")
        if kind == "positive" and value <= 0:
            raise fail(f"must be > 0, got {value}")
        return value
    if kind == "hosts":
        if not isinstance(raw, list) or not all(isinstance(h, str) and h.strip() for h in raw):
            raise fail(f"expected a list of host names, got {raw!r}")
        return tuple(h.strip().lower() for h in raw)
    if kind == "bool":
        if not isinstance(raw, bool):
            raise fail(f"expected true or false, got {raw!r}")
        return raw
    if kind == "mapping":
        if not isinstance(raw, dict):
            raise fail(f"expected a mapping, got {raw!r}")
        unknown = sorted(str(k) for k in set(raw) - set(PREDICTOR_KEYS))
        if unknown:
            raise fail(f"unknown option(s) {', '.join(map(str, unknown))}; "
                       f"known: {', '.join(PREDICTOR_KEYS)}")
        from groundbreak.infer.prediction.inference import (
            RUNTIMES,  # imports torch: only when needed
        )
        from groundbreak.train.devices import check_device_name

        try:
            check_device_name(raw.get("device", "auto"))
        except ValueError as err:
            raise fail(str(err)) from None
        for name, value in raw.items():
            problem = _predictor_option_problem(str(name), value)
            if problem:
                raise fail(problem)
        if raw.get("runtime", "auto") not in RUNTIMES:
            raise fail(f"runtime must be one of {', '.join(RUNTIMES)}, got {raw['runtime']!r}")
        from groundbreak.datasets.clouds import CLOUD_MASK_MODES

        if raw.get("cloud_mask", "auto") not in CLOUD_MASK_MODES:
            raise fail(f"cloud_mask must be one of {', '.join(CLOUD_MASK_MODES)}, "
                       f"got {raw['cloud_mask']!r}")
        return dict(raw)
    if kind in ("pairing", "alerts"):
        return _parse_section(PairingRule if kind == "pairing" else AlertPolicy, raw, fail)
    if kind == "cluster":
        if isinstance(raw, str) and raw.strip().lower() == "none":  # --cluster none: in-process
            return None
        try:
            return parse_cluster(raw).text
        except ValueError as err:
            raise fail(str(err)) from None
    if kind == "run_id":
        text = str(raw)
        if not text or text.startswith(".") or not all(c.isalnum() or c in "-_." for c in text):
            raise fail(f"must be letters, digits, '-', '_' or '.', got {raw!r}")
        return text
    if kind == "log_format":
        if raw not in LOG_FORMATS:
            raise fail(f"must be one of {', '.join(LOG_FORMATS)}, got {raw!r}")
        return raw
    raise AssertionError(f"unhandled key kind {kind}")


def _predictor_option_problem(name: str, value: Any) -> str | None:
    """Why a predictor option's value has the wrong type, or None."""
    if name == "tta" and not isinstance(value, bool):
        return f"tta must be true or false, got {value!r}"
    if name in ("window", "overlap", "batch_size"):
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not whole or value < (0 if name == "overlap" else 1):
            least = 0 if name == "overlap" else 1
            return f"{name} must be a whole number >= {least}, got {value!r}"
    return None


def _parse_section(kind: type, raw: Any, fail: Any) -> Any:
    """A mapping of a config section (``pairing``, ``alerts``) as its dataclass."""
    if not isinstance(raw, dict):
        raise fail(f"expected a mapping, got {raw!r}")
    known = [f.name for f in dataclasses.fields(kind) if f.name != "threshold"]
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise fail(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    words = {f.name for f in dataclasses.fields(kind) if isinstance(f.default, str)}
    numbers = {k: v for k, v in raw.items() if k not in words}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise fail(f"option {name}: expected a number, got {value!r}")
        if isinstance(next(f for f in dataclasses.fields(kind) if f.name == name).default, int):
            if value != int(value):
                raise fail(f"option {name}: expected a whole number, got {value!r}")
            raw = {**raw, name: int(value)}
    try:
        return kind(**raw)
    except ValueError as err:
        raise fail(str(err)) from None


def describe_keys() -> str:
    """Every config key with its default and meaning, for ``--help-config``."""
    lines = []
    for key, spec in KEYS.items():
        default = "" if spec.default in (None, {}) else f" (default: {spec.default})"
        lines.append(f"{key}{default}\n    {spec.doc}")
    return "\n".join(lines)
