"""The nightly batch under real clouds: a cloudy acquisition is skipped, not alerted on, and the
next clear one is compared with the last clear one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio

from groundbreak.datasets.scene import open_scene
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.state import NightlyState

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BEIRUT = FIXTURES / "oscd" / "beirut"
S2_13 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
         "B12"]


def write_scene(path: Path, cloudy: bool, overcast: bool = False) -> Path:
    """The real beirut 2017 scene as one 13-band GeoTIFF, with real cumulus clouds and their
    shadows pasted over it when ``cloudy`` (as in tests/infer/test_sentinel2_prediction.py), or
    all of it under the sample's densest cloud when ``overcast``."""
    after = open_scene(BEIRUT / "imgs_2")
    data = after.read(S2_13)
    if overcast:
        with rasterio.open(FIXTURES / "clouds" / "cumulus_l1c_13band.tif") as src:
            core = src.read().astype(np.float32)[:, 92:124, 128:160]  # 32 x 32, 80 % bright cloud
        data = np.tile(core, (1, 3, 3))
    elif cloudy:
        with rasterio.open(FIXTURES / "clouds" / "cumulus_l1c_13band.tif") as src:
            block = src.read().astype(np.float32)[:, 64:160, 64:160]
        median = np.median(block, axis=(1, 2), keepdims=True)
        cloud = block[1] > 1800
        shadow = ~cloud & (block[7] < 0.75 * median[7, 0, 0])
        data[:, cloud] = block[:, cloud]
        data[:, shadow] *= np.clip(block / median, 0, 1)[:, shadow]
    profile = {"driver": "GTiff", "width": 96, "height": 96, "count": 13, "dtype": "uint16",
               "crs": after.grid.crs, "transform": after.grid.transform}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.nan_to_num(data).astype(np.uint16))
        dst.descriptions = tuple(S2_13)
    return path


def night(config: Path, run_id: str) -> dict:
    assert groundbreak(["nightly", "--config", str(config), "--run-id", run_id]) == 0
    return json.loads((config.parent / "state" / "runs" / run_id / "summary.json").read_text())


def test_cloudy_acquisition_is_skipped_and_the_next_clear_one_is_compared_with_the_last_clear(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "beirut_20150820").symlink_to(BEIRUT / "imgs_1")
    write_scene(drop / "beirut_20171003.tif", cloudy=False)
    write_scene(drop / "beirut_20171102.tif", cloudy=True)
    write_scene(drop / "beirut_20171202.tif", cloudy=False)
    config = tmp_path / "nightly.yaml"
    config.write_text("state_dir: state\ndrop_folder: drop\nlog_format: json\nreport: false\n"
                      "cloudy_fraction: 0.2\npairing: {rule: consecutive}\n")

    summary = night(config, "n1")
    pairs = {p["pair_id"]: p for p in summary["pairs"]}
    assert list(pairs) == ["beirut_20150820_20171003", "beirut_20171003_20171102",
                           "beirut_20171003_20171202"]  # the last one skips the cloudy date
    cloudy = pairs["beirut_20171003_20171102"]
    assert cloudy["status"] == "skipped" and cloudy["reason"].startswith("cloudy:")
    assert cloudy["clouds"]["after"] >= 0.2 > cloudy["clouds"]["before"]
    assert pairs["beirut_20171003_20171202"]["clouds"]["either"] < 0.2
    assert summary["counts"]["skipped_cloudy"] == 1 and summary["counts"]["failed"] == 0
    sites = (tmp_path / "state" / "runs" / "n1" / "sites.csv").read_text()
    assert "beirut_20171003_20171102" not in sites  # nothing of the cloudy pair is ranked
    log = (tmp_path / "state" / "runs" / "n1" / "night.jsonl")
    if log.is_file():
        assert '"clouds"' in log.read_text()

    write_scene(drop / "beirut_20180101.tif", cloudy=False)
    summary = night(config, "n2")  # the drop folder still holds the older dates: reused
    scored = [p["pair_id"] for p in summary["pairs"] if p["status"] == "scored"]
    assert scored == ["beirut_20171202_20180101"]
    with NightlyState(tmp_path / "state") as state:
        assert state.cloud_fractions()[str(drop / "beirut_20171102.tif")] >= 0.2


def test_an_overcast_acquisition_is_skipped_as_cloudy_not_failed(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "beirut_20150820").symlink_to(BEIRUT / "imgs_1")
    write_scene(drop / "beirut_20171003.tif", cloudy=False, overcast=True)
    config = tmp_path / "nightly.yaml"
    config.write_text("state_dir: state\ndrop_folder: drop\nlog_format: json\nreport: false\n")
    summary = night(config, "n1")  # exit code 0: a cloudy night is no failure
    (pair,) = summary["pairs"]
    assert pair["status"] == "skipped" and pair["clouds"]["after"] > 0.9
    assert summary["counts"]["failed"] == 0 and summary["new_alerts"] == []


def test_drop_folder_of_esa_products_is_paired_by_tile_and_sensing_day(tmp_path: Path) -> None:
    from groundbreak.datasets.product_writer import read_band_images, write_product

    drop = tmp_path / "drop"
    drop.mkdir()
    first = write_product(drop, read_band_images(BEIRUT / "imgs_1"), baseline="02.04",
                          sensing_time="2016-09-29T08:17:39Z", zipped=True)
    second = write_product(drop, read_band_images(BEIRUT / "imgs_2"),
                           sensing_time="2023-10-03T08:17:39Z")  # baseline 04.00: offset
    assert first.suffix == ".zip" and second.suffix == ".SAFE"
    config = tmp_path / "nightly.yaml"
    config.write_text("state_dir: state\ndrop_folder: drop\nlog_format: json\nreport: false\n")
    summary = night(config, "n1")
    (pair,) = summary["pairs"]
    assert pair["pair_id"] == "T36SYC_20160929_20231003"
    assert pair["status"] == "scored"


def test_an_alert_hidden_by_clouds_keeps_its_status_and_says_so(
    tmp_path: Path, capsys
) -> None:
    """A watch-list site that alerted is under a cloud the next night: not observed, no new
    alert, status kept, and `alerts list` / `history` say which night could not see it."""
    grid = open_scene(BEIRUT / "imgs_1").grid

    def square(row0: int, col0: int, size: int) -> list[list[float]]:
        corners = [(row0, col0), (row0, col0 + size), (row0 + size, col0 + size),
                   (row0 + size, col0), (row0, col0)]
        return [list(grid.transform @ (c, r)) for r, c in corners]

    sites = tmp_path / "sites.geojson"
    sites.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": "lot", "name": "Building lot"},
         "geometry": {"type": "Polygon", "coordinates": [square(0, 0, 96)]}}]}))
    clear, cloudy = write_scene(tmp_path / "clear.tif", False), write_scene(
        tmp_path / "cloudy.tif", False, overcast=True)
    config = tmp_path / "nightly.yaml"
    config.write_text(f"state_dir: state\nsites: {sites}\nalert_threshold: 0\n"
                      "log_format: json\nreport: false\nalerts: {confirm_detections: 1}\n")
    for run_id, after in (("n1", clear), ("n2", cloudy)):
        pairs = tmp_path / f"{run_id}.csv"
        pairs.write_text(f"pair_id,before,after\nbeirut_{run_id},{BEIRUT / 'imgs_1'},{after}\n")
        assert groundbreak(["nightly", "--config", str(config), "--pairs", str(pairs),
                            "--run-id", run_id]) == 0
    summary = json.loads((tmp_path / "state" / "runs" / "n2" / "summary.json").read_text())
    assert summary["pairs"][0]["status"] == "skipped"  # overcast: too cloudy to judge
    assert summary["counts"]["new_alerts"] == 0 and summary["counts"]["ongoing_alerts"] == 0
    sites_csv = (tmp_path / "state" / "runs" / "n2" / "sites.csv").read_text()
    assert '"lot"' in sites_csv and "False" in sites_csv  # listed, as not observed
    capsys.readouterr()
    assert groundbreak(["alerts", "list", "--state", str(tmp_path / "state"),
                        "--format", "json"]) == 0
    (alert,) = json.loads(capsys.readouterr().out)
    assert alert["status"] == "new" and alert["unobserved_in"] == "n2"
    with NightlyState(tmp_path / "state") as state:
        assert [e["event"] for e in state.alert_events("lot")] == ["new", "unobserved"]


def test_a_cloudy_baseline_is_measured_and_never_becomes_a_reference(tmp_path: Path) -> None:
    """A baseline was never predicted, so its clouds were unknown and it counted as clear: a
    year later the overcast one, nearer the anniversary, was chosen over a clear one."""
    drop = tmp_path / "drop"
    drop.mkdir()
    write_scene(drop / "beirut_20170110.tif", cloudy=False, overcast=True)
    write_scene(drop / "beirut_20170120.tif", cloudy=False)
    config = tmp_path / "nightly.yaml"
    config.write_text("state_dir: state\ndrop_folder: drop\nlog_format: json\nreport: false\n")
    first = night(config, "n1")
    assert first["pairs"] == [] and len(first["baselines"]) == 2
    with NightlyState(tmp_path / "state", read_only=True) as state:
        clouds = state.cloud_fractions()
    assert clouds[str(drop / "beirut_20170110.tif")] > 0.9
    assert clouds[str(drop / "beirut_20170120.tif")] < 0.2
    write_scene(drop / "beirut_20180115.tif", cloudy=False)
    (pair,) = night(config, "n2")["pairs"]
    assert pair["pair_id"] == "beirut_20170120_20180115"  # not the overcast 20170110
