"""Sentinel-2 products as scenes: ``.SAFE`` folders (L1C and L2A), also zipped.

An L1C product holds one JPEG 2000 file per band in ``GRANULE/<granule>/IMG_DATA/``; an L2A product
holds them in ``IMG_DATA/R10m``, ``R20m`` and ``R60m`` (each band at several resolutions: the
finest is taken) with the Sen2Cor scene classification ``SCL``. The product metadata
(``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``) gives the processing baseline, the quantification value,
the per-band radiometric offsets (``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET``, ``band_id`` 0-12 =
B01...B12 with B8A at 8), the processing level and the sensing time; the granule metadata
(``MTD_TL.xml``) the mean sun angles. DN 0 is "no data" in every band, declared or not.

A zipped product (``S2A_MSIL1C_....zip``) is read in place through GDAL's ``/vsizip/``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from groundbreak.datasets.bands import band_name_from_filename
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.radiometry import (
    DEFAULT_QUANTIFICATION,
    Radiometry,
    baseline_offset,
    parse_date,
)
from groundbreak.datasets.scenes.band_files import open_band_files_scene
from groundbreak.datasets.scenes.base import Scene
from groundbreak.datasets.scenes.rasters import single_band_source

BAND_IDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)
"""Sentinel-2 bands by the ``band_id`` of the product metadata (0-12)."""

PRODUCT_NODATA = 0.0
"""DN 0 is "no data" in Sentinel-2 products, whether the JP2 declares it or not."""

_RESOLUTION = re.compile(r"_(\d+)m$")


@dataclass(frozen=True)
class ProductMetadata:
    """What the product metadata says about a Sentinel-2 product.

    Attributes:
        level: ``"L1C"`` or ``"L2A"``.
        baseline: Processing baseline (``"04.00"``), when stated.
        sensing_time: Sensing start (ISO 8601), when stated.
        radiometry: DN convention from the quantification value and the per-band offsets.
        sun_angles: Mean sun (azimuth, zenith) in degrees, from the granule metadata.
    """

    level: str
    baseline: str | None
    sensing_time: str | None
    radiometry: Radiometry
    sun_angles: tuple[float, float] | None = None

    @property
    def date(self) -> str | None:
        """The sensing day (``YYYY-MM-DD``)."""
        day = parse_date(self.sensing_time)
        return day.isoformat() if day else None


def is_product(path: Path) -> bool:
    """True for a ``.SAFE`` folder, or a ``.zip`` that holds one."""
    name = path.name.upper()
    if name.endswith(".SAFE") and path.is_dir():
        return True
    return name.endswith(".ZIP") and path.is_file() and _is_zipped_safe(path)


def _is_zipped_safe(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(_is_product_xml(name) for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _is_product_xml(name: str) -> bool:
    return re.search(r"(^|/)MTD_MSIL(1C|2A)\.xml$", name) is not None


def _is_granule_xml(name: str) -> bool:
    return re.search(r"GRANULE/[^/]+/MTD_TL\.xml$", name) is not None


MAX_METADATA_BYTES = 64 * 2**20
"""The most read from one metadata file of a product (real ones are well under 1 MiB)."""


def _read_entry(path: Path, name: str) -> bytes:
    """One entry of a zip, read up to :data:`MAX_METADATA_BYTES` (a zip bomb is refused)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(name) as entry:
            data = entry.read(MAX_METADATA_BYTES + 1)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError) as err:
        raise InputError(path, f"cannot read {name} from the archive ({err})") from err
    if len(data) > MAX_METADATA_BYTES:
        raise InputError(path, f"archive entry {name} is larger than {MAX_METADATA_BYTES:,} "
                         "bytes: not product metadata")
    return data


def _read_file(file: Path) -> bytes:
    """A metadata file of a product folder, read up to :data:`MAX_METADATA_BYTES`."""
    with file.open("rb") as handle:
        data = handle.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise InputError(file, f"is larger than {MAX_METADATA_BYTES:,} bytes: not product "
                         "metadata")
    return data


def parse_product_metadata(
    xml: bytes, source: str | Path, granule_xml: bytes | None = None
) -> ProductMetadata:
    """Parse ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` (and optionally ``MTD_TL.xml``).

    Raises:
        InputError: When the XML is malformed or states no processing level.
    """
    root = _parse_xml(xml, source)
    level_text = _text(root, "PROCESSING_LEVEL") or _text(root, "PRODUCT_TYPE") or ""
    if "1C" in level_text:
        level = "L1C"
    elif "2A" in level_text:
        level = "L2A"
    else:
        raise InputError(source, f"product metadata states no known level ({level_text!r})")
    quant_tag = "QUANTIFICATION_VALUE" if level == "L1C" else "BOA_QUANTIFICATION_VALUE"
    offset_tag = "RADIO_ADD_OFFSET" if level == "L1C" else "BOA_ADD_OFFSET"
    baseline = _text(root, "PROCESSING_BASELINE")
    try:
        offsets: dict[str, str | float] = {
            BAND_IDS[int(element.get("band_id", ""))]: element.text or ""
            for element in _elements(root, offset_tag)
        }
        if not offsets:  # then the baseline states them (04.00 and later: -1000)
            stated = baseline_offset(baseline)
            offsets = dict.fromkeys(BAND_IDS, stated) if stated else {}
        radiometry = Radiometry.from_dict(
            {
                "quantification_value": _text(root, quant_tag) or DEFAULT_QUANTIFICATION,
                "band_offsets": offsets,
            },
            source=f"{Path(str(source)).name} (baseline {baseline or 'unknown'})",
        )
    except (ValueError, IndexError) as err:
        raise InputError(source, f"malformed {quant_tag} or {offset_tag} ({err})") from err
    sensing = _text(root, "PRODUCT_START_TIME") or _text(root, "DATATAKE_SENSING_START")
    sun = _sun_angles(_parse_xml(granule_xml, source), source) if granule_xml else None
    return ProductMetadata(level, baseline, sensing, radiometry, sun)


def _parse_xml(xml: bytes, source: str | Path) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as err:
        raise InputError(source, f"product metadata is not valid XML ({err})") from err


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _elements(root: ET.Element, name: str) -> Iterable[ET.Element]:
    return (element for element in root.iter() if _local(element.tag) == name)


def _text(root: ET.Element, name: str) -> str | None:
    for element in _elements(root, name):
        if element.text and element.text.strip():
            return element.text.strip()
    return None


def _sun_angles(granule: ET.Element, source: str | Path) -> tuple[float, float] | None:
    """Mean sun (azimuth, zenith) in degrees, or None when not stated.

    Raises:
        InputError: For an angle that is not a finite number, or a zenith outside 0-90.
    """
    for mean in _elements(granule, "Mean_Sun_Angle"):
        zenith, azimuth = _text(mean, "ZENITH_ANGLE"), _text(mean, "AZIMUTH_ANGLE")
        if zenith and azimuth:
            try:
                angles = float(azimuth), float(zenith)
            except ValueError:
                angles = (math.nan, math.nan)
            if not all(math.isfinite(a) for a in angles) or not 0 <= angles[1] <= 90:
                raise InputError(source, f"malformed Mean_Sun_Angle (azimuth {azimuth[:40]!r}, "
                                 f"zenith {zenith[:40]!r}): expected degrees, zenith 0-90")
            return angles
    return None


@dataclass(frozen=True)
class ProductFiles:
    """The files of a product that make a scene: band images by name, SCL, the metadata."""

    bands: dict[str, str]
    scl: str | None
    metadata: ProductMetadata


def product_files(path: Path) -> ProductFiles:
    """The band files (finest resolution of each), SCL and metadata of a ``.SAFE`` or ``.zip``.

    Raises:
        InputError: When the product lacks its metadata, holds no band images, or is unreadable.
    """
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        read: Callable[[str], bytes] = lambda name: _read_file(path / name)  # noqa: E731
        location: Callable[[str], str] = lambda name: str(path / name)  # noqa: E731
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
        except (OSError, zipfile.BadZipFile) as err:
            raise InputError(path, f"cannot be read as a zip archive ({err})") from err
        read = lambda name: _read_entry(path, name)  # noqa: E731
        location = lambda name: f"/vsizip/{path.resolve()}/{name}"  # noqa: E731
    product_xml = [n for n in names if _is_product_xml(n)]
    if not product_xml:
        raise InputError(path, "Sentinel-2 product without MTD_MSIL1C.xml or MTD_MSIL2A.xml")
    granule_xml = [n for n in names if _is_granule_xml(n)]
    try:
        metadata = parse_product_metadata(
            read(product_xml[0]),
            Path(str(path)) / product_xml[0],
            read(granule_xml[0]) if granule_xml else None,
        )
    except OSError as err:
        raise InputError(path, f"cannot read the product metadata ({err})") from err
    bands: dict[str, tuple[int, str]] = {}
    scl: tuple[int, str] | None = None
    for name in names:
        if "/IMG_DATA/" not in f"/{name}" or not name.lower().endswith((".jp2", ".tif")):
            continue
        stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        match = _RESOLUTION.search(stem)
        resolution = int(match.group(1)) if match else 0
        if stem.upper().startswith("MSK_") or "/QI_DATA/" in name:
            continue
        if re.search(r"_SCL(_\d+m)?$", stem):
            if scl is None or resolution < scl[0]:
                scl = (resolution, name)
            continue
        band = band_name_from_filename(stem)
        if band is not None and (band not in bands or resolution < bands[band][0]):
            bands[band] = (resolution, name)
    if not bands:
        raise InputError(path, "Sentinel-2 product holds no band images (IMG_DATA/*_Bxx.jp2)")
    return ProductFiles(
        bands={band: location(name) for band, (_, name) in bands.items()},
        scl=location(scl[1]) if scl else None,
        metadata=metadata,
    )


def open_product_scene(path: str | Path, date: str | None = None) -> Scene:
    """A scene from a Sentinel-2 ``.SAFE`` product folder or zip (L1C or L2A).

    Its date, radiometric convention, level, SCL and sun angles come from the product
    metadata; DN 0 is no data.
    """
    path = Path(path)
    files = product_files(path)
    meta = files.metadata
    scene = open_band_files_scene(files.bands, path, date or meta.date, nodata=PRODUCT_NODATA)
    scene.radiometry = meta.radiometry
    scene.level = meta.level
    scene.sun_angles = meta.sun_angles
    if files.scl is not None:
        scene.scl = single_band_source(files.scl, nodata=0.0)
    return scene
