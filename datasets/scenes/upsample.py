"""Bilinear (and nearest) upsampling of a band onto a finer grid nested in the band's own (20 and
60 m Sentinel-2 bands onto the 10 m grid), in numpy.

It gives what GDAL's bilinear warp (a ``WarpedVRT``) gives for this case, bit for bit: each
target pixel centre is mapped into the source grid, interpolated between its 2 x 2 nearest
source pixels (in float64), and clamped to the edge row or column in the outer half pixel of
the source; target pixels outside the source are NaN. :mod:`.reading` uses it on the decoded
rows :mod:`.strips` keeps, so that they serve window after window: GDAL's warper over the same
rows gives the same pixels but costs about twice as much per predictor window (its setup, each
call), which ``tests/datasets/test_scene.py`` measures.
"""

from __future__ import annotations

import math

import numpy as np

from groundbreak.datasets.grid import Grid

CHUNK_VALUES = 65536
"""Target pixels interpolated at a time (at least one row): 512 kB a float64 intermediate,
which stays in a core's cache. The whole window at once went through memory and took about
twice as long (``/tmp`` script, one thread, trainings paused: a 576 x 4096 target from a 20 m band
48-50 against 25-28 ms, from a 60 m band 24-29 against 11 ms)."""


def nesting(source: Grid, target: Grid) -> tuple[int, int, int] | None:
    """(row, col, k) when each source pixel is k x k target pixels (k >= 2) and the target's
    origin lies on that finer lattice, (row, col) target pixels from the source's origin;
    else None (other CRS, rotation, non-integer ratio or shift)."""
    if source.crs != target.crs:
        return None
    s, t = source.transform, target.transform
    if s.b != 0 or s.d != 0 or t.b != 0 or t.d != 0 or t.a == 0 or t.e == 0:
        return None
    k = s.a / t.a
    if round(k) < 2 or abs(k - round(k)) > 1e-9 or not math.isclose(s.e / t.e, k, rel_tol=1e-9):
        return None
    col = (t.c - s.c) / t.a
    row = (t.f - s.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return round(row), round(col), round(k)


def _axis(start: int, count: int, k: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper source index (clamped to the source) and the upper weight of each of
    ``count`` target pixels from ``start`` along one axis of a source ``size`` pixels long."""
    centre = (np.arange(start, start + count, dtype=np.float64) + 0.5) / k - 0.5
    lower = np.floor(centre)
    weight = centre - lower
    lower = lower.astype(np.int64)
    return np.clip(lower, 0, size - 1), np.clip(lower + 1, 0, size - 1), weight


def _inside(start: int, count: int, k: int, size: int) -> tuple[int, int]:
    """The target pixels ``[first, last)`` (from ``start``, ``count`` of them) inside a source
    ``size`` pixels long along one axis; empty when first >= last."""
    return max(start, 0), min(start + count, size * k)


def source_window(
    nest: tuple[int, int, int], shape: tuple[int, int], size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The source rows and columns ``((r0, r1), (c0, c1))`` that a target of ``shape`` needs,
    or None when it lies wholly outside a source of ``size`` (height, width)."""
    row, col, k = nest
    spans = []
    for start, count, length in ((row, shape[0], size[0]), (col, shape[1], size[1])):
        first, last = _inside(start, count, k, length)
        if last <= first:
            return None
        lower, upper, _ = _axis(first, last - first, k, length)
        spans.append((int(lower[0]), int(upper[-1]) + 1))
    return spans[0], spans[1]


def bilinear_upsample(
    data: np.ndarray,
    origin: tuple[int, int],
    nest: tuple[int, int, int],
    shape: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """A target of ``shape`` (float32, NaN outside the source) from ``data``: the source pixels
    from row and column ``origin`` on, covering :func:`source_window`, of a source of ``size``
    (height, width)."""
    row, col, k = nest
    out = np.full(shape, np.nan, dtype=np.float32)
    (r0, r1), (c0, c1) = _inside(row, shape[0], k, size[0]), _inside(col, shape[1], k, size[1])
    if r1 <= r0 or c1 <= c0:
        return out
    lower_r, upper_r, weight_r = _axis(r0, r1 - r0, k, size[0])
    lower_c, upper_c, weight_c = _axis(c0, c1 - c0, k, size[1])
    block = data.astype(np.float64, copy=False)
    lower_r, upper_r, weight_r = lower_r - origin[0], upper_r - origin[0], weight_r[:, None]
    lower_c, upper_c = lower_c - origin[1], upper_c - origin[1]
    keep_c = 1.0 - weight_c
    # a few rows at a time, so that the float64 intermediates stay in the CPU's cache
    step = max(1, CHUNK_VALUES // max(1, c1 - c0))
    for first in range(0, r1 - r0, step):
        rows = slice(first, first + step)
        w = weight_r[rows]
        by_rows = block[lower_r[rows]] * (1.0 - w) + block[upper_r[rows]] * w
        values = by_rows[:, lower_c] * keep_c + by_rows[:, upper_c] * weight_c
        out[r0 - row + first : r0 - row + first + len(w), c0 - col : c1 - col] = values
    return out


def nearest_window(
    nest: tuple[int, int, int], shape: tuple[int, int], size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The source rows and columns ``((r0, r1), (c0, c1))`` a nearest read of a target of
    ``shape`` needs, or None when it lies wholly outside a source of ``size`` (height, width)."""
    row, col, k = nest
    spans = []
    for start, count, length in ((row, shape[0], size[0]), (col, shape[1], size[1])):
        first, last = _inside(start, count, k, length)
        if last <= first:
            return None
        spans.append((first // k, (last - 1) // k + 1))
    return spans[0], spans[1]


def nearest_upsample(
    data: np.ndarray,
    origin: tuple[int, int],
    nest: tuple[int, int, int],
    shape: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    """A target of ``shape`` (float32, NaN outside the source) whose pixels take the source
    pixel their centre lies in, from ``data`` (the source from row and column ``origin`` on,
    covering :func:`nearest_window`), as GDAL's nearest warp gives them: a centre of a nested
    grid never lies on a source pixel's edge, so there is no tie to break."""
    row, col, k = nest
    out = np.full(shape, np.nan, dtype=np.float32)
    (r0, r1), (c0, c1) = _inside(row, shape[0], k, size[0]), _inside(col, shape[1], k, size[1])
    if r1 <= r0 or c1 <= c0:
        return out
    rows = np.arange(r0, r1) // k - origin[0]
    cols = np.arange(c0, c1) // k - origin[1]
    out[r0 - row : r1 - row, c0 - col : c1 - col] = data[np.ix_(rows, cols)]
    return out
