"""Blending overlapping window predictions into one seamless map, a band of rows at a time.

Each window's probabilities are weighted by a smooth window function that is high in the middle
and low (but never zero) at the edges, so a pixel near one window's edge takes its value mostly
from the neighbouring window that sees it in its middle: no seams. The output is the weighted
average. Only the rows that windows still in flight can touch are kept in memory; rows that no
later window reaches are handed to a sink (the raster writer) and forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import numpy as np

BlendMode = Literal["cosine", "uniform"]
BLEND_MODES: tuple[str, ...] = get_args(BlendMode)
WEIGHT_FLOOR = 0.01
"""Smallest weight of a pixel at a window's edge, so the scene's own edges still count."""

RowSink = Callable[[int, np.ndarray], None]
"""Receives ``(first_row, probability_rows)``: float32 ``(rows, width)``, NaN = no prediction."""


def blend_weights(
    height: int, width: int, mode: BlendMode = "cosine", floor: float = WEIGHT_FLOOR
) -> np.ndarray:
    """Per-pixel weights of one window, float32 ``(height, width)``.

    ``"cosine"`` is a 2-D Hann window ``sin^2(pi (i + 0.5) / n)`` per axis, lifted to at least
    ``floor``; ``"uniform"`` weighs every pixel 1 (a plain average of overlapping windows).
    """
    if mode == "uniform":
        return np.ones((height, width), dtype=np.float32)
    if mode != "cosine":
        raise ValueError(f"unknown blend mode {mode!r}; expected one of {', '.join(BLEND_MODES)}")

    def hann(n: int) -> np.ndarray:
        return np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2

    weights = np.outer(hann(height), hann(width))
    return (floor + (1.0 - floor) * weights).astype(np.float32)


class RowBandBlender:
    """Weighted average of window predictions over a scene, holding only rows in flight.

    Windows must arrive in non-decreasing ``row_off``; call :meth:`complete_rows_before` when
    no later window starts above a row, and :meth:`close` at the end. Finished rows go to the
    sink in bands of ``flush_rows`` (a multiple of the output raster's block height keeps the
    writes block-aligned), the last band possibly shorter.

    Args:
        height: Scene height.
        width: Scene width.
        weights: Window weights ``(window_height, window_width)`` from :func:`blend_weights`.
        sink: Receives each finished band of rows.
        flush_rows: Rows per band handed to the sink.
    """

    def __init__(
        self, height: int, width: int, weights: np.ndarray, sink: RowSink, flush_rows: int = 256
    ) -> None:
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be at least 1, got {flush_rows}")
        self.height = height
        self.width = width
        self.weights = weights.astype(np.float32, copy=False)
        self.sink = sink
        self.flush_rows = flush_rows
        capacity = min(height, weights.shape[0] + flush_rows)
        self._weighted_sum = np.zeros((capacity, width), dtype=np.float32)
        self._weight_sum = np.zeros((capacity, width), dtype=np.float32)
        self._invalid = np.zeros((capacity, width), dtype=bool)
        self._first_row = 0  # scene row held in buffer row 0
        self._closed = False

    def add(self, row_off: int, col_off: int, probability: np.ndarray, valid: np.ndarray) -> None:
        """Add one window's probabilities ``(h, w)`` and validity at a (possibly negative) offset.

        The parts of the window outside the scene are cut off.
        """
        if self._closed:
            raise RuntimeError("the blender is closed")
        inside_rows = slice(max(0, -row_off), min(probability.shape[0], self.height - row_off))
        inside_cols = slice(max(0, -col_off), min(probability.shape[1], self.width - col_off))
        top = row_off + inside_rows.start - self._first_row
        bottom = row_off + inside_rows.stop - self._first_row
        if top < 0 or bottom > self._weight_sum.shape[0]:
            raise ValueError(
                f"window at row {row_off} is outside the rows in flight "
                f"({self._first_row}-{self._first_row + self._weight_sum.shape[0]}); "
                "windows must arrive in row order"
            )
        inside = (inside_rows, inside_cols)
        weight = self.weights[inside]
        target = (
            slice(top, bottom),
            slice(col_off + inside_cols.start, col_off + inside_cols.stop),
        )
        self._weighted_sum[target] += probability[inside] * weight
        self._weight_sum[target] += weight
        self._invalid[target] |= ~valid[inside]

    def complete_rows_before(self, row: int) -> None:
        """Declare that no window still to come reaches above ``row``; flush finished bands."""
        final = min(row, self.height)
        if final < self.height:
            done = (final - self._first_row) // self.flush_rows * self.flush_rows
        else:
            done = final - self._first_row
        if done <= 0:
            return
        weight = self._weight_sum[:done]
        with np.errstate(invalid="ignore", divide="ignore"):
            probability = self._weighted_sum[:done] / weight
        probability[(weight <= 0) | self._invalid[:done]] = np.nan
        self.sink(self._first_row, probability)
        keep = self._weight_sum.shape[0] - done
        for buffer in (self._weighted_sum, self._weight_sum, self._invalid):
            buffer[:keep] = buffer[done:].copy()
            buffer[keep:] = 0
        self._first_row += done

    def close(self) -> None:
        """Flush every remaining row; no window may be added afterwards."""
        if not self._closed:
            self.complete_rows_before(self.height)
            self._closed = True
