"""Write Sentinel-2 products in ESA's ``.SAFE`` layout, for tests and benchmarks.

:func:`write_product` turns per-band images (e.g. a real OSCD scene) into an L1C or L2A product as
ESA distributes it: lossless JPEG 2000 bands under ``GRANULE/<granule>/IMG_DATA`` (L2A: in
``R10m``/``R20m``/``R60m``, with ``_10m``-style suffixes and a coarser copy of each band), the
product metadata ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` with the processing baseline, the
quantification value and the per-band offsets, and the granule metadata ``MTD_TL.xml`` with the
mean sun angles. Products of baseline 04.00 and later get DN = reflectance x 10000 + 1000 (DN 0
stays "no data"), as ESA's do since 2022-01-25. The result reads back with
:func:`groundbreak.datasets.scene.open_scene`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from groundbreak.datasets.sentinel2 import BAND_IDS

PSD = "https://psd-14.sentinel2.eo.esa.int/PSD"
"""Namespace root of ESA's product specification (the metadata files' ``n1`` namespace)."""

JP2_OPTIONS = {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES"}
"""Lossless JPEG 2000, as ESA's products are."""


@dataclass(frozen=True)
class BandImage:
    """One band of a scene: DN (uint16, reflectance x 10000, 0 = no data) on its own grid."""

    data: np.ndarray
    transform: Affine
    crs: CRS | str


def read_band_images(folder: str | Path) -> dict[str, BandImage]:
    """The bands of a folder of per-band rasters (``..._B02.tif``) as :class:`BandImage`."""
    from groundbreak.datasets.scene import open_band_folder_scene

    scene = open_band_folder_scene(folder)
    images = {}
    for name, source in scene.sources.items():
        with rasterio.open(source.path) as src:
            images[name] = BandImage(src.read(1), src.transform, src.crs)
    return images


def write_product(
    out_dir: str | Path,
    bands: Mapping[str, BandImage],
    *,
    level: str = "L1C",
    baseline: str = "04.00",
    sensing_time: str = "2022-03-01T08:17:39.024Z",
    tile: str = "T36SYC",
    sun_angles: tuple[float, float] | None = (150.0, 40.0),
    scl: BandImage | None = None,
    zipped: bool = False,
) -> Path:
    """Write a ``.SAFE`` product into ``out_dir``; returns its path (the ``.zip`` when zipped).

    Args:
        out_dir: Folder to write the product into.
        bands: DN without offset, by band name.
        level: ``"L1C"`` or ``"L2A"``.
        baseline: Processing baseline; ``"04.00"`` and later add 1000 to every valid DN and state
            an offset of -1000 per band.
        sensing_time: Sensing start (ISO 8601, UTC).
        tile: MGRS tile id (``T36SYC``).
        sun_angles: Mean sun (azimuth, zenith) in degrees for ``MTD_TL.xml``; None leaves it out.
        scl: The scene classification (L2A only).
        zipped: Zip the product (as the Copernicus Data Space serves it) and remove the folder.
    """
    if level not in ("L1C", "L2A"):
        raise ValueError(f"level must be L1C or L2A, got {level!r}")
    stamp = sensing_time[:19].replace("-", "").replace(":", "")
    number = baseline.replace(".", "")
    name = f"S2A_MSI{level}_{stamp}_N{number}_R121_{tile}_{stamp}"
    safe = Path(out_dir) / f"{name}.SAFE"
    granule = safe / "GRANULE" / f"{level}_{tile}_A000000_{stamp}"
    shifted = float(baseline) >= 4.0
    for band, image in bands.items():
        data = image.data.astype(np.uint16)
        if shifted:
            data = np.where(data > 0, data + 1000, 0).astype(np.uint16)
        resolution = _resolution_m(image)
        prefix = f"{tile}_{stamp}_{band}"
        if level == "L1C":
            _write_jp2(granule / "IMG_DATA" / f"{prefix}.jp2", data, image)
        else:
            _write_jp2(granule / "IMG_DATA" / f"R{resolution}m" / f"{prefix}_{resolution}m.jp2",
                       data, image)
            coarse = 60 if resolution < 60 else None
            if coarse:  # L2A also holds every band at coarser resolutions: the finest is read
                factor = coarse // resolution
                reduced = BandImage(data[::factor, ::factor],
                                    image.transform @ Affine.scale(factor), image.crs)
                _write_jp2(granule / "IMG_DATA" / f"R{coarse}m" / f"{prefix}_{coarse}m.jp2",
                           reduced.data, reduced)
    if scl is not None:
        _write_jp2(granule / "IMG_DATA" / "R20m" / f"{tile}_{stamp}_SCL_20m.jp2",
                   scl.data.astype(np.uint8), scl)
    (safe / f"MTD_MSI{level}.xml").write_text(
        product_xml(level, baseline, sensing_time, name), encoding="utf-8"
    )
    (granule / "MTD_TL.xml").write_text(tile_xml(level, sun_angles), encoding="utf-8")
    if not zipped:
        return safe
    archive = shutil.make_archive(str(Path(out_dir) / name), "zip", root_dir=out_dir,
                                  base_dir=safe.name)
    shutil.rmtree(safe)
    return Path(archive)


def _resolution_m(image: BandImage) -> int:
    """10, 20 or 60: the band's pixel size in metres (degrees are taken at ~111 km)."""
    size = abs(image.transform.a)
    metres = size * 111_320 if CRS.from_user_input(image.crs).is_geographic else size
    return min((10, 20, 60), key=lambda r: abs(r - metres))


def _write_jp2(path: Path, data: np.ndarray, image: BandImage) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        **JP2_OPTIONS,
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype,
        "crs": image.crs,
        "transform": image.transform,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def product_xml(level: str, baseline: str, sensing_time: str, name: str) -> str:
    """``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` with the elements ESA's products carry."""
    shifted = float(baseline) >= 4.0
    if level == "L1C":
        quantification = '<QUANTIFICATION_VALUE unit="none">10000</QUANTIFICATION_VALUE>'
        offsets = _offset_list("Radiometric_Offset_List", "RADIO_ADD_OFFSET") if shifted else ""
    else:
        quantification = (
            "<QUANTIFICATION_VALUES_LIST>"
            '<BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>'
            '<AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>'
            '<WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>'
            "</QUANTIFICATION_VALUES_LIST>"
        )
        offsets = _offset_list("BOA_ADD_OFFSET_VALUES_LIST", "BOA_ADD_OFFSET") if shifted else ""
    code = "1C" if level == "L1C" else "2A"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-{code}_User_Product xmlns:n1="{PSD}/User_Product_Level-{code}.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{sensing_time}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{sensing_time}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{name}.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-{code}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI{code}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Datatake datatakeIdentifier="GS2A_{sensing_time[:10]}">
        <SPACECRAFT_NAME>Sentinel-2A</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{sensing_time}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>121</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      {quantification}
      {offsets}
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-{code}_User_Product>
"""


def _offset_list(wrapper: str, tag: str) -> str:
    items = "".join(f'<{tag} band_id="{i}">-1000</{tag}>' for i in range(len(BAND_IDS)))
    return f"<{wrapper}>{items}</{wrapper}>"


def tile_xml(level: str, sun_angles: tuple[float, float] | None) -> str:
    """``MTD_TL.xml`` with the mean sun angles."""
    code = "1C" if level == "L1C" else "2A"
    angles = ""
    if sun_angles is not None:
        azimuth, zenith = sun_angles
        angles = (
            "<Tile_Angles><Mean_Sun_Angle>"
            f'<ZENITH_ANGLE unit="deg">{zenith}</ZENITH_ANGLE>'
            f'<AZIMUTH_ANGLE unit="deg">{azimuth}</AZIMUTH_ANGLE>'
            "</Mean_Sun_Angle></Tile_Angles>"
        )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-{code}_Tile_ID xmlns:n1="{PSD}/S2_PDI_Level-{code}_Tile_Metadata.xsd">
  <n1:Geometric_Info>{angles}</n1:Geometric_Info>
</n1:Level-{code}_Tile_ID>
"""
