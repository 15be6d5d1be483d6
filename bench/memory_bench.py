"""Peak memory of ``predict``, ``rank`` and ``nightly`` on full Sentinel-2-sized pairs.

Prints figures only; issues 13 and 25: every command under 2 GB peak RSS, from any input format.

The pair is real imagery made tile-sized: the 13 bands of an OSCD city pair (default Las Vegas,
2015 and 2018, lots of construction) mirrored at their edges over and over until they cover
``--size`` x ``--size`` pixels at 10 m (10980: a whole Sentinel-2 tile, 12 056 km²). So the
default model finds real change regions all over the tile, and the default cloud mask
(s2cloudless) runs. Each format of ``--formats`` is one pair:

- ``tif``: two uncompressed uint16 13-band GeoTIFFs on the 10 m grid (written in the work folder);
- ``cog``: per-band COGs (deflate, 512 px blocks), each band at its own resolution (10, 20, 60 m);
- ``safe``: real L1C ``.SAFE`` products (lossless JPEG 2000, 1024 px tiles).

The compressed pairs are built by the country bench's builders (``bench/country_bench.py``:
``build_scene``) and cached under ``--cache`` (default ``runs/memory_bench/``), so a later run
reuses them. A watch-list of ``--sites`` small sites scattered over the tile, plus a few large
ones (1, 3 and 10 km squares), is written beside each pair.

Each command runs in its own child process; its peak RSS is the child's
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest of the command's processes), measured by a
small wrapper process that runs only that command. The table gives the wall time and the peak
RSS against the 2 GB goal. Two more rows time the region discovery alone on the predicted mask:
the streaming discovery ``rank`` uses, and whole-mask labelling (``scipy.ndimage.label`` on the
whole mask, the way discovery worked before issue 13) for comparison.

Usage::

    python bench/memory_bench.py                       # full 10980^2 tile, every format
    python bench/memory_bench.py --size 4096,10980 --formats cog,safe   # issue 25's cases
    python bench/memory_bench.py --size 2048 --formats tif   # a quick run
    python bench/memory_bench.py --only predict,rank-watch-list --workdir /tmp/gb-mem --keep

The model is the default bundle (``checkpoints/oscd-s2-default``) unless ``--model`` names
another (e.g. ``checkpoints/oscd-s2-fast``); every command row runs it.
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
from collections.abc import Sequence
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import country_bench  # noqa: E402  (the compressed pairs' builders)

GOAL_MB = 2048
ROOT = Path(__file__).resolve().parents[1]
OSCD_ROOT = ROOT / ".." / "shared" / "data" / "oscd" / "images"
FORMATS = ("tif", "cog", "safe")
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


def write_watch_list(
    path: Path, size: int, count: int, seed: int = 0,
    crs: CRS = CRS_UTM, origin: tuple[float, float] = ORIGIN,
) -> Path:
    """``count`` small sites (50-300 m) scattered over the tile (upper left corner ``origin`` in
    ``crs``) and 1, 3 and 10 km squares."""
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
        left, bottom = origin[0] + x, origin[1] - extent + y
        geometry = transform_geom(crs, "EPSG:4326", mapping(box(left, bottom, left + side,
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


def comma_list(text: str) -> list[str]:
    """A comma-separated list, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def main() -> None:
    from groundbreak.infer.prediction.inference import RUNTIMES  # torch: not in the wrappers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=comma_list, default=["10980"],
                        help="tile side(s) in pixels, comma-separated (default 10980)")
    parser.add_argument("--formats", type=comma_list, default=list(FORMATS),
                        help="comma-separated: tif, cog, safe (default all)")
    parser.add_argument("--city", default="lasvegas", help="OSCD city whose pair is tiled")
    parser.add_argument("--oscd-root", type=Path, default=OSCD_ROOT,
                        help="OSCD images folder (default: ../shared/data/oscd/images)")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "memory_bench",
                        help="built cog/safe pairs, reused (default runs/memory_bench)")
    parser.add_argument("--sites", type=int, default=200, help="small watch-list sites")
    parser.add_argument("--only", default=None, help="comma-separated rows to run (see table)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--model", type=Path, default=None,
                        help="model bundle of every command (default: the default bundle)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help="what runs the model in every command (default: each command's "
                        "own, auto)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_child(args.command)
        return
    unknown = [f for f in args.formats if f not in FORMATS]
    if unknown or not args.formats:
        parser.error(f"--formats: use {', '.join(FORMATS)}")
    if not all(size.isdigit() for size in args.size):
        parser.error("--size: whole numbers of pixels")

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    # absolute: the pairs CSV names the scenes, and relative names resolve against its folder
    work = Path(tempfile.mkdtemp(prefix="gb-memory-", dir=args.workdir)).resolve()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print(f"\n{'case':<42}{'wall s':>9}{'peak RSS MB':>13}{'of 2 GB':>9}  exit", flush=True)
    failed = False
    try:
        for size in map(int, args.size):
            for fmt in args.formats:
                failed |= run_case(args, work / f"{size}-{fmt}", size, fmt)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        sys.exit("some command failed (exit code above)")


def tif_pair(args: argparse.Namespace, work: Path, size: int) -> tuple[list[str], dict, dict]:
    """The uncompressed pair written in ``work``: (before, after), CSV columns, watch-list
    placement."""
    before_bands, after_bands, before_date, after_date = city_pair(args.oscd_root / args.city)
    before = write_tiled_scene(work / "before.tif", before_bands, size, before_date)
    after = write_tiled_scene(work / "after.tif", after_bands, size, after_date)
    dates = {"before_date": before_date, "after_date": after_date}
    return [str(before), str(after)], dates, {"crs": CRS_UTM, "origin": ORIGIN}


def compressed_pair(
    args: argparse.Namespace, size: int, fmt: str
) -> tuple[list[str], dict, dict]:
    """The country bench's pair of ``fmt`` (built once under ``--cache``): (before, after), CSV
    columns, watch-list placement."""
    scenes = [country_bench.build_scene(args.oscd_root, args.cache.resolve(), args.city, index,
                                        size, (fmt,))[fmt] for index in (0, 1)]
    dates = [country_bench.iso(d) for d in country_bench.city_dates(args.oscd_root, args.city)]
    columns = {"before_date": dates[0], "after_date": dates[1]}
    if fmt == "cog":  # plain DN = reflectance x 10000, as the OSCD files hold
        columns |= {"before_add_offset": "0", "after_add_offset": "0"}
    placement = {"crs": country_bench.UTM, "origin": country_bench.ORIGIN}
    return [str(s) for s in scenes], columns, placement


def run_case(args: argparse.Namespace, work: Path, size: int, fmt: str) -> bool:
    """Make (or reuse) one pair and watch-list, run every command on it, print its rows; True
    when a command failed."""
    work.mkdir(parents=True)
    start = time.perf_counter()
    if fmt == "tif":
        scenes, columns, placement = tif_pair(args, work, size)
    else:
        scenes, columns, placement = compressed_pair(args, size, fmt)
    sites = write_watch_list(work / "sites.geojson", size, args.sites, **placement)
    pairs = work / "pairs.csv"
    header = ["pair_id", "before", "after", *columns]
    pairs.write_text(",".join(header) + "\n" + ",".join(["bench", *scenes, *columns.values()])
                     + "\n")
    km2 = size**2 * PIXEL_M**2 / 1e6
    print(f"{size}² {fmt}: OSCD {args.city} ({columns['before_date']} -> "
          f"{columns['after_date']}) mirrored to {km2:,.0f} km² at 10 m, ready in "
          f"{time.perf_counter() - start:.0f} s; watch-list: {args.sites + 3} sites", flush=True)
    rows = command_rows(work, scenes, pairs, sites, args.model, args.runtime)
    wanted = comma_list(args.only) if args.only else list(rows)
    keys = {name.replace(" (", "-").replace(")", "").replace(" ", "-"): name for name in rows}
    failed = False
    predicted = work / "predict"
    for key, name in keys.items():
        if key not in wanted and name not in wanted:
            continue
        command = rows[name]
        if name.startswith("discovery"):
            found = [f for f in (predicted, work / "rank-r" / "pairs" / "bench")
                     if (f / "mask.tif").is_file()]
            if not found:
                print(f"  {name:<40}{'(needs the predict or a rank row)':>41}")
                continue
            command = [*command[:3], str(found[0] / "mask.tif"),
                       str(found[0] / "probability.tif")]
        figures = measure(command)
        failed |= figures["code"] != 0
        share = figures["peak_mb"] / GOAL_MB
        flag = "" if figures["peak_mb"] < GOAL_MB else "  OVER"
        note = f"  ({figures['said'][-160:]})" if figures["code"] != 0 else ""
        if name.startswith("discovery") and figures["said"] and figures["code"] == 0:
            regions, seconds = figures["said"].split()[:2]
            note = f"  ({regions} regions in {float(seconds):.1f} s)"
        print(f"  {name:<40}{figures['seconds']:>9.1f}{figures['peak_mb']:>13.0f}"
              f"{share:>9.0%}  {figures['code']}{flag}{note}", flush=True)
    summary = work / "rank-r" / "sites.csv"
    if summary.is_file():
        lines = summary.read_text().count("\n") - 1
        print(f"  rank (regions) ranked {lines} discovered change regions "
              f"({lines / km2 * 100:.1f} per 100 km²)")
    return failed


def command_rows(
    work: Path, scenes: Sequence[str], pairs: Path, sites: Path, model: Path | None = None,
    runtime: str | None = None,
) -> dict[str, list[str]]:
    """The commands of the table, by row name (each ``groundbreak`` one with ``--model`` and
    ``--runtime`` where given)."""
    gb = shutil.which("groundbreak", path=str(Path(sys.executable).parent)) or "groundbreak"
    bundle = [] if model is None else ["--model", str(model.resolve())]
    if runtime is not None:
        bundle += ["--runtime", runtime]
    predicted = work / "predict"
    return {
        "predict": [gb, "predict", "--before", scenes[0], "--after", scenes[1],
                    "--out", str(predicted), *bundle],
        "rank (regions)": [gb, "rank", "--pairs", str(pairs), "--out", str(work / "rank-r"),
                           *bundle],
        "rank (watch-list)": [gb, "rank", "--pairs", str(pairs), "--sites", str(sites),
                              "--out", str(work / "rank-w"), *bundle],
        "nightly (regions)": [gb, "nightly", "--pairs", str(pairs), "--state",
                              str(work / "state-r"), "--run-id", "bench", "--log-format", "json",
                              *bundle],
        "nightly (watch-list)": [gb, "nightly", "--pairs", str(pairs), "--sites", str(sites),
                                 "--state", str(work / "state-w"), "--run-id", "bench",
                                 "--log-format", "json", *bundle],
        "discovery only (streaming)": [sys.executable, "-c", DISCOVERY,
                                       str(predicted / "mask.tif"),
                                       str(predicted / "probability.tif")],
        "discovery only (whole mask)": [sys.executable, "-c", WHOLE_MASK_DISCOVERY,
                                        str(predicted / "mask.tif"),
                                        str(predicted / "probability.tif")],
    }


if __name__ == "__main__":
    main()
