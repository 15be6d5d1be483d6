"""The demo: the shipped default bundle ranks the bundled tile pairs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from groundbreak.datasets.layouts import read_pairs_csv
from groundbreak.infer.cli import main
from groundbreak.infer.cli.demo import DEMO_PAIRS, DEMO_SITES
from groundbreak.train.bundle import default_bundle_path, load_bundle


def test_shipped_bundle_loads_and_reads_the_demo_scenes() -> None:
    bundle = load_bundle(default_bundle_path())
    assert 0.0 < bundle.threshold < 1.0
    for spec in read_pairs_csv(DEMO_PAIRS):
        pair = spec.open()
        bundle.check_scene_bands(pair.before)
        bundle.check_scene_bands(pair.after)


def test_demo_writes_ranked_alerts_and_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo-run"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out

    sites = pd.read_csv(out / "sites.csv")
    watch_list = json.loads(DEMO_SITES.read_text())["features"]
    assert sorted(sites["site_id"]) == sorted(f["properties"]["site_id"] for f in watch_list)
    assert list(sites["rank"]) == list(range(1, len(sites) + 1))
    assert sites["score"].is_monotonic_decreasing
    alerts = pd.read_csv(out / "alerts.csv")
    assert 0 < len(alerts) < len(sites), "the real model should alert on some sites, not all"
    # The Las Vegas housing tract is plain new construction: the real model must find it.
    assert "lv-02" in set(alerts["site_id"])
    assert json.loads((out / "alerts.geojson").read_text())["features"]
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") >= 3 * len(alerts)
    for pair_id in ("lasvegas", "dubai", "chongqing"):
        assert (out / "pairs" / pair_id / "probability.tif").is_file()
