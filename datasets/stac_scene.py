"""A STAC Item JSON file as a scene: its single-band raster data assets, each one band.

``groundbreak predict --before item.json`` and a pairs CSV accept a STAC Item where it is
unambiguous: every band is given by exactly one asset. An asset is a band when it has the
``data`` role (or no role) and is a GeoTIFF/JP2 (by media type or file suffix) with at most one
``eo:bands`` (STAC 1.1: ``bands``) entry; the band is that entry's ``name`` (else its
``common_name``), else the band a file name would give for the asset key (``B02``, ``b8a``,
``red``). Relative hrefs resolve against the JSON file's folder; URLs are read remotely. The
scene's date is the item's ``datetime`` (else ``start_datetime``).

A STAC ItemCollection is not one scene: it is refused with a pointer to ``nightly --stac``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from groundbreak.datasets.bands import band_name_from_filename, normalize_band_name
from groundbreak.datasets.errors import InputError

RASTER_MEDIA_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")


def open_stac_item_scene(path: str | Path, date: str | None = None) -> Any:
    """The scene of a STAC Item JSON file, or None when the file is not a STAC document.

    Raises:
        InputError: For a STAC ItemCollection, or an Item whose bands are ambiguous or absent.
    """
    from groundbreak.datasets.scene import open_band_files_scene

    path = Path(path)
    item = stac_item_document(path)
    if item is None:
        return None
    bands = stac_item_bands(item["assets"], path)
    return open_band_files_scene(bands, path, date or item_date(item.get("properties")))


def stac_item_document(path: Path) -> dict[str, Any] | None:
    """The STAC Item in a JSON file, or None when the file is not a STAC document."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not JSON at all: the scene-manifest reader names the problem
    if not isinstance(document, dict) or "bands" in document:  # a scene manifest
        return None
    kind = document.get("type")
    if "stac_version" not in document and kind not in ("Feature", "FeatureCollection"):
        return None
    if document.get("type") == "FeatureCollection":
        raise InputError(path, "is a STAC ItemCollection, not one scene: give it to "
                         "'groundbreak nightly --stac', or one of its items as a scene")
    if document.get("type") != "Feature" or not isinstance(document.get("assets"), dict):
        raise InputError(path, "is a STAC document but not an Item with assets")
    return document


def json_scene_bands(path: str | Path) -> dict[str, str]:
    """``{band: location}`` of a JSON scene: a STAC Item, else a scene manifest."""
    from groundbreak.datasets.scene import read_scene_manifest

    path = Path(path)
    item = stac_item_document(path)
    if item is None:
        return read_scene_manifest(path)
    return stac_item_bands(item["assets"], path)


def stac_item_bands(assets: Mapping[str, Any], path: Path) -> dict[str, str]:
    """``{band: location}`` of an item's single-band raster assets; InputError when ambiguous."""
    bands: dict[str, tuple[str, str]] = {}
    for key, asset in assets.items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            continue
        roles = asset.get("roles")
        if isinstance(roles, list) and roles and "data" not in roles:
            continue
        href = _location(asset["href"], path.parent)
        media = str(asset.get("type") or "").lower()
        suffix = Path(urlparse(href).path).suffix.lower()
        if not (media.startswith(RASTER_MEDIA_TYPES) or suffix in _RASTER_SUFFIXES):
            continue
        described = asset.get("eo:bands") or asset.get("bands")
        if isinstance(described, list) and len(described) > 1:
            continue
        name = None
        if isinstance(described, list) and described and isinstance(described[0], dict):
            name = described[0].get("name") or described[0].get("common_name")
        try:
            band = normalize_band_name(name) if isinstance(name, str) and name else (
                band_name_from_filename(str(key)) or normalize_band_name(str(key))
            )
        except ValueError as err:
            raise InputError(path, f"asset {key!r}: {err}") from err
        if band in bands and bands[band][1] != href:
            raise InputError(path, f"band {band} is ambiguous: assets {bands[band][0]!r} and "
                             f"{key!r} both give it")
        bands[band] = (str(key), href)
    if not bands:
        raise InputError(path, "STAC Item has no single-band raster (GeoTIFF/JP2) data asset")
    return {band: href for band, (_, href) in bands.items()}


def item_date(properties: object) -> str | None:
    """The ISO date of an item's ``datetime`` (else ``start_datetime``), or None."""
    if not isinstance(properties, dict):
        return None
    for key in ("datetime", "start_datetime"):
        value = properties.get(key)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
            except ValueError:
                return None
    return None


def _location(href: str, base: Path) -> str:
    """An asset href as an absolute local path or a URL."""
    parsed = urlparse(href)
    if parsed.scheme == "file":
        return str(Path(unquote(parsed.path)).resolve())
    if parsed.scheme and len(parsed.scheme) > 1:
        return href
    path = Path(href)
    return str((path if path.is_absolute() else base / path).resolve())
