"""An ensemble of change models that runs as one model: its members' centred logits, averaged.

Each member's logit is shifted by its own ``logit_offset`` (the logit of the member's operating
threshold, :func:`logit_offset`) before the average, so a member whose probabilities sit lower
(FC-EF-Res operates at 0.17, the shipped U-Net at 0.58) weighs as much at its own operating point
as the others at theirs. The output is again one change logit per pixel, and its sigmoid a
probability the ensemble's own threshold applies to.

Members read the same bands, normalised the same way (the ensemble bundle checks this); inputs
must be divisible by every member's output stride (:attr:`ChangeEnsemble.output_stride` is their
least common multiple).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from groundbreak.train.architecture import MAX_MEMBERS


def logit_offset(threshold: float) -> float:
    """The logit of a probability threshold in (0, 1): what a member's logit is centred on."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"a threshold must lie in (0, 1), got {threshold}")
    return math.log(threshold / (1.0 - threshold))


class ChangeEnsemble(nn.Module):
    """The average of its members' logits, each minus its logit offset.

    Args:
        members: Change models (each with ``architecture``, ``output_stride``, ``in_channels``
            and ``check_input``), all reading the same number of bands.
        logit_offsets: One per member: subtracted from its logits before the average.

    Raises:
        ValueError: For fewer than two or more than :data:`MAX_MEMBERS` members, an offset count
            that differs, a non-finite offset, a member that is itself an ensemble, or members
            that read different numbers of bands.
    """

    def __init__(self, members: Sequence[nn.Module], logit_offsets: Sequence[float]) -> None:
        super().__init__()
        if not 2 <= len(members) <= MAX_MEMBERS:
            raise ValueError(f"an ensemble holds 2 to {MAX_MEMBERS} members, got {len(members)}")
        if len(logit_offsets) != len(members):
            raise ValueError(
                f"{len(logit_offsets)} logit offsets for {len(members)} members; give one each"
            )
        offsets = [float(o) for o in logit_offsets]
        if not all(math.isfinite(o) for o in offsets):
            raise ValueError(f"logit offsets must be finite, got {offsets}")
        if any(isinstance(m, ChangeEnsemble) for m in members):
            raise ValueError("an ensemble member cannot itself be an ensemble")
        channels = {int(cast(int, m.in_channels)) for m in members}
        if len(channels) != 1:
            raise ValueError(f"members read different numbers of bands: {sorted(channels)}")
        self.members = nn.ModuleList(members)
        self.in_channels = channels.pop()
        self.offsets = offsets
        self.output_stride = math.lcm(*(int(cast(int, m.output_stride)) for m in members))

    @property
    def architecture(self) -> dict[str, Any]:
        """The record ``model.json`` keeps: the members' records and their offsets."""
        return {
            "network": "ensemble",
            "members": [m.architecture for m in self.members],
            "logit_offsets": list(self.offsets),
            "in_channels": self.in_channels,
        }

    def check_input(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """Raise ValueError unless every member accepts the pair."""
        for member in self.members:
            cast(Any, member).check_input(before, after)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(B, 1, H, W)``: the mean of the members' centred logits."""
        total = self.members[0](before, after) - self.offsets[0]
        for member, offset in zip(self.members[1:], self.offsets[1:], strict=True):
            total = total + (member(before, after) - offset)
        return total / len(self.members)
