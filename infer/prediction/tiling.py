"""Sliding windows over a scene: where they lie, how they batch, and how a batch is read.

A :class:`WindowLayout` covers a ``height x width`` grid with square windows on a regular
lattice: offsets ``-margin + k * stride`` on both axes, where ``stride = window - overlap`` and
``margin = overlap // 2``, both multiples of the model's output stride. So

- every window starts at a multiple of the output stride: a strided network sees the scene in
  the same phase in every window, and a crop shifted by a multiple of the output stride gets the
  same predictions (no aliasing between windows);
- windows reach ``margin`` pixels past every edge of the scene; those pixels are the scene
  mirrored at its edge (:func:`reflect_pad`), so pixels near the edges get context too.

An axis shorter than a window gets one window at offset 0, of that axis' length rounded up to the
output stride, padded by reflection.

Windows are grouped into :class:`WindowBatch` es along one row of windows, in row-major order, so
one batch is read as one block of the scene (:func:`read_batch`) and output rows finish in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from groundbreak.datasets.clouds import window_of
from groundbreak.datasets.date_matching import DateMatch
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.radiometry import Radiometry

Normalizer = Callable[[np.ndarray], np.ndarray]
"""Maps raw band values ``(C, H, W)`` to model input, NaN to 0 (``ModelBundle.normalize``)."""


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is at least ``value``."""
    return -(-value // multiple) * multiple


def round_down(value: int, multiple: int) -> int:
    """The largest multiple of ``multiple`` that is at most ``value``."""
    return value // multiple * multiple


def axis_offsets(length: int, size: int, stride: int, margin: int = 0) -> tuple[int, ...]:
    """Start offsets of windows of ``size`` every ``stride`` pixels from ``-margin``.

    The windows cover ``[-margin, length + margin)``, or just ``(0,)`` when one window holds
    the whole axis.
    """
    if length <= size:
        return (0,)
    count = 1 + max(0, -(-(length + 2 * margin - size) // stride))
    return tuple(-margin + k * stride for k in range(count))


@dataclass(frozen=True)
class WindowBatch:
    """Consecutive windows of one row of windows, predicted together.

    Attributes:
        index: Position of the batch in the layout's batch order.
        row_off: First scene row of every window in the batch (negative above the scene).
        col_offs: First scene column of each window (negative left of the scene).
    """

    index: int
    row_off: int
    col_offs: tuple[int, ...]


@dataclass(frozen=True)
class WindowLayout:
    """Windows of ``window_height x window_width`` covering a ``height x width`` scene."""

    height: int
    width: int
    window_height: int
    window_width: int
    row_offsets: tuple[int, ...]
    col_offsets: tuple[int, ...]

    @classmethod
    def for_scene(
        cls, height: int, width: int, window: int, overlap: int, multiple: int = 1
    ) -> WindowLayout:
        """Lay square windows with ``overlap`` pixels of overlap over a scene.

        Args:
            height: Scene height in pixels.
            width: Scene width in pixels.
            window: Window side; a multiple of ``multiple``.
            overlap: Pixels shared by neighbouring windows, ``0 <= overlap < window``, with
                ``window - overlap`` a multiple of ``multiple``.
            multiple: The model's output stride: window sides and offsets are multiples of it.

        Raises:
            ValueError: For a window or overlap that does not fit these rules.
        """
        if height < 1 or width < 1:
            raise ValueError(f"scene must have at least one pixel, got {height}x{width}")
        if window < 1 or window % multiple:
            raise ValueError(f"window {window} must be a positive multiple of {multiple}")
        if not 0 <= overlap < window or (window - overlap) % multiple:
            raise ValueError(
                f"overlap {overlap} must be in [0, {window}) with window - overlap a multiple "
                f"of {multiple}"
            )
        stride = window - overlap
        margin = round_down(overlap // 2, multiple)
        window_height = min(window, round_up(height, multiple))
        window_width = min(window, round_up(width, multiple))
        return cls(
            height=height,
            width=width,
            window_height=window_height,
            window_width=window_width,
            row_offsets=axis_offsets(height, window_height, stride, margin),
            col_offsets=axis_offsets(width, window_width, stride, margin),
        )

    @property
    def window_count(self) -> int:
        """Number of windows in the layout."""
        return len(self.row_offsets) * len(self.col_offsets)

    def batches(self, batch_size: int) -> list[WindowBatch]:
        """The windows grouped into batches of at most ``batch_size``, one row at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        batches: list[WindowBatch] = []
        for row_off in self.row_offsets:
            for start in range(0, len(self.col_offsets), batch_size):
                cols = self.col_offsets[start : start + batch_size]
                batches.append(WindowBatch(len(batches), row_off, cols))
        return batches

    def block_of(self, batch: WindowBatch) -> tuple[Window, tuple[int, int, int, int]]:
        """The scene part under a batch's windows and the padding that completes it.

        Returns:
            The window of the scene the batch covers (clipped to the scene), and the
            ``(top, bottom, left, right)`` pixels of the batch's block outside the scene.
        """
        top, left = batch.row_off, batch.col_offs[0]
        bottom, right = top + self.window_height, batch.col_offs[-1] + self.window_width
        row0, col0 = max(top, 0), max(left, 0)
        row1, col1 = min(bottom, self.height), min(right, self.width)
        window = Window(col0, row0, col1 - col0, row1 - row0)
        return window, (row0 - top, bottom - row1, col0 - left, right - col1)


@dataclass
class BatchInput:
    """The model input of one batch: windows with at least one valid pixel.

    Attributes:
        batch: The batch these windows come from.
        kept: Index in ``batch.col_offs`` of each window kept (windows with no valid pixel are
            dropped; the model never sees them).
        before: Normalised before-images, float32 ``(K, C, window_height, window_width)``.
        after: Normalised after-images, same shape.
        valid: Pixels valid on both dates, bool ``(K, window_height, window_width)``; False
            outside the scene.
    """

    batch: WindowBatch
    kept: np.ndarray
    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray


def reflect_pad(array: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Pad the last two axes by ``(top, bottom, left, right)`` pixels, mirrored at the edges."""
    top, bottom, left, right = pads
    if not any(pads):
        return array
    widths = [(0, 0)] * (array.ndim - 2) + [(top, bottom), (left, right)]
    mode = "reflect" if min(array.shape[-2:]) > 1 else "edge"
    return np.pad(array, widths, mode=mode)


@dataclass
class PairInput:
    """What reading a pair's windows needs: the pair, the model's bands, the input convention,
    the normaliser and the unobserved (cloud, shadow) pixels of either date.

    Attributes:
        pair: The tile pair.
        bands: The model's bands, in channel order.
        normalize: Raw band values -> model input (NaN becomes 0).
        radiometry: The model's radiometric convention; each scene is converted to it before
            normalisation. None reads values as they are.
        unobserved: Cloud or shadow on either date, on a coarse grid (see
            :func:`groundbreak.datasets.clouds.window_of`), or None for no cloud mask.
        factor: Pair-grid pixels per ``unobserved`` pixel.
        cloud_masks: The cloud-mask method of each date (``none`` when it has none).
        unobserved_fraction: Share of the pair that either date's cloud mask hides.
        cloud_fractions: Share of the pair that each date's cloud mask hides (before, after).
        date_match: The map of the after date's values onto the before date's, applied before
            normalisation (None: values as they are); see
            :mod:`groundbreak.datasets.date_matching`.
    """

    pair: TilePair
    bands: list[str]
    normalize: Normalizer
    radiometry: Radiometry | None = None
    unobserved: np.ndarray | None = None
    factor: int = 1
    cloud_masks: tuple[str, str] = ("none", "none")
    unobserved_fraction: float = 0.0
    cloud_fractions: tuple[float, float] = (0.0, 0.0)
    date_match: DateMatch | None = None


def observed_windows(source: PairInput, layout: WindowLayout, batch: WindowBatch) -> np.ndarray:
    """Whether each window of a batch has a scene pixel that no cloud mask hides, bool ``(N,)``."""
    observed = np.ones(len(batch.col_offs), dtype=bool)
    if source.unobserved is None:
        return observed
    coarse, factor = source.unobserved, source.factor
    row0 = max(batch.row_off, 0)
    row1 = min(batch.row_off + layout.window_height, layout.height)
    rows = slice(min(row0 // factor, coarse.shape[0] - 1),
                 min((row1 - 1) // factor, coarse.shape[0] - 1) + 1)
    for i, col_off in enumerate(batch.col_offs):
        col0, col1 = max(col_off, 0), min(col_off + layout.window_width, layout.width)
        cols = slice(min(col0 // factor, coarse.shape[1] - 1),
                     min((col1 - 1) // factor, coarse.shape[1] - 1) + 1)
        observed[i] = not coarse[rows, cols].all()
    return observed


def read_batch(
    source: PairInput, layout: WindowLayout, batch: WindowBatch, skip_unobserved: bool = True
) -> BatchInput:
    """Read one batch of windows of a pair as one block, normalised and cut into windows.

    A pixel is valid when every band of both dates is finite there and neither date's cloud
    mask hides it; invalid pixels enter the model as 0 after normalisation (``normalize`` maps
    NaN to 0) and are nodata in the outputs. With ``skip_unobserved``, windows the cloud masks
    hide entirely are not read (they would have no valid pixel either way): the block read
    spans the first to the last observed window only.
    """
    if skip_unobserved and source.unobserved is not None:
        observed = np.flatnonzero(observed_windows(source, layout, batch))
        first, last = (int(observed[0]), int(observed[-1])) if len(observed) else (0, -1)
        if first > 0 or last < len(batch.col_offs) - 1:
            part = WindowBatch(batch.index, batch.row_off, batch.col_offs[first : last + 1])
            data = _read_windows(source, layout, part)
            data.batch, data.kept = batch, data.kept + first
            return data
    return _read_windows(source, layout, batch)


def _read_windows(source: PairInput, layout: WindowLayout, batch: WindowBatch) -> BatchInput:
    """:func:`read_batch` of every window of ``batch`` (none when it has no window)."""
    channels, height, width = len(source.bands), layout.window_height, layout.window_width
    if not batch.col_offs:
        empty = np.zeros((0, channels, height, width), dtype=np.float32)
        return BatchInput(batch, np.zeros(0, np.int64), empty, empty.copy(), empty[:, 0] > 0)
    window, pads = layout.block_of(batch)
    pair, bands = source.pair, source.bands
    target = pair.grid.subgrid(window)
    before = pair.before.read(bands, target, radiometry=source.radiometry)
    after = pair.after.read(bands, target, radiometry=source.radiometry)
    if source.date_match is not None:
        after = source.date_match.apply(after)
    valid = np.isfinite(before).all(axis=0) & np.isfinite(after).all(axis=0)
    if source.unobserved is not None:
        valid &= ~window_of(source.unobserved, source.factor, window)
    before = reflect_pad(source.normalize(before), pads)
    after = reflect_pad(source.normalize(after), pads)
    valid = np.pad(valid, [pads[:2], pads[2:]])

    kept, cuts = [], []
    for i, col_off in enumerate(batch.col_offs):
        start = col_off - batch.col_offs[0]
        cut = slice(start, start + layout.window_width)
        if valid[:, cut].any():
            kept.append(i)
            cuts.append(cut)
    channels, height, width = before.shape[0], layout.window_height, layout.window_width
    if not cuts:
        empty = np.zeros((0, channels, height, width), dtype=np.float32)
        return BatchInput(batch, np.zeros(0, np.int64), empty, empty.copy(), empty[:, 0] > 0)
    return BatchInput(
        batch=batch,
        kept=np.asarray(kept, dtype=np.int64),
        before=np.stack([before[:, :, c] for c in cuts]),
        after=np.stack([after[:, :, c] for c in cuts]),
        valid=np.stack([valid[:, c] for c in cuts]),
    )
