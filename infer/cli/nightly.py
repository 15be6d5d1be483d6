"""``groundbreak nightly``: the nightly batch over a watch-list (see docs/operator.md).

    groundbreak nightly --config nightly.yaml
    groundbreak nightly --pairs PAIRS.csv [--sites SITES.geojson] --state STATE_DIR [--model BUNDLE]
    groundbreak nightly --stac ITEMS.json --state STATE_DIR ...
    groundbreak nightly --drop-folder DIR --state STATE_DIR ...

Flags override the config file's keys. Exit codes: 0 every pair was scored (or reused);
1 some pairs (or source entries) failed, the rest of the night completed; 2 bad config or usage;
3 another run holds the state directory's lock; 4 a full disk or quota; 5 a damaged state database.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from groundbreak.datasets.errors import InputError
from groundbreak.infer.exit_codes import EXIT_LOCKED
from groundbreak.infer.nightly.config import build_config, describe_keys, read_config_file
from groundbreak.infer.nightly.lock import LockHeldError
from groundbreak.infer.nightly.logging import LOG_FORMATS, NightLog
from groundbreak.infer.nightly.runner import EXIT_BAD_CONFIG, run_night
from groundbreak.infer.prediction.inference import RUNTIMES
from groundbreak.train.arguments import device_argument

EXIT_CODES_HELP = (
    "Exit codes: 0 all pairs ok; 1 some pairs failed (the rest completed; see the night's "
    "failures.csv and summary.json); 2 bad config or usage; 3 another run holds the lock; "
    "4 stopped by a full disk or quota: the pairs done are kept, rerun the night; "
    "5 the state database is damaged (see docs/operator.md, Backup and recovery)."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``groundbreak nightly``."""
    parser = argparse.ArgumentParser(
        prog="groundbreak nightly",
        description="Score the newest tile pairs, rank sites and update alerts; resumable and "
        "idempotent (pairs already scored with the same inputs and model are reused).",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--config", metavar="nightly.yaml",
                        help="YAML config (see --help-config); flags override its keys")
    parser.add_argument("--help-config", action="store_true",
                        help="list every config key with its default and meaning, then exit")
    parser.add_argument("--state", dest="state_dir", metavar="STATE_DIR",
                        help="state directory (key state_dir)")
    parser.add_argument("--model", metavar="BUNDLE", help="model bundle folder (key model)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--pairs", metavar="PAIRS.csv", help="pairs CSV source (key pairs)")
    source.add_argument("--stac", metavar="ITEMS.json",
                        help="STAC ItemCollection source (key stac)")
    source.add_argument("--drop-folder", metavar="DIR", help="drop folder source (key drop_folder)")
    parser.add_argument("--sites", metavar="SITES.geojson", help="watch-list (key sites)")
    parser.add_argument("--run-id", metavar="NIGHT",
                        help="name of the night (default: today's UTC date; key run_id)")
    parser.add_argument("--alert-threshold", type=float, metavar="S",
                        help="key alert_threshold")
    parser.add_argument("--dismiss-margin", type=float, metavar="M",
                        help="deprecated and ignored (see the key alerts)")
    parser.add_argument("--log-format", choices=LOG_FORMATS, help="key log_format")
    parser.add_argument("--device", type=device_argument,
                        help="predictor device: auto, cpu, cuda... (key predictor)")
    parser.add_argument("--runtime", choices=RUNTIMES,
                        help="what runs the model: auto (the default: OpenVINO on a "
                        "CPU when installed, else torch; $GROUNDBREAK_CPU_RUNTIME over it), "
                        "torch, onnx or openvino (key predictor)")
    parser.add_argument("--cluster", metavar="SPEC",
                        help="predict pairs on Dask workers: local:N (N processes here) or "
                        "tcp://host:8786 (a running scheduler); none: in this process (key "
                        "cluster)")
    parser.add_argument("--no-report", dest="report", action="store_false", default=None,
                        help="do not write report.html (key report)")
    return parser


def predictor_flags(args: argparse.Namespace) -> dict[str, str]:
    """The predictor options given as flags (``--device``, ``--runtime``), over the config's."""
    flags = {"device": args.device, "runtime": args.runtime}
    return {key: value for key, value in flags.items() if value is not None}


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak nightly``; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.help_config:
        print(describe_keys())
        return 0
    values = read_config_file(args.config) if args.config else {}
    overrides = {
        key: getattr(args, key)
        for key in ("state_dir", "model", "pairs", "stac", "drop_folder", "sites", "run_id",
                    "alert_threshold", "dismiss_margin", "log_format", "report", "cluster")
    }
    predictor = predictor_flags(args)
    if predictor:
        overrides["predictor"] = {**dict(values.get("predictor") or {}), **predictor}
    if not args.config and args.state_dir is None:
        parser.print_usage(sys.stderr)
        print("groundbreak nightly: error: give --config FILE, or --state DIR and a source "
              "(--pairs, --stac or --drop-folder)", file=sys.stderr)
        return EXIT_BAD_CONFIG
    config = build_config(values, args.config, overrides)
    log = NightLog(config.log_format)  # type: ignore[arg-type]
    try:
        summary = run_night(config, log)
    except LockHeldError as err:
        print(f"groundbreak nightly: {err}", file=sys.stderr)
        return EXIT_LOCKED
    except InputError:
        raise  # printed as one line by the dispatcher, exit code 2
    counts = summary.counts()
    print(
        f"night {summary.run_id}: {counts['pairs']} pair(s): {counts['scored']} scored, "
        f"{counts['reused']} reused, {counts['skipped_cloudy']} skipped as cloudy, "
        f"{counts['failed']} failed; {counts['baselines']} "
        f"baseline(s); {counts['new_alerts']} new alert(s); {summary.run_dir}"
    )
    for failure in summary.failures:
        print(f"  FAILED {failure['pair_id']}: {failure['reason']}", file=sys.stderr)
    return summary.exit_code
