"""A state database written by the previous release (schema 2) is migrated in place, losing
nothing, and the new alert policy works on it.

``tests/fixtures/state/state_schema2.sqlite`` was written by groundbreak's nightly state at
commit f096887 (schema 2): one night, three sites (one confirmed by an analyst, one dismissed,
one below the threshold), an acquisition.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from groundbreak.infer.nightly.alert_policy import AlertPolicy
from groundbreak.infer.nightly.state import SCHEMA_VERSION, NightlyState

SCHEMA2 = Path(__file__).resolve().parents[1] / "fixtures" / "state" / "state_schema2.sqlite"


def table(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(query).fetchall()


@pytest.fixture
def old_state(tmp_path: Path) -> Path:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    shutil.copy(SCHEMA2, state_dir / "state.sqlite")
    return state_dir


def test_schema2_state_is_migrated_in_place_and_keeps_every_row(old_state: Path) -> None:
    db_path = old_state / "state.sqlite"
    queries = {
        "runs": "SELECT run_id, status, config FROM runs",
        "pairs": "SELECT pair_id, inputs_hash, outputs FROM pairs",
        "site_scores": "SELECT site_id, score, changed_area_m2 FROM site_scores",
        "alerts": "SELECT site_id, name, status, score, max_score, dismissed_score, note, "
                  "first_run_id, last_run_id FROM alerts ORDER BY site_id",
        "alert_events": "SELECT site_id, event, status, note, analyst FROM alert_events",
        "acquisitions": "SELECT * FROM acquisitions",
    }
    before = {name: table(db_path, q) for name, q in queries.items()}
    assert [row[2] for row in before["alerts"]] == ["confirmed", "dismissed"]
    with NightlyState(old_state) as state:
        assert state.db.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION)
    after = {name: table(db_path, q) for name, q in queries.items()}
    assert after == before
    assert "candidate" in table(db_path, "SELECT sql FROM sqlite_master WHERE name = 'alerts'")[
        0][0]


def test_the_new_policy_runs_on_a_migrated_state(old_state: Path) -> None:
    with NightlyState(old_state) as state:
        policy = AlertPolicy(confirm_detections=1)
        rows = [{"site_id": "s2", "name": "Yard B", "pair_id": "p2", "score": 0.7,
                 "changed_area_m2": 6000.0, "after_date": "2024-06-10"},
                {"site_id": "s3", "name": "Field C", "pair_id": "p2", "score": 0.8,
                 "changed_area_m2": 900.0, "after_date": "2024-06-10"}]
        outcome = state.update_alerts("2024-06-10", rows, policy)
        # dismissed before the migration, with no area recorded: only its score can bring it back
        assert outcome.suppressed == ["s2"]
        assert outcome.new == ["s3"]
        assert state.alert("s1")["status"] == "confirmed"
        assert [o["kind"] for o in state.observations("s3")] == ["detection"]
    with NightlyState(old_state, read_only=True) as state:  # 'alerts list' reads it as is
        assert {a["site_id"] for a in state.alerts("new")} == {"s3"}


def test_a_schema2_state_opens_read_only_without_migration(old_state: Path) -> None:
    with NightlyState(old_state, read_only=True) as state:
        assert [a["status"] for a in state.alerts()] == ["confirmed", "dismissed"]
        assert state.observations("s1") == []
    assert table(old_state / "state.sqlite",
                 "SELECT value FROM meta WHERE key = 'schema_version'") == [("2",)]
