"""The fully convolutional change networks of Caye Daudt et al., as published.

- :class:`FCNet` with ``fusion="early"`` is **FC-EF**, with ``"siamese_diff"`` **FC-Siam-diff**
  and with ``"siamese_concat"`` **FC-Siam-conc** (Caye Daudt, Le Saux, Boulch, ICIP 2018): four
  encoder levels of 16, 32, 64 and 128 channels (2, 2, 3 and 3 blocks of 3x3 conv, batch norm,
  ReLU and 2-D dropout 0.2), 2x2 max-pooling between levels; the decoder upsamples with 3x3
  transposed convolutions of stride 2 and reads a skip at every level, the full-resolution one
  included: the level's features (FC-EF), their absolute difference over the two dates of a
  shared encoder (FC-Siam-diff) or both side by side (FC-Siam-conc). As in the authors' code, the
  siamese decoders start from the after date's pooled deepest features.
- :class:`FCEFRes` is **FC-EF-Res** (FresUNet; Caye Daudt et al., CVIU 2019): early fusion, with
  residual blocks (two 3x3 conv + batch norm, a 1x1 projection where the width changes) of 8, 16,
  32, 64 and 128 channels at full resolution to 1/16, max-pooling inside the downsampling blocks
  and residual transposed-convolution blocks upsampling, a skip at every level.

Differences from the papers, all without effect on the function the network can learn: the
stride-1 transposed convolutions of the FC decoders are plain convolutions (same size, same
parameter count), and the head gives one change logit (the papers' two-class log-softmax holds
one free logit difference). Inputs are ``(B, in_channels, H, W)`` per date with ``H`` and ``W``
divisible by :attr:`output_stride` (16); callers pad anything else. The output is ``(B, 1, H, W)``.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from groundbreak.train.architecture import (
    FC_OUTPUT_STRIDE,
    FC_WIDTHS,
    RES_OUTPUT_STRIDE,
    RES_WIDTHS,
)

FC_FUSIONS = ("early", "siamese_diff", "siamese_concat")
"""How :class:`FCNet` combines the dates (FC-EF, FC-Siam-diff, FC-Siam-conc)."""
FC_BLOCKS = (2, 2, 3, 3)
"""Conv-BN-ReLU-dropout blocks of each encoder level of :class:`FCNet`."""
FC_DROPOUT = 0.2


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU, 2-D dropout 0.2: the unit of the FC networks."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(p=FC_DROPOUT),
    )


def _upsample(channels: int) -> nn.ConvTranspose2d:
    """A 3x3 transposed convolution of stride 2 that doubles height and width."""
    return nn.ConvTranspose2d(
        channels, channels, kernel_size=3, stride=2, padding=1, output_padding=1
    )


def check_pair(before: torch.Tensor, after: torch.Tensor, in_channels: int, stride: int) -> None:
    """Raise ValueError unless both dates are ``(B, in_channels, H, W)`` with H, W divisible."""
    if before.shape != after.shape:
        raise ValueError(
            f"before and after must have the same shape, got {tuple(before.shape)} and "
            f"{tuple(after.shape)}"
        )
    if before.ndim != 4 or before.shape[1] != in_channels:
        raise ValueError(
            f"expected inputs of shape (B, {in_channels}, H, W), got {tuple(before.shape)}"
        )
    height, width = before.shape[-2:]
    if height % stride or width % stride:
        padded = (-(-height // stride) * stride, -(-width // stride) * stride)
        raise ValueError(
            f"input height and width must be divisible by {stride}, got {height}x{width}; pad "
            f"the inputs to {padded[0]}x{padded[1]}"
        )


class FCNet(nn.Module):
    """FC-EF, FC-Siam-diff or FC-Siam-conc (see the module docstring).

    Args:
        in_channels: Bands per date (FC-EF's encoder reads twice as many).
        fusion: ``"early"`` (FC-EF), ``"siamese_diff"`` (FC-Siam-diff) or ``"siamese_concat"``
            (FC-Siam-conc).

    Raises:
        ValueError: For an unknown fusion or fewer than one band.
    """

    network = "fc"
    output_stride = FC_OUTPUT_STRIDE

    def __init__(self, in_channels: int, fusion: str = "siamese_diff") -> None:
        super().__init__()
        if fusion not in FC_FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; expected one of {', '.join(FC_FUSIONS)}")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        self.in_channels = int(in_channels)
        self.fusion = fusion
        skip_factor = 2 if fusion == "siamese_concat" else 1
        self.encoder = nn.ModuleList()
        channels = 2 * self.in_channels if fusion == "early" else self.in_channels
        for width, blocks in zip(FC_WIDTHS, FC_BLOCKS, strict=True):
            layers = [_conv_block(channels if i == 0 else width, width) for i in range(blocks)]
            self.encoder.append(nn.Sequential(*layers))
            channels = width
        # Decoder level i (deepest first): upsample, concatenate the skip, then its blocks; the
        # level's last block narrows to the next level's width (the head's 1 logit at the top).
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(FC_WIDTHS))):
            width, blocks = FC_WIDTHS[level], FC_BLOCKS[level]
            below = FC_WIDTHS[level - 1] if level else None
            self.upsample.append(_upsample(width))
            layers = [_conv_block((1 + skip_factor) * width, width)]
            layers += [_conv_block(width, width) for _ in range(blocks - 2)]
            if below is not None:
                layers.append(_conv_block(width, below))
            self.decoder.append(nn.Sequential(*layers))
        self.head = nn.Conv2d(FC_WIDTHS[0], 1, kernel_size=3, padding=1)

    @property
    def architecture(self) -> dict[str, Any]:
        """The constructor arguments, as recorded in a model bundle's ``model.json``."""
        return {"network": self.network, "fusion": self.fusion, "in_channels": self.in_channels}

    def check_input(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """Raise ValueError unless both dates are ``(B, in_channels, H, W)`` with H, W divisible."""
        check_pair(before, after, self.in_channels, self.output_stride)

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each level's features before pooling, and the pooled deepest features."""
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, kernel_size=2, stride=2)
        return skips, x

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(B, 1, H, W)`` for a batch of before/after images."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(before, after)
        if self.fusion == "early":
            skips, x = self._encode(torch.cat([before, after], dim=1))
        else:
            batch = before.shape[0]
            both, pooled = self._encode(torch.cat([before, after], dim=0))
            x = pooled[batch:]  # the after date's, as in the authors' code
            if self.fusion == "siamese_diff":
                skips = [torch.abs(f[:batch] - f[batch:]) for f in both]
            else:
                skips = [torch.cat([f[:batch], f[batch:]], dim=1) for f in both]
        for upsample, block, skip in zip(self.upsample, self.decoder, reversed(skips), strict=True):
            x = block(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


class _ResidualBlock(nn.Module):
    """Two 3x3 conv + BN with an identity (or 1x1 conv + BN) shortcut; optional 2x2 max-pool
    between the convolutions (the FresUNet ``BasicBlock_ss``)."""

    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))
    """Convolutions whose forward applies the BatchNorm right after them (for folding)."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output (half the size when it pools)."""
        residual = self.shortcut(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        if self.pool:
            out = nn.functional.max_pool2d(out, kernel_size=2, stride=2)
            residual = nn.functional.max_pool2d(residual, kernel_size=2, stride=2)
        return torch.relu(self.bn2(self.conv2(out)) + residual)


class _ResidualUpBlock(nn.Module):
    """A residual block that doubles the size and halves the width with 3x3 transposed
    convolutions of stride 2 on both paths (the FresUNet ``BasicBlock_us``)."""

    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))
    """Convolutions whose forward applies the BatchNorm right after them (for folding)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        out_channels = in_channels // 2
        self.conv1 = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1
            ),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output, twice the size and half the width of its input."""
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.shortcut(x))


class FCEFRes(nn.Module):
    """FC-EF-Res: the residual early-fusion U-Net of Caye Daudt et al. 2019 (FresUNet).

    Args:
        in_channels: Bands per date (the network reads both dates stacked).
        fusion: Only ``"early"`` (the network is early fusion by design).

    Raises:
        ValueError: For another fusion or fewer than one band.
    """

    network = "fc_res"
    output_stride = RES_OUTPUT_STRIDE

    def __init__(self, in_channels: int, fusion: str = "early") -> None:
        super().__init__()
        if fusion != "early":
            raise ValueError(f"network fc_res (FC-EF-Res) is early fusion only, got {fusion!r}")
        if int(in_channels) < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        self.in_channels = int(in_channels)
        self.fusion = fusion
        w = RES_WIDTHS
        # Encoder level i: a block at width w[i] (the skip), then a pooling block to w[i + 1].
        self.encoder = nn.ModuleList()
        channels = 2 * self.in_channels
        for i in range(len(w) - 1):
            self.encoder.append(nn.ModuleList([
                _ResidualBlock(channels, w[i]), _ResidualBlock(w[i], w[i + 1], pool=True)
            ]))
            channels = w[i + 1]
        self.bottleneck = nn.Sequential(_ResidualBlock(w[-1], w[-1]), _ResidualUpBlock(w[-1]))
        # Decoder at 1/8, 1/4, 1/2: concatenate the skip of width w[i + 1] (the encoder block
        # below the pool), a block back to the upsampled width, then upsample.
        self.decoder = nn.ModuleList()
        for i in reversed(range(1, len(w) - 1)):
            width = w[i]
            self.decoder.append(nn.Sequential(
                _ResidualBlock(width + w[i], width), _ResidualUpBlock(width)
            ))
        self.head = nn.Conv2d(w[0] + w[0], 1, kernel_size=1)

    @property
    def architecture(self) -> dict[str, Any]:
        """The constructor arguments, as recorded in a model bundle's ``model.json``."""
        return {"network": self.network, "fusion": self.fusion, "in_channels": self.in_channels}

    def check_input(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """Raise ValueError unless both dates are ``(B, in_channels, H, W)`` with H, W divisible."""
        check_pair(before, after, self.in_channels, self.output_stride)

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """Change logits ``(B, 1, H, W)`` for a batch of before/after images."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(before, after)
        x = torch.cat([before, after], dim=1)
        skips = []
        for keep, pool in cast("list[nn.ModuleList]", self.encoder):
            x = keep(x)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoder, reversed(skips[1:]), strict=True):
            x = block(torch.cat([x, skip], dim=1))
        return self.head(torch.cat([x, skips[0]], dim=1))
