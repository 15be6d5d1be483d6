"""Losses for sparse binary change: BCE, BCE + soft Dice or Lovasz hinge, focal + soft Dice; ignore
pixels excluded.

Changed pixels are 1-10 % of OSCD. Plain BCE is dominated by the many easy "no change" pixels, and a
model that predicts all-background already scores a low BCE; that is the failure mode the
combined losses guard against:

- ``"bce"``: binary cross-entropy, with an optional ``pos_weight`` that up-weights changed pixels.
- ``"bce_dice"`` (default): BCE (+ ``pos_weight``) plus soft Dice of the change class. Dice is a
  ratio of overlap to size, so it is indifferent to how many background pixels there are and
  rewards finding the few changed ones; BCE keeps per-pixel gradients well-behaved early in
  training when the Dice gradient is noisy.
- ``"focal_dice"``: focal loss (Lin et al., 2017) down-weights easy, well-classified pixels instead
  of re-weighting by class, plus the same soft Dice.
- ``"bce_lovasz"``: BCE (+ ``pos_weight``) plus the Lovasz hinge (Berman et al., 2018; the one of
  segmentation-models-pytorch), a convex surrogate of the IoU of the change class, which is what
  the benchmark scores (F1 and IoU rank thresholds alike).

Soft Dice and the Lovasz hinge are computed over all labelled pixels of the batch pooled (not per
chip and averaged), so a chip with no change contributes its false positives without a 0/0 Dice
of its own. Pixels whose mask is ``ignore_index`` (255: no label, nodata, padding) are excluded
from every term. A batch with no labelled pixel gives a loss of 0 that still carries a graph.
"""

from __future__ import annotations

from typing import Literal, get_args

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

LossName = Literal["bce", "bce_dice", "focal_dice", "bce_lovasz"]
LOSS_NAMES: tuple[str, ...] = get_args(LossName)


def _flatten_valid(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and float targets of the labelled pixels only, as 1-D tensors."""
    logits = logits.reshape(-1)
    target = target.reshape(-1)
    valid = target != ignore_index
    return logits[valid].float(), target[valid].float()


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0
) -> torch.Tensor:
    """``1 - soft Dice`` of the change class over the labelled pixels of the whole batch.

    Args:
        logits: Change logits, any shape.
        target: Mask of the same number of elements (0, 1, or ``ignore_index``).
        ignore_index: Mask value excluded from the loss.
        smooth: Added to numerator and denominator; keeps a batch without change finite.
    """
    logits, target = _flatten_valid(logits, target, ignore_index)
    probs = torch.sigmoid(logits)
    intersection = (probs * target).sum()
    total = probs.sum() + target.sum()
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def binary_cross_entropy_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    pos_weight: float | None = None,
) -> torch.Tensor:
    """Mean BCE over labelled pixels; ``pos_weight`` multiplies the loss of changed pixels."""
    logits, target = _flatten_valid(logits, target, ignore_index)
    if target.numel() == 0:
        return logits.sum() * 0.0
    weight = None if pos_weight is None else torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Mean binary focal loss over labelled pixels (``alpha`` weighs the change class)."""
    logits, target = _flatten_valid(logits, target, ignore_index)
    if target.numel() == 0:
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    probs = torch.sigmoid(logits)
    p_true = probs * target + (1 - probs) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_true) ** gamma * bce).mean()


class ChangeLoss(nn.Module):
    """A change-segmentation loss chosen by name (see the module docstring).

    Args:
        name: ``"bce"``, ``"bce_dice"``, ``"focal_dice"`` or ``"bce_lovasz"``.
        pos_weight: Weight of changed pixels in BCE (``None``: 1); ignored by ``"focal_dice"``.
        dice_weight: Weight of the soft Dice term in ``"bce_dice"`` and ``"focal_dice"``.
        focal_alpha: Weight of the change class in the focal loss.
        focal_gamma: Focusing exponent of the focal loss.
        ignore_index: Mask value excluded from the loss.
    """

    def __init__(
        self,
        name: LossName = "bce_dice",
        pos_weight: float | None = None,
        dice_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")
        if pos_weight is not None and pos_weight <= 0:
            raise ValueError(f"pos_weight must be positive, got {pos_weight}")
        self.name = name
        self.pos_weight = pos_weight
        self.dice_weight = dice_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.ignore_index = ignore_index
        self.lovasz = smp.losses.LovaszLoss(
            smp.losses.BINARY_MODE, per_image=False, ignore_index=ignore_index
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scalar loss of change logits ``(B, 1, H, W)`` against a mask ``(B, H, W)``."""
        if logits.numel() != target.numel():
            raise ValueError(
                f"logits {tuple(logits.shape)} and mask {tuple(target.shape)} differ in size"
            )
        if self.name == "focal_dice":
            pixel_loss = focal_loss(
                logits, target, self.ignore_index, self.focal_alpha, self.focal_gamma
            )
        else:
            pixel_loss = binary_cross_entropy_loss(
                logits, target, self.ignore_index, self.pos_weight
            )
        if self.name == "bce":
            return pixel_loss
        if self.name == "bce_lovasz":
            return pixel_loss + self.lovasz(logits.reshape(target.shape), target)
        return pixel_loss + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index)
