"""``groundbreak chips``: cut a dataset into chips and write a manifest.

Example::

    groundbreak chips --layout oscd --root ../shared/data/oscd --out runs/chips/oscd

Chips are 128 px at stride 64 unless ``--size``/``--stride`` say otherwise: the geometry of the
shipped recipe (:data:`groundbreak.datasets.chips.DEFAULT_CHIP_SIZE`); the stride defaults to
half the chip size. A model trained on the chips records their size in its bundle
(``model.json`` ``chip_size``), from which the predictor derives its window.

For OSCD the validation split is held out by city (default: cupertino, hongkong, nantes — see
:data:`groundbreak.datasets.layouts.OSCD_VAL_CITIES`); the 10 official test cities have no labels
and form the ``test`` split. For ``--layout csv``, ``--root`` is the CSV file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from groundbreak.datasets.chips import (
    DEFAULT_CHIP_SIZE,
    DEFAULT_CHIP_STRIDE,
    MAX_CHIP_SIZE,
    ChipConfig,
    cut_chips,
)
from groundbreak.datasets.date_matching import DATE_MATCHING_MODES
from groundbreak.datasets.layouts import OSCD_VAL_CITIES, SPLITS, layout_pairs


def _comma_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``groundbreak chips``."""
    parser = argparse.ArgumentParser(
        prog="groundbreak chips",
        description="Cut a dataset of tile pairs into chips and write manifest.parquet, "
        "dataset.json and stats.json.",
    )
    parser.add_argument("--layout", required=True, choices=("oscd", "levir", "csv"))
    parser.add_argument(
        "--root", required=True, type=Path, help="dataset folder (the CSV file for --layout csv)"
    )
    parser.add_argument("--out", required=True, type=Path, help="chip dataset folder to write")
    parser.add_argument(
        "--size", type=int, default=DEFAULT_CHIP_SIZE,
        help=f"chip size in pixels (default {DEFAULT_CHIP_SIZE}, the shipped recipe's)",
    )
    parser.add_argument(
        "--stride", type=int, default=None,
        help=f"step between chips (default: half the chip size, {DEFAULT_CHIP_STRIDE} for "
        f"{DEFAULT_CHIP_SIZE} px chips)",
    )
    parser.add_argument(
        "--bands", type=_comma_list, default=None,
        help="bands to keep, comma-separated (default: all bands common to all pairs)",
    )
    parser.add_argument(
        "--val-pairs", type=_comma_list, default=None,
        help="pairs (OSCD: cities) held out as the val split, comma-separated "
        f"(OSCD default: {','.join(OSCD_VAL_CITIES)})",
    )
    parser.add_argument(
        "--change-threshold", type=float, default=0.01,
        help="changed fraction from which a chip is 'construction' (default 0.01)",
    )
    parser.add_argument(
        "--min-valid", type=float, default=0.5,
        help="skip chips with a smaller fraction of valid pixels (default 0.5)",
    )
    parser.add_argument(
        "--splits", type=_comma_list, default=None,
        help=f"splits to cut, comma-separated from {','.join(SPLITS)} (default: all)",
    )
    parser.add_argument(
        "--date-matching", choices=DATE_MATCHING_MODES, default="none",
        help="mean_std: match each pair's after date to its before date band by band (mean and "
        "standard deviation); the model trained on these chips does the same when it predicts "
        "(default none)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing chip dataset")
    parser.add_argument(
        "--skip-invalid-pairs", action="store_true",
        help="leave out pairs that cannot be opened (listed on stderr and in dataset.json) "
        "instead of stopping at the first",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final counts")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak chips``; bad input raises InputError (printed by the dispatcher)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.size <= 0 or (args.stride is not None and args.stride <= 0):
        parser.error("--size and --stride must be positive")
    if args.size > MAX_CHIP_SIZE:
        parser.error(f"--size must be at most {MAX_CHIP_SIZE} px (a chip of both dates is read "
                     "whole into memory)")
    if not 0.0 <= args.min_valid <= 1.0:
        parser.error("--min-valid must lie in [0, 1]")
    if not 0.0 < args.change_threshold <= 1.0:
        parser.error("--change-threshold must lie in (0, 1]")
    unknown = sorted(set(args.splits or ()) - set(SPLITS))
    if unknown:
        parser.error(f"unknown split(s) {', '.join(unknown)}; use {', '.join(SPLITS)}")
    specs = layout_pairs(args.layout, args.root, val_pairs=args.val_pairs)
    config = ChipConfig(
        chip_size=args.size,
        stride=args.stride,
        bands=args.bands,
        change_threshold=args.change_threshold,
        min_valid_fraction=args.min_valid,
        splits=args.splits,
        date_matching=args.date_matching,
    )

    def report(line: str) -> None:
        print(f"  {line}", file=sys.stderr)

    summary = cut_chips(
        specs,
        args.out,
        config,
        layout=args.layout,
        root=args.root,
        overwrite=args.overwrite,
        progress=None if args.quiet else report,
        skip_invalid_pairs=args.skip_invalid_pairs,
    )
    print(
        f"wrote {len(summary.manifest)} chips of {config.chip_size}x{config.chip_size} "
        f"at stride {config.step} "
        f"({len(summary.bands)} bands: {','.join(summary.bands)}) to {summary.out_dir}"
    )
    print(summary.table())
    for skipped in summary.skipped_pairs:
        print(f"skipped pair {skipped['pair_id']}: {skipped['error']}", file=sys.stderr)
    return 0
