"""Prediction cost of the change networks in FLOPs per km² (prints figures only; issue 23).

The shipping rule of issue 23 bounds a candidate's prediction cost at 2x the single U-Net's
FLOPs per km² as it predicts by default (256 px windows overlapping by 64). This counts the
floating-point operations of one forward pass (torch's ``FlopCounterMode``: convolutions and
matrix products, a multiply-add counted as 2 FLOPs; batch norm, activations and pooling are not
counted) over a ``--side`` px square pair of 13-band 10 m images, scales it to a km² (10 000
pixels at 10 m), then multiplies it by the share of pixels the overlapping windows compute twice,
``(window / (window - overlap))²``: 1.78 for 256/64, 1.31 for 512/64. Test-time augmentation
multiplies every row alike and is left out.

Usage::

    python bench/flops_bench.py                # the U-Net, the candidates, the shipped bundles
    python bench/flops_bench.py --side 512

Rows: the single U-Net (``checkpoints/oscd-s2-unet``), the same U-Net with the full-resolution
stage (``model.full_resolution``), FC-EF, FC-Siam-diff, FC-Siam-conc and FC-EF-Res, at 256/64;
then the default bundle (``checkpoints/oscd-s2-default``) and the fast bundle
(``checkpoints/oscd-s2-fast``) at their own windows.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from groundbreak.train.bundle import (
    DEFAULT_BUNDLE_DIR,
    ModelBundle,
    default_bundle_path,
    load_bundle,
)
from groundbreak.train.model import build_change_model

PIXEL_SIZE_M = 10.0
UNET_BUNDLE = DEFAULT_BUNDLE_DIR.parent / "oscd-s2-unet"
"""The single U-Net, the shipped default before the ensemble: the rule's FLOPs reference."""
FAST_BUNDLE = DEFAULT_BUNDLE_DIR.parent / "oscd-s2-fast"
"""The U-Net distilled from the default, for fast nights."""


def flops_per_km2(model: nn.Module, in_channels: int, side: int = 256,
                  pixel_size_m: float = PIXEL_SIZE_M) -> float:
    """FLOPs of one forward pass of ``model`` per km² of input at ``pixel_size_m``."""
    pair = torch.zeros(1, in_channels, side, side), torch.zeros(1, in_channels, side, side)
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*pair)
    pixels_per_km2 = 1e6 / pixel_size_m**2
    return counter.get_total_flops() / (side * side) * pixels_per_km2


def overlap_factor(window: int, overlap: int) -> float:
    """Pixels computed per scene pixel by windows of ``window`` overlapping by ``overlap``."""
    return (window / (window - overlap)) ** 2


def own_windows(bundle: ModelBundle) -> tuple[int, int]:
    """The window and overlap a bundle predicts with: its own, else the predictor's 256/64."""
    if bundle.window is None:
        return 256, 64
    if bundle.overlap is None:
        raise ValueError(f"{bundle.path / 'model.json'}: a window without its overlap")
    return bundle.window, bundle.overlap


def main(argv: Sequence[str] | None = None) -> int:
    """Print parameters and GFLOPs per km² of the U-Net, the candidates and the default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=256, help="side of the square input (px)")
    args = parser.parse_args(argv)

    unet = load_bundle(UNET_BUNDLE)
    default = load_bundle(default_bundle_path())
    fast = load_bundle(FAST_BUNDLE)
    bands = len(unet.bands)
    rows: list[tuple[str, nn.Module, int, int]] = [
        ("U-Net RegNetX-200MF (oscd-s2-unet)", unet.model, 256, 64),
        ("U-Net + full_resolution",
         build_change_model({**unet.model.architecture, "full_resolution": True}), 256, 64),
        ("FC-EF", build_change_model({"network": "fc", "fusion": "early", "in_channels": bands}),
         256, 64),
        ("FC-Siam-diff",
         build_change_model({"network": "fc", "fusion": "siamese_diff", "in_channels": bands}),
         256, 64),
        ("FC-Siam-conc",
         build_change_model({"network": "fc", "fusion": "siamese_concat", "in_channels": bands}),
         256, 64),
        ("FC-EF-Res",
         build_change_model({"network": "fc_res", "fusion": "early", "in_channels": bands}),
         256, 64),
        *((f"{role} bundle ({bundle.name})", bundle.model, *own_windows(bundle))
          for role, bundle in (("default", default), ("fast", fast))),
    ]
    base = flops_per_km2(unet.model, bands, args.side) * overlap_factor(256, 64)
    print(f"{args.side} px input, {bands} bands, {PIXEL_SIZE_M:g} m pixels")
    print("| model | parameters | GFLOPs per km², one pass | window/overlap | GFLOPs per km² "
          "predicted | x the U-Net |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for name, model, window, overlap in rows:
        flops = flops_per_km2(model, bands, args.side)
        predicted = flops * overlap_factor(window, overlap)
        params = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {params / 1e6:.2f} M | {flops / 1e9:.2f} | {window}/{overlap} | "
              f"{predicted / 1e9:.2f} | {predicted / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
