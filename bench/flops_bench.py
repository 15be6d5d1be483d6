"""Prediction cost of the change networks in FLOPs per km² (prints figures only; issue 23).

The shipping rule of issue 23 bounds a candidate's prediction cost at 2x the shipped model's
FLOPs per km². This counts the floating-point operations of one forward pass (torch's
``FlopCounterMode``: convolutions and matrix products, a multiply-add counted as 2 FLOPs;
batch norm, activations and pooling are not counted) over a ``--side`` px square pair of 13-band
10 m images, and scales it to a km² (10 000 pixels at 10 m). The tiled predictor's window overlap
and test-time augmentation multiply every row alike, and are left out.

Usage::

    python bench/flops_bench.py                # the shipped bundle beside the candidates
    python bench/flops_bench.py --side 512

Rows: the shipped bundle (``checkpoints/oscd-s2-default``); the same U-Net with the
full-resolution stage (``model.full_resolution``); FC-EF, FC-Siam-diff, FC-Siam-conc and FC-EF-Res.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from groundbreak.train.bundle import default_bundle_path, load_bundle
from groundbreak.train.model import build_change_model

PIXEL_SIZE_M = 10.0


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


def main(argv: Sequence[str] | None = None) -> int:
    """Print parameters and GFLOPs per km² of the shipped model and the candidates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=256, help="side of the square input (px)")
    args = parser.parse_args(argv)

    shipped = load_bundle(default_bundle_path())
    bands = len(shipped.bands)
    rows: list[tuple[str, nn.Module]] = [
        ("shipped bundle (U-Net RegNetX-200MF)", shipped.model),
        ("shipped U-Net + full_resolution",
         build_change_model({**shipped.model.architecture, "full_resolution": True})),
        ("FC-EF", build_change_model({"network": "fc", "fusion": "early", "in_channels": bands})),
        ("FC-Siam-diff",
         build_change_model({"network": "fc", "fusion": "siamese_diff", "in_channels": bands})),
        ("FC-Siam-conc",
         build_change_model({"network": "fc", "fusion": "siamese_concat", "in_channels": bands})),
        ("FC-EF-Res",
         build_change_model({"network": "fc_res", "fusion": "early", "in_channels": bands})),
    ]
    base = flops_per_km2(shipped.model, bands, args.side)
    print(f"{args.side} px input, {bands} bands, {PIXEL_SIZE_M:g} m pixels")
    print("| model | parameters | GFLOPs per km² | x shipped |")
    print("| --- | ---: | ---: | ---: |")
    for name, model in rows:
        flops = flops_per_km2(model, bands, args.side)
        params = sum(p.numel() for p in model.parameters())
        print(f"| {name} | {params / 1e6:.2f} M | {flops / 1e9:.2f} | {flops / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
