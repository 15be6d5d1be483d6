"""Peak memory of ``predict``, ``rank`` and ``nightly`` on a full Sentinel-2-sized pair (prints
figures only; issue 13's goal: every command under 2 GB peak RSS).

The pair is real imagery made tile-sized: the 13 bands of an OSCD city pair (default Las Vegas,
2015 and 2018, lots of construction) on their 10 m grid, mirrored at their edges over and over
until they cover ``--size`` x ``--size`` pixels (10980: a whole Sentinel-2 tile, 12 056 km²),
written as two uint16 13-band GeoTIFFs on a UTM grid with Sentinel-2 band names. So the default
model finds real change regions all over the tile, and the default cloud mask (s2cloudless) runs.
A watch-list of ``--sites`` small sites scattered over the tile, plus a few large ones (1, 3 and
10 km squares), is written beside it.

Each command runs in its own child process; its peak RSS is the child's
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest of the command's processes), measured by a
small wrapper process that runs only that command. The table gives the wall time and the peak
RSS against the 2 GB goal. Two more rows time the region discovery alone on the predicted mask:
the streaming discovery ``rank`` uses, and whole-mask labelling (``scipy.ndimage.label`` on the
whole mask, the way discovery worked before issue 13) for comparison.

Usage::

    python bench/memory_bench.py                       # full 10980^2 tile (about half an hour)
    python bench/memory_bench.py --size 2048           # a quick run
    python bench/memory_bench.py --only predict,rank-sites --workdir /tmp/gb-mem --keep

The model is the default bundle (``checkpoints/oscd-s2-default``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import box, mapping

from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import open_scene

GOAL_MB = 2048
OSCD_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "oscd" / "images"
PIXEL_M = 10.0
CRS_UTM = CRS.from_epsg(32611)  # Las Vegas' zone
ORIGIN = (600_000.0, 4_100_040.0)
ROWS_PER_WRITE = 512


def mirrored(index: np.ndarray, length: int) -> np.ndarray:
    """Indices folded into ``[0, length)`` by mirroring at both edges (edge pixels repeated)."""
    period = 2 * length
    folded = index % period
    return np.where(folded < length, folded, period - 1 - folded)


def write_tiled_scene(path: Path, city_bands: np.ndarray, size: int, date: str) -> Path:
    """A ``size`` x ``size`` uint16 13-band GeoTIFF: the city's bands mirrored over and over."""
    _, height, width = city_bands.shape
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": city_bands.shape[0],
        "dtype": "uint16", "crs": CRS_UTM,
        "transform": Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M, ORIGIN[1]),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "interleave": "band",
        "bigtiff": "IF_SAFER",
    }
    cols = mirrored(np.arange(size), width)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, ROWS_PER_WRITE):
            rows = mirrored(np.arange(row, min(row + ROWS_PER_WRITE, size)), height)
            block = city_bands[:, rows][:, :, cols]
            dst.write(block, window=Window(0, row, size, len(rows)))
        dst.descriptions = tuple(SENTINEL2_BANDS)
        dst.update_tags(ACQUISITION_DATE=date)
    return path


def city_pair(folder: Path) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The 13 bands of an OSCD city's two dates on its 10 m grid (uint16, 0 = nodata), dates."""
    city = folder.name
    dates = dict(line.split(": ") for line in (folder / "dates.txt").read_text().splitlines())
    pair = TilePair(city, open_scene(folder / "imgs_1"), open_scene(folder / "imgs_2"))
    before, after = pair.read(list(SENTINEL2_BANDS))
    to_uint16 = lambda a: np.nan_to_num(a, nan=0.0).clip(0, 65535).astype(np.uint16)  # noqa: E731
    return to_uint16(before), to_uint16(after), dates["date_1"], dates["date_2"]


def write_watch_list(path: Path, size: int, count: int, seed: int = 0) -> Path:
    """``count`` small sites (50-300 m) scattered over the tile and 1, 3 and 10 km squares."""
    rng = np.random.default_rng(seed)
    extent = size * PIXEL_M
    squares = [
        (rng.uniform(0, extent - 300), rng.uniform(0, extent - 300), rng.uniform(50, 300))
        for _ in range(count)
    ]
    for side in (1_000.0, 3_000.0, 10_000.0):
        side = min(side, extent)
        squares.append(((extent - side) / 2, (extent - side) / 2, side))
    features = []
    for number, (x, y, side) in enumerate(squares, start=1):
        left, bottom = ORIGIN[0] + x, ORIGIN[1] - extent + y
        geometry = transform_geom(CRS_UTM, "EPSG:4326", mapping(box(left, bottom, left + side,
                                                                      bottom + side)))
        features.append({
            "type": "Feature", "geometry": geometry,
            "properties": {"site_id": f"s{number:04d}", "name": f"site {number} ({side:.0f} m)"},
        })
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def measure_child(command: list[str]) -> None:
    """Run one command (inside the wrapper process) and print its wall time and peak RSS."""
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    said = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    print(json.dumps({"code": done.returncode, "seconds": seconds, "peak_mb": peak_kb / 1024,
                      "said": said}))


def measure(command: list[str]) -> dict:
    """Wall time, peak RSS and exit code of a command run in a fresh wrapper process."""
    wrapper = subprocess.run(
        [sys.executable, __file__, "--measure", "--", *command],
        check=True, capture_output=True, text=True,
    )
    return json.loads(wrapper.stdout.strip().splitlines()[-1])


DISCOVERY = """
import sys, time
from groundbreak.infer.prediction.raster_io import read_probability
from groundbreak.infer.sites.sites import discover_change_regions
start = time.perf_counter()
regions = discover_change_regions(sys.argv[1], sys.argv[2], "bench", 0.5)
print(len(regions), time.perf_counter() - start, file=sys.stderr)
"""

WHOLE_MASK_DISCOVERY = """
import sys, time
import numpy as np, rasterio
from scipy import ndimage
from groundbreak.datasets.scene import dataset_grid
from groundbreak.infer.sites.scoring import measure_site
from groundbreak.infer.sites.sites import region_polygon
from rasterio.windows import Window
start = time.perf_counter()
with rasterio.open(sys.argv[1]) as src:
    grid = dataset_grid(src)
    changed = src.read(1, masked=True).filled(0) == 1
row_areas = grid.row_pixel_areas_m2()
labels, count = ndimage.label(changed, structure=np.ones((3, 3), bool))
sizes = np.bincount(labels.ravel(), minlength=count + 1)
kept = 0
with rasterio.open(sys.argv[2]) as prob:
    for number, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None or sizes[number] < 3:
            continue
        rows, cols = slices
        own = labels[slices] == number
        if float((own * row_areas[rows]).sum()) < 297.0:
            continue
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        measure_site(read_probability(prob, window), 0.5, row_areas[rows], inside=own, changed=own)
        region_polygon(own, grid.window_transform(window))
        kept += 1
print(kept, time.perf_counter() - start, file=sys.stderr)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="tile side in pixels")
    parser.add_argument("--city", default="lasvegas", help="OSCD city whose pair is tiled")
    parser.add_argument("--oscd-root", type=Path, default=OSCD_ROOT,
                        help="OSCD images folder (default: ../shared/data/oscd/images)")
    parser.add_argument("--sites", type=int, default=200, help="small watch-list sites")
    parser.add_argument("--only", default=None, help="comma-separated rows to run (see table)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_child(args.command)
        return

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    # absolute: the pairs CSV names the scenes, and relative names resolve against its folder
    work = Path(tempfile.mkdtemp(prefix="gb-memory-", dir=args.workdir)).resolve()
    try:
        run_bench(args, work)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_bench(args: argparse.Namespace, work: Path) -> None:
    """Generate the pair and watch-list, run every command, print the table."""
    start = time.perf_counter()
    before_bands, after_bands, before_date, after_date = city_pair(args.oscd_root / args.city)
    before = write_tiled_scene(work / "before.tif", before_bands, args.size, before_date)
    after = write_tiled_scene(work / "after.tif", after_bands, args.size, after_date)
    del before_bands, after_bands
    sites = write_watch_list(work / "sites.geojson", args.size, args.sites)
    pairs = work / "pairs.csv"
    pairs.write_text("pair_id,before,after,before_date,after_date\n"
                     f"bench,{before},{after},{before_date},{after_date}\n")
    km2 = args.size**2 * PIXEL_M**2 / 1e6
    print(f"pair: OSCD {args.city} ({before_date} -> {after_date}) mirrored to "
          f"{args.size}x{args.size} px x 13 bands ({km2:,.0f} km² at 10 m), made in "
          f"{time.perf_counter() - start:.0f} s; watch-list: {args.sites + 3} sites")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

    gb = shutil.which("groundbreak", path=str(Path(sys.executable).parent)) or "groundbreak"
    predicted = work / "predict"
    rows = {
        "predict": [gb, "predict", "--before", str(before), "--after", str(after),
                    "--out", str(predicted)],
        "rank (regions)": [gb, "rank", "--pairs", str(pairs), "--out", str(work / "rank-r")],
        "rank (watch-list)": [gb, "rank", "--pairs", str(pairs), "--sites", str(sites),
                              "--out", str(work / "rank-w")],
        "nightly (regions)": [gb, "nightly", "--pairs", str(pairs), "--state",
                              str(work / "state-r"), "--run-id", "bench", "--log-format", "json"],
        "nightly (watch-list)": [gb, "nightly", "--pairs", str(pairs), "--sites", str(sites),
                                 "--state", str(work / "state-w"), "--run-id", "bench",
                                 "--log-format", "json"],
        "discovery only (streaming)": [sys.executable, "-c", DISCOVERY,
                                       str(predicted / "mask.tif"),
                                       str(predicted / "probability.tif")],
        "discovery only (whole mask)": [sys.executable, "-c", WHOLE_MASK_DISCOVERY,
                                        str(predicted / "mask.tif"),
                                        str(predicted / "probability.tif")],
    }
    wanted = [r.strip() for r in args.only.split(",")] if args.only else list(rows)
    keys = {name.replace(" (", "-").replace(")", "").replace(" ", "-"): name for name in rows}
    print(f"\n{'command':<30}{'wall s':>9}{'peak RSS MB':>13}{'of 2 GB':>9}  exit")
    for key, name in keys.items():
        if key not in wanted and name not in wanted:
            continue
        command = rows[name]
        if name.startswith("discovery"):
            found = [f for f in (predicted, work / "rank-r" / "pairs" / "bench")
                     if (f / "mask.tif").is_file()]
            if not found:
                print(f"{name:<30}{'(needs the predict or a rank row)':>41}")
                continue
            command = [*command[:3], str(found[0] / "mask.tif"),
                       str(found[0] / "probability.tif")]
        figures = measure(command)
        share = figures["peak_mb"] / GOAL_MB
        flag = "" if figures["peak_mb"] < GOAL_MB else "  OVER"
        note = ""
        if name.startswith("discovery") and figures["said"]:
            regions, seconds = figures["said"].split()[:2]
            note = f"  ({regions} regions in {float(seconds):.1f} s)"
        print(f"{name:<30}{figures['seconds']:>9.1f}{figures['peak_mb']:>13.0f}{share:>9.0%}  "
              f"{figures['code']}{flag}{note}", flush=True)
    summary = work / "rank-r" / "sites.csv"
    if summary.is_file():
        lines = summary.read_text().count("\n") - 1
        print(f"\nrank (regions) ranked {lines} discovered change regions "
              f"({lines / km2 * 100:.1f} per 100 km²)")


if __name__ == "__main__":
    main()
