"""The CRS of GeoJSON documents: one rule for labels and watch-lists."""

from __future__ import annotations

import pytest
from rasterio.crs import CRS

from groundbreak.datasets import InputError
from groundbreak.datasets.geojson import CRS84_NAMES, WGS84, geojson_crs


def named(name: object) -> dict:
    return {"type": "FeatureCollection", "features": [],
            "crs": {"type": "name", "properties": {"name": name}}}


def test_no_crs_member_is_wgs84_lon_lat() -> None:
    assert geojson_crs({"type": "FeatureCollection", "features": []}) == WGS84
    assert geojson_crs({"type": "FeatureCollection", "crs": None}) == WGS84


@pytest.mark.parametrize("name", sorted(CRS84_NAMES))
def test_crs84_is_the_same_crs_as_none(name: str) -> None:
    assert geojson_crs(named(name)) == WGS84


def test_a_named_crs_is_used() -> None:
    assert geojson_crs(named("urn:ogc:def:crs:EPSG::32636")) == CRS.from_epsg(32636)


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        ({"type": "link", "properties": {"href": "x.crs"}}, "unsupported 'crs' member"),
        ({"type": "name", "properties": []}, "unsupported 'crs' member"),
        ("EPSG:4326", "unsupported 'crs' member"),
        ({"type": "name", "properties": {"name": "EPSG:999999"}}, "unknown CRS"),
    ],
)
def test_a_crs_member_that_names_no_known_crs_is_refused(member: object, problem: str) -> None:
    with pytest.raises(InputError, match=rf"^sites\.geojson: {problem}"):
        geojson_crs({"type": "FeatureCollection", "crs": member}, "sites.geojson")
