"""The per-site cloud check: how much of the ground around a site a pair did not see, and the
alert policy holding back a detection beside a cloud (stored with its observation)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from shapely.geometry import box

from groundbreak.infer.nightly.alert_policy import AlertPolicy
from groundbreak.infer.nightly.site_clouds import hidden_near
from groundbreak.infer.nightly.state import NightlyState
from groundbreak.infer.prediction.raster_io import MASK_NODATA

X0, Y0 = 700_000.0, 3_760_000.0  # UTM 36N, 10 m pixels
UTM = CRS.from_epsg(32636)


def write_raster(path: Path, data: np.ndarray, crs: CRS | None = UTM) -> Path:
    """A one-band uint8 GeoTIFF on the 10 m grid (no georeference when ``crs`` is None)."""
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": "uint8", "nodata": MASK_NODATA}
    if crs is not None:
        profile.update(crs=crs, transform=from_origin(X0, Y0, 10.0, 10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
    return path


def pixels(row0: int, col0: int, row1: int, col1: int):
    """A box over grid pixels [row0, row1) x [col0, col1) in UTM metres."""
    return box(X0 + 10 * col0, Y0 - 10 * row1, X0 + 10 * col1, Y0 - 10 * row0)


@pytest.fixture
def mask_with_cloud(tmp_path: Path) -> Path:
    """A 450 x 300 px mask (10 m; two strips of the reader) with a cloud over columns 200..229
    in every row, and a small one in rows 420..429 at columns 20..29 (the second strip)."""
    mask = np.zeros((450, 300), np.uint8)
    mask[100:120, 20:40] = 1  # a detected site
    mask[:, 200:230] = MASK_NODATA
    mask[420:430, 20:30] = MASK_NODATA
    return write_raster(tmp_path / "mask.tif", mask)


def test_the_share_of_a_site_near_unseen_ground_grows_with_the_margin(
    mask_with_cloud: Path,
) -> None:
    """Cells of about 60 m: a site 1.6 km from the cloud is clear, one reaching to 100 m of it
    is partly near it at 300 m and wholly at 1 km, one under it is hidden."""
    far, wide, under = pixels(100, 20, 120, 40), pixels(100, 120, 120, 190), pixels(
        100, 205, 120, 215)
    shares = hidden_near(mask_with_cloud, [far, wide, under], margin_m=300.0)
    assert shares[0] == 0.0
    assert 0.0 < shares[1] < 1.0
    assert shares[2] == 1.0
    assert hidden_near(mask_with_cloud, [wide], margin_m=0.0) == [0.0]
    assert hidden_near(mask_with_cloud, [wide], margin_m=1000.0) == [1.0]


def test_unseen_ground_in_a_later_strip_of_the_mask_counts(mask_with_cloud: Path) -> None:
    beside = pixels(400, 40, 410, 50)  # 100-200 m from the small cloud of rows 420..429
    assert hidden_near(mask_with_cloud, [beside], margin_m=300.0) == [1.0]
    assert hidden_near(mask_with_cloud, [beside], margin_m=0.0) == [0.0]


def test_sites_without_an_outline_or_off_the_raster_are_unknown(mask_with_cloud: Path) -> None:
    off = pixels(600, 600, 610, 610)
    assert hidden_near(mask_with_cloud, [None, off], margin_m=300.0) == [None, None]


def test_a_grid_without_a_crs_has_no_metres_to_measure(tmp_path: Path) -> None:
    plain = write_raster(tmp_path / "mask.tif", np.zeros((20, 20), np.uint8), crs=None)
    assert hidden_near(plain, [box(2, 2, 5, 5)], margin_m=300.0) == [None]


def test_a_sure_detection_beside_a_cloud_stays_a_candidate_and_is_stored(
    tmp_path: Path,
) -> None:
    """The old rule looked at the pair's cloud share only: a sure detection on a pair with a
    cloud far away waited, and one beside a cloud on a nearly clear pair confirmed."""
    state = NightlyState(tmp_path / "state")
    row = {"name": "x", "lon": 1.0, "lat": 2.0, "changed_area_m2": 900.0}
    beside = dict(row, site_id="a", pair_id="p1", score=0.99, after_date="2024-01-01",
                  before_date="2023-01-01", hidden_near=0.2)
    far = dict(row, site_id="b", pair_id="p1", score=0.99, after_date="2024-01-01",
               before_date="2023-01-01", hidden_near=0.0)
    outcome = state.update_alerts("n1", [beside, far], AlertPolicy())
    assert outcome.candidates == ["a"] and outcome.new == ["b"]
    assert [o["hidden_near"] for o in state.observations("a")] == [0.2]
    later = dict(beside, pair_id="p2", score=0.7, after_date="2024-02-10", hidden_near=0.0)
    assert state.update_alerts("n2", [later], AlertPolicy()).new == ["a"]
    state.close()


def test_sites_measured_together_get_the_shares_each_gets_alone(tmp_path: Path) -> None:
    """Sites are burned in shared passes: neighbours 10 m apart share 60 m cells, so each must
    still be measured on its own cells only (as when measured alone), L shapes included."""
    mask = np.zeros((240, 240), np.uint8)
    mask[60:90, 100:140] = MASK_NODATA  # a cloud among the sites
    path = write_raster(tmp_path / "mask.tif", mask)
    sites = []
    for row in range(0, 230, 9):
        for col in range(0, 230, 11):
            site = pixels(row, col, row + 8, col + 10)
            if (row + col) % 2:  # an L: a corner of its box left out
                site = site.difference(pixels(row, col, row + 4, col + 5))
            sites.append(site)
    together = hidden_near(path, sites, margin_m=100.0)
    alone = [hidden_near(path, [site], margin_m=100.0)[0] for site in sites]
    assert together == alone
    assert any(share is not None and 0.0 < share < 1.0 for share in together)
