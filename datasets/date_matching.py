"""Matching the after date's radiometry to the before date's, band by band (``date_matching``).

Two acquisitions of the same ground differ all over the scene in brightness and contrast: sun
height, season, haze, calibration. A change model that sees raw values must learn to ignore
that, and on a city it has never seen it often does not (OSCD's Pisa: summer against hazy winter).
With ``mean_std`` matching, each band of the after date is mapped linearly, ``gain * x +
offset``, so that its mean and standard deviation over the pixels both dates observe equal the
before date's. Local differences (a new building, a cleared field) survive; a scene-wide shift
does not. The map is fitted once per pair, the same way when chips are cut and when a pair is
predicted (where the pixels a cloud mask hides are left out of the fit too), so a model trained
on matched chips sees matched windows. A bundle may also match at prediction only: the shipped
default's weights were trained on unmatched chips, and matching was chosen out of fold.

Modes (``groundbreak chips --date-matching``, a bundle's ``date_matching``):

- ``none``: values as they are (bundles that do not say, and every bundle before this option).
- ``mean_std``: the linear mean/standard-deviation match above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from rasterio.enums import Resampling

from groundbreak.datasets.clouds import coarse_grid, mask_at
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.radiometry import Radiometry

DateMatching = Literal["none", "mean_std"]
DATE_MATCHING_MODES: tuple[str, ...] = ("none", "mean_std")

SAMPLE_SIDE = 2048
"""The pair is sampled on a grid of at most this many pixels a side (every pixel of an OSCD city,
about one in 36 of a full Sentinel-2 tile)."""
MIN_PIXELS = 1000
"""Fewer pixels seen by both dates than this: no match (the identity), too few to trust."""
GAIN_RANGE = (0.25, 4.0)
"""Gains are clipped to this range, so a nearly constant band cannot blow up the other date."""


@dataclass(frozen=True)
class DateMatch:
    """The per-band linear map ``gain * x + offset`` from the after date to the before date.

    Attributes:
        gain: float32 ``(C,)``.
        offset: float32 ``(C,)``, in the bands' units.
        pixels: Pixels the map was fitted on (0 for the identity).
    """

    gain: np.ndarray
    offset: np.ndarray
    pixels: int

    @classmethod
    def identity(cls, channels: int) -> DateMatch:
        """The map that changes nothing."""
        return cls(np.ones(channels, np.float32), np.zeros(channels, np.float32), 0)

    def apply(self, after: np.ndarray) -> np.ndarray:
        """Map after-date values ``(C, H, W)`` (float32; NaN stays NaN)."""
        if after.shape[0] != len(self.gain):
            raise ValueError(f"expected {len(self.gain)} bands, got an array of {after.shape}")
        out = after * self.gain[:, None, None]
        out += self.offset[:, None, None]  # in place: the same sums, one array fewer
        return out

    def to_dict(self) -> dict[str, object]:
        """A JSON record: gains and offsets rounded to 4 decimals, and the pixel count."""
        return {
            "gain": [round(float(v), 4) for v in self.gain],
            "offset": [round(float(v), 4) for v in self.offset],
            "pixels": self.pixels,
        }


def check_date_matching(mode: str) -> DateMatching:
    """``mode`` when it is a known date-matching mode, else a ValueError that lists them."""
    if mode not in DATE_MATCHING_MODES:
        raise ValueError(
            f"unknown date matching {mode!r}; expected one of {', '.join(DATE_MATCHING_MODES)}"
        )
    return mode  # type: ignore[return-value]


def fit_date_match(
    before: np.ndarray, after: np.ndarray, observed: np.ndarray | None = None
) -> DateMatch:
    """The mean/std map of ``after`` onto ``before`` (both ``(C, H, W)``).

    Fitted on the pixels where every band of both dates is finite (and ``observed``, a bool
    ``(H, W)``, is true); the identity when fewer than :data:`MIN_PIXELS` remain.
    """
    if before.shape != after.shape or before.ndim != 3:
        raise ValueError(f"before {before.shape} and after {after.shape} must be equal (C, H, W)")
    channels = before.shape[0]
    both = np.isfinite(before).all(axis=0) & np.isfinite(after).all(axis=0)
    if observed is not None:
        both &= observed
    pixels = int(both.sum())
    if pixels < MIN_PIXELS:
        return DateMatch.identity(channels)
    # band by band: a float64 copy of one band at a time, not of every band of both dates
    # (1.7 GB more for a 4096² pair's sample)
    b_mean, b_std = _band_moments(before, both)
    a_mean, a_std = _band_moments(after, both)
    gain = np.where(a_std > 0, b_std / np.where(a_std > 0, a_std, 1.0), 1.0)
    gain = np.clip(gain, *GAIN_RANGE)
    offset = b_mean - gain * a_mean
    return DateMatch(gain.astype(np.float32), offset.astype(np.float32), pixels)


def _band_moments(bands: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (float64) of each band ``(C, H, W)`` over ``where``."""
    means, stds = np.empty(len(bands)), np.empty(len(bands))
    for c, band in enumerate(bands):
        values = band[where].astype(np.float64)
        means[c], stds[c] = values.mean(), values.std()
    return means, stds


def sample_factor(grid: Grid, side: int = SAMPLE_SIDE) -> int:
    """Pair pixels per sample pixel, so the sample grid is at most ``side`` pixels a side."""
    return max(1, math.ceil(max(grid.height, grid.width) / side))


def match_pair(
    pair: TilePair,
    bands: Sequence[str],
    radiometry: Radiometry | None = None,
    unobserved: np.ndarray | None = None,
    unobserved_factor: int = 1,
) -> DateMatch:
    """Fit the mean/std map of a pair's after date onto its before date.

    Both dates are sampled (nearest pixel) on a grid of at most :data:`SAMPLE_SIDE` pixels a side.

    Args:
        pair: The tile pair.
        bands: The bands, in channel order.
        radiometry: Convert both dates to this convention first (as the predictor reads them).
        unobserved: Cloud or shadow on either date on a coarse grid, left out of the fit.
        unobserved_factor: Pair-grid pixels per ``unobserved`` pixel.
    """
    grid = pair.grid
    factor = sample_factor(grid)
    sample = coarse_grid(grid, factor)
    before = pair.before.read(bands, sample, radiometry=radiometry, resampling=Resampling.nearest)
    after = pair.after.read(bands, sample, radiometry=radiometry, resampling=Resampling.nearest)
    observed = None
    if unobserved is not None:  # the mask at the pair pixel in the centre of each sample pixel
        rows = np.arange(sample.height) * factor + factor // 2
        cols = np.arange(sample.width) * factor + factor // 2
        observed = ~mask_at(unobserved, unobserved_factor, rows, cols)
    return fit_date_match(before, after, observed)
