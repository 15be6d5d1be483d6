"""Sites: watch-list polygons and discovered change regions, measured on a probability raster.

Two kinds of site are scored:

- **watch-list sites**, polygons an analyst names in a GeoJSON file (:func:`load_watch_list`).
  Each is reprojected to a pair's grid, rasterised over its own bounding box only, and measured
  there (:func:`measure_watch_site`): the probability raster is never read whole for one site.
- **discovered sites**, connected regions of the change mask (8-connectivity, a minimum area),
  polygonised into the grid's CRS (:func:`discover_change_regions`). The mask is read in bands
  of rows and labelled band by band (:mod:`groundbreak.infer.sites.region_stream`): memory is
  bounded by a band and the regions open across it, not by the raster.

Both are measured and scored with :func:`groundbreak.infer.sites.scoring.measure_site`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
import shapely.affinity
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize, shapes
from rasterio.warp import transform, transform_geom
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.geojson import WGS84, geojson_crs
from groundbreak.datasets.grid import Grid, geometry_window
from groundbreak.datasets.scene import dataset_grid, open_raster
from groundbreak.datasets.text_files import load_json_text, read_text_file
from groundbreak.infer.prediction.raster_io import bounded_gdal_cache, read_probability
from groundbreak.infer.sites.region_stream import RegionPixels, StreamingRegionLabeler
from groundbreak.infer.sites.scoring import (
    DEFAULT_AREA_SCALE_M2,
    SiteMeasure,
    combine_measures,
    measure_site,
    site_score,
)

DEFAULT_MIN_AREA_M2 = 300.0
"""Smallest discovered change region kept (m², or pixels on grids without a CRS): 3 S2 pixels."""

MIN_AREA_TOLERANCE = 0.01
"""A region this close below the minimum area is kept: a minimum set in whole pixels (3 S2 pixels
is 300 m²) is not defeated by a projection's scale factor (UTM pixels are 0.1 % off nominal)."""

SMALL_SITE_PIXELS = 16.0
"""Sites smaller than this many pixels are rasterised with ``all_touched`` so they get pixels."""

_POLYGONAL = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class Site:
    """A named polygon of a watch-list, in the watch-list's CRS."""

    site_id: str
    name: str
    geometry: BaseGeometry
    crs: CRS


@dataclass(frozen=True)
class ChangeRegion:
    """A connected region of changed pixels, discovered on one pair's grid."""

    region_id: str
    geometry: BaseGeometry
    """The region's outline in the grid's CRS (pixel coordinates on grids without a CRS)."""
    window: Window
    """Its bounding box on the grid."""
    measure: SiteMeasure


# ---------------------------------------------------------------------------------------------
# Watch-lists
# ---------------------------------------------------------------------------------------------


def load_watch_list(path: str | Path) -> list[Site]:
    """Read a GeoJSON watch-list: polygons with ``site_id`` and ``name`` properties.

    The CRS comes from the file's ``crs`` member and is EPSG:4326 without one. Raises an
    :class:`InputError` naming the file for anything that is not a valid watch-list: unreadable
    JSON, a feature without ``site_id`` or ``name``, a geometry that is not a (multi)polygon or
    has no area, coordinates that are not finite or fall off the globe once reprojected to
    EPSG:4326 (longitude in [-180, 180], latitude in [-90, 90]), duplicate ids, or no features.
    """
    path = Path(path)
    document = load_json_text(read_text_file(path, what="watch-list file"), path, "GeoJSON")
    features = _features_of(document, path)
    crs = geojson_crs(document, path)
    sites: list[Site] = []
    seen: set[str] = set()
    for number, feature in enumerate(features, start=1):
        site = _site_from_feature(feature, number, crs, path)
        if site.site_id in seen:
            raise InputError(path, f"site_id {site.site_id!r} appears more than once")
        seen.add(site.site_id)
        sites.append(site)
    if not sites:
        raise InputError(path, "watch-list holds no sites")
    return sites


def _features_of(document: object, path: Path) -> list[dict]:
    """The features of a FeatureCollection (or of a single Feature)."""
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list):
            raise InputError(path, "FeatureCollection has no 'features' list")
        return features
    if isinstance(document, dict) and document.get("type") == "Feature":
        return [document]
    raise InputError(path, "expected a GeoJSON FeatureCollection of site polygons")


def _site_from_feature(feature: object, number: int, crs: CRS, path: Path) -> Site:
    """One watch-list site from one GeoJSON feature, validated."""
    where = f"feature {number}"
    if not isinstance(feature, dict):
        raise InputError(path, f"{where} is not a GeoJSON feature")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise InputError(path, f"{where}: 'properties' must be an object, not "
                         f"{type(properties).__name__}")
    site_id = properties.get("site_id")
    if site_id is None or str(site_id).strip() == "":
        raise InputError(path, f"{where} has no 'site_id' property")
    site_id = str(site_id).strip()
    where = f"feature {number} (site_id {site_id!r})"
    name = properties.get("name")
    if name is None:
        raise InputError(path, f"{where} has no 'name' property")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in _POLYGONAL:
        kind = geometry.get("type") if isinstance(geometry, dict) else "no geometry"
        raise InputError(path, f"{where} must be a Polygon or MultiPolygon, found {kind}")
    try:
        polygon = shape(geometry)
    except Exception as err:  # shapely raises several types for malformed coordinates
        raise InputError(path, f"{where} has malformed coordinates ({err})") from err
    _check_coordinates(polygon, crs, path, where)
    if not polygon.is_valid:
        polygon = _polygonal_part(shapely.make_valid(polygon))
    if polygon.is_empty or polygon.area <= 0:
        raise InputError(path, f"{where} has no area")
    return Site(site_id, str(name), polygon, crs)


def _check_coordinates(polygon: BaseGeometry, crs: CRS, path: Path, where: str) -> None:
    """InputError unless the polygon's coordinates are finite and, in EPSG:4326, on the globe."""
    coords = shapely.get_coordinates(polygon)
    if not np.isfinite(coords).all():
        raise InputError(path, f"{where} has non-finite coordinates")
    try:
        wgs84 = to_crs(polygon, crs, WGS84)
        # PROJ maps some far-off points to plausible ones (UTM northing 1e30 lands in the
        # Pacific): only coordinates that come back from EPSG:4326 are taken as real.
        back = shapely.get_coordinates(to_crs(wgs84, WGS84, crs))
    except Exception as err:  # rasterio/PROJ raise several types for impossible points
        raise InputError(path, f"{where} cannot be reprojected to EPSG:4326 ({err})") from err
    if back.shape != coords.shape or not np.allclose(back, coords, rtol=1e-7, atol=1e-2):
        raise InputError(path, f"{where} has coordinates that {crs} cannot place on the globe")
    lonlat = shapely.get_coordinates(wgs84)
    if lonlat.size == 0:
        return  # an empty polygon is refused for having no area
    lon, lat = lonlat[:, 0], lonlat[:, 1]
    if not (np.isfinite(lonlat).all() and (np.abs(lon) <= 180).all() and (np.abs(lat) <= 90).all()):
        raise InputError(
            path,
            f"{where} has coordinates off the globe (longitude {lon.min():g} to {lon.max():g}, "
            f"latitude {lat.min():g} to {lat.max():g} in EPSG:4326; longitudes must lie in "
            "[-180, 180] and latitudes in [-90, 90])",
        )


def _polygonal_part(geometry: BaseGeometry) -> BaseGeometry:
    """The polygons of a geometry (``make_valid`` may return a collection with lines)."""
    if geometry.geom_type in _POLYGONAL:
        return geometry
    parts = [g for g in getattr(geometry, "geoms", []) if g.geom_type in _POLYGONAL]
    return shapely.unary_union(parts) if parts else shapely.Polygon()


def site_on_grid(site: Site, grid: Grid) -> BaseGeometry | None:
    """The site's polygon in the grid's CRS, or None when it does not touch the grid.

    Grids without a CRS (plain images) cannot hold a georeferenced site: None.
    """
    if grid.crs is None:
        return None
    geometry = to_crs(site.geometry, site.crs, grid.crs)
    if geometry.is_empty or not geometry.intersects(box(*grid.bounds)):
        return None
    return geometry


def to_crs(geometry: BaseGeometry, src_crs: CRS, dst_crs: CRS) -> BaseGeometry:
    """A geometry reprojected from one CRS to another (unchanged when both are equal)."""
    if src_crs == dst_crs:
        return geometry
    return shape(transform_geom(src_crs, dst_crs, mapping(geometry)))


def to_crs_many(
    geometries: Sequence[BaseGeometry], src_crs: CRS, dst_crs: CRS
) -> list[BaseGeometry]:
    """2D geometries reprojected in one call: the same coordinates as :func:`to_crs` of each (one
    coordinate transformation for all, instead of one per geometry)."""
    if src_crs == dst_crs or not geometries:
        return list(geometries)

    def reproject(xy: np.ndarray) -> np.ndarray:
        if not len(xy):
            return xy
        x, y = transform(src_crs, dst_crs, xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return list(shapely.transform(np.asarray(geometries, dtype=object), reproject))


def site_pixels(geometry: BaseGeometry, grid: Grid, all_touched: bool | None = None) -> np.ndarray:
    """Boolean mask of the grid pixels inside a geometry (in the grid's CRS).

    Small sites (under :data:`SMALL_SITE_PIXELS` pixels) are rasterised with ``all_touched`` so a
    site smaller than a pixel still covers the pixels it touches. ``all_touched`` given: that
    rule, without the fallback (for a band of a larger grid, see :func:`measure_watch_site`).
    """
    if all_touched is not None:
        return _rasterize(geometry, grid, all_touched)
    all_touched = _touches_all(geometry, grid)
    inside = _rasterize(geometry, grid, all_touched)
    if not inside.any() and not all_touched:
        inside = _rasterize(geometry, grid, True)
    return inside


def _touches_all(geometry: BaseGeometry, grid: Grid) -> bool:
    """True for sites small enough to be rasterised with ``all_touched``."""
    pixel_size = abs(grid.transform.a * grid.transform.e - grid.transform.b * grid.transform.d)
    return geometry.area < SMALL_SITE_PIXELS * pixel_size


def _rasterize(geometry: BaseGeometry, grid: Grid, all_touched: bool) -> np.ndarray:
    return rasterize(
        [(mapping(geometry), 1)],
        out_shape=grid.shape,
        transform=grid.transform,
        all_touched=all_touched,
        fill=0,
        dtype="uint8",
    ).astype(bool)


MAX_SITE_BAND_PIXELS = 4_194_304
"""A watch-list site whose bounding box holds more pixels than this (2048²) is measured in bands
of rows, so a site as large as a tile is measured in bounded memory."""


def measure_watch_site(
    src: rasterio.io.DatasetReader,
    geometry: BaseGeometry,
    threshold: float,
    area_scale: float = DEFAULT_AREA_SCALE_M2,
    band_pixels: int = MAX_SITE_BAND_PIXELS,
) -> tuple[SiteMeasure, Window] | None:
    """Measure one watch-list site on an open probability raster, reading only its bounding box.

    A bounding box of more than ``band_pixels`` pixels is read and rasterised in bands of rows
    of at most that many pixels, whose measures are combined (:func:`combine_measures`).

    Args:
        src: the probability raster (float32 in [0, 1], nodata where invalid).
        geometry: the site in the raster's CRS (see :func:`site_on_grid`).
        threshold: operating threshold of the model.
        area_scale: see :func:`groundbreak.infer.sites.scoring.site_score`.
        band_pixels: largest number of pixels read at once.

    Returns:
        The measure and the window read, or None when the site holds no pixel of the raster.
    """
    grid = dataset_grid(src)
    window = geometry_window(geometry, grid)
    if window is None:
        return None
    subgrid = grid.subgrid(window)
    if window.width * window.height > band_pixels:
        rows = max(1, band_pixels // int(window.width))
        measure = _measure_in_bands(src, geometry, subgrid, window, threshold, area_scale, rows)
        return None if measure is None else (measure, window)
    inside = site_pixels(geometry, subgrid)
    if not inside.any():
        return None
    probability = read_probability(src, window)
    measure = measure_site(
        probability, threshold, subgrid.row_pixel_areas_m2(), inside=inside,
        area_scale=area_scale,
    )
    return measure, window


def _measure_in_bands(
    src: rasterio.io.DatasetReader,
    geometry: BaseGeometry,
    subgrid: Grid,
    window: Window,
    threshold: float,
    area_scale: float,
    rows: int,
) -> SiteMeasure | None:
    """:func:`measure_watch_site` of a large site, ``rows`` rows at a time."""
    row_areas = subgrid.row_pixel_areas_m2()
    first_touch = _touches_all(geometry, subgrid)
    for all_touched in (first_touch, True):  # all_touched when nothing else gives pixels
        parts = []
        for row0 in range(0, int(window.height), rows):
            band = Window(0, row0, window.width, min(rows, int(window.height) - row0))
            inside = site_pixels(geometry, subgrid.subgrid(band), all_touched)
            if not inside.any():
                continue
            global_band = Window(window.col_off, window.row_off + row0, band.width, band.height)
            probability = read_probability(src, global_band)
            areas = row_areas[row0:row0 + int(band.height)]
            parts.append(measure_site(probability, threshold, areas, inside=inside))
        if parts or all_touched:
            return combine_measures(parts, area_scale) if parts else None
    return None


# ---------------------------------------------------------------------------------------------
# Discovered change regions
# ---------------------------------------------------------------------------------------------

MIN_BAND_ROWS = 256
"""Discovery reads the mask in bands of at least this many rows (whole blocks of the raster)."""

DISCOVERY_GDAL_CACHE_BYTES = 64 * 2**20
"""GDAL's block cache while discovering regions: each block is read once, so a cache as large as
GDAL's default (5 % of the machine's RAM) would only hold the whole probability raster."""


def discover_change_regions(
    mask_path: str | Path,
    probability_path: str | Path,
    id_prefix: str,
    threshold: float,
    min_area_m2: float = DEFAULT_MIN_AREA_M2,
    area_scale: float = DEFAULT_AREA_SCALE_M2,
    band_rows: int | None = None,
) -> list[ChangeRegion]:
    """Connected changed regions of a mask (8-connectivity), polygonised and scored.

    Regions smaller than ``min_area_m2`` (pixels on grids without a CRS) are dropped; areas are
    geodesic, summed over each region's own pixels (:meth:`Grid.row_pixel_areas_m2`). Ids read
    ``<id_prefix>-c0001``, numbered in raster order (of each region's first pixel). The mask and
    the probabilities are read in bands of whole raster blocks (``band_rows`` rows, default the
    smallest multiple of the mask's block height from :data:`MIN_BAND_ROWS` rows), so memory is
    bounded by a band and the regions still open at its last row, not by the raster
    (:class:`~groundbreak.infer.sites.region_stream.StreamingRegionLabeler`).
    """
    mask_path, probability_path = Path(mask_path), Path(probability_path)
    with (
        bounded_gdal_cache(DISCOVERY_GDAL_CACHE_BYTES),
        _open(mask_path) as src,
        _open(probability_path) as prob_src,
    ):
        grid = dataset_grid(src)
        _check_same_grid(prob_src, grid, probability_path, mask_path)
        row_areas = grid.row_pixel_areas_m2()[:, 0]
        floor_m2 = min_area_m2 * (1 - MIN_AREA_TOLERANCE)
        min_pixels = (
            max(1, math.ceil(floor_m2 / row_areas.max() - 1e-9)) if min_area_m2 > 0 else 1
        )
        labeler = StreamingRegionLabeler(grid.width, min_pixels, floor_m2)
        found: list[RegionPixels] = []
        step = band_rows or _band_rows(src)
        for row0 in range(0, grid.height, step):
            rows = min(step, grid.height - row0)
            window = Window(0, row0, grid.width, rows)
            changed = src.read(1, window=window, masked=True).filled(0) == 1
            probability = read_probability(prob_src, window) if changed.any() else None
            found += labeler.add_band(row0, changed, probability, row_areas[row0:row0 + rows])
        found += labeler.close()
    found.sort(key=lambda region: region.key)
    regions: list[ChangeRegion] = []
    for number, pixels in enumerate(found, start=1):
        window = Window(
            pixels.col0, pixels.row0, pixels.col1 - pixels.col0, pixels.row1 - pixels.row0
        )
        geometry = _on_grid(pixels.pixel_geometry(), grid, window)
        pixels.parts = []  # traced pieces are not needed any more
        measure = _measure(pixels, area_scale)
        regions.append(ChangeRegion(f"{id_prefix}-c{number:04d}", geometry, window, measure))
    return regions


def _band_rows(src: rasterio.io.DatasetReader) -> int:
    """Rows per band: whole blocks of the raster, at least :data:`MIN_BAND_ROWS`."""
    block = max(1, int(src.block_shapes[0][0]))
    return block * math.ceil(MIN_BAND_ROWS / block)


def _measure(pixels: RegionPixels, area_scale: float) -> SiteMeasure:
    """The measure of a discovered region: every valid pixel of it is changed."""
    valid = pixels.valid_pixels
    confidence = pixels.probability_sum / valid if valid else 0.0
    return SiteMeasure(
        pixels=pixels.pixels,
        valid_pixels=valid,
        changed_pixels=valid,
        changed_area=pixels.valid_area,
        confidence=confidence,
        mean_probability=confidence if valid else float("nan"),
        max_probability=pixels.probability_max if valid else float("nan"),
        score=site_score(confidence, pixels.valid_area, area_scale),
    )


def _on_grid(geometry: BaseGeometry, grid: Grid, window: Window) -> BaseGeometry:
    """A geometry in grid pixel coordinates moved into the grid's CRS (through the window's
    transform, as tracing the window would), made valid."""
    local = shapely.affinity.translate(geometry, -window.col_off, -window.row_off)
    t = grid.window_transform(window)
    moved = shapely.affinity.affine_transform(local, [t.a, t.b, t.d, t.e, t.c, t.f])
    return moved if moved.is_valid else _polygonal_part(shapely.make_valid(moved))


def region_polygon(pixels: np.ndarray, transform: rasterio.Affine) -> BaseGeometry:
    """The outline of a set of pixels as a valid (multi)polygon in the transform's coordinates.

    Pixels are traced in 4-connected pieces (each a valid polygon) and merged, so pixels that
    touch only at a corner give a MultiPolygon rather than a self-touching ring.
    """
    parts = [
        shape(geom)
        for geom, value in shapes(
            pixels.astype(np.uint8), mask=pixels, connectivity=4, transform=transform
        )
        if value == 1
    ]
    geometry = shapely.unary_union(parts) if len(parts) > 1 else parts[0]
    return geometry if geometry.is_valid else _polygonal_part(shapely.make_valid(geometry))


def _open(path: str | Path) -> rasterio.io.DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return open_raster(path)


def _check_same_grid(src: rasterio.io.DatasetReader, grid: Grid, path: Path, other: Path) -> None:
    if (src.height, src.width) != grid.shape:
        raise InputError(
            path, f"size {src.height}x{src.width} differs from the mask {other} ({grid.shape})"
        )
    if not dataset_grid(src).same_as(grid):
        raise InputError(path, f"CRS or transform differs from the mask {other}")
