"""Chip windows cover the whole grid with full-size windows; strips group them by row."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from groundbreak.datasets.windows import chip_windows, row_strips, window_offsets


@pytest.mark.parametrize(
    ("length", "size", "stride", "expected"),
    [
        (96, 32, 32, [0, 32, 64]),
        (100, 32, 32, [0, 32, 64, 68]),  # last window snapped to the edge
        (96, 32, 16, [0, 16, 32, 48, 64]),
        (32, 32, 8, [0]),
        (20, 32, 32, [0]),  # smaller than a chip: one padded window
    ],
)
def test_window_offsets(length: int, size: int, stride: int, expected: list[int]) -> None:
    assert window_offsets(length, size, stride) == expected


@pytest.mark.parametrize(
    ("height", "width", "size", "stride"), [(97, 130, 32, 32), (50, 64, 16, 10)]
)
def test_windows_cover_the_grid_with_full_size_chips(height, width, size, stride) -> None:
    windows = chip_windows(height, width, size, stride)
    covered = np.zeros((height, width), dtype=bool)
    for w in windows:
        assert (w.height, w.width) == (size, size)
        assert w.row_off + size <= height and w.col_off + size <= width
        covered[w.row_off : w.row_off + size, w.col_off : w.col_off + size] = True
    assert covered.all()
    assert len(set(windows)) == len(windows)


def test_row_strips_group_windows_by_row() -> None:
    windows = chip_windows(70, 50, 32, 32)
    strips = list(row_strips(windows))
    assert [s.row_off for s, _ in strips] == [0, 32, 38]
    for strip, members in strips:
        assert strip == Window(0, strip.row_off, 50, 32)
        assert all(m.row_off == strip.row_off for m in members)
    assert sum(len(m) for _, m in strips) == len(windows)


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        window_offsets(10, 0, 1)
    with pytest.raises(ValueError, match="positive"):
        chip_windows(10, 10, 4, -1)
