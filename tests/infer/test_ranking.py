"""Ranking: probability raster -> sites, and rank_pairs / ``groundbreak rank`` end to end.

Runs on the real OSCD and LEVIR-CD fixture crops with a tiny untrained model bundle: the point
is the plumbing (failures, files, columns, order, georeference), not the model's skill.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from groundbreak.datasets.bands import RGB_BANDS, SENTINEL2_BANDS
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.report.report import MAX_CARDS
from groundbreak.infer.sites.alerts_io import DETAIL_COLUMNS, SITE_COLUMNS
from groundbreak.infer.sites.ranking import PairOutcome, rank_pairs, rank_sites, score_prediction
from groundbreak.infer.sites.sites import WGS84, load_watch_list
from groundbreak.train.bundle import load_bundle, save_bundle
from groundbreak.train.model import ChangeUNet

OSCD_DATES = {"beirut": ("20150820", "20171003"), "abudhabi": ("20160120", "20180328"),
              "dubai": ("20151211", "20180330")}


def oscd_spec(fixtures: Path, city: str) -> PairSpec:
    before, after = OSCD_DATES[city]
    root = fixtures / "oscd" / city
    return PairSpec(city, root / "imgs_1", root / "imgs_2", before_date=before, after_date=after)


def make_bundle(out_dir: Path, bands, mean, std) -> Path:
    """A tiny untrained ChangeUNet bundle (mobilenet_v2, three stages)."""
    torch.manual_seed(0)
    model = ChangeUNet(len(bands), "early", "mobilenet_v2", 3, (32, 16, 8))
    meta = {"name": "tiny-test", "bands": list(bands), "chip_size": 64, "threshold": 0.5,
            "normalization": {"mean": list(map(float, mean)), "std": list(map(float, std))}}
    return save_bundle(model, meta, out_dir)


@pytest.fixture(scope="module")
def s2_bundle(tmp_path_factory, fixtures_dir: Path):
    """A 13-band bundle normalised with the real statistics of the beirut fixture."""
    pair = oscd_spec(fixtures_dir, "beirut").open(with_label=False)
    before, after = pair.read(SENTINEL2_BANDS)
    both = np.concatenate([before, after], axis=2)
    mean, std = np.nanmean(both, axis=(1, 2)), np.nanstd(both, axis=(1, 2)) + 1.0
    return load_bundle(make_bundle(tmp_path_factory.mktemp("s2"), SENTINEL2_BANDS, mean, std))


def watch_list_on(fixtures_dir: Path, path: Path) -> Path:
    """Three sites: two on the beirut crop, one on abudhabi, one far away (the Atlantic)."""
    features = []

    def add(site_id: str, name: str, city: str, rows: tuple[int, int], cols: tuple[int, int]):
        grid = oscd_spec(fixtures_dir, city).open(with_label=False).grid
        x0, y0 = grid.transform @ (cols[0], rows[0])
        x1, y1 = grid.transform @ (cols[1], rows[1])
        geometry = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        features.append({"type": "Feature", "properties": {"site_id": site_id, "name": name},
                         "geometry": transform_geom(grid.crs, WGS84, mapping(geometry))})

    add("bei-port", "Beirut port", "beirut", (10, 40), (10, 50))
    add("bei-town", "Beirut town", "beirut", (60, 90), (30, 70))
    add("auh-1", "Abu Dhabi block", "abudhabi", (20, 60), (20, 60))
    features.append({"type": "Feature", "properties": {"site_id": "sea", "name": "Open sea"},
                     "geometry": mapping(box(-30.0, 10.0, -29.9, 10.1))})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


# ---------------------------------------------------------------------------------------------
# From a given probability raster (no model)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def beirut_prediction(tmp_path_factory, fixtures_dir: Path) -> tuple[Path, Path, float]:
    """A probability raster on the beirut pair grid from the real red-band change."""
    pair = oscd_spec(fixtures_dir, "beirut").open(with_label=False)
    before, after = pair.read(["B04"])
    change = np.abs(after[0] - before[0])
    probability = np.clip(change / np.nanpercentile(change, 99), 0, 1).astype(np.float32)
    out = tmp_path_factory.mktemp("beirut_prediction")
    grid = pair.grid
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1,
               "crs": grid.crs, "transform": grid.transform}
    with rasterio.open(out / "probability.tif", "w", dtype="float32", nodata=float("nan"),
                       **profile) as dst:
        dst.write(probability, 1)
    with rasterio.open(out / "mask.tif", "w", dtype="uint8", nodata=255, **profile) as dst:
        dst.write((probability >= 0.5).astype(np.uint8), 1)
    return out / "probability.tif", out / "mask.tif", grid.pixel_area_m2()


def test_discovered_sites_from_a_real_probability_raster(beirut_prediction) -> None:
    probability, mask, pixel_area = beirut_prediction
    scores = score_prediction("beirut", probability, mask, 0.5, min_area_m2=300,
                              before_date="2015-08-20", after_date="2017-10-03")
    assert scores.sites, "the real red-band change holds changed regions"
    assert [row["site_id"] for row in scores.sites] == [row["site_id"] for row in scores.changes]
    for row in scores.sites:
        assert row["site_id"].startswith("beirut-c")
        assert row["kind"] == "discovered"
        assert row["changed_pixels"] >= 3
        assert row["changed_area_m2"] == pytest.approx(
            row["changed_pixels"] * pixel_area, rel=1e-4)
        assert 35.531 < row["lon"] < 35.541 and 33.905 < row["lat"] < 33.915
        assert row["geometry"].is_valid and row["geometry"].area > 0
        assert (row["before_date"], row["after_date"]) == ("2015-08-20", "2017-10-03")
    with rasterio.open(mask) as src:
        changed = int((src.read(1) == 1).sum())
    assert sum(row["changed_pixels"] for row in scores.sites) <= changed


def test_watch_list_sites_from_a_real_probability_raster(
    beirut_prediction, fixtures_dir: Path, tmp_path: Path
) -> None:
    probability, mask, _ = beirut_prediction
    sites = load_watch_list(watch_list_on(fixtures_dir, tmp_path / "w.geojson"))
    scores = score_prediction("beirut", probability, mask, 0.5, sites)
    assert [row["site_id"] for row in scores.sites] == ["bei-port", "bei-town"]
    assert [row["name"] for row in scores.sites] == ["Beirut port", "Beirut town"]
    for row, site in zip(scores.sites, sites[:2], strict=True):
        assert row["kind"] == "watch"
        assert row["geometry"].equals(site.geometry)  # the watch-list polygon, EPSG:4326
        assert 0.0 <= row["score"] <= 1.0
    assert scores.changes  # change regions are discovered for changes.geojson all the same


def test_rank_sites_orders_by_score_then_area_then_peak() -> None:
    columns = ("site_id", "score", "changed_area_m2", "max_probability")
    values = [("b", 0.5, 10, 0.9), ("a", 0.5, 10, 0.9), ("c", 0.7, 1, 0.6), ("d", 0.5, 20, 0.5),
              ("e", 0.5, 10, 1.0)]
    rows = [dict(zip(columns, v, strict=True), pair_id="p") for v in values]
    ranked = rank_sites(rows)
    assert list(ranked["site_id"]) == ["c", "d", "e", "a", "b"]
    assert list(ranked["rank"]) == [1, 2, 3, 4, 5]
    assert rank_sites([]).empty


# ---------------------------------------------------------------------------------------------
# rank_pairs end to end
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def discovery_run(tmp_path_factory, fixtures_dir: Path, s2_bundle):
    pairs = [
        oscd_spec(fixtures_dir, "beirut"),
        PairSpec("gone", fixtures_dir / "oscd" / "nowhere", fixtures_dir / "oscd" / "dubai"),
        PairSpec("rgb-only", fixtures_dir / "levir" / "A" / "test_2_0000_0000.png",
                 fixtures_dir / "levir" / "B" / "test_2_0000_0000.png"),
        oscd_spec(fixtures_dir, "abudhabi"),
    ]
    outcomes: list[PairOutcome] = []
    out = tmp_path_factory.mktemp("run")
    result = rank_pairs(pairs, out, s2_bundle, min_area_m2=200, alert_threshold=0.3,
                        predictor_kwargs={"device": "cpu"}, on_pair_done=outcomes.append,
                        write_report=False)
    return result, outcomes, out


def test_failed_pairs_are_listed_and_the_others_complete(discovery_run) -> None:
    result, outcomes, out = discovery_run
    assert [(o.pair_id, o.ok) for o in outcomes] == [
        ("beirut", True), ("gone", False), ("rgb-only", False), ("abudhabi", True)]
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["pair_id"]) == ["gone", "rgb-only"]
    gone, rgb = failures["reason"]
    assert gone.startswith("pair gone: ") and "nowhere" in gone and "does not exist" in gone
    assert rgb.startswith("pair rgb-only: ") and "B01" in rgb and "test_2_0000_0000.png" in rgb
    assert "\n" not in gone + rgb
    assert not result.ok
    assert set(result.sites["pair_id"]) <= {"beirut", "abudhabi"}
    assert list(result.timings["status"]) == ["ok", "failed", "failed", "ok"]


def test_run_folder_holds_every_output(discovery_run, fixtures_dir: Path) -> None:
    _, _, out = discovery_run
    for name in ("sites.csv", "alerts.csv", "alerts.geojson", "changes.geojson", "failures.csv"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*tmp*")), "no temporary file is left behind"
    for city in ("beirut", "abudhabi"):
        grid = oscd_spec(fixtures_dir, city).open(with_label=False).grid
        for raster in ("probability.tif", "mask.tif"):
            with rasterio.open(out / "pairs" / city / raster) as src:
                assert (src.width, src.height, src.crs) == (grid.width, grid.height, grid.crs)
                assert src.transform.almost_equals(grid.transform)


def test_sites_csv_is_ranked_with_the_alert_columns(discovery_run) -> None:
    result, _, out = discovery_run
    sites = pd.read_csv(out / "sites.csv", dtype={"before_date": str, "after_date": str})
    assert tuple(sites.columns) == SITE_COLUMNS + DETAIL_COLUMNS
    assert len(sites) == len(result.sites) > 0
    assert list(sites["rank"]) == list(range(1, len(sites) + 1))
    assert sites["score"].is_monotonic_decreasing
    assert sites["score"].between(0, 1).all()
    assert (sites["area_unit"] == "m2").all()
    beirut = sites[sites["pair_id"] == "beirut"]
    assert (beirut["before_date"] == "20150820").all()
    assert beirut["site_id"].str.match(r"^beirut-c\d{4}$").all()


def test_alerts_are_the_sites_over_the_threshold_in_csv_and_geojson(discovery_run) -> None:
    result, _, out = discovery_run
    alerts = pd.read_csv(out / "alerts.csv")
    expected = result.sites[result.sites["score"] >= 0.3]
    assert list(alerts["site_id"]) == list(expected["site_id"])
    document = json.loads((out / "alerts.geojson").read_text())
    assert document["type"] == "FeatureCollection"
    assert [f["properties"]["site_id"] for f in document["features"]] == list(alerts["site_id"])
    for feat, (_, row) in zip(document["features"], alerts.iterrows(), strict=True):
        geometry = shape(feat["geometry"])
        assert geometry.geom_type in ("Polygon", "MultiPolygon")
        assert geometry.bounds[0] > 35 and geometry.bounds[1] > 24  # lon, lat: EPSG:4326
        assert geometry.envelope.buffer(1e-9).contains(geometry.centroid)
        assert feat["properties"]["rank"] == row["rank"]
        assert feat["properties"]["score"] == pytest.approx(row["score"], abs=1e-4)


def test_changes_geojson_holds_every_discovered_region(discovery_run) -> None:
    result, _, out = discovery_run
    document = json.loads((out / "changes.geojson").read_text())
    ids = [f["properties"]["region_id"] for f in document["features"]]
    assert sorted(ids) == sorted(result.changes["region_id"])
    assert all(f["properties"]["pair_id"] in ("beirut", "abudhabi") for f in document["features"])


def test_rank_pairs_with_a_watch_list(tmp_path: Path, fixtures_dir: Path, s2_bundle) -> None:
    watch = watch_list_on(fixtures_dir, tmp_path / "watch.geojson")
    pairs = [oscd_spec(fixtures_dir, "beirut"), oscd_spec(fixtures_dir, "abudhabi")]
    result = rank_pairs(pairs, tmp_path / "run", s2_bundle, sites=watch, alert_threshold=0.0,
                        predictor_kwargs={"device": "cpu"}, write_report=False)
    assert result.ok
    assert sorted(result.sites["site_id"]) == ["auh-1", "bei-port", "bei-town"]  # not "sea"
    assert set(result.sites["kind"]) == {"watch"}
    assert dict(zip(result.sites["site_id"], result.sites["pair_id"], strict=True)) == {
        "auh-1": "abudhabi", "bei-port": "beirut", "bei-town": "beirut"}
    document = json.loads((tmp_path / "run" / "alerts.geojson").read_text())
    by_id = {f["properties"]["site_id"]: shape(f["geometry"]) for f in document["features"]}
    sites = {s.site_id: s.geometry for s in load_watch_list(watch)}
    for site_id, geometry in by_id.items():
        assert geometry.equals_exact(sites[site_id], 1e-6)


def test_pairs_without_crs_report_pixels(tmp_path: Path, fixtures_dir: Path) -> None:
    bundle = make_bundle(tmp_path / "rgb", RGB_BANDS, [100.0] * 3, [50.0] * 3)
    levir = fixtures_dir / "levir"
    pairs = [PairSpec("levir", levir / "A" / "val_27_0000_0256.png",
                      levir / "B" / "val_27_0000_0256.png")]
    result = rank_pairs(pairs, tmp_path / "run", bundle, min_area_m2=50, alert_threshold=0.0,
                        predictor_kwargs={"device": "cpu", "window": 256, "overlap": 0})
    assert result.ok and not result.sites.empty
    assert (result.sites["area_unit"] == "px").all()
    assert result.sites["lon"].isna().all()
    assert (result.sites["changed_area_m2"] == result.sites["changed_pixels"]).all()
    document = json.loads((tmp_path / "run" / "alerts.geojson").read_text())
    assert all(f["geometry"] is None for f in document["features"])
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    cards = min(len(result.alerts), MAX_CARDS)
    assert page.count("data:image/png;base64,") == 3 * cards  # crops of plain images too


# ---------------------------------------------------------------------------------------------
# The CLI
# ---------------------------------------------------------------------------------------------


def write_pairs_csv(path: Path, fixtures_dir: Path, cities: list[str], extra: str = "") -> Path:
    lines = ["pair_id,before,after,before_date,after_date"]
    for city in cities:
        root = fixtures_dir / "oscd" / city
        lines.append(f"{city},{root / 'imgs_1'},{root / 'imgs_2'},{','.join(OSCD_DATES[city])}")
    path.write_text("\n".join(lines + ([extra] if extra else [])) + "\n")
    return path


def test_cli_exit_codes(tmp_path: Path, fixtures_dir: Path, s2_bundle, capsys) -> None:
    common = ["--model", str(s2_bundle.path), "--device", "cpu", "-q"]
    good = write_pairs_csv(tmp_path / "good.csv", fixtures_dir, ["dubai"])
    assert groundbreak(["rank", "--pairs", str(good), "--out", str(tmp_path / "ok"), *common]) == 0
    assert (tmp_path / "ok" / "report.html").is_file()

    partial = write_pairs_csv(tmp_path / "partial.csv", fixtures_dir, ["dubai"],
                              extra="lost,missing_1,missing_2,,")
    run = tmp_path / "partial"
    assert groundbreak(["rank", "--pairs", str(partial), "--out", str(run), *common]) == 1
    err = capsys.readouterr().err
    assert "pair lost:" in err and "missing_1" in err
    assert list(pd.read_csv(run / "failures.csv")["pair_id"]) == ["lost"]
    assert (run / "sites.csv").is_file() and (run / "report.html").is_file()

    bad_sites = tmp_path / "bad.geojson"
    bad_sites.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", '
                         '"properties": {"name": "x"}, "geometry": null}]}')
    args = ["rank", "--pairs", str(good), "--out", str(tmp_path / "bad"), "--sites",
            str(bad_sites), *common]
    assert groundbreak(args) == 2
    assert "bad.geojson" in capsys.readouterr().err
    args = ["rank", "--pairs", str(good), "--out", str(tmp_path / "x"), "--alert-threshold",
            "1.5", *common]
    assert groundbreak(args) == 2
    assert groundbreak(["rank", "--out", str(tmp_path / "x")]) == 2  # --pairs is required
    args = ["rank", "--pairs", str(good), "--out", str(tmp_path / "w"), "--window", "33", *common]
    assert groundbreak(args) == 2
    assert "window 33 must be a positive multiple" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
