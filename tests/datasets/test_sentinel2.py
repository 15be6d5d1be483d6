"""Sentinel-2 products (.SAFE folders and zips) as scenes: bands, metadata, offsets, nodata."""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from groundbreak.datasets import sentinel2
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.product_writer import BandImage, read_band_images, write_product
from groundbreak.datasets.radiometry import (
    OSCD_CONVENTION,
    RadiometryWarning,
    unknown_radiometry_warning,
)
from groundbreak.datasets.scene import open_scene
from groundbreak.datasets.sentinel2 import parse_product_metadata


@pytest.fixture(scope="module")
def beirut_after(fixtures_dir: Path) -> Path:
    """A real OSCD scene (beirut, 2017, L1C) as per-band GeoTIFFs."""
    return fixtures_dir / "oscd" / "beirut" / "imgs_2"


@pytest.mark.parametrize("zipped", [False, True])
def test_baseline_04_l1c_product_reads_back_the_original_reflectance(
    beirut_after: Path, tmp_path: Path, zipped: bool
) -> None:
    original = open_scene(beirut_after)
    product = write_product(tmp_path, read_band_images(beirut_after), zipped=zipped)
    scene = open_scene(product)

    assert scene.band_names == original.band_names
    assert scene.level == "L1C"
    assert scene.date == "2022-03-01"
    assert scene.sun_angles == (150.0, 40.0)
    assert scene.radiometry.offset("B04") == -1000.0
    raw = scene.read(["B04"])
    assert np.nanmin(raw) > 1000  # the DN carry the offset
    converted = scene.read(radiometry=OSCD_CONVENTION)
    np.testing.assert_allclose(converted, original.read(), atol=1e-3)  # float32 rounding


def test_pre_04_product_has_no_offset(beirut_after: Path, tmp_path: Path) -> None:
    product = write_product(tmp_path, read_band_images(beirut_after), baseline="02.05",
                            sensing_time="2017-10-03T08:17:39.000Z")
    scene = open_scene(product)
    assert scene.radiometry.known and scene.radiometry.offset("B02") == 0.0
    np.testing.assert_allclose(scene.read(radiometry=OSCD_CONVENTION),
                               open_scene(beirut_after).read(), atol=1e-3)


def test_zero_is_no_data_in_products_even_when_undeclared(
    beirut_after: Path, tmp_path: Path
) -> None:
    bands = read_band_images(beirut_after)
    b04 = bands["B04"]
    holed = b04.data.copy()
    holed[:10, :] = 0  # a swath edge
    bands["B04"] = BandImage(holed, b04.transform, b04.crs)
    scene = open_scene(write_product(tmp_path, bands))
    values = scene.read(["B04"])[0]
    assert np.isnan(values[:10]).all()
    assert np.isfinite(values[10:]).all()


def test_l2a_product_takes_each_band_at_its_finest_resolution_and_its_scl(
    beirut_after: Path, tmp_path: Path
) -> None:
    bands = read_band_images(beirut_after)
    b05 = bands["B05"]
    scl = BandImage(np.full(b05.data.shape, 4, np.uint8), b05.transform, b05.crs)
    scene = open_scene(write_product(tmp_path, bands, level="L2A", scl=scl))
    assert scene.level == "L2A"
    assert str(scene.sources["B02"].path).endswith("_B02_10m.jp2")
    assert str(scene.sources["B05"].path).endswith("_B05_20m.jp2")
    assert str(scene.sources["B01"].path).endswith("_B01_60m.jp2")
    assert scene.scl is not None
    assert (scene.read_classes() == 4).all()
    np.testing.assert_allclose(scene.read(radiometry=OSCD_CONVENTION),
                               open_scene(beirut_after).read(), atol=1e-3)


def test_metadata_of_l2a_states_boa_offsets() -> None:
    xml = b"""<?xml version="1.0"?><n1:Level-2A_User_Product xmlns:n1="x"><n1:General_Info>
      <Product_Info><PRODUCT_START_TIME>2023-06-01T10:00:00Z</PRODUCT_START_TIME>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL><PROCESSING_BASELINE>05.09</PROCESSING_BASELINE>
      </Product_Info><Product_Image_Characteristics><QUANTIFICATION_VALUES_LIST>
      <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST><BOA_ADD_OFFSET_VALUES_LIST>
      <BOA_ADD_OFFSET band_id="8">-900</BOA_ADD_OFFSET>
      <BOA_ADD_OFFSET band_id="12">-1000</BOA_ADD_OFFSET>
      </BOA_ADD_OFFSET_VALUES_LIST></Product_Image_Characteristics></n1:General_Info>
      </n1:Level-2A_User_Product>"""
    meta = parse_product_metadata(xml, "MTD_MSIL2A.xml")
    assert (meta.level, meta.baseline, meta.date) == ("L2A", "05.09", "2023-06-01")
    assert meta.radiometry.offset("B8A") == -900.0  # band_id 8 is B8A
    assert meta.radiometry.offset("B12") == -1000.0


@pytest.mark.parametrize(
    ("xml", "problem"),
    [
        (b"<not xml", "not valid XML"),
        (b"<a><PROCESSING_LEVEL>Level-3</PROCESSING_LEVEL></a>", "no known level"),
        (b"<a><PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL><RADIO_ADD_OFFSET band_id='13'>"
         b"-1000</RADIO_ADD_OFFSET></a>", "malformed"),
    ],
)
def test_bad_product_metadata_is_an_input_error_naming_the_file(xml: bytes, problem: str) -> None:
    with pytest.raises(InputError, match=problem) as info:
        parse_product_metadata(xml, "S2A.SAFE/MTD_MSIL1C.xml")
    assert "MTD_MSIL1C.xml" in str(info.value)


@pytest.mark.parametrize(
    ("baseline", "offset"), [("02.09", 0.0), ("04.00", -1000.0), ("05.11", -1000.0)]
)
def test_a_baseline_states_the_offset_where_the_metadata_lists_none(
    baseline: str, offset: float
) -> None:
    """One parser reads the baseline of product metadata, manifests and STAC items."""
    from groundbreak.datasets.scene import radiometry_from_keys

    xml = (f"<a><PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL><PROCESSING_BASELINE>{baseline}"
           "</PROCESSING_BASELINE></a>").encode()
    assert parse_product_metadata(xml, "MTD_MSIL1C.xml").radiometry.offset("B02") == offset
    stated = radiometry_from_keys({"processing_baseline": baseline}, "scene.json")
    assert stated is not None and stated.offset("B02") == offset
    bad = xml.replace(baseline.encode(), b"N/A")
    with pytest.raises(InputError, match="processing_baseline 'N/A' is not a number"):
        parse_product_metadata(bad, "MTD_MSIL1C.xml")
    with pytest.raises(ValueError, match="processing_baseline 'N/A' is not a number"):
        radiometry_from_keys({"processing_baseline": "N/A"}, "scene.json")


def test_product_without_metadata_or_bands_is_refused(tmp_path: Path) -> None:
    safe = tmp_path / "S2A_MSIL1C_X.SAFE"
    (safe / "GRANULE").mkdir(parents=True)
    with pytest.raises(InputError, match="without MTD_MSIL1C.xml or MTD_MSIL2A.xml"):
        open_scene(safe)
    (safe / "MTD_MSIL1C.xml").write_text("<a><PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL></a>")
    with pytest.raises(InputError, match="holds no band images"):
        open_scene(safe)


def test_truncated_zip_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "S2A_MSIL1C_X.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError):
        open_scene(bad)


def test_unknown_convention_after_the_baseline_change_is_warned_about() -> None:
    assert unknown_radiometry_warning("a.tif", "2021-12-31") is None
    assert unknown_radiometry_warning("a.tif", None) is None
    message = unknown_radiometry_warning("a.tif", "20220125")
    assert message is not None and "a.tif" in message and "2022-01-25" in message


def test_manifest_keys_state_the_offset(beirut_after: Path, tmp_path: Path) -> None:
    product = write_product(tmp_path, read_band_images(beirut_after))
    scene = open_scene(product)
    bands = {name: str(source.path) for name, source in scene.sources.items()}
    import json

    manifest = tmp_path / "scene.json"
    manifest.write_text(json.dumps({"bands": bands, "date": "2022-03-01",
                                    "processing_baseline": "04.00", "nodata": 0}))
    from_manifest = open_scene(manifest)
    assert from_manifest.radiometry.offset("B02") == -1000.0
    np.testing.assert_allclose(from_manifest.read(radiometry=OSCD_CONVENTION),
                               open_scene(beirut_after).read(), atol=1e-3)
    manifest.write_text(json.dumps({"bands": bands, "add_offset": "minus a thousand"}))
    with pytest.raises(InputError, match="scene.json"):
        open_scene(manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RadiometryWarning)  # opening never warns; predicting does
        open_scene(beirut_after, date="2023-01-01")



def test_a_zip_bomb_entry_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    bomb = tmp_path / "S2A_MSIL1C_X.zip"
    big = sentinel2.MAX_METADATA_BYTES + 10
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("S2A_MSIL1C_X.SAFE/junk.xml", b"<a>" + b" " * (50 * 2**20) + b"</a>")
        with archive.open("S2A_MSIL1C_X.SAFE/MTD_MSIL1C.xml", "w") as entry:
            chunk = b" " * 2**20
            for _ in range(big // len(chunk) + 1):
                entry.write(chunk)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(InputError, match=r"MTD_MSIL1C\.xml is larger than") as info:
        open_scene(bomb)
    assert str(bomb) in str(info.value)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<QUANTIFICATION_VALUE>0</QUANTIFICATION_VALUE>", "must be positive"),
        (b"<QUANTIFICATION_VALUE>abc</QUANTIFICATION_VALUE>", "malformed QUANTIFICATION_VALUE"),
        (b"<RADIO_ADD_OFFSET band_id='3'>nan</RADIO_ADD_OFFSET>", "finite"),
        (b"<RADIO_ADD_OFFSET band_id='3'>-inf</RADIO_ADD_OFFSET>", "finite"),
        (b"<QUANTIFICATION_VALUE>inf</QUANTIFICATION_VALUE>", "finite"),
    ],
)
def test_unusable_radiometric_metadata_is_refused(body: bytes, problem: str) -> None:
    xml = b"<a><PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL>" + body + b"</a>"
    with pytest.raises(InputError, match=problem) as info:
        parse_product_metadata(xml, "S2A.SAFE/MTD_MSIL1C.xml")
    assert "MTD_MSIL1C.xml" in str(info.value)


@pytest.mark.parametrize("zenith", [b"abc", b"nan", b"120"])
def test_unusable_sun_angles_are_refused(zenith: bytes) -> None:
    xml = b"<a><PROCESSING_LEVEL>Level-1C</PROCESSING_LEVEL></a>"
    granule = (b"<t><Mean_Sun_Angle><ZENITH_ANGLE>" + zenith + b"</ZENITH_ANGLE>"
               b"<AZIMUTH_ANGLE>150</AZIMUTH_ANGLE></Mean_Sun_Angle></t>")
    with pytest.raises(InputError, match="malformed Mean_Sun_Angle"):
        parse_product_metadata(xml, "S2A.SAFE/MTD_MSIL1C.xml", granule)


def test_zero_quantification_in_a_product_folder_is_one_line(
    beirut_after: Path, tmp_path: Path
) -> None:
    product = write_product(tmp_path, read_band_images(beirut_after))
    metadata = product / "MTD_MSIL1C.xml"
    text = metadata.read_text()
    assert "<QUANTIFICATION_VALUE" in text
    metadata.write_text(re.sub(r"(<QUANTIFICATION_VALUE[^>]*>)[^<]*", r"\g<1>0", text))
    with pytest.raises(InputError, match="quantification_value must be positive") as info:
        open_scene(product)
    assert "MTD_MSIL1C.xml" in str(info.value)
