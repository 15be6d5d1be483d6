"""Benchmark of tiled prediction on a generated Sentinel-2-sized pair (prints figures only).

Reports, for ``groundbreak.infer.prediction.predictor.TiledPredictor``:

- km^2 per second at the scene's 10 m pixel size, and the wall time of the whole prediction
  (reading, model, blending, COG writing);
- the model's GFLOPs per km^2 (``torch.utils.flop_counter.FlopCounterMode`` on one window,
  scaled by the number of windows, overlap included);
- the achieved fraction of a float32 matmul peak measured in the same run on the same threads;
- the peak RSS of the prediction (run in a child process so nothing else counts);
- a table of CPU inference variants on a few windows (eager fp32, channels-last, bf16
  autocast, torch.compile, ONNX Runtime, OpenVINO) to choose the predictor's defaults;
- the whole prediction once per runtime (``--runtimes torch,onnx,compile``), which is how the
  predictor's default runtime was chosen (see ``infer/prediction/inference.py:RUNTIMES``).

Usage::

    python bench/predict_bench.py                  # full 10980 x 10980 scene (slow on a CPU)
    python bench/predict_bench.py --size 2048      # a reduced scene; figures scale by area
    python bench/predict_bench.py --size 10980 --tiny-model --skip-variants   # RSS check only

The model is the default bundle (``checkpoints/oscd-s2-default``) when present, else a fresh
ChangeUNet of the default architecture (resnet18, early fusion, 10 bands) saved as a bundle in
a temporary folder; ``--tiny-model`` uses a one-stage model instead (for memory checks only).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from torch.utils.flop_counter import FlopCounterMode

from groundbreak.datasets.bands import SENTINEL2_L2A_BANDS
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import open_scene
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle, save_bundle
from groundbreak.train.model import ChangeUNet

PIXEL_SIZE_M = 10.0


def make_bundle(folder: Path, tiny: bool) -> tuple[Path, str]:
    """The bundle to benchmark and a line saying which it is."""
    if not tiny:
        try:
            default = default_bundle_path()
            return default, f"default bundle {default}"
        except InputError:
            pass
    torch.manual_seed(0)
    bands = list(SENTINEL2_L2A_BANDS)
    if tiny:
        model, what = ChangeUNet(len(bands), encoder_depth=1, decoder_channels=(8,)), "tiny"
    else:
        model, what = ChangeUNet(len(bands)), "fresh resnet18 early-fusion"
    meta = {
        "bands": bands,
        "normalization": {"mean": [1500.0] * len(bands), "std": [800.0] * len(bands)},
        "chip_size": 256,
        "threshold": 0.5,
        "pixel_size_m": PIXEL_SIZE_M,
    }
    return save_bundle(model, meta, folder), f"{what} ChangeUNet (untrained) saved in {folder}"


def write_scene(path: Path, size: int, bands: list[str], seed: int) -> Path:
    """A uint16 multi-band GeoTIFF of ``size`` x ``size`` at 10 m, written in row bands."""
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": len(bands),
        "dtype": "uint16",
        "crs": CRS.from_epsg(32633),
        "transform": Affine(PIXEL_SIZE_M, 0, 300_000, 0, -PIXEL_SIZE_M, 5_000_000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "interleave": "band",
        "bigtiff": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            rows = min(512, size - row)
            data = rng.integers(300, 4000, size=(len(bands), rows, size), dtype=np.uint16)
            dst.write(data, window=Window(0, row, size, rows))
        dst.descriptions = tuple(bands)
    return path


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Float32 matmul throughput on the current threads (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def window_gflops(bundle: ModelBundle, window: int) -> float:
    """GFLOPs of one forward pass on one window."""
    channels = len(bundle.bands)
    x = torch.zeros(1, channels, window, window)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        bundle.model(x, x)
    return counter.get_total_flops() / 1e9


def time_variant(run, inputs: tuple[torch.Tensor, torch.Tensor], repeats: int) -> float:
    """Seconds per call of ``run(before, after)`` after one warm-up call."""
    run(*inputs)
    start = time.perf_counter()
    for _ in range(repeats):
        run(*inputs)
    return (time.perf_counter() - start) / repeats


VARIANTS = (
    "eager fp32",
    "channels_last fp32",
    "bf16 autocast",
    "channels_last + bf16",
    "torch.compile fp32",
    "torch.compile channels_last",
    "onnxruntime fp32",
    "openvino fp32",
)


def variant_table(
    bundle: ModelBundle,
    window: int,
    batch: int,
    repeats: int,
    names: tuple[str, ...] = VARIANTS,
) -> dict[str, tuple[float | None, str]]:
    """Seconds per window of each CPU inference variant (None when it failed, with the reason)."""
    model = bundle.model.cpu().eval()
    channels = len(bundle.bands)
    generator = torch.Generator().manual_seed(0)
    before = torch.randn(batch, channels, window, window, generator=generator)
    after = torch.randn(batch, channels, window, window, generator=generator)

    def eager(b, a):
        with torch.inference_mode():
            return model(b, a)

    def bf16(b, a):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(b, a)

    results: dict[str, tuple[float | None, str]] = {}

    def measure(name: str, make) -> None:
        if name not in names:
            return
        try:
            run, inputs = make()
            results[name] = (time_variant(run, inputs, repeats) / batch, "")
        except Exception as err:  # a variant that does not work here is reported, not fatal
            results[name] = (None, f"{type(err).__name__}: {str(err).splitlines()[0][:80]}")

    measure("eager fp32", lambda: (eager, (before, after)))
    measure("bf16 autocast", lambda: (bf16, (before, after)))
    cl = torch.channels_last
    last = (before.contiguous(memory_format=cl), after.contiguous(memory_format=cl))

    model.to(memory_format=cl)
    measure("channels_last fp32", lambda: (eager, last))
    measure("channels_last + bf16", lambda: (bf16, last))

    def compiled(inputs):
        def make():
            compiled_model = torch.compile(model)

            def run(b, a):
                with torch.inference_mode():
                    return compiled_model(b, a)

            return run, inputs

        return make

    measure("torch.compile channels_last", compiled(last))
    model.to(memory_format=torch.contiguous_format)
    torch._dynamo.reset()
    measure("torch.compile fp32", compiled((before, after)))
    measure("onnxruntime fp32", lambda: onnx_runner(model, before, after))
    measure("openvino fp32", lambda: openvino_runner(model, before, after))
    return results


def onnx_runner(model, before, after):
    """The predictor's ONNX Runtime model (exported on the warm-up call) and its inputs."""
    from groundbreak.infer.prediction.onnx_model import OnnxChangeModel

    onnx_model = OnnxChangeModel(model)
    return onnx_model, (before, after)


def openvino_runner(model, before, after):
    """The predictor's OpenVINO model (converted on the warm-up call) and its inputs."""
    from groundbreak.infer.prediction.openvino_model import OpenVinoChangeModel

    return OpenVinoChangeModel(model), (before, after)


def predict_child(args: argparse.Namespace) -> None:
    """Run one prediction and print its figures as JSON (run in a child process)."""
    bundle = load_bundle(args.bundle)
    pair = TilePair("bench", open_scene(args.before), open_scene(args.after))
    compiled = args.runtime == "compile"  # bench only: torch.compile of the torch runtime
    predictor = TiledPredictor(  # no cloud mask: it finds clouds in the generated noise
        bundle, window=args.window, batch_size=args.batch_size, device=args.device,
        runtime="torch" if compiled else args.runtime, cloud_mask="none",
    )
    if compiled:
        predictor.runner = torch.compile(predictor.model)
    result = predictor.predict_pair(pair, args.out)
    print(
        json.dumps(
            {
                "seconds": result.seconds,
                "windows": result.windows,  # those the model ran
                "window": predictor.window,
                "overlap": predictor.overlap,
                "runtime": args.runtime,
                "export_seconds": getattr(predictor.runner, "export_seconds", 0.0),
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10980, help="scene side in pixels")
    parser.add_argument("--window", type=int, default=None, help="default: the predictor's")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--runtimes", default="torch,onnx",
        help="comma-separated predictor runtimes to time the whole prediction with: torch, "
        "onnx, openvino, and compile (torch.compile of the torch runtime, measured here only)",
    )
    parser.add_argument("--tiny-model", action="store_true", help="a one-stage model (RSS check)")
    parser.add_argument("--skip-variants", action="store_true")
    parser.add_argument("--variant-batch", type=int, default=1, help="windows per variant call")
    parser.add_argument("--variant-window", type=int, default=256, help="window of the variants")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated variants to time"
    )
    parser.add_argument("--variant-repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    # Internal: the child process that runs the prediction.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--bundle", "--before", "--after", "--out"):
        parser.add_argument(name, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runtime", default="torch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        predict_child(args)
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        bundle_path, which = make_bundle(work / "bundle", args.tiny_model)
        bundle = load_bundle(bundle_path)
        bands = list(bundle.bands)
        print(f"model: {which}")
        print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}")

        start = time.perf_counter()
        before = write_scene(work / "before.tif", args.size, bands, seed=1)
        after = write_scene(work / "after.tif", args.size, bands, seed=2)
        print(f"generated {args.size}x{args.size} x {len(bands)} bands uint16 pair in "
              f"{time.perf_counter() - start:.1f} s")

        peak = matmul_peak_gflops()
        window = TiledPredictor(bundle, window=args.window, device="cpu").window
        per_window = window_gflops(bundle, window)
        print(f"matmul peak (float32, 2048^3): {peak:.1f} GFLOP/s")
        print(f"model: {per_window:.2f} GFLOP per {window}x{window} window")

        if not args.skip_variants:
            size = args.variant_window
            per_variant_window = window_gflops(bundle, size)
            print(f"\nCPU variants ({args.variant_batch} window(s) of {size}^2 per call, "
                  f"{per_variant_window:.2f} GFLOP per window):")
            print(f"{'variant':<30}{'s/window':>10}{'GFLOP/s':>10}{'of peak':>9}")
            table = variant_table(
                bundle, size, args.variant_batch, args.variant_repeats,
                tuple(v.strip() for v in args.variants.split(",")),
            )
            for name, (seconds, note) in table.items():
                if seconds is None:
                    print(f"{name:<30}{'failed':>10}  {note}")
                else:
                    rate = per_variant_window / seconds
                    print(f"{name:<30}{seconds:>10.3f}{rate:>10.1f}{rate / peak:>9.1%}")

        for runtime in (r.strip() for r in args.runtimes.split(",")):
            report_prediction(args, bundle_path, before, after, work, runtime, per_window, peak)


def report_prediction(
    args: argparse.Namespace,
    bundle_path: Path,
    before: Path,
    after: Path,
    work: Path,
    runtime: str,
    per_window: float,
    peak: float,
) -> None:
    """Run one whole prediction in a child process and print its figures."""
    child = subprocess.run(
        [sys.executable, __file__, "--child", "--bundle", str(bundle_path),
         "--before", str(before), "--after", str(after), "--out", str(work / f"out-{runtime}"),
         "--batch-size", str(args.batch_size), "--device", args.device, "--runtime", runtime]
        + (["--window", str(args.window)] if args.window else []),
        check=True, capture_output=True, text=True,
    )
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    area_km2 = args.size**2 * PIXEL_SIZE_M**2 / 1e6
    total_gflop = per_window * figures["windows"]
    seconds = figures["seconds"]
    print(f"\nprediction of {args.size}x{args.size} ({area_km2:.1f} km^2 at 10 m), "
          f"runtime {figures['runtime']}, window {figures['window']}, "
          f"overlap {figures['overlap']}, {figures['windows']} windows, batch {args.batch_size}:")
    export = {
        "onnx": f" (the ONNX export included: {figures['export_seconds']:.1f} s)",
        "openvino": f" (converting the model included: {figures['export_seconds']:.1f} s)",
        "compile": " (compiling included)",
    }.get(figures["runtime"], "")
    print(f"  wall time       {seconds:.1f} s{export}")
    print(f"  throughput      {area_km2 / seconds:.3f} km^2/s")
    print(f"  model compute   {total_gflop / area_km2:.1f} GFLOP/km^2 (overlap included)")
    print(f"  achieved        {total_gflop / seconds:.1f} GFLOP/s = "
          f"{total_gflop / seconds / peak:.1%} of the matmul peak")
    print(f"  peak RSS        {figures['max_rss_mb']:.0f} MB")
    if args.size != 10980:
        scale = 10980**2 / args.size**2
        print(f"  extrapolated to 10980^2 (x{scale:.1f} area): "
              f"{seconds * scale / 60:.1f} min at the same km^2/s")

if __name__ == "__main__":
    main()
