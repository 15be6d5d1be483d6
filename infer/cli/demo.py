"""``groundbreak demo``: rank the bundled tile pairs with the shipped default model.

The bundled data (``infer/demo_data/``) are three Sentinel-2 L1C pairs cut from OSCD test cities
(Las Vegas, Dubai, Chongqing; 256 x 256 px at 10 m, 13 bands, one multi-band GeoTIFF per date)
and a watch-list of 13 named sites on them. Contains modified Copernicus Sentinel data 2015-2018.

    groundbreak demo [--out DIR] [--model BUNDLE] [--device cpu]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from groundbreak.infer.cli import rank
from groundbreak.train.arguments import device_argument

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data"
DEMO_PAIRS = DEMO_DATA / "pairs.csv"
DEMO_SITES = DEMO_DATA / "watch_list.geojson"


def main(argv: Sequence[str]) -> int:
    """Run the demo; return ``groundbreak rank``'s exit code."""
    parser = argparse.ArgumentParser(
        prog="groundbreak demo",
        description="Rank the bundled Sentinel-2 tile pairs (OSCD test cities) against the "
        "bundled watch-list with the default model, and write the analyst's report.",
    )
    parser.add_argument("--out", default="demo-run", help="run folder to write (default: demo-run)")
    parser.add_argument("--model", help="model bundle (default: the shipped default bundle)")
    parser.add_argument("--device", type=device_argument, default="auto",
                        help="auto, cpu, cuda, ...")
    args = parser.parse_args(list(argv))
    rank_args = ["--pairs", str(DEMO_PAIRS), "--sites", str(DEMO_SITES), "--out", args.out]
    rank_args += ["--device", args.device] + (["--model", args.model] if args.model else [])
    code = rank.main(rank_args)
    report = Path(args.out).resolve() / "report.html"
    if report.exists():
        print(f"\nDemo done. Open the analyst's report in a browser:\n  {report}")
    return code
