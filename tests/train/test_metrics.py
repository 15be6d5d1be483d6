"""Pooled change metrics: pooled not averaged, 0 not NaN without change, ignore pixels, sweep."""

from __future__ import annotations

import pytest
import torch

from groundbreak.train.metrics import PooledChangeMetrics, safe_divide


def test_scores_are_pooled_over_all_pixels_not_averaged_per_chip() -> None:
    metric = PooledChangeMetrics()
    # Chip 1: 1 changed pixel, found. Chip 2: 9 changed pixels, 3 found, 1 false alarm.
    target1 = torch.tensor([1, 0, 0, 0])
    probs1 = torch.tensor([0.9, 0.1, 0.1, 0.1])
    target2 = torch.tensor([1] * 9 + [0])
    probs2 = torch.tensor([0.9] * 3 + [0.1] * 6 + [0.8])
    metric.update(probs1, target1)
    metric.update(probs2, target2)
    scores = metric.compute()
    tp, fp, fn = 4, 1, 6
    assert scores["precision"].item() == pytest.approx(tp / (tp + fp))
    assert scores["recall"].item() == pytest.approx(tp / (tp + fn))
    assert scores["f1"].item() == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert scores["iou"].item() == pytest.approx(tp / (tp + fp + fn))
    per_chip_recall = (1.0 + 3 / 9) / 2
    assert scores["recall"].item() != pytest.approx(per_chip_recall)


def test_no_change_and_no_prediction_gives_zero_not_nan() -> None:
    metric = PooledChangeMetrics()
    metric.update(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.int64))
    scores = metric.compute()
    for name, value in scores.items():
        assert not torch.isnan(value), name
    assert scores["f1"] == 0 and scores["precision"] == 0 and scores["recall"] == 0
    assert scores["best_threshold"].item() == pytest.approx(0.5)
    empty = PooledChangeMetrics().compute()
    assert all(not torch.isnan(v) for v in empty.values())


def test_ignored_pixels_are_excluded() -> None:
    metric = PooledChangeMetrics()
    target = torch.tensor([1, 0, 255, 255])
    probs = torch.tensor([0.9, 0.1, 0.9, 0.1])
    metric.update(probs, target)
    scores = metric.compute()
    assert scores["precision"] == 1 and scores["recall"] == 1 and scores["f1"] == 1


def test_threshold_sweep_matches_brute_force_and_finds_best_threshold() -> None:
    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(4000, generator=generator) < 0.05).long()
    # Changed pixels score around 0.3, others around 0.1: the best threshold lies well below 0.5.
    probs = torch.where(target.bool(), 0.3, 0.1) + 0.05 * torch.randn(4000, generator=generator)
    probs = probs.clamp(0, 1)
    metric = PooledChangeMetrics()
    for chunk in range(4):
        part = slice(chunk * 1000, (chunk + 1) * 1000)
        metric.update(probs[part], target[part])
    curve = metric.curve()
    for t, f1 in zip(curve["threshold"].tolist(), curve["f1"].tolist(), strict=True):
        predicted = probs >= t
        tp = (predicted & target.bool()).sum()
        fp = (predicted & ~target.bool()).sum()
        fn = (~predicted & target.bool()).sum()
        assert f1 == pytest.approx(float(safe_divide(2 * tp, 2 * tp + fp + fn)), abs=1e-9)
    scores = metric.compute()
    assert scores["best_f1"] >= scores["f1"]
    best = int(torch.argmax(curve["f1"]))
    assert scores["best_threshold"].item() == pytest.approx(curve["threshold"][best].item())
    assert scores["best_f1"].item() == pytest.approx(curve["f1"][best].item())
    assert scores["best_threshold"] < 0.5 and scores["best_f1"] > 0.8


def test_reset_and_bad_arguments() -> None:
    metric = PooledChangeMetrics()
    metric.update(torch.ones(4), torch.ones(4, dtype=torch.int64))
    assert metric.compute()["f1"] == 1
    metric.reset()
    assert metric.compute()["f1"] == 0
    with pytest.raises(ValueError, match="differ in size"):
        metric.update(torch.ones(4), torch.ones(5))
    with pytest.raises(ValueError, match="threshold"):
        PooledChangeMetrics(threshold=1.5)
    with pytest.raises(ValueError, match="thresholds"):
        PooledChangeMetrics(thresholds=[])
