"""Radiometric conventions: how a scene's digital numbers (DN) map to reflectance.

Sentinel-2 products store reflectance as integers: ``reflectance = (DN + add_offset) /
quantification``. Products of processing baseline 04.00 and later (sensed from 2022-01-25 on)
carry ``add_offset = -1000`` (``RADIO_ADD_OFFSET`` in L1C, ``BOA_ADD_OFFSET`` in L2A metadata);
older ones, and the OSCD training data, carry none. A model bundle states the convention it was
trained on (:data:`OSCD_CONVENTION` for the shipped ones) and every scene is converted to it before
normalisation, so a pair of one date before and one after the change of baseline predicts as if
neither had an offset.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BASELINE_04_START = dt.date(2022, 1, 25)
"""First sensing day of Sentinel-2 processing baseline 04.00, which added the -1000 DN offset."""

BASELINE_04_OFFSET = -1000.0
"""``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET`` of baseline 04.00 and later products."""

DEFAULT_QUANTIFICATION = 10000.0
"""Sentinel-2's ``QUANTIFICATION_VALUE`` (L1C) and ``BOA_QUANTIFICATION_VALUE`` (L2A)."""


def baseline_offset(baseline: object) -> float:
    """The DN offset a Sentinel-2 processing baseline (``"04.00"``, ``"05.09"``) states:
    :data:`BASELINE_04_OFFSET` from 04.00 on, 0 before it or when none is given.

    Raises:
        ValueError: For a baseline that is not a number like ``"04.00"``.
    """
    if baseline in (None, ""):
        return 0.0
    try:
        number = float(str(baseline))
    except ValueError as err:
        raise ValueError(f"processing_baseline {baseline!r} is not a number like '04.00'") from err
    return BASELINE_04_OFFSET if number >= 4.0 else 0.0


class RadiometryWarning(UserWarning):
    """A scene's radiometric convention is unknown where it matters (see
    :func:`unknown_radiometry_warning`)."""


@dataclass(frozen=True)
class Radiometry:
    """A DN convention: ``reflectance = (DN + offset[band]) / quantification``.

    Attributes:
        quantification: DN per unit reflectance.
        offsets: Additive offset per band name (canonical names); bands not listed have
            ``default_offset``.
        default_offset: Offset of the bands not in ``offsets``.
        known: False when nothing stated the convention and it is assumed (see
            :func:`unknown_radiometry_warning`).
        source: What stated it (``"MTD_MSIL1C.xml"``, ``"STAC"``, ``"manifest"``...), for messages.
    """

    quantification: float = DEFAULT_QUANTIFICATION
    offsets: Mapping[str, float] = field(default_factory=dict)
    default_offset: float = 0.0
    known: bool = True
    source: str = ""

    def offset(self, band: str) -> float:
        """The additive DN offset of one band."""
        return float(self.offsets.get(band, self.default_offset))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a model bundle records (``model.json["radiometry"]``)."""
        return {
            "quantification_value": self.quantification,
            "add_offset": self.default_offset,
            **({"band_offsets": dict(self.offsets)} if self.offsets else {}),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], source: str = "") -> Radiometry:
        """The convention recorded by :meth:`to_dict`.

        Raises:
            ValueError: When a value is not a finite number, or the quantification is not > 0.
        """
        quantification = _finite(record.get("quantification_value", DEFAULT_QUANTIFICATION))
        if quantification <= 0:
            raise ValueError(f"quantification_value must be positive, got {quantification}")
        offsets = record.get("band_offsets") or {}
        if not isinstance(offsets, Mapping):
            raise ValueError(f"band_offsets must be an object, got {offsets!r}")
        return cls(
            quantification=quantification,
            offsets={str(k): _finite(v) for k, v in offsets.items()},
            default_offset=_finite(record.get("add_offset", 0.0)),
            source=source,
        )


OSCD_CONVENTION = Radiometry(source="OSCD: L1C TOA reflectance x 10000, no offset")
"""The convention of OSCD and of Sentinel-2 products before baseline 04.00."""

UNKNOWN_RADIOMETRY = Radiometry(known=False, source="assumed (nothing states an offset)")
"""What a scene gets when nothing states its convention: taken as :data:`OSCD_CONVENTION`."""


def convert_radiometry(
    values: np.ndarray, bands: Sequence[str], source: Radiometry, target: Radiometry
) -> np.ndarray:
    """Convert DN ``(C, H, W)`` (or ``(B, C, H, W)``) from one convention to another, in place.

    Returns ``values`` (float), unchanged when both conventions agree on every band.
    """
    for i, band in enumerate(bands):
        scale = target.quantification / source.quantification
        shift = source.offset(band) * scale - target.offset(band)
        if scale == 1.0 and shift == 0.0:
            continue
        channel = values[..., i, :, :]
        channel *= np.float32(scale)
        channel += np.float32(shift)
    return values


def unknown_radiometry_warning(scene_path: object, date: str | None) -> str | None:
    """A one-line warning when a scene's convention is unknown but its date needs one stated.

    Scenes sensed on or after 2022-01-25 carry the baseline 04.00 offset when they come from
    ESA's products; without metadata, STAC or manifest keys saying so, it cannot be removed.
    """
    day = parse_date(date)
    if day is None or day < BASELINE_04_START:
        return None
    return (
        f"{scene_path}: sensed {day.isoformat()} (on or after {BASELINE_04_START.isoformat()}, "
        "Sentinel-2 baseline 04.00) but nothing states its radiometric offset; it is read "
        "without one. Give the product folder (with its MTD_MSIL*.xml), a STAC item, or "
        "'add_offset' in the scene manifest or pairs CSV"
    )


def parse_date(value: str | None) -> dt.date | None:
    """The calendar day of an ISO-8601 date or datetime string (``None`` when unparsable)."""
    if not value:
        return None
    text = str(value).strip()
    try:
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        pass
    if len(text) >= 8 and text[:8].isdigit():  # 20220125 or 20220125T103311
        try:
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None
    return None


def _finite(value: Any) -> float:
    """A finite float from a JSON number, or ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number
