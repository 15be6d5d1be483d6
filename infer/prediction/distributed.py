"""Prediction of one tile pair on several processes or GPUs, through Lightning.

The batches of windows of a :class:`~groundbreak.infer.prediction.tiling.WindowLayout` form a
dataset; ``trainer.predict`` gives every process a share of them (Lightning inserts a distributed
sampler into the data loader). Each process runs the model exactly as the single-process
:class:`~groundbreak.infer.prediction.predictor.TiledPredictor` does and a
:class:`WindowShardWriter` saves each batch's probabilities as a shard (``.npz``) in a hidden folder
under the output folder. Rank 0 then reads the shards back in batch order and blends them with the
same code as the single-process path
(:func:`~groundbreak.infer.prediction.predictor.write_blended`), so both paths write the same
``probability.tif`` and ``mask.tif``.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from torch.utils.data import DataLoader, Dataset

from groundbreak.datasets.pair import TilePair
from groundbreak.infer.prediction.inference import predict_probabilities
from groundbreak.infer.prediction.predictor import (
    BatchPrediction,
    PredictionResult,
    TiledPredictor,
    write_blended,
)
from groundbreak.infer.prediction.raster_io import bounded_gdal_cache
from groundbreak.infer.prediction.tiling import PairInput, WindowBatch, WindowLayout, read_batch

Strategy = Literal["auto", "ddp_fork", "ddp_spawn", "ddp"]
SHARD_FOLDER = ".prediction-shards"


def _launching_rank() -> bool:
    """True in the process that starts a run (not in a rank that Lightning launched)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


class WindowBatchDataset(Dataset):
    """The batches of windows of one pair; item ``i`` is batch ``i``, read and normalised."""

    def __init__(
        self,
        source: PairInput,
        layout: WindowLayout,
        batches: Sequence[WindowBatch],
    ) -> None:
        self.source = source
        self.layout = layout
        self.batches = list(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        with bounded_gdal_cache():
            batch = self.batches[index]
            data = read_batch(self.source, self.layout, batch)
        return {
            "index": index,
            "kept": torch.from_numpy(data.kept),
            "before": torch.from_numpy(data.before),
            "after": torch.from_numpy(data.after),
            "valid": torch.from_numpy(data.valid),
        }


class WindowPredictionModule(pl.LightningModule):
    """Runs the change model on batches of windows (``predict_step`` only)."""

    def __init__(
        self,
        model: nn.Module,
        tta: bool = False,
        autocast: torch.dtype | None = None,
        channels_last: bool = False,
        forward_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()  # the predictor's model: BatchNorms already folded
        self.tta = tta
        self.autocast = autocast
        self.channels_last = channels_last
        self.forward_batch = forward_batch

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Change probabilities ``(K, H, W)`` of the kept windows of one batch."""
        before, after = batch["before"], batch["after"]
        if before.shape[0] == 0:
            return torch.zeros(0, *before.shape[-2:])
        return predict_probabilities(
            self.model,
            before,
            after,
            tta=self.tta,
            autocast=self.autocast,
            channels_last=self.channels_last,
            forward_batch=self.forward_batch,
        ).cpu()


class WindowShardWriter(BasePredictionWriter):
    """Saves each batch's probabilities as ``<shard_dir>/b<index>.r<rank>.npz``."""

    def __init__(self, shard_dir: str | os.PathLike[str]) -> None:
        super().__init__(write_interval="batch")
        self.shard_dir = Path(shard_dir)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: torch.Tensor,
        batch_indices: Sequence[int] | None,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        index = int(batch["index"])
        path = self.shard_dir / f"b{index:07d}.r{trainer.global_rank}.npz"
        np.savez(
            path,
            kept=batch["kept"].cpu().numpy(),
            probability=prediction.float().cpu().numpy(),
            valid=batch["valid"].cpu().numpy(),
        )

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Wait for every rank, so rank 0 merges only complete shards."""
        trainer.strategy.barrier("window-shards-written")


def read_shards(shard_dir: Path, batches: Sequence[WindowBatch]) -> Iterator[BatchPrediction]:
    """The batch predictions saved by :class:`WindowShardWriter`, in batch order."""
    for batch in batches:
        found = sorted(shard_dir.glob(f"b{batch.index:07d}.r*.npz"))
        if not found:
            raise RuntimeError(f"no prediction shard for window batch {batch.index} in {shard_dir}")
        with np.load(found[0]) as shard:
            yield BatchPrediction(batch, shard["kept"], shard["probability"], shard["valid"])


class DistributedPredictor:
    """A :class:`TiledPredictor` run on several processes (CPU) or GPUs through Lightning.

    The window layout, model, precision, flips and blending are the predictor's; only the work
    is shared out.

    Args:
        predictor: The single-process predictor whose settings to use.
        devices: Number of processes / GPUs.
        accelerator: Lightning accelerator; default from the predictor's device (``"cpu"`` or
            ``"gpu"``).
        strategy: ``"ddp_fork"`` (forked processes: quick to start, CPU only), ``"ddp_spawn"``
            (fresh processes; works with CUDA), ``"ddp"`` (the script is launched again once
            per rank) or ``"auto"``: ``"ddp_fork"`` on CPU, ``"ddp_spawn"`` on GPU. In every
            case the calling process (rank 0) merges the shards.
        num_workers: Data loader workers per process reading windows.
    """

    def __init__(
        self,
        predictor: TiledPredictor,
        devices: int = 2,
        accelerator: str | None = None,
        strategy: Strategy = "auto",
        num_workers: int = 0,
    ) -> None:
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.predictor = predictor
        self.devices = devices
        self.accelerator = accelerator or ("gpu" if predictor.device.type == "cuda" else "cpu")
        if strategy == "auto":
            strategy = "ddp_fork" if self.accelerator == "cpu" else "ddp_spawn"
        self.strategy = strategy
        self.num_workers = num_workers

    def predict_pair(
        self, pair: TilePair, out_dir: str | os.PathLike[str]
    ) -> PredictionResult | None:
        """Write ``probability.tif`` and ``mask.tif`` for a pair; None on ranks other than 0."""
        start = time.perf_counter()
        predictor = self.predictor
        source = predictor.prepare(pair)
        layout = predictor.layout_for(pair.grid)
        batches = layout.batches(predictor.batch_size)
        out_dir = Path(out_dir)
        # Every rank must name the same folder: with strategy "ddp" each rank runs this code.
        shard_dir = out_dir / SHARD_FOLDER
        if _launching_rank():
            shutil.rmtree(shard_dir, ignore_errors=True)
        shard_dir.mkdir(parents=True, exist_ok=True)
        loader = DataLoader(
            WindowBatchDataset(source, layout, batches),
            batch_size=None,
            shuffle=False,
            num_workers=self.num_workers,
        )
        module = WindowPredictionModule(
            copy.deepcopy(predictor.model).cpu(),
            tta=predictor.tta,
            autocast=predictor.autocast,
            channels_last=predictor.channels_last,
            forward_batch=predictor.forward_batch,
        )
        trainer = pl.Trainer(
            accelerator=self.accelerator,
            devices=self.devices,
            strategy=self.strategy,
            precision="32-true",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[WindowShardWriter(shard_dir)],
            default_root_dir=shard_dir,
        )
        try:
            with warnings.catch_warnings():
                # Each item is a whole batch of windows (batch_size=None): nothing to infer.
                warnings.filterwarnings("ignore", "Couldn't infer the batch indices")
                trainer.predict(module, dataloaders=loader, return_predictions=False)
            if trainer.global_rank != 0:
                return None
            with bounded_gdal_cache():
                written = write_blended(
                    read_shards(shard_dir, batches),
                    layout,
                    pair.grid,
                    out_dir,
                    predictor.threshold,
                    predictor.blend,
                )
        finally:
            if trainer.global_rank == 0:
                shutil.rmtree(shard_dir, ignore_errors=True)
        return PredictionResult.written(source, written, predictor.threshold, start)
