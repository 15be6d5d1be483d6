"""Benchmark chip cutting on a Sentinel-2-tile-sized pair: chips/s, seconds, peak memory.

Generates (in a temporary folder) a before/after pair of 13-band uint16 scenes, each a
Sentinel-2-style folder of tiled DEFLATE GeoTIFFs (one per band), plus a 0/1 label, all written
block by block; then cuts it into chips with :func:`groundbreak.datasets.chips.cut_chips` and
prints the figures. It asserts nothing.

    python bench/chips_bench.py                 # 10980 x 10980 (a full Sentinel-2 tile)
    python bench/chips_bench.py --size 2048     # a quicker run
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.datasets.chips import ChipConfig, cut_chips
from groundbreak.datasets.pair_spec import PairSpec

BLOCK = 512
PIXEL_M = 10.0
ORIGIN = (600_000.0, 3_800_000.0)  # UTM 36N


def _profile(size: int, dtype: str) -> dict:
    return {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": dtype,
        "crs": "EPSG:32636",
        "transform": Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1]),
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "zlevel": 1,
        "predictor": 2,
    }


def _band_strip(rng: np.random.Generator, band: int, row: int, rows: int, size: int,
                date: int) -> np.ndarray:
    """A smooth field plus noise, like reflectance; the after-date brightens a square."""
    y = (row + np.arange(rows, dtype=np.float32))[:, None] / size
    x = np.arange(size, dtype=np.float32)[None, :] / size
    field = 1200 + 400 * np.sin(6.3 * x * (band + 1)) * np.cos(4.1 * y) + 100 * band
    if date == 1:
        field = field + 900 * ((x > 0.4) & (x < 0.6) & (y > 0.4) & (y < 0.6))
    noise = rng.integers(0, 64, size=(rows, size), dtype=np.int32)
    return (field + noise).astype(np.uint16)


def generate_pair(folder: Path, size: int, seed: int = 0) -> PairSpec:
    """Write the before/after band folders and a label; return their :class:`PairSpec`."""
    rng = np.random.default_rng(seed)
    for date, name in enumerate(("before", "after")):
        (folder / name).mkdir(parents=True)
        for band_index, band in enumerate(SENTINEL2_BANDS):
            path = folder / name / f"T36SYC_2020010{date + 1}T000000_{band}.tif"
            with rasterio.open(path, "w", **_profile(size, "uint16")) as dst:
                for row in range(0, size, BLOCK):
                    rows = min(BLOCK, size - row)
                    strip = _band_strip(rng, band_index, row, rows, size, date)
                    dst.write(strip, 1, window=rasterio.windows.Window(0, row, size, rows))
    label = folder / "label.tif"
    with rasterio.open(label, "w", **_profile(size, "uint8")) as dst:
        for row in range(0, size, BLOCK):
            rows = min(BLOCK, size - row)
            y = (row + np.arange(rows))[:, None] / size
            x = np.arange(size)[None, :] / size
            mask = ((x > 0.4) & (x < 0.6) & (y > 0.4) & (y < 0.6)).astype(np.uint8)
            dst.write(mask, 1, window=rasterio.windows.Window(0, row, size, rows))
    return PairSpec("bench", folder / "before", folder / "after", label, split="train")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Generate, cut, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="scene width and height (px)")
    parser.add_argument("--chip", type=int, default=256, help="chip size (px)")
    parser.add_argument("--stride", type=int, default=256, help="chip stride (px)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and chips")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="chips_bench_", dir=args.workdir))
    try:
        start = time.perf_counter()
        spec = generate_pair(work / "scenes", args.size)
        generated = time.perf_counter() - start
        rss_after_generation = peak_rss_mb()
        inputs_mb = sum(p.stat().st_size for p in (work / "scenes").rglob("*.tif")) / 1e6
        print(f"generated a {args.size}x{args.size} 13-band uint16 pair ({inputs_mb:.0f} MB on "
              f"disk) in {generated:.1f} s")

        start = time.perf_counter()
        summary = cut_chips([spec], work / "chips", ChipConfig(args.chip, args.stride))
        seconds = time.perf_counter() - start
        chips = len(summary.manifest)
        out_mb = sum(p.stat().st_size for p in (work / "chips").rglob("*.npz")) / 1e6
        print(f"cut {chips} chips of {args.chip}x{args.chip} (stride {args.stride}, 13 bands, "
              f"{out_mb:.0f} MB written) in {seconds:.1f} s: {chips / seconds:.1f} chips/s")
        print(f"peak RSS: {peak_rss_mb():.0f} MB (after generation: {rss_after_generation:.0f} MB)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
