"""Cut the demo's bundled tile pairs from OSCD test cities (needs ../shared/data/oscd).

Each date becomes one 13-band uint16 GeoTIFF with band names in its band descriptions (10 m
grid; the 20 m and 60 m bands resampled bilinearly). The after-scene keeps its own native grid
over the same ground, so the demo also exercises pair alignment.
Usage: python scripts/make_demo_data.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window, from_bounds

from groundbreak.datasets import open_scene
from groundbreak.datasets.bands import SENTINEL2_BANDS

REPO = Path(__file__).resolve().parents[1]
OSCD = REPO.parent / "shared" / "data" / "oscd" / "images"
OUT = REPO / "infer" / "demo_data"
SIZE = 256
# city: (row_off, col_off) of the crop on the before-scene's 10 m grid, chosen by eye on places with
# visible construction between the two dates.
CROPS = {"lasvegas": (320, 260), "dubai": (300, 330), "chongqing": (250, 150)}
# Watch-list sites: (site_id, name, city, row0, col0, row1, col1) in crop pixels; some with visible
# construction, some stable controls.
SITES = [
    ("lv-01", "Las Vegas: warehouse block", "lasvegas", 124, 104, 150, 160),
    ("lv-02", "Las Vegas: southeast housing tract", "lasvegas", 100, 205, 250, 255),
    ("lv-03", "Las Vegas: interstate earthworks", "lasvegas", 130, 150, 235, 210),
    ("lv-04", "Las Vegas: desert parcel SW", "lasvegas", 200, 0, 255, 90),
    ("dx-01", "Dubai: highway interchange", "dubai", 140, 50, 255, 180),
    ("dx-02", "Dubai: villa cluster NE", "dubai", 28, 198, 58, 238),
    ("dx-03", "Dubai: compound west", "dubai", 98, 12, 132, 48),
    ("dx-04", "Dubai: established villas (control)", "dubai", 30, 45, 100, 125),
    ("cq-01", "Chongqing: central construction blocks", "chongqing", 95, 130, 165, 220),
    ("cq-02", "Chongqing: west towers", "chongqing", 148, 0, 178, 52),
    ("cq-03", "Chongqing: cleared plot north", "chongqing", 62, 28, 82, 72),
    ("cq-04", "Chongqing: southeast earthworks", "chongqing", 168, 168, 222, 222),
    ("cq-05", "Chongqing: industrial park (control)", "chongqing", 190, 0, 240, 45),
]


def write_scene(path: Path, data: np.ndarray, transform, crs, date: str) -> None:
    """Write a (13, H, W) uint16 scene with band names as descriptions."""
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": "uint16",
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
        "predictor": 2,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = SENTINEL2_BANDS
        dst.update_tags(ACQUISITION_DATE=date)


def write_watch_list(path: Path) -> None:
    """The demo's watch-list: named rectangles (EPSG:4326) on the bundled before-scenes."""
    features = []
    for site_id, name, city, r0, c0, r1, c1 in SITES:
        with rasterio.open(OUT / f"{city}_before.tif") as src:
            t = src.transform
        corners = [t * (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0))]
        features.append(
            {
                "type": "Feature",
                "properties": {"site_id": site_id, "name": name},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[round(x, 7), round(y, 7)] for x, y in corners]],
                },
            }
        )
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n"
    )


def main() -> int:
    if not OSCD.is_dir():
        print(f"needs the OSCD images at {OSCD}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    rows = ["pair_id,before,after,before_date,after_date"]
    for city, (row, col) in CROPS.items():
        dates = dict(
            line.split(": ") for line in (OSCD / city / "dates.txt").read_text().split("\n") if line
        )
        iso = [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in (dates["date_1"], dates["date_2"])]
        before = open_scene(OSCD / city / "imgs_1")
        after = open_scene(OSCD / city / "imgs_2")
        grid = before.grid.subgrid(Window(col, row, SIZE, SIZE))
        after_win = (
            from_bounds(*grid.bounds, transform=after.grid.transform)
            .round_offsets()
            .round_lengths()
        )
        after_grid = after.grid.subgrid(after_win)
        for scene, g, name, date in (
            (before, grid, "before", iso[0]),
            (after, after_grid, "after", iso[1]),
        ):
            data = np.nan_to_num(scene.read(SENTINEL2_BANDS, g)).round().astype(np.uint16)
            write_scene(OUT / f"{city}_{name}.tif", data, g.transform, g.crs, date)
        rows.append(f"{city},{city}_before.tif,{city}_after.tif,{iso[0]},{iso[1]}")
        print(city, grid.bounds)
    (OUT / "pairs.csv").write_text("\n".join(rows) + "\n")
    write_watch_list(OUT / "watch_list.geojson")
    return 0


if __name__ == "__main__":
    sys.exit(main())
