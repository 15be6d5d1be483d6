"""``groundbreak rank``: score and rank construction sites over many tile pairs.

    groundbreak rank --pairs PAIRS.csv [--sites SITES.geojson] --out RUNDIR [--model BUNDLE]
                     [--min-area M2] [--alert-threshold S] [--tta] [--threshold P]
                     [--date-matching none|mean_std] [--nodata V] ...

Exit codes: 0 every pair was ranked; 1 some pairs failed (listed in ``RUNDIR/failures.csv``;
every output is still written); 2 bad input or usage (bad CSV, watch-list or bundle); 4 stopped
by the machine (a full disk...).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace

from groundbreak.datasets.clouds import CLOUD_MASK_MODES
from groundbreak.datasets.date_matching import DATE_MATCHING_MODES
from groundbreak.infer.exit_codes import EXIT_BAD_INPUT, EXIT_OK, EXIT_PAIRS_FAILED
from groundbreak.infer.prediction.inference import RUNTIMES
from groundbreak.infer.sites.ranking import (
    DEFAULT_ALERT_THRESHOLD,
    REPORT_HTML,
    PairOutcome,
    rank_pairs,
)
from groundbreak.infer.sites.scoring import DEFAULT_AREA_SCALE_M2
from groundbreak.infer.sites.sites import DEFAULT_MIN_AREA_M2, load_watch_list
from groundbreak.train.arguments import (
    device_argument,
    non_negative_float,
    positive_float,
    positive_int,
    threshold_argument,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``groundbreak rank``."""
    parser = argparse.ArgumentParser(
        prog="groundbreak rank",
        description="Predict change on tile pairs, score sites (a watch-list, or discovered "
        "change regions) and write ranked alerts, GeoJSON and an offline HTML report.",
        epilog="Exit codes: 0 all pairs ranked, 1 some pairs failed (see failures.csv), "
        "2 bad input or usage, 4 stopped by the machine (a full disk...).",
    )
    parser.add_argument("--pairs", required=True, metavar="PAIRS.csv",
                        help="CSV with pair_id,before,after[,before_date,after_date]; relative "
                        "paths resolve against the CSV's folder")
    parser.add_argument("--sites", metavar="SITES.geojson",
                        help="watch-list of polygons with site_id and name (default: rank "
                        "discovered change regions)")
    parser.add_argument("--out", required=True, metavar="RUNDIR", help="run folder to write")
    parser.add_argument("--model", metavar="BUNDLE",
                        help="model bundle folder (default: the shipped default bundle)")
    parser.add_argument("--min-area", type=non_negative_float, default=DEFAULT_MIN_AREA_M2,
                        metavar="M2",
                        help="smallest discovered change region in m² (pixels on images "
                        f"without a CRS); default {DEFAULT_MIN_AREA_M2:g}")
    parser.add_argument("--alert-threshold", type=float, default=DEFAULT_ALERT_THRESHOLD,
                        metavar="S", help="sites scoring at least S are alerts; default "
                        f"{DEFAULT_ALERT_THRESHOLD:g}")
    parser.add_argument("--area-scale", type=positive_float, default=DEFAULT_AREA_SCALE_M2,
                        metavar="M2",
                        help="changed area at which the score's area term reaches 0.63; "
                        f"default {DEFAULT_AREA_SCALE_M2:g}")
    parser.add_argument("--tta", action="store_true", help="average flipped predictions")
    parser.add_argument("--threshold", type=threshold_argument, default=None, metavar="P",
                        help="change probability at which a pixel is change, in (0, 1) "
                        "(default: the bundle's threshold; with --tta its TTA threshold when it "
                        "states one)")
    parser.add_argument("--date-matching", choices=DATE_MATCHING_MODES, default=None,
                        help="match each after date to its before date this way before the "
                        "model (none; mean_std: band by band, mean and standard deviation); "
                        "default: as the model bundle says")
    parser.add_argument("--nodata", type=float, default=None,
                        help="a nodata value for every scene that overrides the files' own "
                        "(a pairs CSV's nodata column wins for its pair)")
    parser.add_argument("--window", type=positive_int, help="prediction window side in pixels")
    parser.add_argument("--overlap", type=int, help="overlap of prediction windows in pixels")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="windows read and predicted together (default: 4 of 256², 1 of 512²)")
    parser.add_argument("--device", type=device_argument, default="auto",
                        help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="what runs the model: auto (OpenVINO on a CPU when "
                        "installed, else torch; $GROUNDBREAK_CPU_RUNTIME over it), torch, onnx "
                        "(ONNX Runtime) or openvino (OpenVINO); the last two on a CPU only, see "
                        "the README")
    parser.add_argument("--cloud-mask", choices=CLOUD_MASK_MODES, default="auto",
                        help="clouds and shadows on either date are unobserved, never change: "
                        "auto (SCL, else s2cloudless on Sentinel-2 L1C), s2cloudless, scl, none")
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    return parser


def _print_outcome(outcome: PairOutcome) -> None:
    if outcome.ok:
        print(f"  ok      {outcome.pair_id}: {len(outcome.sites)} site(s) scored "
              f"in {outcome.seconds:.1f} s")
    else:
        print(f"  FAILED  {outcome.reason}", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak rank``; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if not 0.0 <= args.alert_threshold <= 1.0:
        parser.print_usage(sys.stderr)
        print("groundbreak rank: error: --alert-threshold must lie in [0, 1]", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.area_scale <= 0 or args.min_area < 0:
        parser.print_usage(sys.stderr)
        print("groundbreak rank: error: --area-scale must be positive and --min-area not "
              "negative", file=sys.stderr)
        return EXIT_BAD_INPUT

    from groundbreak.datasets.layouts import read_pairs_csv
    from groundbreak.train.bundle import default_bundle_path, load_bundle

    pairs = read_pairs_csv(args.pairs)
    if args.nodata is not None:
        pairs = [spec if spec.nodata is not None else replace(spec, nodata=args.nodata)
                 for spec in pairs]
    sites = load_watch_list(args.sites) if args.sites else None
    bundle = load_bundle(args.model if args.model else default_bundle_path(), build=False)
    from groundbreak.infer.prediction.predictor import TiledPredictor

    try:
        predictor = TiledPredictor(
            bundle, window=args.window, overlap=args.overlap, batch_size=args.batch_size,
            tta=args.tta, device=args.device, runtime=args.runtime, cloud_mask=args.cloud_mask,
            date_matching=args.date_matching, threshold=args.threshold,
        )
    except ValueError as err:
        parser.print_usage(sys.stderr)
        print(f"groundbreak rank: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.quiet:
        what = f"{len(sites)} watch-list site(s)" if sites else "discovered change regions"
        print(f"ranking {len(pairs)} pair(s), {what}, model {bundle.name!r} "
              f"(threshold {predictor.threshold:g}, date matching {predictor.date_matching})")
    result = rank_pairs(
        pairs,
        args.out,
        bundle,
        sites=sites,
        min_area_m2=args.min_area,
        alert_threshold=args.alert_threshold,
        predictor=predictor,
        on_pair_done=None if args.quiet else _print_outcome,
        area_scale=args.area_scale,
        write_report=not args.no_report,
    )
    print(f"{len(result.sites)} site(s) scored, {len(result.alerts)} alert(s), "
          f"{len(result.failures)} pair(s) failed -> {result.out_dir}")
    if result.report_path is not None and not args.quiet:
        print(f"report: {result.out_dir / REPORT_HTML}")
    if not result.ok:
        if args.quiet:  # otherwise each failure was printed as it happened
            for reason in result.failures["reason"]:
                print(f"groundbreak rank: {reason}", file=sys.stderr)
        return EXIT_PAIRS_FAILED
    return EXIT_OK
