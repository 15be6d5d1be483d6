"""Per-band normalisation statistics, accumulated in one streaming pass over valid pixels."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from groundbreak.datasets.errors import InputError


def normalize_bands(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-band z-score ``(x - mean) / std`` of ``(C, H, W)`` or ``(B, C, H, W)`` values (float32).

    Invalid (NaN or infinite) results become 0, the normalised mean. The one normalisation of
    chips in training and of windows in prediction, so both see the same numbers.
    """
    shape = (-1, 1, 1)
    out = np.asarray(x, dtype=np.float32) - np.asarray(mean, np.float32).reshape(shape)
    np.divide(out, np.asarray(std, np.float32).reshape(shape), out=out)  # in place: one pass less
    out[~np.isfinite(out)] = 0.0
    return out


class BandStatistics:
    """Streaming per-band mean and standard deviation over the finite pixels of (C, H, W) arrays.

    Sums are float64 and taken around a per-band shift (the mean of the first data seen), so the
    variance stays accurate for large values with a small spread.
    """

    def __init__(self, bands: Sequence[str]) -> None:
        self.bands = list(bands)
        channels = len(self.bands)
        self.count = np.zeros(channels, dtype=np.int64)
        self._shift = np.full(channels, np.nan, dtype=np.float64)
        self._sum = np.zeros(channels, dtype=np.float64)
        self._sum_sq = np.zeros(channels, dtype=np.float64)

    def update(self, data: np.ndarray) -> None:
        """Add the finite pixels of a (C, H, W) array (NaN = invalid, ignored)."""
        if data.ndim != 3 or data.shape[0] != len(self.bands):
            raise ValueError(f"expected ({len(self.bands)}, H, W) data, got {data.shape}")
        for i, band in enumerate(data):
            values = band[np.isfinite(band)].astype(np.float64)
            if values.size == 0:
                continue
            if np.isnan(self._shift[i]):
                self._shift[i] = values.mean()
            centred = values - self._shift[i]
            self.count[i] += values.size
            self._sum[i] += centred.sum()
            self._sum_sq[i] += np.square(centred).sum()

    @property
    def mean(self) -> np.ndarray:
        """Per-band mean (NaN for a band that saw no valid pixel)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._shift + self._sum / self.count

    @property
    def std(self) -> np.ndarray:
        """Per-band population standard deviation (NaN for a band that saw no valid pixel)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            centred_mean = self._sum / self.count
            variance = self._sum_sq / self.count - centred_mean**2
        return np.sqrt(np.maximum(variance, 0.0))

    def result(self, split: str) -> NormalizationStats:
        """The statistics so far, as :class:`NormalizationStats`."""
        return NormalizationStats(
            bands=list(self.bands),
            mean=[float(v) for v in self.mean],
            std=[float(v) for v in self.std],
            split=split,
            pixels=int(self.count.min()) if len(self.count) else 0,
        )


@dataclass(frozen=True)
class NormalizationStats:
    """Per-band statistics as stored in ``stats.json``."""

    bands: list[str]
    mean: list[float]
    std: list[float]
    split: str = "train"
    pixels: int = 0

    def save(self, path: str | Path) -> None:
        """Write ``stats.json``."""
        payload = {
            "bands": self.bands,
            "mean": self.mean,
            "std": self.std,
            "split": self.split,
            "pixels": self.pixels,
        }
        Path(path).write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> NormalizationStats:
        """Read ``stats.json``; InputError when it is missing or malformed."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text())
            stats = cls(
                bands=list(payload["bands"]),
                mean=[float(v) for v in payload["mean"]],
                std=[float(v) for v in payload["std"]],
                split=str(payload.get("split", "train")),
                pixels=int(payload.get("pixels", 0)),
            )
        except FileNotFoundError as err:
            raise InputError(path, "statistics file does not exist") from err
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(path, f"not a valid stats.json ({err})") from err
        if not len(stats.bands) == len(stats.mean) == len(stats.std):
            raise InputError(path, "bands, mean and std have different lengths")
        return stats

    def select(self, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (float32) of the named bands, in that order."""
        index = {b: i for i, b in enumerate(self.bands)}
        missing = [b for b in bands if b not in index]
        if missing:
            raise KeyError(f"no statistics for band(s) {', '.join(missing)}")
        order = [index[b] for b in bands]
        return (
            np.asarray(self.mean, dtype=np.float32)[order],
            np.asarray(self.std, dtype=np.float32)[order],
        )
