"""A STAC Item JSON file as a scene: its single-band raster data assets, each one band.

``groundbreak predict --before item.json`` and a pairs CSV accept a STAC Item where it is
unambiguous: every band is given by exactly one asset. An asset is a band when it has the
``data`` role (or no role) and is a GeoTIFF/JP2 (by media type or file suffix) with at most one
``eo:bands`` (STAC 1.1: ``bands``) entry; the band is that entry's ``name`` (else its
``common_name``), else the band a file name would give for the asset key (``B02``, ``b8a``,
``red``). For Sentinel-2 items the catalogue names (Earth Search's ``blue``, ``nir08``,
``swir16``, ``scl``...; ``eo:bands`` common names) are Sentinel-2 band ids
(:func:`~groundbreak.datasets.bands.sentinel2_band_of`), ``scl`` is the scene classification,
and where a band comes as a GeoTIFF and as a JP2 (``blue``, ``blue-jp2``) the GeoTIFF is read.
Relative hrefs resolve against the JSON file's folder; URLs are read remotely. The scene's date is
the item's ``datetime`` (else ``start_datetime``).

The radiometric convention of a Sentinel-2 item is taken, first found, from
``earthsearch:boa_offset_applied`` (true: the offset was removed from the pixels), the assets'
``raster:bands`` ``offset``/``scale``, or the processing baseline (``s2:processing_baseline``,
``processing:version``; 04.00 and later: -1000); DN 0 is no data, and ``view:sun_azimuth`` /
``view:sun_elevation`` give the sun angles for cloud shadows.

A STAC ItemCollection is not one scene: it is refused with a pointer to ``nightly --stac``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import unquote, urlparse

from groundbreak.datasets.bands import (
    band_name_from_filename,
    normalize_band_name,
    sentinel2_band_of,
)
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scenes.base import Scene
from groundbreak.datasets.scenes.manifest import read_scene_manifest, scene_from_manifest
from groundbreak.datasets.text_files import read_text_file

RASTER_MEDIA_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff")
_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")


def open_stac_item_scene(path: str | Path, date: str | None = None) -> Scene | None:
    """The scene of a STAC Item JSON file, or None when the file is not a STAC document.

    Raises:
        InputError: For a STAC ItemCollection, or an Item whose bands are ambiguous or absent.
    """
    path = Path(path)
    item = stac_item_document(path)
    if item is None:
        return None
    return scene_from_manifest(stac_item_manifest(item, path), path, date)


def stac_item_document(path: Path) -> dict[str, Any] | None:
    """The STAC Item in a JSON file, or None when the file is not a STAC document."""
    text = read_text_file(path, what="scene JSON")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None  # not JSON: the scene-manifest reader names the problem
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
    path = Path(path)
    item = stac_item_document(path)
    if item is None:
        return read_scene_manifest(path)
    return stac_item_manifest(item, path)["bands"]


def is_sentinel2_item(item: Mapping[str, Any]) -> bool:
    """True for an item of a Sentinel-2 collection (platform, constellation, ``s2:`` keys)."""
    properties = _object(item.get("properties"))
    platform = str(properties.get("platform") or properties.get("constellation") or "").lower()
    collection = str(item.get("collection") or "").lower()
    return (
        platform.startswith("sentinel-2")
        or "sentinel-2" in collection
        or any(str(key).startswith("s2:") for key in properties)
    )


def stac_item_manifest(item: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The scene manifest of a STAC Item: bands, date and, for Sentinel-2, SCL, no-data value,
    radiometric convention and sun angles (see the module docstring).

    Raises:
        InputError: When a band comes from two assets of one kind, or no band asset is there.
    """
    sentinel2 = is_sentinel2_item(item)
    assets = _object(item.get("assets"))
    chosen: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for key, asset in assets.items():
        band = _asset_band(str(key), asset, path, sentinel2)
        if band is None:
            continue
        href = _location(asset["href"], path.parent)
        if band in chosen and chosen[band][1] != href:
            kept = _preferred(chosen[band], (str(key), href, asset))
            if kept is None:
                raise InputError(path, f"band {band} is ambiguous: assets {chosen[band][0]!r} "
                                 f"and {key!r} both give it")
            chosen[band] = kept
        else:
            chosen[band] = (str(key), href, asset)
    scl = chosen.pop("SCL", None)
    if not chosen:
        raise InputError(path, "STAC Item has no single-band raster (GeoTIFF/JP2) data asset")
    properties = _object(item.get("properties"))
    manifest: dict[str, Any] = {"bands": {band: href for band, (_, href, _) in chosen.items()}}
    when = item_date(properties)
    if when:
        manifest["date"] = when
    if sentinel2:
        manifest["nodata"] = 0
        if scl is not None:
            manifest["scl"] = scl[1]
        manifest.update(_radiometry_keys(properties, {b: a for b, (_, _, a) in chosen.items()}))
        azimuth, elevation = properties.get("view:sun_azimuth"), properties.get(
            "view:sun_elevation"
        )
        if _is_number(azimuth) and _is_number(elevation):
            manifest["sun_azimuth"], manifest["sun_zenith"] = azimuth, 90.0 - elevation
    return manifest


def _asset_band(key: str, asset: Any, path: Path, sentinel2: bool) -> str | None:
    """The band a data asset gives (``SCL`` for a scene classification), or None."""
    if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
        return None
    roles = asset.get("roles")
    if isinstance(roles, list) and roles and "data" not in roles:
        return None
    href = _location(asset["href"], path.parent)
    media = str(asset.get("type") or "").lower()
    suffix = Path(urlparse(href).path).suffix.lower()
    if not (media.startswith(RASTER_MEDIA_TYPES) or suffix in _RASTER_SUFFIXES):
        return None
    described = asset.get("eo:bands") or asset.get("bands")
    if isinstance(described, list) and len(described) > 1:
        return None
    entry = described[0] if isinstance(described, list) and described else {}
    entry = entry if isinstance(entry, dict) else {}
    names = [entry.get("name"), entry.get("common_name")]
    for name in names:
        if name is not None and not isinstance(name, str):
            raise InputError(path, f"asset {key!r}: band name {name!r} is not a string")
    if sentinel2:
        centre = entry.get("center_wavelength")
        for candidate in (*names, key):
            if isinstance(candidate, str) and candidate:
                band = sentinel2_band_of(
                    candidate, centre if _is_number(centre) else None
                )
                if band is not None:
                    return band
    name = next((n for n in names if isinstance(n, str) and n), None)
    try:
        return normalize_band_name(name) if name else (
            band_name_from_filename(key) or normalize_band_name(key)
        )
    except ValueError as err:
        raise InputError(path, f"asset {key!r}: {err}") from err


def _preferred(
    first: tuple[str, str, dict[str, Any]], second: tuple[str, str, dict[str, Any]]
) -> tuple[str, str, dict[str, Any]] | None:
    """Of two assets giving one band, the GeoTIFF over the JP2; None when neither is."""
    kinds = [_is_jp2(asset[1], asset[2]) for asset in (first, second)]
    if kinds == [True, False]:
        return second
    if kinds == [False, True]:
        return first
    return None


def _is_jp2(href: str, asset: dict[str, Any]) -> bool:
    media = str(asset.get("type") or "").lower()
    return media.startswith("image/jp2") or Path(urlparse(href).path).suffix.lower() == ".jp2"


def _radiometry_keys(
    properties: Mapping[str, Any], assets: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """Scene-manifest keys stating a Sentinel-2 item's DN convention ({} when nothing does)."""
    baseline = next(
        (
            str(properties[key])
            for key in ("s2:processing_baseline", "processing:version",
                        "sentinel:processing_baseline")
            if properties.get(key) not in (None, "")
        ),
        None,
    )
    applied = properties.get("earthsearch:boa_offset_applied")
    if isinstance(applied, bool):
        if applied or baseline is None:
            return {"add_offset": 0.0} if applied else {}
        return {"processing_baseline": baseline}
    offsets: dict[str, float] = {}
    quantification = 1.0
    for band, asset in assets.items():
        raster = asset.get("raster:bands")
        entry = raster[0] if isinstance(raster, list) and raster else None
        if not isinstance(entry, dict) or not _is_number(entry.get("scale")):
            continue
        scale, offset = float(entry["scale"]), entry.get("offset", 0.0)
        if scale > 0 and _is_number(offset):
            quantification = 1.0 / scale
            offsets[band] = float(offset) / scale
    if offsets:
        return {"quantification_value": round(quantification, 6), "band_offsets": offsets,
                "add_offset": 0.0}
    if baseline is not None:
        return {"processing_baseline": baseline}
    return {}


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(value: object) -> dict[str, Any]:
    """A JSON object's members, or none when the value is not an object."""
    return value if isinstance(value, dict) else {}


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
