"""Change-class metrics pooled over every validation pixel, plus a precision-recall threshold sweep.

Precision, recall, F1 and IoU are computed from true/false positive and false negative counts
accumulated over the whole epoch (and summed across DDP processes), never averaged per chip: a
chip with no change has no defined recall of its own, and averaging would weight a 3-pixel change
like a 3000-pixel one. Every ratio defines 0/0 as 0, so an epoch without change (or without any
prediction) gives 0, never NaN. Pixels whose mask is ``ignore_index`` are left out.

The same counts are kept for a sweep of thresholds (default 0.05, 0.10, ..., 0.95) so the threshold
with the best pooled F1 can be chosen as a model bundle's operating threshold. The sweep's rule
(:func:`best_in_sweep`: the best pooled F1, ties to the threshold nearest 0.5) and its scores
(:func:`scores_from_counts`) are the one sweep of the project: whole-scene evaluation
(``groundbreak.infer.evaluation.scene_evaluate``) counts its pixels in a histogram and chooses
its threshold with them too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` with 0/0 (and x/0) defined as 0."""
    numerator = numerator.double()
    denominator = denominator.double()
    return torch.where(
        denominator > 0, numerator / denominator.clamp_min(1), torch.zeros_like(numerator)
    )


def scores_from_counts(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and IoU of the positive class from pooled counts."""
    return {
        "precision": safe_divide(tp, tp + fp),
        "recall": safe_divide(tp, tp + fn),
        "f1": safe_divide(2 * tp, 2 * tp + fp + fn),
        "iou": safe_divide(tp, tp + fp + fn),
    }


def best_in_sweep(thresholds: torch.Tensor, f1: torch.Tensor) -> int:
    """The index of the best F1 of a threshold sweep; among equal F1 (e.g. all 0 without
    change) the threshold nearest 0.5, the first of those at equal distance.

    The distance is taken in the dtype of ``thresholds``.
    """
    ties = f1 == f1.max()
    distance = (thresholds - 0.5).abs()
    return int(torch.argmin(torch.where(ties, distance, torch.full_like(distance, 2.0))))


class PooledChangeMetrics(Metric):
    """Pooled precision/recall/F1/IoU of the change class and the best-F1 threshold.

    Args:
        threshold: Probability at and above which a pixel counts as changed, for the main scores.
        thresholds: Thresholds of the sweep used for ``best_f1`` and ``best_threshold``.
        ignore_index: Mask value excluded from every count.

    ``update(probs, target)`` takes change probabilities (any shape; ``(B, 1, H, W)`` is usual)
    and a mask with the same number of elements. ``compute()`` returns a dict of scalar tensors:
    ``precision``, ``recall``, ``f1``, ``iou``, ``best_f1``, ``best_threshold``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    sweep: torch.Tensor
    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    sweep_tp: torch.Tensor
    sweep_fp: torch.Tensor
    sweep_fn: torch.Tensor

    def __init__(
        self,
        threshold: float = 0.5,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        sweep = sorted(float(t) for t in thresholds)
        if not sweep or not all(0.0 < t < 1.0 for t in sweep):
            raise ValueError("thresholds must be a non-empty list of values in (0, 1)")
        self.threshold = threshold
        self.ignore_index = ignore_index
        self.register_buffer("sweep", torch.tensor(sweep, dtype=torch.float32), persistent=False)
        count = len(sweep)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
            self.add_state(
                f"sweep_{name}", default=torch.zeros(count, dtype=torch.long), dist_reduce_fx="sum"
            )

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Add the counts of one batch."""
        if probs.numel() != target.numel():
            raise ValueError(
                f"predictions {tuple(probs.shape)} and mask {tuple(target.shape)} differ in size"
            )
        probs = probs.detach().reshape(-1).float()
        target = target.reshape(-1)
        valid = target != self.ignore_index
        probs, positive = probs[valid], target[valid] == 1

        predicted = probs >= self.threshold
        self.tp += (predicted & positive).sum()
        self.fp += (predicted & ~positive).sum()
        self.fn += (~predicted & positive).sum()

        # Thresholds at or below each probability: that pixel is predicted changed at each of them.
        passed = torch.bucketize(probs, self.sweep, right=True)
        count = len(self.sweep)
        pos_hist = torch.bincount(passed[positive], minlength=count + 1)
        neg_hist = torch.bincount(passed[~positive], minlength=count + 1)
        # Pixels predicted changed at threshold j are those that passed more than j thresholds.
        pos_above = pos_hist.flip(0).cumsum(0).flip(0)[1:]
        neg_above = neg_hist.flip(0).cumsum(0).flip(0)[1:]
        self.sweep_tp += pos_above
        self.sweep_fp += neg_above
        self.sweep_fn += positive.sum() - pos_above

    def compute(self) -> dict[str, torch.Tensor]:
        """Pooled scores at ``threshold`` and the best pooled F1 over the sweep."""
        scores = scores_from_counts(self.tp, self.fp, self.fn)
        sweep_f1 = scores_from_counts(self.sweep_tp, self.sweep_fp, self.sweep_fn)["f1"]
        best = best_in_sweep(self.sweep, sweep_f1)
        scores["best_f1"] = sweep_f1[best]
        scores["best_threshold"] = self.sweep[best].double()
        return {name: value.float() for name, value in scores.items()}

    def curve(self) -> dict[str, torch.Tensor]:
        """The pooled precision, recall and F1 at every threshold of the sweep."""
        scores = scores_from_counts(self.sweep_tp, self.sweep_fp, self.sweep_fn)
        return {"threshold": self.sweep.clone(), **scores}
