"""Every polygon of the GeoJSON outputs follows RFC 7946 winding (exterior counter-clockwise)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.crs import CRS
from rasterio.transform import from_origin
from shapely.geometry import LinearRing, Polygon, shape

from groundbreak.infer.sites.alerts_io import write_changes_geojson, write_sites_geojson
from groundbreak.infer.sites.sites import WGS84, load_watch_list, region_polygon, to_crs

DEMO_WATCH_LIST = Path(__file__).resolve().parents[2] / "infer" / "demo_data" / "watch_list.geojson"


def rings(geometry: dict) -> list[tuple[list, list[list]]]:
    """(exterior, holes) of each polygon of a GeoJSON geometry."""
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry[
        "coordinates"]
    return [(polygon[0], polygon[1:]) for polygon in polygons]


def assert_rfc7946(path: Path) -> int:
    count = 0
    for feature in json.loads(path.read_text())["features"]:
        for exterior, holes in rings(feature["geometry"]):
            assert LinearRing(exterior).is_ccw, feature["properties"]
            assert all(not LinearRing(hole).is_ccw for hole in holes)
            count += 1
    return count


def test_watch_list_polygons_are_written_counter_clockwise(tmp_path: Path) -> None:
    sites = load_watch_list(DEMO_WATCH_LIST)  # the demo's polygons are clockwise
    assert not shape(json.loads(DEMO_WATCH_LIST.read_text())["features"][0]["geometry"]
                     ).exterior.is_ccw
    table = pd.DataFrame([{"site_id": s.site_id, "name": s.name, "geometry": s.geometry}
                          for s in sites])
    assert assert_rfc7946(write_sites_geojson(table, tmp_path / "alerts.geojson")) == len(sites)


def test_discovered_multipolygons_with_holes_are_wound_right(tmp_path: Path) -> None:
    pixels = np.zeros((12, 12), bool)
    pixels[1:6, 1:6] = True
    pixels[3, 3] = False  # a hole
    pixels[6:9, 6:9] = True  # touches the first block at a corner: a MultiPolygon
    utm = CRS.from_epsg(32636)
    region = region_polygon(pixels, from_origin(700_000, 3_760_000, 10, 10))
    assert region.geom_type == "MultiPolygon"
    outline = to_crs(region, utm, WGS84)
    clockwise = Polygon(list(outline.geoms[0].exterior.coords)[::-1],
                        [list(h.coords) for h in outline.geoms[0].interiors])
    table = pd.DataFrame([{"region_id": "p-c0001", "geometry": outline},
                          {"region_id": "p-c0002", "geometry": clockwise}])
    assert assert_rfc7946(write_changes_geojson(table, tmp_path / "changes.geojson")) == 3
