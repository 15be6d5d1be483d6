"""Time the bilinear upsampling kernel against GDAL's warper for one predictor window.

Why reads of 20 m and 60 m bands onto the 10 m grid use groundbreak's own kernel
(``datasets/scenes/upsample.py``) and not GDAL's warper over the same decoded rows: the
pixels are equal (``tests/datasets/test_scene.py``), and this prints what each costs per
256 x 256 px window (best of ``--repeats`` on one thread).

    OMP_NUM_THREADS=1 python bench/upsample_bench.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from groundbreak.datasets.grid import Grid
from groundbreak.datasets.scenes.upsample import bilinear_upsample, nesting, source_window


def best_seconds(read, repeats: int) -> float:  # noqa: ANN001
    """The fastest of ``repeats`` calls."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        runs.append(time.perf_counter() - start)
    return min(runs)


def window_reads(k: int) -> tuple[Callable[[], np.ndarray], Callable[[], np.ndarray]]:
    """(kernel, warper): two ways to read one 256 x 256 px window of a band ``k`` times coarser
    onto the finer grid, from the same decoded rows (the tests check they give equal pixels)."""
    crs = rasterio.crs.CRS.from_epsg(32633)
    data = np.random.default_rng(0).integers(1, 10_000, (600, 600), dtype=np.uint16)
    band = Grid(600, 600, Affine(10 * k, 0, 500_000, 0, -10 * k, 4_000_000), crs)
    target = Grid(256, 256, band.transform @ Affine.translation(37, 51) @ Affine.scale(1 / k), crs)
    nest = nesting(band, target)
    assert nest is not None
    window = source_window(nest, target.shape, data.shape)
    assert window is not None
    (r0, r1), (c0, c1) = window
    rows = np.ascontiguousarray(data[r0:r1, c0:c1])

    def kernel() -> np.ndarray:
        return bilinear_upsample(rows, (r0, c0), nest, target.shape, data.shape)

    def warper() -> np.ndarray:
        out = np.full(target.shape, np.nan, dtype=np.float32)
        reproject(rows, out, src_transform=band.transform @ Affine.translation(c0, r0),
                  src_crs=crs, dst_transform=target.transform, dst_crs=crs,
                  resampling=Resampling.bilinear, init_dest_nodata=False)
        return out

    return kernel, warper


def compare(k: int, repeats: int) -> tuple[float, float, bool]:
    """(kernel seconds, warper seconds, same pixels) for a band ``k`` times coarser."""
    kernel, warper = window_reads(k)
    same = bool(np.array_equal(kernel(), warper(), equal_nan=True))
    return best_seconds(kernel, repeats), best_seconds(warper, repeats), same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    for k, name in ((2, "20 m band"), (6, "60 m band")):
        kernel_s, warper_s, same = compare(k, args.repeats)
        print(f"{name}: kernel {kernel_s * 1e3:.2f} ms, warper {warper_s * 1e3:.2f} ms per "
              f"256x256 window ({warper_s / kernel_s:.1f}x); same pixels: {same}")


if __name__ == "__main__":
    main()
