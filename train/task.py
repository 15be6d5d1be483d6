"""The LightningModule that trains a change network on (before, after, mask) chips.

Built like a torchgeo trainer: small hooks :meth:`configure_models`, :meth:`configure_losses` and
:meth:`configure_metrics` build the parts from the saved hyperparameters, so a subclass can swap
one without touching the loops. Validation metrics are pooled over all pixels of the epoch (see
:mod:`groundbreak.train.metrics`).

With ``teacher`` (a model bundle, e.g. an ensemble), the network is also trained towards the
teacher's change probabilities on the same augmented chips (knowledge distillation, Hinton et al.
2015): the loss is ``(1 - distill_weight) * loss + distill_weight * BCE(logits, p_teacher)``
over the labelled pixels. The teacher runs frozen beside the network; it is not part of the
checkpoint or the exported bundle, and must read the chips as they are normalised (same bands and
statistics), which :meth:`ChangeSegmentationTask.on_fit_start` checks.

Checkpoints also carry, under the key ``"groundbreak"``, what an export to a model bundle needs
besides the weights: the datamodule's band names, normalisation, chip size and pixel size, and the
last validation scores with the best-F1 threshold.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch.optim import Adam, AdamW
from torch.optim.lr_scheduler import ExponentialLR, LambdaLR

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.transforms import IGNORE_INDEX
from groundbreak.train.losses import ChangeLoss, LossName
from groundbreak.train.metrics import PooledChangeMetrics
from groundbreak.train.model import ChangeModel, Fusion, Network, build_change_model

Scheduler = Literal["cosine", "onecycle", "exponential", "none"]
Optimizer = Literal["adamw", "adam"]
CHECKPOINT_KEY = "groundbreak"
"""Key of the export metadata inside a Lightning checkpoint."""


ONECYCLE_WARMUP = 0.3
"""Fraction of a one-cycle run spent warming up (as torch's OneCycleLR ``pct_start``)."""
ONECYCLE_START = 1 / 25
"""One-cycle learning rate at the first step, as a fraction of the peak (``1 / div_factor``)."""
ONECYCLE_END = ONECYCLE_START / 1e4
"""One-cycle learning rate at the last step, as a fraction of the peak (``final_div_factor``)."""


def schedule_factor(scheduler: Scheduler, total_steps: int) -> Callable[[int], float]:
    """The learning rate at each step of a run of ``total_steps``, as a fraction of the peak.

    ``"cosine"`` anneals from 1 to 0. ``"onecycle"`` follows torch's OneCycleLR learning rate
    (cosine warm-up from 1/25 to 1 over the first 30 % of steps, then cosine annealing to
    1/250000), without its momentum cycle. Steps past the end keep the last value.
    """
    total = max(int(total_steps), 1)
    warmup = min(max(round(ONECYCLE_WARMUP * total), 1), total - 1)

    def anneal(start: float, end: float, fraction: float) -> float:
        return end + (start - end) * (1 + math.cos(math.pi * min(fraction, 1.0))) / 2

    def cosine(step: int) -> float:
        return anneal(1.0, 0.0, step / total)

    def onecycle(step: int) -> float:
        if step < warmup:
            return anneal(ONECYCLE_START, 1.0, step / warmup)
        return anneal(1.0, ONECYCLE_END, (step - warmup) / max(total - warmup, 1))

    if scheduler == "cosine":
        return cosine
    if scheduler == "onecycle":
        return onecycle
    raise ValueError(f"unknown scheduler {scheduler!r}; expected cosine or onecycle")


class ChangeSegmentationTask(LightningModule):
    """Binary change segmentation of tile pairs with a U-Net.

    Args:
        in_channels: Bands per date (with LightningCLI, linked from the datamodule's band count).
        network: ``"unet"`` (smp U-Net, the encoder and decoder below), ``"fc"`` (FC-EF,
            FC-Siam-diff or FC-Siam-conc by ``fusion``) or ``"fc_res"`` (FC-EF-Res, early fusion);
            see :mod:`groundbreak.train.fc_networks`. The FC networks have fixed layers: the
            encoder, decoder and full-resolution arguments are ignored for them.
        fusion: How the dates are fused: ``"early"``, ``"siamese_diff"``, ``"siamese_concat"``.
        encoder_name: A segmentation-models-pytorch encoder, randomly initialised.
        encoder_depth: Encoder stages; inputs are padded to a multiple of ``2**encoder_depth``.
        decoder_channels: Width of each decoder block, one per encoder stage.
        full_resolution: Add the U-Net's full-resolution stage (see
            :class:`~groundbreak.train.model.ChangeUNet`).
        loss: ``"bce"``, ``"bce_dice"``, ``"focal_dice"`` or ``"bce_lovasz"`` (see
            :mod:`groundbreak.train.losses`).
        pos_weight: Weight of changed pixels in BCE (``None``: unweighted).
        dice_weight: Weight of the soft Dice term of ``"bce_dice"`` and ``"focal_dice"``.
        lr: Peak learning rate.
        weight_decay: Weight decay: decoupled with AdamW, an L2 term of the loss with Adam.
        scheduler: ``"cosine"`` (annealed to 0 over training, per step), ``"onecycle"`` (warm-up
            then annealing, per step; see :func:`schedule_factor`), ``"exponential"`` (multiplied
            by ``lr_decay`` after every epoch) or ``"none"``.
        optimizer: ``"adamw"`` or ``"adam"`` (Caye Daudt et al.'s recipe).
        lr_decay: Factor of the ``"exponential"`` schedule per epoch.
        threshold: Probability threshold of the pooled validation scores (``val/f1`` ...).
        channels_last: Keep the model and its inputs channels-last (NHWC): about 40 % faster
            training on this project's CPU, and the fast layout for mixed precision on GPUs.
        teacher: A model bundle whose probabilities the network also learns (distillation; see
            the module docstring); ``None``: labels only.
        distill_weight: Share of the teacher's term in the loss, in [0, 1].
    """

    def __init__(
        self,
        in_channels: int = 13,
        network: Network = "unet",
        fusion: Fusion = "early",
        encoder_name: str = "resnet18",
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        full_resolution: bool = False,
        loss: LossName = "bce_dice",
        pos_weight: float | None = None,
        dice_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: Scheduler = "cosine",
        threshold: float = 0.5,
        channels_last: bool = True,
        optimizer: Optimizer = "adamw",
        lr_decay: float = 0.95,
        teacher: str | None = None,
        distill_weight: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
        self.save_hyperparameters()
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        self._last_val_scores: dict[str, float] = {}
        self._seconds_before_run = 0.0  # training seconds of the runs a resumed one continues
        self._run_started: float | None = None

    @property
    def _hp(self) -> AttributeDict:
        """The hyperparameters :meth:`save_hyperparameters` saved (an ``AttributeDict``)."""
        return cast(AttributeDict, self.hparams)

    # -- hooks -------------------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build :attr:`model`, the change network the hyperparameters name."""
        hp = self._hp
        self.model = build_change_model({
            "network": hp.get("network", "unet"),
            "in_channels": hp.in_channels,
            "fusion": hp.fusion,
            "encoder_name": hp.encoder_name,
            "encoder_depth": hp.encoder_depth,
            "decoder_channels": tuple(hp.decoder_channels),
            "full_resolution": hp.get("full_resolution", False),
        })
        if hp.get("channels_last", False):
            self.model = self.model.to(memory_format=torch.channels_last)
        self._teacher: Teacher | None = None
        if hp.get("teacher"):
            self._teacher = Teacher(Path(hp.teacher), channels_last=hp.get("channels_last", False))

    def configure_losses(self) -> None:
        """Build :attr:`criterion`, the training loss."""
        hp = self._hp
        self.criterion = ChangeLoss(hp.loss, pos_weight=hp.pos_weight, dice_weight=hp.dice_weight)

    def configure_metrics(self) -> None:
        """Build the pooled validation and test metrics."""
        self.val_metrics = PooledChangeMetrics(threshold=self._hp.threshold)
        self.test_metrics = PooledChangeMetrics(threshold=self._hp.threshold)

    # -- model -------------------------------------------------------------------------------
    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(B, 1, H, W)``; pads H and W to the model's stride and crops back."""
        return padded_logits(self.model, before, after, self.hparams.get("channels_last", False))

    def _shared_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["before"], batch["after"])
        return logits, self.criterion(logits, batch["mask"])

    # -- loops -------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Move the teacher to the network's device and check it reads the chips as served."""
        if self._teacher is not None:
            self._teacher.to(self.device)
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is not None:
                self._teacher.check_inputs(datamodule)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step; logs ``train/loss`` (and ``train/distill_loss`` with a
        teacher)."""
        logits, loss = self._shared_step(batch)
        if self._teacher is not None:
            distill = self._teacher.loss(logits, batch)
            weight = float(self._hp.distill_weight)
            loss = (1.0 - weight) * loss + weight * distill
            self.log("train/distill_loss", distill, on_step=False, on_epoch=True,
                     batch_size=batch["mask"].shape[0], sync_dist=True)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
            batch_size=batch["mask"].shape[0], sync_dist=True,
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate the pooled metrics; logs ``val/loss``."""
        logits, loss = self._shared_step(batch)
        # float32 sigmoid: under bf16 autocast it would round probabilities near 0.5 together.
        self.val_metrics.update(torch.sigmoid(logits.float()), batch["mask"])
        self.log(
            "val/loss", loss, on_epoch=True, prog_bar=True,
            batch_size=batch["mask"].shape[0], sync_dist=True,
        )

    def on_validation_epoch_end(self) -> None:
        """Log ``val/precision``, ``val/recall``, ``val/f1``, ``val/iou``, ``val/best_*``."""
        scores = self.val_metrics.compute()
        self.val_metrics.reset()
        self.log_dict({f"val/{k}": v for k, v in scores.items()}, prog_bar=False, sync_dist=True)
        if not self.trainer.sanity_checking:  # a few sanity batches are no validation to export
            self._last_val_scores = {k: float(v) for k, v in scores.items()}

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate the pooled test metrics; logs ``test/loss``."""
        logits, loss = self._shared_step(batch)
        self.test_metrics.update(torch.sigmoid(logits.float()), batch["mask"])
        self.log(
            "test/loss", loss, on_epoch=True, batch_size=batch["mask"].shape[0], sync_dist=True
        )

    def on_test_epoch_end(self) -> None:
        """Log the pooled ``test/*`` scores."""
        scores = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log_dict({f"test/{k}": v for k, v in scores.items()}, sync_dist=True)

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Change probabilities ``(B, 1, H, W)``."""
        return torch.sigmoid(self(batch["before"], batch["after"]))

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> OptimizerLRScheduler:
        """AdamW (or Adam), with a per-step cosine or one-cycle schedule over the whole run, or a
        per-epoch exponential decay.

        The cosine and one-cycle schedules are functions of the step and the run's length, which a
        checkpoint does not store: a run resumed with more epochs stretches the schedule over its
        new length.
        """
        hp = self._hp
        optimizer_class = Adam if hp.get("optimizer", "adamw") == "adam" else AdamW
        optimizer = optimizer_class(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "none":
            return {"optimizer": optimizer}
        if hp.scheduler == "exponential":
            decay = float(hp.get("lr_decay", 0.95))
            if not 0.0 < decay <= 1.0:
                raise ValueError(f"lr_decay must be in (0, 1], got {decay}")
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": ExponentialLR(optimizer, gamma=decay),
                                 "interval": "epoch", "frequency": 1},
            }
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps) or total_steps < 1:
            raise ValueError(
                f"scheduler {hp.scheduler!r} needs a bounded run: set trainer.max_epochs or "
                "trainer.max_steps, or use scheduler 'none'"
            )
        scheduler = LambdaLR(optimizer, schedule_factor(hp.scheduler, int(total_steps)))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_train_start(self) -> None:
        """Set the learning rate to where the schedule is (a resumed run restores the old one)
        and start counting this run's training seconds."""
        self._run_started = time.perf_counter()
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, LambdaLR):
                for group, base, factor in zip(
                    scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas,
                    strict=True,
                ):
                    group["lr"] = base * factor(scheduler.last_epoch)

    # -- export metadata ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the bands, normalisation and last validation scores for a later export."""
        record: dict[str, Any] = {
            "architecture": self.model.architecture,
            "val_metrics": dict(self._last_val_scores),
            "train_seconds": round(self.train_seconds, 1),
        }
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        for name in ("bands", "mean", "std", "chip_size", "pixel_size_m", "date_matching"):
            value = getattr(datamodule, name, None)
            if value is not None:
                record[name] = value.tolist() if hasattr(value, "tolist") else value
        checkpoint[CHECKPOINT_KEY] = record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the last validation scores and the training seconds recorded in a checkpoint."""
        record = checkpoint.get(CHECKPOINT_KEY, {})
        self._last_val_scores = dict(record.get("val_metrics", {}))
        self._seconds_before_run = float(record.get("train_seconds", 0.0))

    @property
    def train_seconds(self) -> float:
        """Wall seconds of training so far, over every run a resumed one continues (from the
        start of training to now; time lost after a run's last checkpoint is not counted)."""
        running = 0.0 if self._run_started is None else time.perf_counter() - self._run_started
        return self._seconds_before_run + running


def padded_logits(
    model: ChangeModel, before: torch.Tensor, after: torch.Tensor, channels_last: bool
) -> torch.Tensor:
    """``model``'s change logits ``(B, 1, H, W)``, the inputs padded to its stride and the logits
    cropped back."""
    height, width = before.shape[-2:]
    stride = model.output_stride
    pad_h, pad_w = (-height) % stride, (-width) % stride
    if pad_h or pad_w:
        # 0 is the band mean after normalisation, the same value invalid pixels get.
        before = F.pad(before, (0, pad_w, 0, pad_h))
        after = F.pad(after, (0, pad_w, 0, pad_h))
    if channels_last:
        before = before.contiguous(memory_format=torch.channels_last)
        after = after.contiguous(memory_format=torch.channels_last)
    return model(before, after)[..., :height, :width]


class Teacher:
    """A frozen model bundle whose change probabilities a network learns (distillation).

    Held outside the LightningModule's modules, so it is in no checkpoint, no optimiser and no
    exported bundle.
    """

    def __init__(self, bundle_path: Path, channels_last: bool = False) -> None:
        from groundbreak.train.bundle import load_bundle  # the bundle module imports this stage

        self.bundle = load_bundle(bundle_path)
        self.model = self.bundle.model.eval().requires_grad_(False)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def to(self, device: torch.device) -> None:
        """Move the teacher's weights to ``device``."""
        self.model = self.model.to(device)

    def check_inputs(self, datamodule: Any) -> None:
        """Raise InputError (naming the teacher's ``model.json``) unless it reads the chips the
        datamodule serves (the same bands and normalisation); warn when it is predicted with
        another date matching than the chips were cut with."""
        meta = self.bundle.path / "model.json"
        bands = list(getattr(datamodule, "bands", self.bundle.bands))
        if bands != list(self.bundle.bands):
            raise InputError(meta, f"the teacher reads bands {self.bundle.bands}, the chips "
                             f"are served as {bands}")
        for name in ("mean", "std"):
            served = np.asarray(getattr(datamodule, name, getattr(self.bundle, name)), float)
            if served.shape != getattr(self.bundle, name).shape or not np.allclose(
                served, getattr(self.bundle, name), rtol=1e-4, atol=1e-3
            ):
                raise InputError(meta, f"the teacher's normalisation {name} differs from the "
                                 "chips' statistics: it was trained on other chips")
        matching = getattr(datamodule, "date_matching", None)
        if matching is not None and matching != self.bundle.date_matching:
            # A warning, not an error: a bundle's date matching is how it is *predicted* (the
            # shipped ensemble: mean_std), while its recipe trained it on unmatched chips.
            warnings.warn(f"{meta}: the teacher is predicted with dates matched by "
                          f"{self.bundle.date_matching!r}, the chips were cut with {matching!r}; "
                          "it learns the teacher's probabilities on the chips as cut", stacklevel=2)

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Binary cross-entropy of ``logits`` against the teacher's probabilities on the same
        batch, over the labelled pixels (float32)."""
        with torch.no_grad():
            target = torch.sigmoid(
                padded_logits(self.model, batch["before"], batch["after"], self.channels_last)
                .float()
            )
        labelled = (batch["mask"] != IGNORE_INDEX).unsqueeze(1)
        if not labelled.any():
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits.float()[labelled], target[labelled])
