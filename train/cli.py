"""``groundbreak train``: LightningCLI over ChangeSegmentationTask and ChangeDataModule.

Usage::

    groundbreak train fit --config configs/oscd_s2.yaml
    groundbreak train fit --config configs/oscd_s2.yaml \
        --ckpt_path runs/oscd_s2/checkpoints/last.ckpt
    groundbreak train validate --config configs/oscd_s2.yaml --ckpt_path .../best.ckpt

What this adds to a plain LightningCLI:

- ``model.in_channels`` follows the datamodule's band count (linked at instantiation, so it also
  works with ``data.bands: null``, meaning every band of the chips directory);
- ``trainer.precision: null`` (the default) picks mixed precision at run time: ``bf16-mixed`` (or
  ``16-mixed``) when training runs on a CUDA GPU, ``32-true`` otherwise;
- a ``checkpoint`` section (ModelCheckpoint): best by ``val/f1`` (mode max) plus ``last.ckpt``
  for resuming, in ``<default_root_dir>/checkpoints`` unless ``checkpoint.dirpath`` says otherwise;
- a LearningRateMonitor, and a CSVLogger under ``<default_root_dir>/logs`` when no logger is set.

Strategy and devices stay ``auto``: one device trains without DDP or SyncBatchNorm; several
devices use DDP (gloo on CPU).

Relative paths in a config file (``data.chips_dir``, ``trainer.default_root_dir``,
``checkpoint.dirpath``, ``ckpt_path``) resolve against the config file's folder, so a config
runs the same from any working directory; the shipped configs in ``configs/`` name the
repository's ``runs/`` as ``../runs/...``. Paths given on the command line resolve against the
working directory.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from groundbreak.datasets.datamodule import ChangeDataModule
from groundbreak.datasets.text_files import load_yaml_text, read_text_file
from groundbreak.train.task import ChangeSegmentationTask

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
CONFIG_PATH_KEYS: tuple[str, ...] = (
    "data.chips_dir", "trainer.default_root_dir", "checkpoint.dirpath", "ckpt_path",
)
"""Keys of a training config whose relative paths resolve against the config file's folder."""
MAX_CONFIG_BYTES = 2**20
"""The largest training config read (1 MiB)."""


def runtime_precision(accelerator: object) -> str:
    """Mixed precision on a CUDA GPU (bf16 where supported), full precision elsewhere."""
    on_gpu = str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


class ChangeTrainingCLI(LightningCLI):
    """LightningCLI with the band-count link, runtime precision, checkpointing and logging."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the checkpoint and learning-rate sections and link the band count."""
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/f1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": False,  # last.ckpt comes from LAST_CHECKPOINT, below
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-epoch{epoch:03d}-f1{val/f1:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.link_arguments("data.num_bands", "model.in_channels", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Fill the run-time defaults: precision, logger and checkpoint folder."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        root = trainer.default_root_dir or os.getcwd()
        if trainer.precision is None:
            trainer.precision = runtime_precision(trainer.accelerator)
        if trainer.logger is None or trainer.logger is True:
            trainer.logger = Namespace(
                class_path=CSV_LOGGER, init_args=Namespace(save_dir=str(root), name="logs")
            )
        if config.get("checkpoint") is not None and config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = os.path.join(str(root), "checkpoints")
        if self.subcommand == "fit" and config.get("checkpoint") is not None:
            last = last_checkpoint(config.checkpoint.dirpath)
            trainer.callbacks = [*(trainer.callbacks or []), last]


def last_checkpoint(dirpath: str) -> Namespace:
    """A ModelCheckpoint that writes ``last.ckpt`` after every epoch, for resuming.

    Lightning 2.6 writes ``save_last``'s ``last.ckpt`` only when a top-k checkpoint is saved at the
    same step, so with ``save_top_k: 1`` it would be a copy of the best, and a resume would lose
    every epoch since the last improvement. A second callback without a monitor keeps the latest.
    """
    return Namespace(
        class_path="lightning.pytorch.callbacks.ModelCheckpoint",
        init_args=Namespace(
            dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
            enable_version_counter=False,
        ),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``groundbreak train <fit|validate|test|predict> [--config FILE] [options]``."""
    args = with_config_paths_resolved(sys.argv[1:] if argv is None else argv)
    check_ckpt_path(args)
    with warnings.catch_warnings():
        # Called from the ``groundbreak`` dispatcher, sys.argv also holds "train ...": expected.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        _run_cli(args)
    return 0


def with_config_paths_resolved(argv: Sequence[str]) -> list[str]:
    """``argv`` with, right after each ``--config FILE``, an override of every relative path of
    :data:`CONFIG_PATH_KEYS` in FILE, resolved against FILE's folder (later arguments still win).

    Raises:
        InputError: For a config that is not a regular file, is too large or is not YAML.
    """
    args: list[str] = []
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        args.append(arg)
        if arg == "--config" and rest:
            value = rest.pop(0)
            args.append(value)
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if os.path.lexists(value):  # else LightningCLI reads it (a YAML string) or says why
            args += [f"--{key}={path}" for key, path in config_paths(Path(value)).items()]
    return args


def config_paths(config: Path) -> dict[str, str]:
    """The relative paths of :data:`CONFIG_PATH_KEYS` in a config file, resolved against its
    folder (absolute paths, nulls and ``ckpt_path`` keywords such as ``last`` are left out)."""
    document = load_yaml_text(
        read_text_file(config, MAX_CONFIG_BYTES, "training config"), config, "a training config"
    )
    resolved = {}
    for key in CONFIG_PATH_KEYS:
        value: object = document
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if not isinstance(value, str) or not value or os.path.isabs(value) or "://" in value:
            continue
        if key == "ckpt_path" and value.split(":", 1)[0] in CKPT_PATH_KEYWORDS:
            continue
        resolved[key] = os.path.abspath(config.parent / value)
    return resolved


CKPT_PATH_KEYWORDS = ("last", "best", "hpc", "registry")
"""``--ckpt_path`` values that Lightning resolves itself, not files."""


def check_ckpt_path(argv: Sequence[str] | None) -> None:
    """Refuse a ``--ckpt_path`` that is not a checkpoint a safe load accepts, before training.

    Lightning would raise from deep inside ``torch.load`` (a pickle, a text file, a missing file).
    """
    from groundbreak.train.export import load_checkpoint

    args = list(argv or ())
    for i, arg in enumerate(args):
        if arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
        elif arg == "--ckpt_path" and i + 1 < len(args):
            value = args[i + 1]
        else:
            continue
        keyword = value.split(":", 1)[0] in CKPT_PATH_KEYWORDS or value.lower() == "null"
        if value and not keyword and "://" not in value:
            load_checkpoint(Path(value))


def _run_cli(argv: Sequence[str] | None) -> None:
    ChangeTrainingCLI(
        model_class=ChangeSegmentationTask,
        datamodule_class=ChangeDataModule,
        subclass_mode_model=False,
        subclass_mode_data=False,
        seed_everything_default=42,
        trainer_defaults={"accelerator": "auto", "devices": "auto", "strategy": "auto"},
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={"prog": "groundbreak train"},
        args=list(argv) if argv is not None else None,
        run=True,
    )
