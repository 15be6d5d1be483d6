"""State databases written by earlier releases (schema 2, schema 3) are migrated in place,
losing nothing, and the new alert policy works on them.

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


def state_copy(fixture: Path, state_dir: Path) -> Path:
    """A state folder holding a copy of a fixture state database."""
    state_dir.mkdir()
    shutil.copy(fixture, state_dir / "state.sqlite")
    return state_dir


@pytest.fixture
def old_state(tmp_path: Path) -> Path:
    return state_copy(SCHEMA2, tmp_path / "state")


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


# -- schema 3 (the release before the per-site cloud check) ---------------------------------------

SCHEMA3 = SCHEMA2.with_name("state_schema3.sqlite")
"""Written by the nightly state at commit a33739e (schema 3): two nights of observations of two
sites against same-season references, one confirmed and one dismissed by an analyst."""


@pytest.fixture
def schema3_state(tmp_path: Path) -> Path:
    return state_copy(SCHEMA3, tmp_path / "state3")


def test_schema3_state_gains_hidden_near_and_keeps_every_row(schema3_state: Path) -> None:
    db_path = schema3_state / "state.sqlite"
    queries = {
        "observations": "SELECT site_id, pair_id, acquired, reference, kind, score, "
                        "changed_area_m2 FROM site_observations ORDER BY id",
        "alerts": "SELECT site_id, status, score, note, dismissed_score, dismissed_area_m2 "
                  "FROM alerts ORDER BY site_id",
        "alert_events": "SELECT site_id, event, status, note FROM alert_events ORDER BY id",
    }
    before = {name: table(db_path, q) for name, q in queries.items()}
    assert len(before["observations"]) == 4
    with NightlyState(schema3_state) as state:
        assert [o["hidden_near"] for o in state.observations("s1")] == [None, None]
    assert {name: table(db_path, q) for name, q in queries.items()} == before
    assert table(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)]


def test_old_observations_hold_no_confirmation_back_after_the_migration(
    schema3_state: Path,
) -> None:
    """Observations without a hidden share count as seen; a new one beside a cloud waits."""
    with NightlyState(schema3_state) as state:
        rows = [{"site_id": "s3", "name": "Lot C", "pair_id": "g_20230720_20240720",
                 "score": 0.95, "changed_area_m2": 3000.0, "after_date": "2024-07-20",
                 "before_date": "2023-07-20", "hidden_near": 0.4}]
        outcome = state.update_alerts("2024-07-20", rows, AlertPolicy())
        assert outcome.candidates == ["s3"]
        assert state.alert("s1")["status"] == "confirmed"
        assert state.alert("s2")["status"] == "dismissed"


def test_alerts_history_reads_a_schema3_state_read_only(
    schema3_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from groundbreak.infer.cli import main as groundbreak

    assert groundbreak(["alerts", "history", "s1", "--state", str(schema3_state)]) == 0
    out = capsys.readouterr().out
    assert "hidden_near" in out and "2024-06-10" in out and "confirmed" in out
    assert table(schema3_state / "state.sqlite",
                 "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]
