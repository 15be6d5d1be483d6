"""Band names: Sentinel-2 names, parsing them from file names, common band sets."""

from __future__ import annotations

import re
from collections.abc import Sequence

SENTINEL2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)
"""All 13 Sentinel-2 L1C bands, in the usual order."""

SENTINEL2_L2A_BANDS: tuple[str, ...] = (
    "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12",
)
"""The 10 surface bands (10 m and 20 m) that L1C and L2A products share."""

SENTINEL2_RGB: tuple[str, ...] = ("B04", "B03", "B02")
"""Sentinel-2 true-colour bands: red, green, blue."""

RGB_BANDS: tuple[str, ...] = ("red", "green", "blue")
"""Band names of a plain RGB image."""

_BAND_IN_NAME = re.compile(r"(?:^|[_\-.])(B(?:0?[1-9]|1[0-2]|8A))(?=$|[_\-.])", re.IGNORECASE)


def normalize_band_name(name: str) -> str:
    """Canonical form of a band name: Sentinel-2 names as ``B02``/``B8A``, others lower-case."""
    stripped = name.strip()
    match = re.fullmatch(r"[Bb](\d{1,2}|8[Aa])", stripped)
    if match:
        number = match.group(1).upper()
        return "B8A" if number == "8A" else f"B{int(number):02d}"
    return stripped.lower()


def band_name_from_filename(stem: str) -> str | None:
    """The Sentinel-2 band named in a file stem (``T36SYC_20171003T081739_B8A`` -> ``B8A``)."""
    matches = _BAND_IN_NAME.findall(stem)
    return normalize_band_name(matches[-1]) if matches else None


def normalize_band_names(names: Sequence[str]) -> list[str]:
    """Canonical forms of several band names; duplicates are an error."""
    canonical = [normalize_band_name(n) for n in names]
    duplicates = sorted({n for n in canonical if canonical.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate band names: {', '.join(duplicates)}")
    return canonical


STAC_SENTINEL2_NAMES: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04",
    "rededge1": "B05", "rededge2": "B06", "rededge3": "B07", "nir": "B08",
    "nir08": "B8A", "nir09": "B09", "cirrus": "B10", "swir16": "B11", "swir22": "B12",
    "scl": "SCL",
}
"""Asset keys and band names of Sentinel-2 items in STAC catalogues (the Earth Search v1 set,
which are also ``eo:bands`` common names), as Sentinel-2 band ids; ``-jp2`` variants map alike.
``SCL`` is the L2A scene classification, not a data band."""

SENTINEL2_CENTRE_UM: dict[str, float] = {
    "B01": 0.443, "B02": 0.490, "B03": 0.560, "B04": 0.665, "B05": 0.705, "B06": 0.740,
    "B07": 0.783, "B08": 0.842, "B8A": 0.865, "B09": 0.945, "B10": 1.375, "B11": 1.610,
    "B12": 2.190,
}
"""Centre wavelengths (µm) of the Sentinel-2 MSI bands, to tell the three red-edge bands
apart when a catalogue names them only by the common name ``rededge``."""


def sentinel2_band_of(name: str, centre_um: float | None = None) -> str | None:
    """The Sentinel-2 band id a catalogue name stands for (``nir08`` -> ``B8A``), or None.

    Accepts band ids (``B8A``, ``b02``), the STAC names of :data:`STAC_SENTINEL2_NAMES` (also
    with a ``-jp2`` suffix) and, with its centre wavelength, the common name ``rededge``.
    """
    key = name.strip().lower().removesuffix("-jp2")
    if re.fullmatch(r"b(0?[1-9]|1[0-2]|8a)", key):
        return normalize_band_name(key)
    if key in STAC_SENTINEL2_NAMES:
        return STAC_SENTINEL2_NAMES[key]
    if centre_um is not None:
        band, centre = min(SENTINEL2_CENTRE_UM.items(), key=lambda kv: abs(kv[1] - centre_um))
        if abs(centre - centre_um) <= 0.015:
            return band
    return None
