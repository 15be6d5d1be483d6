"""OpenJPEG's decode rate on one real-format Sentinel-2 band (prints figures only).

Reads 2048 rows of the full-width B04 of a lossless, 1024²-tiled L1C JP2 product that
``bench/country_bench.py --size 10980 --build-only`` builds, with one and with two GDAL threads.
A full L1C pair is 1 346 Mpx to decode (per date 4 bands of 10980², 6 of 5490², 3 of 1830²),
so the rate bounds what any reader on this machine can do with JPEG 2000 products.

Usage::

    python bench/jp2_decode_bench.py [--cache runs/country_bench]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import rasterio
from rasterio.windows import Window

PAIR_MPX = 2 * (4 * 10980**2 + 6 * 5490**2 + 3 * 1830**2) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/country_bench"),
                        help="country bench inputs (built with --size 10980 --build-only)")
    args = parser.parse_args()
    bands = sorted(args.cache.glob("10980/*/safe/*.SAFE/GRANULE/*/IMG_DATA/*_B04.jp2"))
    if not bands:
        sys.exit(f"no 10980² JP2 product under {args.cache}: run "
                 "'python bench/country_bench.py --size 10980 --build-only' first")
    for threads in ("1", "2"):
        with rasterio.Env(GDAL_NUM_THREADS=threads), rasterio.open(bands[0]) as src:
            start = time.perf_counter()
            src.read(1, window=Window(0, 0, src.width, 2048))
            seconds = time.perf_counter() - start
        rate = src.width * 2048 / seconds / 1e6
        print(f"GDAL_NUM_THREADS={threads}: 2048 x {src.width} px of B04 in {seconds:.2f} s = "
              f"{rate:.2f} Mpx/s; a full L1C pair ({PAIR_MPX:,.0f} Mpx) would take "
              f"{PAIR_MPX / rate:.0f} s to decode")


if __name__ == "__main__":
    main()
