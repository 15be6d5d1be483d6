"""Batch predictions blended into a pair's rasters: :func:`write_blended` takes the model's
probabilities of each batch of windows (:class:`BatchPrediction`, in batch order), blends the
overlaps (:mod:`.blending`) and writes ``probability.tif`` and ``mask.tif`` (:mod:`.raster_io`)
row band by row band, giving the free heap pages back between bands."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from groundbreak.datasets.grid import Grid
from groundbreak.datasets.scene import release_free_heap
from groundbreak.infer.prediction.blending import BlendMode, RowBandBlender, blend_weights
from groundbreak.infer.prediction.raster_io import BLOCK_SIZE, PredictionRasterWriter
from groundbreak.infer.prediction.stage_clock import StageClock
from groundbreak.infer.prediction.tiling import WindowBatch, WindowLayout


@dataclass
class BatchPrediction:
    """The model's probabilities for the kept windows of one batch (see :class:`BatchInput`)."""

    batch: WindowBatch
    kept: np.ndarray
    probability: np.ndarray
    valid: np.ndarray


def write_blended(
    predictions: Iterable[BatchPrediction],
    layout: WindowLayout,
    grid: Grid,
    out_dir: str | os.PathLike[str],
    threshold: float,
    blend: BlendMode = "cosine",
    clock: StageClock | None = None,
) -> tuple[Path, Path, float]:
    """Blend batch predictions (in batch order) into ``probability.tif`` and ``mask.tif``.

    ``clock`` gets the seconds of blending (``blend``) and of writing (``write``).

    Returns:
        (probability path, mask path, valid fraction).
    """
    clock = clock or StageClock()
    weights = blend_weights(layout.window_height, layout.window_width, blend)
    with PredictionRasterWriter(out_dir, grid, threshold) as writer:

        def write_rows(row_off: int, rows: np.ndarray) -> None:
            with clock.time("write"):
                writer.write_rows(row_off, rows)

        blender = RowBandBlender(
            layout.height, layout.width, weights, write_rows, flush_rows=BLOCK_SIZE
        )
        written_before = clock.seconds.get("write", 0.0)
        blending = 0.0  # blender time, writes included; the predictions' making is not
        row_off = 0
        for prediction in predictions:
            started = time.perf_counter()
            batch = prediction.batch
            blender.complete_rows_before(batch.row_off)
            if batch.row_off != row_off:  # a new row band of windows
                row_off = batch.row_off
                release_free_heap()
            for k, i in enumerate(prediction.kept):
                blender.add(
                    batch.row_off, batch.col_offs[i], prediction.probability[k], prediction.valid[k]
                )
            blending += time.perf_counter() - started
        started = time.perf_counter()
        blender.close()
        blending += time.perf_counter() - started
        clock.add("blend", blending - (clock.seconds.get("write", 0.0) - written_before))
        with clock.time("write"):
            probability_path, mask_path = writer.commit()
    return probability_path, mask_path, writer.valid_fraction
