"""Country bench: full Sentinel-2 tile pairs from real OSCD scenes through one nightly batch.

Builds ``--pairs`` tile pairs of ``--size``² pixels at 10 m (10980² is a full Sentinel-2 tile)
from the real OSCD scenes: each pair is one city's two dates, every band mirrored up to the tile
size at its own resolution (10, 20, 60 m) on a UTM grid. Each pair is written twice: as real
L1C ``.SAFE`` products (lossless JPEG 2000, ESA's layout, :mod:`groundbreak.datasets.
product_writer`) and as per-band COGs (deflate, 512 px blocks, overviews). The built inputs are
cached under ``runs/country_bench/`` and reused by later runs.

Then, per format, one ``groundbreak nightly`` night (:func:`groundbreak.infer.nightly.runner.
run_night`: hashing, cloud masks, prediction, sites, report) runs over a pairs CSV of them in a
child process, and the bench prints:

- km²/s of the night per format (the pairs' area over the night's wall time);
- the time split: hashing, cloud mask, date matching, read/decode, model, blend, write (the
  predictor's stage clock; with the prefetch thread, read/decode runs beside the model, so the
  stages add up to more than the prediction), sites (pair time minus prediction), report
  (ranking and outputs);
- the night's CPU time (user + system, every thread of the child; the system part and the page
  faults beside it: memory faulted in again shows there) and the floor it sets: on
  N cores no schedule of that work takes under CPU time / N, so a rate above the floor's needs
  less work, not better overlap;
- the night's floor with the model at the full matmul peak: the CPU seconds of everything but the
  model (at least the night's less its model stage's seconds times its threads) over the cores,
  plus the model's windows at the peak: what the rest of the night's work allows at best;
- peak RSS of the child;
- the model's share of the float32 matmul peak measured in the same run (GFLOP of the windows
  the model ran over the model's own seconds);
- the projected time for North Korea (120,540 km², ~20 tiles) at each format's rate;
- for ``.SAFE``: the decode-only time of its products measured just after the night (each band
  of both products decoded once, threaded) and the night and its reads over it; and the floor
  that decoding (its CPU seconds over the cores) and the model at the full matmul peak set;
- with ``--profile``: the shares of the night spent in the cloud masks, the date matching, site
  scoring, the hidden-near check, ranking and tables, the report (cProfile, main thread).

A night with a failed pair (or no scored pair) prints its reasons and no figures, and the bench
exits non-zero. Only the formats asked for (``--formats``) are built.

Usage::

    python bench/country_bench.py                      # 1 full-size pair, both formats
    python bench/country_bench.py --size 2048          # a quick run (figures scale by area)
    python bench/country_bench.py --size 512 --formats cog   # a smoke run of the COG path
    python bench/country_bench.py --size 4096 --profile  # shares of cloud masks, ranking...
    python bench/country_bench.py --pairs 2 --chain    # 2 pairs of 3 acquisitions of one
                                                       # ground: the middle one's cloud mask is
                                                       # computed once (the predictor's cache)

Wrap timed runs in ``flock /tmp/gb-bench.lock`` on the shared machine.

Figures so far (2026-11-30, the project's 2-core AMD EPYC, 24 GB, no GPU, under heavy load: the
run's matmul peak was 16.6 GFLOP/s against 143 idle; details and what they mean in
``bench/README.md``): a 4096² pair as ``.SAFE`` JP2 products, prefetch off, took 1063 s =
1.6 km²/s (read/decode 205 s, model 555 s = 11.9 % of the peak, report 229 s, cloud masks 20 s),
as COGs 626 s = 2.7 km²/s (read 117 s, model 431 s = 15.3 %, report 29 s);
the code before files were kept open was stopped after 11 min of its prediction. The goal (a
full pair from JP2 at >= 67 km²/s) is not met: JPEG 2000 decoding alone takes longer than that
on 2 cores.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import logging
import math
import os
import pstats
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from groundbreak.datasets.product_writer import BandImage, read_band_images, write_product

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "oscd" / "images"
DEFAULT_CACHE = ROOT / "runs" / "country_bench"
FULL_TILE = 10980
PIXEL_M = 10.0
NORTH_KOREA_KM2 = 120_540.0
NORTH_KOREA_TILES = 20
CITIES = ("beirut", "bordeaux", "dubai", "hongkong", "lasvegas", "milano", "mumbai", "paris")
UTM = CRS.from_epsg(32636)
ORIGIN = (600_000.0, 4_000_020.0)
FORMATS = ("safe", "cog")
COG_OPTIONS = {"driver": "COG", "compress": "DEFLATE", "blocksize": 512, "predictor": 2}


def band_resolution(name: str) -> int:
    """The Sentinel-2 resolution of a band, in metres."""
    if name in ("B02", "B03", "B04", "B08"):
        return 10
    if name in ("B01", "B09", "B10"):
        return 60
    return 20


def grown_bands(folder: Path, size: int) -> dict[str, BandImage]:
    """A city's bands mirrored up to ``size`` pixels at 10 m, each at its own resolution."""
    grown = {}
    for name, image in read_band_images(folder).items():
        res = band_resolution(name)
        side = math.ceil(size * PIXEL_M / res)
        data = image.data[:side, :side]
        pad = ((0, side - data.shape[0]), (0, side - data.shape[1]))
        data = np.pad(data, pad, mode="symmetric")
        transform = Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])
        grown[name] = BandImage(np.ascontiguousarray(data, dtype=np.uint16), transform, UTM)
    return grown


def city_dates(data: Path, city: str) -> list[str]:
    """The city's two acquisition dates (YYYYMMDD)."""
    lines = (data / city / "dates.txt").read_text().splitlines()
    return [line.split(":")[1].strip() for line in lines if ":" in line]


def build_scene(
    data: Path, cache: Path, city: str, index: int, size: int, formats: Sequence[str] = FORMATS
) -> dict[str, Path]:
    """Write (or reuse) one city date in each of ``formats``: a .SAFE product, a folder of COGs."""
    date = city_dates(data, city)[index]
    base = cache / str(size) / f"{city}_{date}"
    safe_dir, cog_dir = base / "safe", base / "cog"
    built: dict[str, Path | None] = {
        "safe": next(safe_dir.glob("*.SAFE"), None) if safe_dir.is_dir() else None,
        "cog": cog_dir if (cog_dir / "done").is_file() else None,
    }
    if all(built[fmt] is not None for fmt in formats):
        return {fmt: built[fmt] for fmt in formats}  # type: ignore[misc]
    started = time.perf_counter()
    bands = grown_bands(data / city / f"imgs_{index + 1}", size)
    if "safe" in formats and built["safe"] is None:
        shutil.rmtree(safe_dir, ignore_errors=True)
        stamp = f"{date[:4]}-{date[4:6]}-{date[6:]}T08:17:39.024Z"
        built["safe"] = write_product(safe_dir, bands, sensing_time=stamp, tile="T36SYC")
    if "cog" in formats and built["cog"] is None:
        shutil.rmtree(cog_dir, ignore_errors=True)
        cog_dir.mkdir(parents=True)
        for name, image in bands.items():
            profile = {**COG_OPTIONS, "width": image.data.shape[1], "height": image.data.shape[0],
                       "count": 1, "dtype": "uint16", "crs": UTM, "transform": image.transform,
                       "nodata": 0}
            with rasterio.open(cog_dir / f"T36SYC_{date}_{name}.tif", "w", **profile) as dst:
                dst.write(image.data, 1)
        (cog_dir / "done").write_text("ok\n")
        built["cog"] = cog_dir
    print(f"built {city} {date} ({size}²) in {time.perf_counter() - started:.0f} s", flush=True)
    return {fmt: built[fmt] for fmt in formats}  # type: ignore[misc]


def build_pairs(args: argparse.Namespace) -> dict[str, list[dict[str, str]]]:
    """The pairs CSV rows of each format."""
    rows: dict[str, list[dict[str, str]]] = {f: [] for f in args.formats}
    for k in range(args.pairs):
        city = CITIES[0] if args.chain else CITIES[k % len(CITIES)]
        dates = city_dates(args.data, city)
        first, second = (k % 2, 1 - k % 2) if args.chain else (0, 1)
        before = build_scene(args.data, args.cache, city, first, args.size, args.formats)
        after = build_scene(args.data, args.cache, city, second, args.size, args.formats)
        for fmt in args.formats:
            row = {"pair_id": f"{city}-{k}", "before": str(before[fmt]), "after": str(after[fmt]),
                   "before_date": iso(dates[first]), "after_date": iso(dates[second])}
            if fmt == "cog":  # plain DN = reflectance x 10000, as the OSCD files hold
                row |= {"before_add_offset": "0", "after_add_offset": "0"}
            rows[fmt].append(row)
    return rows


def iso(date: str) -> str:
    """YYYYMMDD as YYYY-MM-DD."""
    return f"{date[:4]}-{date[4:6]}-{date[6:]}"


class StageCollector(logging.Handler):
    """Sums the predictor's per-pair stage seconds (its ``stages`` log records)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stages: dict[str, float] = {}
        self.windows = 0
        self.seconds = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        stages = getattr(record, "stages", None)
        if stages is None:
            return
        for name, seconds in stages.items():
            self.stages[name] = self.stages.get(name, 0.0) + seconds
        self.windows += int(getattr(record, "windows", 0))
        self.seconds += float(getattr(record, "seconds", 0.0))


def night_child(args: argparse.Namespace) -> None:
    """Run one night over a pairs CSV; print its figures as JSON (in a child process
    prepared as ``groundbreak nightly`` prepares its own: :func:`prepare_process`)."""
    from groundbreak.infer.cli import prepare_process

    prepare_process("nightly")
    from groundbreak.infer.nightly.config import build_config
    from groundbreak.infer.nightly.logging import NightLog
    from groundbreak.infer.nightly.runner import run_night

    if args.prefetch is not None:  # the predictor's default (not a nightly config key)
        from groundbreak.infer.prediction import predictor as predictor_module

        predictor_module.PREFETCH_BATCHES = args.prefetch
    if args.forward_batch is not None:  # windows per forward pass on a CPU (not a config key)
        from groundbreak.infer.prediction import inference

        inference.CPU_FORWARD_BATCH = args.forward_batch
    collector = StageCollector()
    logger = logging.getLogger("groundbreak.infer.prediction.predictor")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collector)
    predictor = json.loads(args.predictor)
    settings = {"state_dir": str(args.state), "pairs": str(args.pairs_csv),
                "predictor": predictor, "log_format": "json"}
    if args.model is not None:
        settings["model"] = str(args.model)
    config = build_config(settings)
    profiler = cProfile.Profile() if args.profile else None
    started, usage_started = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    with open(args.state.parent / "night.log", "w") as stream:
        if profiler is not None:
            profiler.enable()
        summary = run_night(config, NightLog("json", stream=stream))
        if profiler is not None:
            profiler.disable()
    seconds, usage = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    system = usage.ru_stime - usage_started.ru_stime
    cpu = usage.ru_utime - usage_started.ru_utime + system  # every thread of this process
    shares = profile_shares(profiler, seconds) if profiler is not None else {}
    if profiler is not None:
        profiler.dump_stats(args.state.parent / "night.prof")
    print(json.dumps({
        "seconds": seconds,
        "cpu_seconds": cpu,
        "system_seconds": system,
        "page_faults": usage.ru_minflt - usage_started.ru_minflt,
        "cores": len(os.sched_getaffinity(0)),
        "exit_code": summary.exit_code,
        "failures": summary.failures,
        "timings": summary.timings,
        "pairs": [(p.pair_id, p.status, p.seconds, p.reason) for p in summary.pairs],
        "stages": collector.stages,
        "windows": collector.windows,
        "predict_seconds": collector.seconds,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "shares": shares,
    }))


PROFILED = {
    "cloud masks": "datasets/clouds.py:scene_cloud_mask",
    "date matching": "datasets/date_matching.py:match_pair",
    "site scoring": "infer/sites/ranking.py:score_prediction",
    "hidden near sites": "infer/nightly/pair_scorer.py:with_hidden_near",
    "ranking and tables": "infer/sites/ranking.py:rank_sites|"
                          "infer/sites/ranking.py:write_run_tables",
    "report": "infer/report/report.py:write_report",
    "night outputs": "infer/nightly/outputs.py:write_night_outputs",
}
"""Functions of the night whose share ``--profile`` prints (``file:function``, ``|`` sums
several; main thread only: the prefetch thread's reads are not profiled)."""


def profile_shares(profiler: cProfile.Profile, seconds: float) -> dict[str, float]:
    """Each :data:`PROFILED` part's cumulative time as a share of the night."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    shares = {}
    for part, names in PROFILED.items():
        total = 0.0
        for name in names.split("|"):
            file, function = name.split(":")
            total += sum(value[3] for (path, _, func), value in stats.items()
                         if path.endswith(file) and func == function)
        shares[part] = total / seconds
    return shares


def run_format(args: argparse.Namespace, fmt: str, rows: list[dict[str, str]]) -> dict:
    """Write the pairs CSV of one format and run a night over it in a child process."""
    work = args.cache / "nights" / f"{args.size}-{fmt}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pairs_csv = work / "pairs.csv"
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(pairs_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    child = subprocess.run(
        [sys.executable, __file__, "--child", "--state", str(work / "state"),
         "--pairs-csv", str(pairs_csv), "--predictor", args.predictor]
        + (["--model", str(args.model)] if args.model is not None else [])
        + (["--prefetch", str(args.prefetch)] if args.prefetch is not None else [])
        + (["--forward-batch", str(args.forward_batch)] if args.forward_batch is not None else [])
        + (["--profile"] if args.profile else []),
        capture_output=True, text=True,
    )
    if child.returncode != 0:
        sys.exit(f"the {fmt} night failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def product_bands(rows: list[dict[str, str]]) -> list[Path]:
    """Every band file of the .SAFE products of the pairs, each product once."""
    products = dict.fromkeys(Path(row[key]) for row in rows for key in ("before", "after"))
    return [band for product in products
            for band in sorted(product.glob("GRANULE/*/IMG_DATA/*.jp2"))]


def decode_only(rows: list[dict[str, str]]) -> tuple[float, float, float]:
    """(seconds, Mpx, CPU seconds) to decode every band of the pairs' .SAFE products once: one
    ``read(1)`` per band with GDAL's threaded decoding (``GDAL_NUM_THREADS=ALL_CPUS``), in a
    child process so that nothing it caches helps the night."""
    code = (
        "import sys, time, rasterio\n"
        "start, px = time.perf_counter(), 0\n"
        "with rasterio.Env(GDAL_NUM_THREADS='ALL_CPUS'):\n"
        "    for path in sys.argv[1:]:\n"
        "        with rasterio.open(path) as src:\n"
        "            px += src.read(1).size\n"
        "print(time.perf_counter() - start, px / 1e6)\n"
    )
    bands = [str(band) for band in product_bands(rows)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.run([sys.executable, "-c", code, *bands], capture_output=True, text=True,
                           check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    seconds, mpx = child.stdout.split()
    return float(seconds), float(mpx), cpu


def night_failures(figures: dict) -> list[str]:
    """Why a night does not count: its failed pairs and source problems, a non-zero exit code,
    or no pair scored (empty when every pair was scored)."""
    reasons = [f"{f['pair_id']}: {f['reason']}" for f in figures.get("failures", [])]
    if not reasons and figures.get("exit_code", 0) != 0:
        reasons.append(f"the night exited with code {figures['exit_code']}")
    if not reasons and not any(p[1] == "scored" for p in figures["pairs"]):
        reasons.append(f"no pair was scored ({[p[1] for p in figures['pairs']]})")
    return reasons


def report(
    args: argparse.Namespace, fmt: str, figures: dict, peak: float, gflop: float,
    decode: tuple[float, float, float] | None = None,
) -> None:
    """Print one format's figures (and, for .SAFE, the night over its decode-only time)."""
    area = args.pairs * args.size**2 * PIXEL_M**2 / 1e6
    seconds = figures["seconds"]
    stages, timings = figures["stages"], figures["timings"]
    pair_seconds = sum(p[2] for p in figures["pairs"])
    print(f"\n{fmt}: {args.pairs} pair(s) of {args.size}² ({area:,.0f} km² at 10 m), "
          f"{[p[1] for p in figures['pairs']]}")
    predicting = figures["predict_seconds"]
    alone = (f"predictions alone {predicting:.1f} s = {area / predicting:.1f} km²/s"
             if predicting else "this predictor reports no stages")
    print(f"  night wall time  {seconds:.1f} s = {area / seconds:.1f} km²/s ({alone})")
    split = {
        "hashing+setup": seconds - pair_seconds - timings.get("ranking_s", 0.0),
        **{name: value for name, value in stages.items()},
        "sites": pair_seconds - predicting if predicting else float("nan"),
        "report": timings.get("ranking_s", 0.0),
    }
    cpu, cores = figures["cpu_seconds"], figures["cores"]
    system, faults = figures["system_seconds"], figures["page_faults"] / 1e6
    print(f"  CPU time         {cpu:.1f} s over the night's threads (system {system:.1f} s, "
          f"{faults:.2f} M page faults): on {cores} cores no schedule "
          f"of this work takes under {cpu / cores:.1f} s = {area * cores / cpu:.1f} km²/s")
    print("  time split (s)   " + ", ".join(f"{k} {v:.1f}" for k, v in split.items()))
    model = stages.get("model", 0.0)
    at_peak = gflop * figures["windows"] / peak  # the model at 100 % of the matmul peak
    if model:
        rate = gflop * figures["windows"] / model
        print(f"  model            {figures['windows']} windows, {rate:.1f} GFLOP/s over its own "
              f"time = {rate / peak:.1%} of the matmul peak ({peak:.1f} GFLOP/s); "
              f"over the night's time {gflop * figures['windows'] / seconds / peak:.1%}")
        import torch

        # the model's threads used at most its stage's seconds each: the rest used at least this
        rest = max(cpu - model * torch.get_num_threads(), 0.0)
        floor = rest / cores + at_peak
        versus = f" = {floor / decode[0]:.2f}x the decode-only time" if decode else ""
        print(f"  night floor      all but the model took at least {rest:.1f} CPU-s; with the "
              f"model at the full matmul peak ({at_peak:.1f} s) no night on {cores} cores takes "
              f"under {floor:.1f} s = {area / floor:.1f} km²/s{versus}")
    if decode is not None:
        print(f"  decode only      {decode[0]:.1f} s for {decode[1]:,.0f} Mpx (every band of "
              f"both products once): the night is {seconds / decode[0]:.2f}x it, its reads "
              f"{stages.get('read', 0.0) / decode[0]:.2f}x")
        floor = decode[2] / cores + at_peak
        print(f"  decode floor     decoding took {decode[2]:.1f} CPU-s; with the model at the "
              f"full matmul peak ({at_peak:.1f} s) no night on {cores} cores takes under "
              f"{floor:.1f} s = {floor / decode[0]:.2f}x the decode-only time")
    if figures.get("shares"):
        print("  profile shares   " + ", ".join(
            f"{k} {v:.1%}" for k, v in figures["shares"].items()) + " of the night (cProfile, "
              f"main thread; {args.cache / 'nights' / f'{args.size}-{fmt}' / 'night.prof'})")
    print(f"  peak RSS         {figures['max_rss_mb']:.0f} MB")
    per_km2 = seconds / area
    print(f"  North Korea      {NORTH_KOREA_KM2:,.0f} km² ({NORTH_KOREA_TILES} tiles): "
          f"{per_km2 * NORTH_KOREA_KM2 / 60:.1f} min at this rate")


def format_list(text: str) -> list[str]:
    """``--formats``: a comma list of known formats, each once."""
    formats = list(dict.fromkeys(f.strip() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(unknown) or text!r}; use {', '.join(FORMATS)}"
        )
    return formats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1, help="tile pairs (default 1)")
    parser.add_argument("--size", type=int, default=FULL_TILE,
                        help="tile side in 10 m pixels")
    parser.add_argument("--chain", action="store_true",
                        help="pairs of consecutive acquisitions of one ground (shared scenes)")
    parser.add_argument("--formats", type=format_list, default=list(FORMATS),
                        help="comma-separated: safe, cog (default both)")
    parser.add_argument("--predictor", default="{}",
                        help="JSON of the nightly config's predictor key, e.g. '{\"runtime\": "
                        "\"onnx\"}'")
    parser.add_argument("--model", type=Path, default=None,
                        help="model bundle (default: the default bundle)")
    parser.add_argument("--prefetch", type=int, default=None,
                        help="batches the predictor reads ahead (default: its own, 0: none)")
    parser.add_argument("--forward-batch", type=int, default=None,
                        help="windows per forward pass on a CPU (default: the predictor's)")
    parser.add_argument("--profile", action="store_true",
                        help="run each night under cProfile: print the shares of the cloud "
                        "masks, date matching, scoring, ranking and report; keep night.prof")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="OSCD images folder")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="built inputs")
    parser.add_argument("--build-only", action="store_true", help="build the inputs and stop")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pairs-csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        night_child(args)
        return
    if not (args.data / CITIES[0] / "imgs_1").is_dir():
        sys.exit(f"country bench: the OSCD images are not at {args.data} (../shared/data is "
                 "missing?); pass --data FOLDER")

    rows = build_pairs(args)
    if args.build_only:
        return
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from predict_bench import matmul_peak_gflops, window_gflops

    from groundbreak.infer.prediction.predictor import TiledPredictor
    from groundbreak.train.bundle import default_bundle_path, load_bundle

    bundle = load_bundle(args.model or default_bundle_path())
    window = TiledPredictor(bundle, device="cpu", **json.loads(args.predictor)).window
    gflop = window_gflops(bundle, window)
    peak = matmul_peak_gflops()
    print(f"threads {torch.get_num_threads()}, matmul peak (fp32, 2048³) {peak:.1f} GFLOP/s, "
          f"model {bundle.name}, {gflop:.2f} GFLOP per {window}² window, predictor "
          f"{args.predictor}, "
          f"prefetch {args.prefetch if args.prefetch is not None else 'default'}, forward batch "
          f"{args.forward_batch or 'default'}, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    for fmt in args.formats:
        figures = run_format(args, fmt, rows[fmt])
        failures = night_failures(figures)
        if failures:  # a failed night has no rate
            sys.exit(f"the {fmt} night failed, no figures: " + "; ".join(failures))
        decode = decode_only(rows[fmt]) if fmt == "safe" else None  # same run, just after
        report(args, fmt, figures, peak, gflop, decode)
    if args.size != FULL_TILE:
        print(f"\n(size {args.size}: a full tile is {FULL_TILE**2 / args.size**2:.1f}x the area)")


if __name__ == "__main__":
    main()
