"""The state code the review app and ``groundbreak alerts`` share: decisions with an analyst,
versions and conflicts, reopen, and the upgrade of a schema-1 state."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from groundbreak.infer.cli import main as groundbreak
from groundbreak.infer.nightly.alert_policy import AlertPolicy
from groundbreak.infer.nightly.state import SCHEMA_VERSION, AlertConflictError, NightlyState

SITES = [{"site_id": "a", "name": "A", "pair_id": "p", "score": 0.8},
         {"site_id": "b", "name": "B", "pair_id": "p", "score": 0.6}]
ONE_DETECTION = AlertPolicy(confirm_detections=1)


def sites_of(pair_id: str) -> list[dict]:
    """The sites seen again on another pair (a new acquisition)."""
    return [dict(site, pair_id=pair_id) for site in SITES]


def make_state(root: Path) -> Path:
    with NightlyState(root / "state") as state:
        state.update_alerts("n1", SITES, ONE_DETECTION)
    return root / "state"


def test_versions_change_with_decisions_only(tmp_path: Path) -> None:
    with NightlyState(make_state(tmp_path)) as state:
        assert state.decision_version("a") == 0
        state.decide("a", "dismiss", "crane", "Ann", expected_version=0)
        version = state.decision_version("a")
        assert version > 0
        state.update_alerts("n2", sites_of("p2"), ONE_DETECTION)  # a night: not a decision
        assert state.decision_version("a") == version
        with pytest.raises(AlertConflictError, match="dismissed by Ann"):
            state.decide("a", "confirm", "mine", "Ben", expected_version=0)
        assert state.alert("a")["status"] == "dismissed" and state.alert("a")["note"] == "crane"
        state.decide("a", "reopen", None, "Ben", expected_version=version)
        alert = state.alert("a")
        assert alert["status"] == "ongoing" and alert["dismissed_score"] is None
        events = state.alert_events("a")
        assert [(e["event"], e["analyst"]) for e in events] == [
            ("new", None), ("dismissed", "Ann"), ("suppressed", None), ("reopened", "Ben")]
        state.decide("b", "confirm")
        state.decide("b", "reopen")  # seen by two nights: back to ongoing (one night: new)
        assert state.alert("b")["status"] == "ongoing"
        with pytest.raises(KeyError):
            state.decide("nope", "confirm")
        with pytest.raises(ValueError, match="unknown decision"):
            state.decide("a", "approve")  # type: ignore[arg-type]


def test_a_schema_1_state_reads_and_upgrades_on_write(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    state_dir = make_state(tmp_path)
    db = sqlite3.connect(state_dir / "state.sqlite")  # as schema 1 wrote it
    db.execute("ALTER TABLE alert_events DROP COLUMN analyst")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    assert groundbreak(["alerts", "history", "a", "--state", str(state_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].rstrip().endswith("-")  # no analyst yet
    assert groundbreak(["alerts", "confirm", "a", "--state", str(state_dir),
                        "--analyst", "Cy"]) == 0
    assert groundbreak(["alerts", "history", "a", "--state", str(state_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].rstrip().endswith("Cy")
    with NightlyState(state_dir, read_only=True) as state:
        version = state.db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION)


def test_catalogue_pairs_find_their_scenes_in_the_stored_acquisitions(tmp_path: Path) -> None:
    from groundbreak.infer.nightly.state import AcquisitionRecord
    from groundbreak.infer.review.crops import pair_spec

    with NightlyState(tmp_path / "state") as state:
        state.record_acquisitions([
            AcquisitionRecord("tile_a", "2024-01-05", "/data/a1.json", "stac"),
            AcquisitionRecord("tile_a", "2024-02-09", "/data/a2.json", "stac"),
            AcquisitionRecord("tile_a_b", "2024-02-09", "/data/b2.json", "stac"),
        ], "n1")
        spec = pair_spec(state, {"pair_id": "tile_a_20240105_20240209", "config": "{}"})
        assert spec is not None
        assert (str(spec.before), str(spec.after)) == ("/data/a1.json", "/data/a2.json")
        assert spec.after_date == "2024-02-09"
        assert pair_spec(state, {"pair_id": "tile_a_20230101_20240209", "config": "{}"}) is None
