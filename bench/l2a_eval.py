"""Score a bundle on OSCD cities as L1C and as L2A-like (bottom-of-atmosphere) input.

OSCD has L1C (top-of-atmosphere) scenes only. To see how a model does on L2A products, each band
of both dates is mapped through the per-band linear relation ``BOA = a * TOA + b`` that Sen2Cor
gave on the real two-date L1C/L2A sample in ``shared/data/clouds/sen2r-barbellino-2dates``
(least squares over both dates; B8A, which the sample lacks, takes B08's). The scenes are written
as 10-band GeoTIFFs with a pairs CSV and scored whole by ``groundbreak evaluate --pairs``.
This is a simulation of L2A radiometry (one mountain scene's atmosphere), not real L2A labels.

Usage::

    python bench/l2a_eval.py --model checkpoints/oscd-s2-l2a --cities cupertino,hongkong,nantes
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

from groundbreak.datasets.bands import SENTINEL2_L2A_BANDS
from groundbreak.datasets.scene import open_scene

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE = SHARED / "clouds" / "sen2r-barbellino-2dates"
TOA_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12"]
BOA_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12"]


def boa_relation() -> dict[str, tuple[float, float]]:
    """Per band (gain, offset) of BOA = gain * TOA + offset, fitted on the real sample."""
    pairs_toa, pairs_boa = [], []
    for date in ("20170703", "20190723"):
        with rasterio.open(next(SAMPLE.glob(f"S2A1C_{date}_*_TOA_10.tif"))) as src:
            pairs_toa.append(src.read().astype(np.float64))
        with rasterio.open(next(SAMPLE.glob(f"S2A2A_{date}_*_BOA_10.tif"))) as src:
            pairs_boa.append(src.read().astype(np.float64))
    relation = {}
    for band in BOA_BANDS:
        toa = np.concatenate([t[TOA_BANDS.index(band)].ravel() for t in pairs_toa])
        boa = np.concatenate([b[BOA_BANDS.index(band)].ravel() for b in pairs_boa])
        gain, offset = np.polyfit(toa, boa, 1)
        relation[band] = (float(gain), float(offset))
    relation["B8A"] = relation["B08"]
    return relation


def write_pair(city: str, root: Path, out: Path, relation: dict | None) -> tuple[Path, Path]:
    """Both dates of a city as 10-band GeoTIFFs on the before grid (BOA-like with a relation)."""
    before = open_scene(root / city / "imgs_1")
    paths = []
    for name, folder in (("before", "imgs_1"), ("after", "imgs_2")):
        scene = open_scene(root / city / folder)
        data = scene.read(list(SENTINEL2_L2A_BANDS), before.grid)
        if relation is not None:
            for i, band in enumerate(SENTINEL2_L2A_BANDS):
                gain, offset = relation[band]
                data[i] = np.clip(gain * data[i] + offset, 1, 65535)
        path = out / f"{city}_{name}.tif"
        profile = {"driver": "GTiff", "width": before.grid.width, "height": before.grid.height,
                   "count": len(SENTINEL2_L2A_BANDS), "dtype": "uint16", "crs": before.grid.crs,
                   "transform": before.grid.transform, "compress": "deflate", "nodata": 0}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.nan_to_num(data).astype(np.uint16))
            dst.descriptions = tuple(SENTINEL2_L2A_BANDS)
        paths.append(path)
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--cities", default="cupertino,hongkong,nantes")
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        sys.exit(f"shared data missing: {SAMPLE}")
    relation = boa_relation()
    print("BOA = gain * TOA + offset per band (fitted on the real L1C/L2A sample):")
    print("  " + ", ".join(f"{b} {g:.2f}/{o:+.0f}" for b, (g, o) in relation.items()))
    images, labels = SHARED / "oscd" / "images", SHARED / "oscd" / "train-labels"
    with tempfile.TemporaryDirectory() as tmp:
        for kind, rel in (("L1C (as is)", None), ("L2A-like (BOA relation)", relation)):
            folder = Path(tmp) / kind.split()[0]
            folder.mkdir()
            table = folder / "pairs.csv"
            with table.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["pair_id", "before", "after", "label"])
                for city in args.cities.split(","):
                    before, after = write_pair(city, images, folder, rel)
                    writer.writerow([city, before, after, labels / city / "cm" / f"{city}-cm.tif"])
            print(f"\n== {kind}")
            subprocess.run(
                [sys.executable, "-m", "groundbreak.infer.cli", "evaluate", "--model",
                 str(args.model), "--pairs", str(table), "--cloud-mask", "none"],
                check=True,
            )


if __name__ == "__main__":
    main()
