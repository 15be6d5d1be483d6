"""``groundbreak export``: turn a Lightning training checkpoint into a model bundle.

Usage::

    groundbreak export runs/oscd_s2/checkpoints/best.ckpt --out checkpoints/oscd-s2-default \\
        [--name NAME] [--chips CHIPS_DIR] [--threshold T]

This is the one place a checkpoint (a pickle) is read: with ``torch.load(weights_only=True)``,
which unpickles only tensors and plain containers; ``--trust-checkpoint`` lifts that for a
checkpoint you made yourself that holds other objects. Inference never reads a checkpoint.

What goes into the bundle, and where it comes from:

- **architecture**: the task's saved hyperparameters (``network``, ``in_channels``, ``fusion``,
  ``encoder_name``, ``encoder_depth``, ``decoder_channels``, ``full_resolution``; what the
  network uses of them), else the ``"groundbreak"`` record
  that :class:`~groundbreak.train.task.ChangeSegmentationTask` adds to its checkpoints;
- **weights**: the task's ``model.*`` tensors, with the ``model.`` prefix stripped;
- **bands, normalisation, chip size, pixel size, date matching**: with ``--chips``, that chips
  directory's ``dataset.json``/``stats.json`` (for the bands the model was trained on);
  otherwise the checkpoint's ``"groundbreak"`` record; otherwise the chips directory named in
  the datamodule's saved hyperparameters;
- **threshold**, first found of: ``--threshold``; the ``val/best_threshold`` recorded in the
  checkpoint (the validation epoch it was saved after); the CSV log ``metrics.csv`` of the run
  (at most two folders below the checkpoint folder's parent, e.g. ``logs/version_0/metrics.csv``,
  newest first): the row of the checkpoint's own epoch, or when that epoch was not logged, the epoch
  with the highest ``val/f1``; last, the task's ``threshold`` hyperparameter (0.5 by default);
- **metrics**: the ``val/*`` scores from the same place as the threshold.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from groundbreak.datasets.bands import normalize_band_names
from groundbreak.datasets.datamodule import ChipsDirectory
from groundbreak.datasets.errors import InputError
from groundbreak.train.arguments import threshold_argument
from groundbreak.train.bundle import ModelBundle, load_bundle, save_bundle
from groundbreak.train.bundle_weights import check_state_dict
from groundbreak.train.model import (
    ChangeModel,
    SkippedStage,
    architecture_record,
    build_change_model,
)
from groundbreak.train.task import CHECKPOINT_KEY as CHECKPOINT_RECORD_KEY

MODEL_PREFIX = "model."


@dataclass(frozen=True)
class Normalization:
    """Bands, per-band statistics and chip geometry, and where they were read from."""

    bands: list[str]
    mean: list[float]
    std: list[float]
    chip_size: int
    pixel_size_m: float | None
    source: str
    date_matching: str = "none"


@dataclass(frozen=True)
class ValidationRecord:
    """The operating threshold and validation scores, and where they were read from."""

    threshold: float
    metrics: dict[str, float]
    source: str


def load_checkpoint(path: Path, trust: bool = False) -> dict[str, Any]:
    """Read a Lightning checkpoint (``weights_only`` unless ``trust``) onto the CPU."""
    if not path.is_file():
        raise InputError(path, "checkpoint does not exist")
    if not zipfile.is_zipfile(path):
        raise InputError(path, "is not a torch checkpoint (.ckpt files are zip archives)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        reason = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        raise InputError(
            path,
            f"holds objects that a safe (weights_only) load refuses"
            f"{f' ({reason.group(1)})' if reason else ''}; if you made this checkpoint "
            "yourself, pass --trust-checkpoint",
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise InputError(path, f"cannot be read as a checkpoint ({err})") from err
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise InputError(path, "is not a Lightning checkpoint (no 'state_dict')")
    return dict(checkpoint)


def checkpoint_architecture(checkpoint: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The architecture record of the model saved in a checkpoint (see
    :func:`~groundbreak.train.model.architecture_record`)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    record = checkpoint.get(CHECKPOINT_RECORD_KEY) or {}
    for candidate in (hparams, record.get("architecture") or {}):
        try:
            return architecture_record(candidate)
        except (KeyError, ValueError, AttributeError):
            continue
    raise InputError(
        path,
        "records no model architecture (hyperparameters network, fusion, in_channels and, for a "
        "U-Net, encoder_name, encoder_depth, decoder_channels); was it saved by "
        "ChangeSegmentationTask?",
    )


def checkpoint_model(checkpoint: Mapping[str, Any], path: Path) -> ChangeModel:
    """The change model of a task checkpoint, its ``model.*`` weights loaded, in eval mode."""
    architecture = checkpoint_architecture(checkpoint, path)
    try:
        model = build_change_model(architecture)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"architecture {architecture} cannot be built: {err}") from err
    state = {
        name.removeprefix(MODEL_PREFIX): tensor
        for name, tensor in checkpoint["state_dict"].items()
        if name.startswith(MODEL_PREFIX)
    }
    if not state:
        raise InputError(path, f"state_dict has no '{MODEL_PREFIX}*' weights of a change model")
    # Checkpoints from before deeper-than-depth stages were dropped still carry their weights.
    skipped = tuple(
        f"{name}." for name, module in model.named_modules() if isinstance(module, SkippedStage)
    )
    state = {name: t for name, t in state.items() if not (skipped and name.startswith(skipped))}
    check_state_dict(state, model, path, f"the architecture {architecture}")
    model.load_state_dict(state)
    return model.eval()


def checkpoint_normalization(
    checkpoint: Mapping[str, Any], path: Path, chips_dir: Path | None, in_channels: int
) -> Normalization:
    """Bands, statistics and chip size: from ``chips_dir``, the checkpoint, or its datamodule."""
    record = checkpoint.get(CHECKPOINT_RECORD_KEY) or {}
    datamodule = checkpoint.get("datamodule_hyper_parameters") or {}
    trained_bands = record.get("bands") or datamodule.get("bands")
    if chips_dir is None and all(k in record for k in ("bands", "mean", "std", "chip_size")):
        normalization = Normalization(
            bands=normalize_band_names(record["bands"]),
            mean=[float(v) for v in record["mean"]],
            std=[float(v) for v in record["std"]],
            chip_size=int(record["chip_size"]),
            pixel_size_m=record.get("pixel_size_m"),
            source=f"{path.name} (datamodule record)",
            date_matching=str(record.get("date_matching", "none")),
        )
    else:
        if chips_dir is None and datamodule.get("chips_dir"):
            chips_dir = Path(datamodule["chips_dir"])
        if chips_dir is None:
            raise InputError(
                path, "records no bands or normalisation; pass --chips CHIPS_DIR (its stats.json)"
            )
        directory = ChipsDirectory(chips_dir)
        bands = directory.resolve_bands(trained_bands)
        mean, std = directory.band_statistics(bands)
        normalization = Normalization(
            bands=bands,
            mean=mean.astype(float).tolist(),
            std=std.astype(float).tolist(),
            chip_size=directory.chip_size,
            pixel_size_m=directory.pixel_size_m,
            source=str(directory.root),
            date_matching=directory.date_matching,
        )
        trained_matching = record.get("date_matching", directory.date_matching)
        if trained_matching != directory.date_matching:
            raise InputError(
                path,
                f"was trained on chips with date matching {trained_matching!r} but "
                f"{directory.root} has {directory.date_matching!r}; export it with the chips "
                "it was trained on",
            )
        if "mean" in record and "std" in record and len(record["mean"]) == len(bands):
            trained = np.asarray([record["mean"], record["std"]], dtype=np.float64)
            if not np.allclose(trained, [normalization.mean, normalization.std], rtol=1e-4):
                print(
                    f"groundbreak export: warning: the statistics of {directory.root} differ "
                    f"from those {path.name} was trained with; the bundle uses {directory.root}'s",
                    file=sys.stderr,
                )
    if len(normalization.bands) != in_channels:
        raise InputError(
            path,
            f"the model takes {in_channels} bands but the normalisation from "
            f"{normalization.source} has {len(normalization.bands)} "
            f"({', '.join(normalization.bands)})",
        )
    return normalization


def find_metrics_csvs(checkpoint_path: Path) -> list[Path]:
    """The CSV logs of a checkpoint's run: ``metrics.csv`` below the run folder, newest first.

    Only the run folder and two levels below it (a CSVLogger's ``NAME/version_N``) are searched,
    so a checkpoint kept outside a run folder does not make the export walk a whole tree.
    """
    run_dir = checkpoint_path.resolve().parent.parent
    patterns = ("metrics.csv", "*/metrics.csv", "*/*/metrics.csv")
    found = [p for pattern in patterns for p in run_dir.glob(pattern) if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def validation_row(metrics_csv: Path, epoch: int | None) -> pd.Series | None:
    """The logged validation row of ``epoch``, else of the best ``val/f1``; None when absent."""
    try:
        log = pd.read_csv(metrics_csv)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(metrics_csv, f"cannot be read as a CSV log ({err})") from err
    if "val/best_threshold" not in log.columns:
        return None
    rows = log[log["val/best_threshold"].notna()]
    if rows.empty:
        return None
    if epoch is not None and "epoch" in rows.columns:
        same_epoch = rows[rows["epoch"] == epoch]
        if not same_epoch.empty:
            return same_epoch.iloc[-1]
    if "val/f1" in rows.columns and rows["val/f1"].notna().any():
        return rows.loc[rows["val/f1"].idxmax()]
    return rows.iloc[-1]


def checkpoint_validation(
    checkpoint: Mapping[str, Any], path: Path, threshold: float | None
) -> ValidationRecord:
    """The operating threshold and validation metrics, by the rule in the module docstring."""
    record = checkpoint.get(CHECKPOINT_RECORD_KEY) or {}
    recorded = {f"val/{k}": float(v) for k, v in (record.get("val_metrics") or {}).items()}
    metrics, source = recorded, f"{path.name} (recorded validation)"
    if not _finite(recorded.get("val/best_threshold")):
        metrics, source = {}, ""
        for metrics_csv in find_metrics_csvs(path):
            row = validation_row(metrics_csv, checkpoint.get("epoch"))
            if row is not None:
                metrics = {
                    str(k): float(v)
                    for k, v in row.items()
                    if str(k).startswith("val/") and _finite(v)
                }
                source = f"{metrics_csv} (epoch {int(row['epoch'])})"
                break
    if threshold is not None:
        return ValidationRecord(float(threshold), metrics, "--threshold")
    if _finite(metrics.get("val/best_threshold")):
        # The sweep's thresholds are float32 (0.05 -> 0.0500000007): keep the decimal value.
        return ValidationRecord(round(metrics["val/best_threshold"], 6), metrics, source)
    default = float((checkpoint.get("hyper_parameters") or {}).get("threshold", 0.5))
    return ValidationRecord(default, metrics, "the task's threshold (no validation found)")


def export_checkpoint(
    checkpoint_path: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    chips_dir: str | Path | None = None,
    threshold: float | None = None,
    trust_checkpoint: bool = False,
) -> ModelBundle:
    """Write the model bundle of a ChangeSegmentationTask checkpoint and load it back."""
    path = Path(checkpoint_path)
    checkpoint = load_checkpoint(path, trust=trust_checkpoint)
    out_dir = Path(out_dir)
    try:  # a checkpoint's contents are input: a wrong type anywhere in them is bad input
        model = checkpoint_model(checkpoint, path)
        normalization = checkpoint_normalization(
            checkpoint, path, Path(chips_dir) if chips_dir else None, model.in_channels
        )
        validation = checkpoint_validation(checkpoint, path, threshold)
        meta = {
            "name": name or out_dir.resolve().name,
            "bands": normalization.bands,
            "normalization": {"mean": normalization.mean, "std": normalization.std},
            "chip_size": normalization.chip_size,
            "threshold": validation.threshold,
            "pixel_size_m": normalization.pixel_size_m,
            "date_matching": normalization.date_matching,
            "training": _training_record(checkpoint, path, normalization, validation),
            "metrics": validation.metrics,
        }
    except InputError:
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(
            path, f"has malformed contents ({type(err).__name__}: {' '.join(str(err).split())})"
        ) from err
    save_bundle(model, meta, out_dir)
    return load_bundle(out_dir)  # checked exactly as inference will load it


def _training_record(
    checkpoint: Mapping[str, Any],
    path: Path,
    normalization: Normalization,
    validation: ValidationRecord,
) -> dict[str, Any]:
    """Provenance for model.json: the checkpoint, hyperparameters and data the model came from."""
    record: dict[str, Any] = {
        "checkpoint": str(path.resolve()),
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "lightning_version": checkpoint.get("pytorch-lightning_version"),
        "hyperparameters": dict(checkpoint.get("hyper_parameters") or {}),
        "datamodule": dict(checkpoint.get("datamodule_hyper_parameters") or {}),
        "normalization_source": normalization.source,
        "threshold_source": validation.source,
    }
    chips_dir = Path(normalization.source)
    if chips_dir.is_dir():
        directory = ChipsDirectory(chips_dir)
        record["dataset"] = {
            "layout": directory.info.get("layout"),
            "root": directory.info.get("root"),
            "pairs": {
                split: sorted(rows["pair_id"].astype(str).unique())
                for split, rows in directory.manifest.groupby("split")
            },
        }
    return record


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def build_parser() -> argparse.ArgumentParser:
    """The ``groundbreak export`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="groundbreak export",
        description="Export a training checkpoint (.ckpt) to a model bundle "
        "(model.safetensors + model.json), the only form inference loads.",
    )
    parser.add_argument(
        "checkpoint", type=Path, help="Lightning checkpoint of a ChangeSegmentationTask"
    )
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--name", help="bundle name (default: the folder name)")
    parser.add_argument(
        "--chips", type=Path, help="chips directory whose stats.json gives the normalisation"
    )
    parser.add_argument(
        "--threshold",
        type=threshold_argument,
        help="operating threshold (default: from validation)",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a full (pickle) load of a checkpoint you made yourself",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak export``."""
    args = build_parser().parse_args(list(argv))
    bundle = export_checkpoint(
        args.checkpoint, args.out, args.name, args.chips, args.threshold, args.trust_checkpoint
    )
    f1 = bundle.meta["metrics"].get("val/f1")
    architecture = bundle.model.architecture
    network = architecture.get("network") or architecture["encoder_name"]
    print(
        f"wrote model bundle {bundle.path} ({bundle.name}: {architecture['fusion']} "
        f"{network}, {len(bundle.bands)} bands {','.join(bundle.bands)}, "
        f"chip {bundle.chip_size})"
    )
    print(f"threshold {bundle.threshold:.3f} from {bundle.meta['training']['threshold_source']}")
    print(f"normalisation from {bundle.meta['training']['normalization_source']}")
    if f1 is not None:
        print(f"val/f1 {f1:.4f}")
    return 0
