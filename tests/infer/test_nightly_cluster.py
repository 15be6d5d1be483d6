"""The nightly batch on Dask workers (key ``cluster``): real LocalClusters of worker processes on
127.0.0.1, the real OSCD fixture pairs and a tiny untrained model; the results must be the
one-process night's, also when a worker dies in the middle of a pair."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import rasterio

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.layouts import read_oscd_dates
from groundbreak.infer.atomic import is_temp_name
from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.cluster import usable_cores
from groundbreak.infer.nightly.config import build_config
from groundbreak.infer.nightly.state import NightlyState

distributed = pytest.importorskip("distributed")

OSCD = Path(__file__).resolve().parents[1] / "fixtures" / "oscd"
CITIES = {c: read_oscd_dates(OSCD / c / "dates.txt") for c in ("beirut", "abudhabi", "dubai")}
TIME_COLUMNS = ("seconds", "started_at", "finished_at", "first_seen_at", "last_seen_at",
                "updated_at", "decided_at", "at")


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path) -> tuple[Path, Path]:
    """The night's config (discovered sites, every region and site counts) and its pairs: the
    three fixture cities, a pair that fails on its worker (a corrupt band) and one that fails
    before any worker sees it (a missing scene)."""
    root = tmp_path_factory.mktemp("night")
    corrupt = shutil.copytree(OSCD / "beirut" / "imgs_2", root / "corrupt")
    next(corrupt.glob("*_B03.tif")).write_bytes(b"II*\x00 this is not a TIFF any more")
    pairs = root / "pairs.csv"
    with pairs.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pair_id", "before", "after", "before_date", "after_date"])
        for city, (before_date, after_date) in CITIES.items():
            writer.writerow([city, OSCD / city / "imgs_1", OSCD / city / "imgs_2",
                             before_date, after_date])
        writer.writerow(["corrupt_tiff", OSCD / "beirut" / "imgs_1", corrupt, "", ""])
        writer.writerow(["missing_scene", OSCD / "beirut" / "imgs_1", root / "nowhere", "", ""])
    config = root / "nightly.yaml"
    config.write_text(f"model: {tiny_bundle}\npairs: {pairs}\nmin_area_m2: 0\nalert_threshold: 0\n"
                      "log_format: json\nreport: false\npredictor:\n  device: cpu\n")
    return config, pairs


def run(config: Path, state: Path, *extra: str) -> int:
    return groundbreak(["nightly", "--config", str(config), "--state", str(state),
                        "--run-id", "n1", *extra])


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory, night: tuple[Path, Path]) -> Path:
    """The state of the night run in this process, one pair at a time (the reference)."""
    state = tmp_path_factory.mktemp("in-process") / "state"
    assert run(night[0], state) == 1  # the two bad pairs fail, the rest completes
    return state


def tables(state: Path) -> dict[str, pd.DataFrame]:
    """The night's tables and the state's pairs, site scores, discovered sites and alerts,
    without times and paths (which differ between any two runs)."""
    run_dir = state / "runs" / "n1"
    out = {name: pd.read_csv(run_dir / name) for name in ("sites.csv", "alerts.csv",
                                                          "failures.csv")}
    with NightlyState(state) as db:
        rows = {
            "pairs": db.db.execute("SELECT pair_id, status, reason, inputs_hash FROM pairs "
                                   "ORDER BY id").fetchall(),
            "site_scores": db.db.execute("SELECT p.pair_id, s.* FROM site_scores s JOIN pairs p "
                                         "ON p.id = s.pair_row ORDER BY p.id, s.rowid")
            .fetchall(),
            "change_regions": db.db.execute("SELECT p.pair_id, c.region_id, c.score FROM "
                                            "change_regions c JOIN pairs p ON p.id = c.pair_row "
                                            "ORDER BY p.id, c.rowid").fetchall(),
            "discovered": db.db.execute("SELECT * FROM discovered_sites ORDER BY number")
            .fetchall(),
            "alerts": db.alerts(),
        }
    for name, found in rows.items():
        frame = pd.DataFrame([dict(r) for r in found])
        out[name] = frame.drop(columns=[c for c in frame.columns if c in TIME_COLUMNS
                                        or c in ("id", "pair_row")])
    details = out["site_scores"].pop("details").map(json.loads)
    for key in ("geometry", "grid_geometry"):  # outlines: compared through the ids they got
        details.map(lambda d, key=key: d.pop(key, None))
    out["site_details"] = pd.DataFrame(list(details))
    return out


def assert_same_night(state: Path, reference: Path, cities: tuple[str, ...] = tuple(CITIES)
                      ) -> None:
    got, want = tables(state), tables(reference)
    for name in want:  # scores may differ in the last float bits: 1 torch thread per worker
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=False, rtol=1e-5,
                                      atol=1e-6, obj=name)
    for city in cities or [p.name for p in (reference / "runs" / "n1" / "pairs").iterdir()]:
        pair_dir = Path("runs") / "n1" / "pairs" / city
        for name in ("probability.tif", "mask.tif"):
            with rasterio.open(state / pair_dir / name) as a, \
                    rasterio.open(reference / pair_dir / name) as b:
                assert repr(a.profile) == repr(b.profile)  # nodata NaN != NaN
                np.testing.assert_allclose(a.read(), b.read(), atol=1e-5)
    assert [p for p in state.rglob("*") if is_temp_name(p.name)] == []


def clouds_test_module() -> ModuleType:
    """tests/infer/test_nightly_clouds.py, for its real cloudy scenes."""
    path = Path(__file__).with_name("test_nightly_clouds.py")
    spec = importlib.util.spec_from_file_location("nightly_clouds_scenes", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_local_cluster_night_matches_the_in_process_night(
    tmp_path: Path, tiny_bundle: Path
) -> None:
    """A drop-folder night whose second Beirut acquisition is cloudy: the pair after it is
    cancelled on the workers and the next clear one compared with the last clear, as in one
    process; Dubai's pair and discovered sites from several pairs are numbered the same."""
    write_scene = clouds_test_module().write_scene
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "beirut_20150820").symlink_to(OSCD / "beirut" / "imgs_1")
    write_scene(drop / "beirut_20171003.tif", cloudy=False)
    write_scene(drop / "beirut_20171102.tif", cloudy=True)
    write_scene(drop / "beirut_20171202.tif", cloudy=False)
    (drop / "dubai_20151211").symlink_to(OSCD / "dubai" / "imgs_1")
    (drop / "dubai_20180330").symlink_to(OSCD / "dubai" / "imgs_2")
    config = tmp_path / "nightly.yaml"
    config.write_text(f"model: {tiny_bundle}\ndrop_folder: {drop}\nmin_area_m2: 0\n"
                      "alert_threshold: 0\ncloudy_fraction: 0.2\nlog_format: json\n"
                      "report: false\npairing: {rule: consecutive}\npredictor:\n  device: cpu\n")
    reference, state = tmp_path / "in-process", tmp_path / "state"
    assert run(config, reference) == 0
    assert run(config, state, "--cluster", "local:2") == 0
    assert_same_night(state, reference, cities=())
    summary = json.loads((state / "runs" / "n1" / "summary.json").read_text())
    assert [(p["pair_id"], p["status"]) for p in summary["pairs"]] == [
        ("beirut_20150820_20171003", "scored"), ("beirut_20171003_20171102", "skipped"),
        ("beirut_20171003_20171202", "scored"), ("dubai_20151211_20180330", "scored")]
    assert not (state / "runs" / "n1" / "pairs" / "beirut_20171102_20171202").exists()
    log = [json.loads(line) for line in (state / "runs" / "n1" / "nightly.log.jsonl").open()]
    started = next(e for e in log if e["event"] == "cluster_started")
    assert started["workers"] == 2 and started["scheduler"].startswith("tcp://127.0.0.1:")
    # two workers of one pair at a time share this machine's cores
    assert started["torch_threads"] == {"127.0.0.1": max(1, usable_cores() // 2)}
    with NightlyState(state) as db:
        assert db.runs("n1")[0]["config"] and "local:2" in db.runs("n1")[0]["config"]


def test_a_worker_killed_in_the_middle_of_a_pair_has_it_redone(
        tmp_path: Path, night: tuple[Path, Path], in_process: Path) -> None:
    """A running scheduler (the ``tcp://`` path) whose worker dies as it starts a pair."""
    from distributed import Client, LocalCluster, WorkerPlugin

    class KillOnce(WorkerPlugin):
        """The first worker to start the pair kills its own process (SIGKILL, no goodbye)."""

        def __init__(self, pair_id: str, marker: str) -> None:
            self.pair_id, self.marker = pair_id, marker

        def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
            if finish != "executing" or f"-{self.pair_id}-" not in str(key):
                return
            try:  # only once, over every worker process of the cluster
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)

    marker = tmp_path / "killed"
    state = tmp_path / "state"
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as cluster, \
            Client(cluster) as client:
        client.register_plugin(KillOnce("dubai", str(marker)))
        pids = set(client.run(os.getpid).values())
        assert run(night[0], state, "--cluster", cluster.scheduler_address) == 1
        assert marker.exists()  # a worker died while it held the pair
        assert set(client.run(os.getpid).values()) != pids  # ... and was restarted
    assert_same_night(state, in_process)
    with NightlyState(state) as db:  # redone elsewhere, recorded once
        assert sorted(r["pair_id"] for r in db.pair_rows() if r["status"] == "done") == sorted(
            CITIES)
    # the same night again: every scored pair is reused, only the failed ones are tried again
    assert run(night[0], state) == 1
    counts = json.loads((state / "runs" / "n1" / "summary.json").read_text())["counts"]
    assert (counts["reused"], counts["scored"], counts["failed"]) == (3, 0, 2)


def test_cluster_key_is_validated() -> None:
    good = {"state_dir": "/tmp/s", "pairs": str(OSCD / "test.txt")}
    assert build_config({**good, "cluster": "local:3"}).cluster == "local:3"
    assert build_config({**good, "cluster": "tcp://10.0.0.5:8786"}).cluster == (
        "tcp://10.0.0.5:8786")
    assert build_config(good).cluster is None
    assert build_config({**good, "cluster": "local:2"}, overrides={"cluster": "none"}).cluster \
        is None
    for bad in ("local:0", "local:two", "10.0.0.5:8786", "tcp://host", 4):
        with pytest.raises(InputError, match="key 'cluster'"):
            build_config({**good, "cluster": bad})
