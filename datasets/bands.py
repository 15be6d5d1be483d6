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
