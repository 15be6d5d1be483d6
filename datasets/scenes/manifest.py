"""Scenes of a scene manifest: a JSON file ``{"bands": {"B02": "path or URL", ...}, "date": ...}``
naming one single-band raster per band (the form a STAC item becomes, see
:mod:`groundbreak.datasets.stac_scene`), with its radiometric convention, SCL, cloud mask and
sun angles; relative paths resolve against the manifest's folder."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from groundbreak.datasets.bands import normalize_band_name
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.radiometry import (
    DEFAULT_QUANTIFICATION,
    Radiometry,
    baseline_offset,
)
from groundbreak.datasets.scenes.band_files import open_band_files_scene
from groundbreak.datasets.scenes.base import Scene
from groundbreak.datasets.scenes.rasters import single_band_source
from groundbreak.datasets.scenes.remote import is_remote
from groundbreak.datasets.text_files import load_json_file


def read_scene_manifest(path: str | Path) -> dict[str, str]:
    """The ``{band: location}`` mapping of a scene manifest, relative paths made absolute."""
    path = Path(path)
    return _manifest_bands(load_json_file(path, "scene manifest"), path)


def _manifest_bands(document: object, path: Path) -> dict[str, str]:
    """The checked ``bands`` of a parsed manifest, relative paths made absolute."""
    bands = document.get("bands") if isinstance(document, dict) else None
    if not isinstance(bands, dict) or not bands:
        raise InputError(path, 'scene manifest needs a non-empty "bands" object {band: path}')
    resolved: dict[str, str] = {}
    for band, location in bands.items():
        if not isinstance(location, str) or not location:
            raise InputError(path, f"band {band!r}: location must be a non-empty string")
        remote = is_remote(location)
        resolved[str(band)] = location if remote else str((path.parent / location).resolve())
    return resolved


def open_scene_manifest(
    path: str | Path, date: str | None = None, nodata: float | None = None
) -> Scene:
    """A scene from a scene manifest (JSON ``{"bands": {...}, "date": ...}``).

    Optional keys: ``date``; ``nodata`` (a value that overrides the files' own); ``scl`` (the
    path of an L2A scene classification layer); ``cloud_mask`` (a mask raster, non-zero = cloud
    or shadow); ``sun_azimuth`` / ``sun_zenith`` (degrees, for cloud shadows); and the
    radiometric convention: ``add_offset`` (DN, e.g. -1000), ``band_offsets`` (``{band: DN}``)
    and ``quantification_value`` (default 10000), or ``processing_baseline`` (``"04.00"`` and
    later mean an offset of -1000).
    """
    path = Path(path)
    return scene_from_manifest(load_json_file(path, "scene manifest"), path, date, nodata)


def scene_from_manifest(
    document: Mapping[str, Any], path: Path, date: str | None = None, nodata: float | None = None
) -> Scene:
    """A scene from a parsed scene manifest (see :func:`open_scene_manifest`); ``path`` names
    it in errors and anchors relative paths."""
    bands = _manifest_bands(document, path)
    if date is None:
        date = document.get("date") if isinstance(document.get("date"), str) else None
    try:
        radiometry = radiometry_from_keys(document, f"{path.name}")
        if nodata is None and document.get("nodata") is not None:
            nodata = float(document["nodata"])
        sun = (document.get("sun_azimuth"), document.get("sun_zenith"))
        sun_angles = _sun_angles(sun) if None not in sun else None
    except (TypeError, ValueError) as err:
        raise InputError(path, str(err)) from err
    scene = open_band_files_scene(bands, path, date, nodata=nodata)
    scene.radiometry = radiometry or scene.radiometry
    scene.sun_angles = sun_angles
    for key in ("scl", "cloud_mask"):
        location = document.get(key)
        if location is None:
            continue
        if not isinstance(location, str) or not location:
            raise InputError(path, f"{key!r} must be a path or URL")
        resolved = location if is_remote(location) else str((path.parent / location).resolve())
        if key == "scl":
            scene.scl = single_band_source(resolved, nodata=0.0)
        else:
            scene.cloud_mask = resolved
    return scene


def _sun_angles(values: tuple[object, object]) -> tuple[float, float]:
    """(azimuth, zenith) in degrees from a manifest's keys, or ValueError."""
    try:
        azimuth, zenith = (float(v) for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        azimuth = zenith = math.nan
    if not (math.isfinite(azimuth) and math.isfinite(zenith) and 0 <= zenith <= 90):
        raise ValueError(f"sun_azimuth / sun_zenith must be degrees (zenith 0-90), not "
                         f"{values[0]!r} / {values[1]!r}")
    return azimuth, zenith


def radiometry_from_keys(record: Mapping[str, object], source: str) -> Radiometry | None:
    """The convention stated by ``add_offset`` / ``quantification_value`` /
    ``processing_baseline`` keys (a scene manifest, a pairs CSV row), or None when none is there.

    Raises:
        ValueError: For a value that is not a number (or baseline string).
    """
    offset, quantification = record.get("add_offset"), record.get("quantification_value")
    baseline = record.get("processing_baseline")
    stated = (offset, quantification, baseline, record.get("band_offsets"))
    if all(value in (None, "") for value in stated):
        return None
    band_offsets = record.get("band_offsets") or {}
    if not isinstance(band_offsets, Mapping):
        raise ValueError("band_offsets must be an object {band: DN}")
    if offset in (None, ""):
        offset = baseline_offset(baseline)
    return Radiometry.from_dict(
        {
            "add_offset": offset,
            "quantification_value": quantification
            if quantification not in (None, "")
            else DEFAULT_QUANTIFICATION,
            "band_offsets": {normalize_band_name(str(b)): v for b, v in band_offsets.items()},
        },
        source=source,
    )

