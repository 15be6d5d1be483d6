"""Watch-list coordinates are validated: finite, and on the globe once in EPSG:4326."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groundbreak.datasets.errors import InputError
from groundbreak.infer.sites.sites import load_watch_list


def write(path: Path, ring: list[list[float]], crs: str | None = None) -> Path:
    document: dict = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": "ok", "name": "Fine"},
         "geometry": {"type": "Polygon", "coordinates": [[[35.5, 33.9], [35.51, 33.9],
                                                          [35.51, 33.91], [35.5, 33.9]]]}},
        {"type": "Feature", "properties": {"site_id": "bad-1", "name": "Bad"},
         "geometry": {"type": "Polygon", "coordinates": [ring]}},
    ]}
    if crs is not None:
        document["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    "ring",
    [
        [[1e308, 0], [1e308, 1], [-1e308, 1], [1e308, 0]],  # huge longitudes
        [[10, 1000], [11, 1000], [11, 1001], [10, 1000]],  # latitude 1000
        [[10, -91], [11, -91], [11, -90], [10, -91]],  # just past the south pole
        [[181, 0], [182, 0], [182, 1], [181, 0]],
    ],
)
def test_off_globe_coordinates_name_the_file_and_site(tmp_path: Path, ring) -> None:
    path = write(tmp_path / "watch.geojson", ring)
    with pytest.raises(InputError) as raised:
        load_watch_list(path)
    message = str(raised.value)
    assert str(path) in message and "'bad-1'" in message and "off the globe" in message


def test_non_finite_coordinates_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "watch.geojson"
    text = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": "nan-site", "name": "N"},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]})
    path.write_text(text.replace("[1, 1]", "[NaN, 1]"))  # Python's json reads NaN
    with pytest.raises(InputError, match=r"'nan-site'\) has non-finite coordinates"):
        load_watch_list(path)


def test_projected_coordinates_are_checked_after_reprojection(tmp_path: Path) -> None:
    # UTM 36N: a metre-sized polygon near Beirut is fine; 1e30 m cannot be reprojected.
    good = [[700000, 3760000], [700100, 3760000], [700100, 3760100], [700000, 3760000]]
    sites = load_watch_list(write(tmp_path / "good.geojson", good, "EPSG:32636"))
    assert [s.site_id for s in sites] == ["ok", "bad-1"]
    bad = [[700000, 1e30], [700100, 1e30], [700100, 3760100], [700000, 1e30]]
    with pytest.raises(InputError, match="'bad-1'"):
        load_watch_list(write(tmp_path / "bad.geojson", bad, "EPSG:32636"))
