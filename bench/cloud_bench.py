"""Clouds and shadows: false change with and without the cloud mask, and what the mask costs.

Two measurements (prints figures only):

1. **False change under real clouds** (needs ``../shared/data``). Real cumulus clouds with their
   shadows (the SEN12MS-CR sample in ``shared/data/clouds``) are pasted into the real after-scenes
   of OSCD cities: cloud pixels (B02 TOA above 0.18) replace the scene's, shadow pixels (B08 below
   0.75 of the sample's median) darken the scene's by the sample's own per-band ratio. A "fully
   clouded" after-scene is the sample's densest cloud block tiled over the whole scene. For each
   city the shipped model predicts the clean pair, the cloudy pair without a mask
   (``--cloud-mask none``) and with the default mask (``auto``: s2cloudless + shadows on L1C),
   and the bench prints the share of pixels flagged as change (over the pasted area and over the
   whole scene) and the share of pasted pixels the mask hides.
2. **Mask cost on a full tile**: the time of the ``auto`` mask (s2cloudless and shadows, both
   dates) on a generated 13-band 10980 x 10980 pair, against the time of the prediction of the
   same pair without a mask (``--predict``; slow), or against ``--reference-seconds``.
3. **What the mask hides** (``--masks``, needs ``../shared/data``; no model): the share of
   pixels the ``auto`` mask hides on every OSCD scene (both dates of the 24 cities: clear, but
   for Paris 2018, which holds a few small real clouds), on the demo's pairs (either date), and
   on the real cloudy samples of ``shared/data/clouds``: the cumulus sample (with the share of
   its visibly cloudy pixels, B02 TOA above 0.18, and of its shadow pixels, B08 below 0.75 of
   the median, left visible) and the thin-cirrus sample (cirrus over the whole scene).

Usage::

    python bench/cloud_bench.py --cities cupertino,hongkong,nantes   # 1. (a few minutes)
    python bench/cloud_bench.py --cost --size 10980 --predict        # 2. (about 10 minutes)
    python bench/cloud_bench.py --masks                              # 3. (about 20 s)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from groundbreak.datasets.bands import SENTINEL2_BANDS
from groundbreak.datasets.clouds import mask_at, scene_cloud_mask
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import open_scene
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import default_bundle_path, load_bundle

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CUMULUS = SHARED / "clouds" / "sen12mscr-cloudy-ROIs1868" / "ROIs1868_summer_s2_cloudy_19_p30.tif"
CIRRUS = SHARED / "clouds" / "s2-T31TDH-20150726-cirrus" / "IMG_DATA"
DEMO = Path(__file__).resolve().parents[1] / "infer" / "demo_data"
WITH_CLOUDS = {"paris/imgs_2"}  # OSCD scenes with real (small) clouds
BANDS = list(SENTINEL2_BANDS)


def paste(data: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Paste the sample's clouds and shadows into ``data`` (same shape, in place); the mask."""
    median = np.median(sample, axis=(1, 2), keepdims=True)
    cloud = sample[BANDS.index("B02")] > 1800
    shadow = ~cloud & (sample[BANDS.index("B08")] < 0.75 * median[BANDS.index("B08"), 0, 0])
    data[:, cloud] = sample[:, cloud]
    data[:, shadow] *= np.clip(sample / median, 0, 1)[:, shadow]
    return cloud | shadow


def write_like(path: Path, data: np.ndarray, grid) -> Path:
    """A 13-band uint16 GeoTIFF on ``grid`` (band names as descriptions)."""
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 13,
               "dtype": "uint16", "crs": grid.crs, "transform": grid.transform,
               "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.nan_to_num(data).astype(np.uint16))
        dst.descriptions = tuple(BANDS)
    return path


def flagged(bundle, pair: TilePair, out: Path, mode: str) -> np.ndarray:
    """Change flags (bool) of a pair; nodata counts as not flagged."""
    result = TiledPredictor(bundle, device="cpu", cloud_mask=mode).predict_pair(pair, out)
    with rasterio.open(result.mask_path) as src:
        return src.read(1) == 1


def false_change(cities: list[str], workdir: Path, model: Path | None = None) -> None:
    """Part 1: flagged shares per city, clean / cloudy without mask / cloudy with mask."""
    if not CUMULUS.is_file():
        sys.exit(f"shared data missing: {CUMULUS} (run beside ../shared)")
    bundle = load_bundle(model or default_bundle_path())
    with rasterio.open(CUMULUS) as src:
        sample = src.read().astype(np.float32)
    bright = sample[BANDS.index("B02")] > 1800
    r, c = max(((r, c) for r in range(0, 193, 16) for c in range(0, 193, 16)),
               key=lambda rc: bright[rc[0]:rc[0] + 64, rc[1]:rc[1] + 64].mean())
    core = sample[:, r:r + 64, c:c + 64]  # the densest cloud block of the sample
    print(f"model {bundle.name}, threshold {bundle.threshold}")
    print("city        case      run        flagged(pasted)  flagged(scene)  hidden(pasted)")
    totals: dict[str, list[float]] = {}
    for city in cities:
        root = SHARED / "oscd" / "images" / city
        before, after = open_scene(root / "imgs_1"), open_scene(root / "imgs_2")
        clean = flagged(bundle, TilePair(city, before, after), workdir / city / "clean", "none")
        data = after.read(BANDS, before.grid)
        height, width = data.shape[1:]
        for case in ("cumulus", "overcast"):
            cloudy = data.copy()
            pasted = np.zeros((height, width), bool)
            if case == "cumulus":
                r0, c0 = max(0, (height - 256) // 2), max(0, (width - 256) // 2)
                h, w = min(256, height), min(256, width)
                pasted[r0:r0 + h, c0:c0 + w] = paste(
                    cloudy[:, r0:r0 + h, c0:c0 + w], sample[:, :h, :w]
                )
            else:
                reps = (1, -(-height // 64), -(-width // 64))
                cloudy[:] = np.tile(core, reps)[:, :height, :width]
                pasted[:] = True
            path = write_like(workdir / f"{city}_{case}.tif", cloudy, before.grid)
            pair = TilePair(city, before, open_scene(path))
            rows = {"no mask": flagged(bundle, pair, workdir / city / f"{case}_none", "none"),
                    "auto mask": None}
            masked_result = TiledPredictor(bundle, device="cpu", cloud_mask="auto").predict_pair(
                pair, workdir / city / f"{case}_auto"
            )
            with rasterio.open(masked_result.mask_path) as src:
                written = src.read(1)
            rows["auto mask"] = written == 1
            hidden = float((written[pasted] == 255).mean())
            print(f"{city:11} {case:9} clean      {clean[pasted].mean():15.1%}  "
                  f"{clean.mean():14.1%}  (pasted: {pasted.mean():.1%} of the scene)")
            for label, flags in rows.items():
                extra = f"{hidden:14.1%}" if label == "auto mask" else ""
                print(f"{'':11} {case:9} {label:9}  {flags[pasted].mean():15.1%}  "
                      f"{flags.mean():14.1%}  {extra}")
                totals.setdefault(f"{case} {label}", []).append(float(flags[pasted].mean()))
            totals.setdefault(f"{case} clean", []).append(float(clean[pasted].mean()))
            totals.setdefault(f"{case} hidden", []).append(hidden)
    print("\nmean over cities (share of pasted pixels):")
    for key, values in totals.items():
        print(f"  {key:22} {np.mean(values):6.1%}")


def mask_cost(size: int, predict: bool, reference: float | None, workdir: Path) -> None:
    """Part 2: time of the auto mask on a generated full pair, against the prediction's."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from predict_bench import write_scene

    before = open_scene(write_scene(workdir / "before.tif", size, BANDS, seed=1))
    after = open_scene(write_scene(workdir / "after.tif", size, BANDS, seed=2))
    start = time.perf_counter()
    for scene in (before, after):
        scene_cloud_mask(scene, before.grid, "auto")
    mask_seconds = time.perf_counter() - start
    print(f"{size} x {size} pair, 13 bands: auto cloud masks of both dates in {mask_seconds:.1f} s")
    if predict:
        bundle = load_bundle(default_bundle_path())
        result = TiledPredictor(bundle, device="cpu", cloud_mask="none").predict_pair(
            TilePair("cost", before, after), workdir / "out"
        )
        reference = result.seconds
        print(f"prediction without a mask: {reference:.1f} s")
    if reference:
        print(f"mask cost: {mask_seconds / reference:.1%} of the prediction time")


def hidden(scene, grid) -> tuple[np.ndarray, np.ndarray]:
    """(unobserved, cloud) of the ``auto`` mask on ``grid``'s pixels (bool, all False without
    a mask)."""
    mask = scene_cloud_mask(scene, grid, "auto")
    if mask is None:
        return np.zeros(grid.shape, bool), np.zeros(grid.shape, bool)
    rows, cols = np.arange(grid.height), np.arange(grid.width)
    return (mask_at(mask.unobserved, mask.factor, rows, cols),
            mask_at(mask.cloud, mask.factor, rows, cols))


def mask_table() -> None:
    """Part 3: the share of pixels the auto mask hides on clear and on cloudy real scenes."""
    if not CUMULUS.is_file():
        sys.exit(f"shared data missing: {CUMULUS} (run beside ../shared)")
    print("scene                 hidden   cloud")
    clear = []
    for root in sorted(p for p in (SHARED / "oscd" / "images").iterdir() if p.is_dir()):
        for date in ("imgs_1", "imgs_2"):
            scene = open_scene(root / date)
            unobserved, cloud = hidden(scene, scene.grid)
            name = f"{root.name}/{date}"
            note = "  (real clouds)" if name in WITH_CLOUDS else ""
            print(f"{name:20} {unobserved.mean():6.1%}  {cloud.mean():6.1%}{note}")
            if name not in WITH_CLOUDS:
                clear.append(float(unobserved.mean()))
    shares = np.array(clear)
    print(f"clear OSCD scenes ({len(shares)}): hidden {shares.mean():.2%} on average, at most "
          f"{shares.max():.1%}; {(shares > 0.01).sum()} above 1 %")
    with open(DEMO / "pairs.csv") as pairs:
        for row in list(pairs)[1:]:
            pair_id, before, after = row.split(",")[:3]
            first = open_scene(DEMO / before)
            lost = hidden(first, first.grid)[0] | hidden(open_scene(DEMO / after), first.grid)[0]
            print(f"demo {pair_id:15} {lost.mean():6.1%}  (either date)")
    cumulus = open_scene(CUMULUS, band_names=BANDS)
    unobserved, cloud = hidden(cumulus, cumulus.grid)
    with rasterio.open(CUMULUS) as src:
        sample = src.read().astype(np.float32) / 10000
    visible_cloud = sample[BANDS.index("B02")] > 0.18
    nir = sample[BANDS.index("B08")]
    visible_shadow = ~visible_cloud & (nir < 0.75 * np.median(nir))
    print(f"cumulus sample       {unobserved.mean():6.1%}  {cloud.mean():6.1%}  visibly cloudy "
          f"left visible {(~unobserved[visible_cloud]).mean():.1%}, shadow pixels left visible "
          f"{(~unobserved[visible_shadow]).mean():.1%}")
    cirrus = open_scene(CIRRUS)
    unobserved, cloud = hidden(cirrus, cirrus.grid)
    print(f"thin cirrus sample   {unobserved.mean():6.1%}  {cloud.mean():6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", default="cupertino,hongkong,nantes")
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--cost", action="store_true", help="measure the mask's cost instead")
    parser.add_argument("--masks", action="store_true",
                        help="print what the mask hides on clear and cloudy real scenes instead")
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--predict", action="store_true", help="time the prediction too")
    parser.add_argument("--reference-seconds", type=float, default=None)
    args = parser.parse_args()
    if args.masks:
        mask_table()
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.cost:
            mask_cost(args.size, args.predict, args.reference_seconds, Path(tmp))
        else:
            false_change(args.cities.split(","), Path(tmp), args.model)


if __name__ == "__main__":
    main()
