"""Writers of a ranking run's tables: sites.csv, alerts.csv, alerts.geojson, changes.geojson.

Every file is written atomically (a hidden temporary file in the same folder, then a rename), so a
reader such as the nightly batch or an analyst's QGIS sees the previous file or the whole new one,
never half of one. GeoJSON is written in EPSG:4326 (RFC 7946, no ``crs`` member), with every
polygon wound as RFC 7946 says: exterior rings counter-clockwise, holes clockwise.

Columns of ``sites.csv`` and ``alerts.csv`` (one row per site and pair, best first):
:data:`SITE_COLUMNS` then :data:`DETAIL_COLUMNS`. ``changed_area_m2`` is in square metres on
georeferenced grids; on grids without a CRS (plain PNG pairs) it counts pixels, and the row's
``area_unit`` says ``px`` instead of ``m2`` (lon/lat are then empty).

Text cells that a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return) are written with a leading ``'``, and every text cell is quoted (OWASP's
advice on CSV injection), so a site named ``=HYPERLINK(...)`` stays text in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import GeometryCollection, MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from groundbreak.infer.atomic import atomic_write_text

SITE_COLUMNS: tuple[str, ...] = (
    "rank", "site_id", "name", "pair_id", "score", "changed_area_m2", "lon", "lat",
    "before_date", "after_date",
)
"""The alert row every output shares (CSV, GeoJSON properties, HTML report)."""

DETAIL_COLUMNS: tuple[str, ...] = (
    "kind", "confidence", "max_probability", "changed_pixels", "valid_fraction", "observed",
    "area_unit",
)
"""Extra columns: ``kind`` is ``watch`` or ``discovered``; ``observed`` is false for a site
clouds (or the swath) hid on most of its pixels; see :class:`SiteMeasure` for the rest."""

CHANGE_COLUMNS: tuple[str, ...] = (
    "region_id", "pair_id", "score", "changed_area_m2", "confidence", "max_probability",
    "changed_pixels", "lon", "lat", "before_date", "after_date", "area_unit",
)
"""Properties of each discovered change region in ``changes.geojson``."""

FAILURE_COLUMNS: tuple[str, ...] = ("pair_id", "reason")
"""Columns of ``failures.csv``."""

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet evaluate a cell (OWASP, CSV injection)."""

_DECIMALS = {
    "score": 4, "confidence": 4, "max_probability": 4, "valid_fraction": 4,
    "changed_area_m2": 1, "lon": 7, "lat": 7,
}


def write_table_csv(
    table: pd.DataFrame, path: str | os.PathLike[str], columns: Sequence[str]
) -> Path:
    """Write the named columns of a table as CSV (rounded for reading), atomically."""
    frame = table.reindex(columns=list(columns)).copy()
    for column, decimals in _DECIMALS.items():
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").round(decimals)
    frame = frame.map(spreadsheet_safe)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return atomic_write_text(path, buffer.getvalue())


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet shows as text: ``'`` before a formula's first character.

    Numbers (negative longitudes included) and other non-text values are returned as they are.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_sites_csv(sites: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ranked sites (or alerts) with :data:`SITE_COLUMNS` + :data:`DETAIL_COLUMNS`."""
    return write_table_csv(sites, path, SITE_COLUMNS + DETAIL_COLUMNS)


def write_failures_csv(failures: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write the pairs that failed and why (a header only when none did)."""
    return write_table_csv(failures, path, FAILURE_COLUMNS)


def write_sites_geojson(sites: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write sites (or alerts) as EPSG:4326 polygons whose properties are the CSV columns."""
    return write_feature_collection(sites, path, SITE_COLUMNS + DETAIL_COLUMNS)


def write_changes_geojson(changes: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write discovered change regions as EPSG:4326 polygons (:data:`CHANGE_COLUMNS`)."""
    return write_feature_collection(changes, path, CHANGE_COLUMNS)


def write_feature_collection(
    table: pd.DataFrame, path: str | os.PathLike[str], columns: Sequence[str]
) -> Path:
    """Write a table with a ``geometry`` column (shapely, EPSG:4326) as a GeoJSON file.

    Rows without a geometry (pairs without a CRS) get a null geometry, as GeoJSON allows. The
    geometries are oriented (RFC 7946) and written by GEOS in one vectorised pass (15
    significant digits: nanometres in degrees), five times faster than through Python tuples.
    """
    rows = table.to_dict("records")
    geometries = np.array(
        [g if isinstance(g := row.get("geometry"), BaseGeometry) else None for row in rows],
        dtype=object,
    )
    written = shapely.to_geojson(shapely.orient_polygons(geometries, exterior_cw=False))
    features = [
        '{"type": "Feature", "properties": '
        + json.dumps({c: _json_value(row.get(c), c) for c in columns}, allow_nan=False)
        + f', "geometry": {geometry if geometry is not None else "null"}}}'
        for row, geometry in zip(rows, written, strict=True)
    ]
    document = '{"type": "FeatureCollection", "features": [' + ", ".join(features) + "]}\n"
    return atomic_write_text(path, document)


def rfc7946_winding(geometry: BaseGeometry) -> BaseGeometry:
    """The geometry with every polygon's exterior counter-clockwise and holes clockwise."""
    if isinstance(geometry, Polygon):
        return orient(geometry, sign=1.0)
    if isinstance(geometry, MultiPolygon):
        return MultiPolygon([orient(part, sign=1.0) for part in geometry.geoms])
    if isinstance(geometry, GeometryCollection):
        return GeometryCollection([rfc7946_winding(part) for part in geometry.geoms])
    return geometry


def _json_value(value: Any, column: str) -> Any:
    """A plain JSON value: numpy scalars unwrapped, NaN and missing as null, rounded floats."""
    if value is None or (isinstance(value, float | type(pd.NA)) and pd.isna(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, _DECIMALS[column]) if column in _DECIMALS else value
    return value
