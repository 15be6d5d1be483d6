"""Streaming per-band statistics match a direct computation and survive a round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groundbreak.datasets import open_scene
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.normalization import BandStatistics, NormalizationStats


def test_streaming_statistics_match_numpy(oscd_dir: Path) -> None:
    data = open_scene(oscd_dir / "beirut" / "imgs_1").read(["B02", "B08", "B10"])
    data[:, :5, :7] = np.nan  # invalid pixels are ignored
    stats = BandStatistics(["B02", "B08", "B10"])
    for rows in np.array_split(np.arange(data.shape[1]), 7):  # strips of uneven height
        stats.update(data[:, rows])
    flat = data.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, np.nanmean(flat, axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, np.nanstd(flat, axis=1), rtol=1e-9)
    assert stats.count.tolist() == [96 * 96 - 35] * 3


def test_large_values_with_a_small_spread_stay_accurate() -> None:
    rng = np.random.default_rng(0)
    data = (1e6 + rng.normal(0, 0.5, size=(1, 200, 200))).astype(np.float32)
    stats = BandStatistics(["x"])
    stats.update(data[:, :100])
    stats.update(data[:, 100:])
    assert stats.std[0] == pytest.approx(np.std(data.astype(np.float64)), rel=1e-6)


def test_band_without_valid_pixels_is_nan_and_shape_is_checked() -> None:
    stats = BandStatistics(["a", "b"])
    stats.update(np.stack([np.ones((4, 4)), np.full((4, 4), np.nan)]).astype(np.float32))
    assert stats.mean[0] == 1.0 and np.isnan(stats.mean[1])
    with pytest.raises(ValueError, match=r"expected \(2, H, W\)"):
        stats.update(np.ones((3, 4, 4), np.float32))


def test_stats_json_round_trip_and_selection(tmp_path: Path) -> None:
    stats = NormalizationStats(["B02", "B03", "B04"], [1.0, 2.0, 3.0], [0.5, 0.25, 2.0], "train", 9)
    stats.save(tmp_path / "stats.json")
    loaded = NormalizationStats.load(tmp_path / "stats.json")
    assert loaded == stats
    mean, std = loaded.select(["B04", "B02"])
    assert mean.tolist() == [3.0, 1.0] and std.dtype == np.float32
    with pytest.raises(KeyError, match="B08"):
        loaded.select(["B08"])


def test_bad_stats_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"stats\.json: statistics file does not exist"):
        NormalizationStats.load(tmp_path / "stats.json")
    (tmp_path / "stats.json").write_text('{"bands": ["a"], "mean": [1.0]}')
    with pytest.raises(InputError, match=r"stats\.json: not a valid stats\.json"):
        NormalizationStats.load(tmp_path / "stats.json")
    (tmp_path / "stats.json").write_text('{"bands": ["a"], "mean": [1.0, 2.0], "std": [1.0]}')
    with pytest.raises(InputError, match="different lengths"):
        NormalizationStats.load(tmp_path / "stats.json")
