"""The CRS of a GeoJSON document, for every GeoJSON this project reads (labels, watch-lists).

RFC 7946 GeoJSON has no ``crs`` member: its coordinates are longitude/latitude on WGS84
(OGC CRS84). Older files may name another CRS in a legacy ``crs`` member
(``{"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32636"}}``); that CRS is used.
CRS84 is read as EPSG:4326, which rasterio handles in longitude/latitude order, so a file that
names CRS84 and one that names nothing give the same geometries and the same CRS.
"""

from __future__ import annotations

from pathlib import Path

from rasterio.crs import CRS

from groundbreak.datasets.errors import InputError

WGS84 = CRS.from_epsg(4326)
"""The CRS of GeoJSON without a ``crs`` member, and of every GeoJSON this project writes."""

CRS84_NAMES = frozenset(
    {"urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84", "OGC:CRS84"}
)
"""Names of OGC CRS84 (longitude/latitude on WGS84) in a legacy ``crs`` member."""


def geojson_crs(document: dict, path: str | Path | None = None) -> CRS:
    """The CRS named in a GeoJSON document's ``crs`` member; EPSG:4326 when there is none.

    Raises:
        InputError: Naming ``path``, for a ``crs`` member that does not name a CRS (e.g. a
            legacy ``link``), or names one that is unknown.
    """
    member = document.get("crs")
    if member is None:
        return WGS84
    properties = member.get("properties") if isinstance(member, dict) else None
    name = properties.get("name") if isinstance(properties, dict) else None
    if not isinstance(name, str):
        raise InputError(path, f"unsupported 'crs' member {member!r} (expected a named CRS)")
    if name in CRS84_NAMES:
        return WGS84
    try:
        return CRS.from_user_input(name)
    except Exception as err:  # rasterio raises CRSError; pyproj may raise others
        raise InputError(path, f"unknown CRS {name!r} ({err})") from err
