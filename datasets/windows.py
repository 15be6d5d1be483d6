"""Chip windows: a regular grid of fixed-size windows that covers a whole raster grid."""

from __future__ import annotations

from collections.abc import Iterator

from rasterio.windows import Window


def window_offsets(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``size`` every ``stride`` pixels along one axis of ``length``.

    The last window is snapped to the edge (``length - size``) so every window is full size and
    the whole axis is covered; an axis shorter than ``size`` gets one window at 0 (which reaches
    past the edge and is padded by the reader).
    """
    if size <= 0 or stride <= 0:
        raise ValueError(f"chip size and stride must be positive, got {size} and {stride}")
    if length <= size:
        return [0]
    offsets = list(range(0, length - size + 1, stride))
    if offsets[-1] != length - size:
        offsets.append(length - size)
    return offsets


def chip_windows(height: int, width: int, size: int, stride: int) -> list[Window]:
    """Square windows of ``size`` every ``stride`` pixels covering a ``height`` x ``width`` grid.

    Windows come in row-major order (by row offset, then column offset).
    """
    rows = window_offsets(height, size, stride)
    cols = window_offsets(width, size, stride)
    return [Window(col, row, size, size) for row in rows for col in cols]


def row_strips(windows: list[Window]) -> Iterator[tuple[Window, list[Window]]]:
    """Group windows that share a row offset: yield (the strip window spanning them, the windows).

    The strip spans the columns from the leftmost to the rightmost window of its row and the
    rows of one window, so reading a strip reads each of its windows' pixels exactly once.
    """
    by_row: dict[int, list[Window]] = {}
    for window in windows:
        by_row.setdefault(int(window.row_off), []).append(window)
    for row, members in sorted(by_row.items()):
        col0 = min(int(w.col_off) for w in members)
        col1 = max(int(w.col_off + w.width) for w in members)
        height = max(int(w.height) for w in members)
        yield Window(col0, row, col1 - col0, height), members
