"""Change losses: ignore pixels excluded, sparse and empty change handled, every option works."""

from __future__ import annotations

import pytest
import torch

from groundbreak.train.losses import LOSS_NAMES, ChangeLoss, soft_dice_loss


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (2, 1, 16, 16) and a sparse mask with some ignored pixels."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 1, 16, 16, generator=generator, requires_grad=True)
    mask = torch.zeros(2, 16, 16, dtype=torch.int64)
    mask[0, 2:5, 2:5] = 1
    mask[:, -2:, :] = 255
    return logits, mask


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignored_pixels_do_not_change_the_loss(name: str) -> None:
    logits, mask = batch()
    loss = ChangeLoss(name)(logits, mask)
    altered = logits.detach().clone()
    altered[:, :, -2:, :] = 50.0
    assert ChangeLoss(name)(altered, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[:, :, -2:, :].abs().max() == 0
    assert logits.grad[:, :, :-2, :].abs().max() > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_all_ignored_batch_gives_zero_with_a_graph(name: str) -> None:
    logits, _ = batch()
    mask = torch.full((2, 16, 16), 255)
    loss = ChangeLoss(name)(logits, mask)
    assert loss.item() == 0.0
    loss.backward()


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_no_change_batch_is_finite_and_rewards_background(name: str) -> None:
    mask = torch.zeros(2, 16, 16, dtype=torch.int64)
    confident = ChangeLoss(name)(torch.full((2, 1, 16, 16), -6.0), mask)
    wrong = ChangeLoss(name)(torch.full((2, 1, 16, 16), 6.0), mask)
    assert torch.isfinite(confident) and confident < wrong


def test_dice_is_pooled_over_the_batch() -> None:
    mask = torch.zeros(2, 4, 4, dtype=torch.int64)
    mask[0, :2, :2] = 1
    logits = torch.where(mask.bool(), 10.0, -10.0).unsqueeze(1)
    # A perfect prediction: the change-free chip does not add a 0/0 Dice of its own.
    assert soft_dice_loss(logits, mask).item() == pytest.approx(0.0, abs=1e-3)


def test_lovasz_term_follows_the_iou_of_the_change_class() -> None:
    _, mask = batch()
    perfect = torch.where(mask == 1, 8.0, -8.0).float().unsqueeze(1)
    assert ChangeLoss("bce_lovasz")(perfect, mask).item() == pytest.approx(0.0, abs=1e-2)
    # Five changed pixels missed (IoU 4/9) against five false ones beside a perfect hit (IoU 9/14):
    # BCE sees five equally wrong pixels in both; the IoU surrogate ranks the misses worse.
    half_missed = perfect.clone()
    half_missed[0, 0, 2, 2:5] = -8.0
    half_missed[0, 0, 3, 2:4] = -8.0
    extra = perfect.clone()
    extra[0, 0, 8, 0:5] = 8.0
    bce = ChangeLoss("bce")
    assert bce(half_missed, mask).item() == pytest.approx(bce(extra, mask).item(), rel=1e-4)
    lovasz = ChangeLoss("bce_lovasz")
    assert lovasz(half_missed, mask) > lovasz(extra, mask)


def test_pos_weight_raises_the_cost_of_missed_change() -> None:
    logits, mask = batch()
    plain = ChangeLoss("bce")(logits, mask)
    weighted = ChangeLoss("bce", pos_weight=10.0)(logits, mask)
    assert weighted > plain


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        ChangeLoss("mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pos_weight"):
        ChangeLoss("bce", pos_weight=0.0)
    with pytest.raises(ValueError, match="differ in size"):
        ChangeLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5, 5))
