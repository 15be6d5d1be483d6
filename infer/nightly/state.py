"""The nightly state: one SQLite database (WAL mode) in the state directory, as storage.

:class:`NightlyState` opens it (creating or migrating the tables of :mod:`.schema`) and stores
runs, pairs with their site scores and change regions, which pairs each night linked,
acquisitions, cloud shares and the file-hash cache; its alerts, observations and events are
:class:`~.alert_store.AlertStore`'s, and discovered sites' stable ids
:mod:`.site_identity`'s. Every change is one transaction, so a run killed at any moment leaves
either the whole change or none of it.

Read commands (``groundbreak alerts list``, ``history``, the review app) open it with
``read_only=True``: no write, no WAL switch, no schema statement (a read-only copy, mount or user
works). A file that is not a readable state database raises :class:`StateDamagedError`; a healthy
one that cannot be written says so (a full disk, a read-only file system).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.errors import is_disk_full
from groundbreak.infer.nightly.alert_store import (
    ALERT_STATUSES,
    DECISION_EVENTS,
    DECISIONS,
    OPEN_STATUSES,
    SITE_COLUMNS,
    AlertConflictError,
    AlertOutcome,
    AlertStatus,
    AlertStore,
    Decision,
    best_per_site,
    float_or_none,
    str_or_none,
)
from groundbreak.infer.nightly.logging import utc_now
from groundbreak.infer.nightly.schema import (
    DB_NAME,
    SCHEMA,
    SCHEMA_VERSION,
    StateDamagedError,
    check_schema,
    connect_read_only,
    raise_healthy_state_error,
    upgrade,
)
from groundbreak.infer.nightly.site_identity import stable_discovered_ids

__all__ = [
    "ALERT_STATUSES", "DB_NAME", "DECISIONS", "DECISION_EVENTS", "OPEN_STATUSES",
    "SCHEMA_VERSION", "SITE_COLUMNS", "AcquisitionRecord", "AlertConflictError", "AlertOutcome",
    "AlertStatus", "Decision", "NightlyState", "StateDamagedError", "best_per_site",
]


@dataclass(frozen=True)
class AcquisitionRecord:
    """A dated scene of one ground, as stored in the state."""

    ground_id: str
    acquired: str
    scene: str
    source: str
    footprint: str | None = None


class NightlyState(AlertStore):
    """The SQLite state of a state directory. Open one per process; close it when done.

    Args:
        state_dir: The state directory (created when missing, unless ``existing`` or
            ``read_only``).
        read_only: Open for reading only (``mode=ro``): no WAL switch, no schema statement.
        existing: Refuse a missing or empty database instead of creating one.

    Raises:
        StateDamagedError: When the database cannot be read as a state (corrupt, truncated,
            empty where one must exist, or another kind of file).
    """

    def __init__(
        self, state_dir: str | Path, read_only: bool = False, existing: bool = False
    ) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        if read_only or existing:
            if not self.path.is_file() or self.path.stat().st_size == 0:
                raise StateDamagedError(self.path, "is missing or empty (0 bytes); not a state "
                                        "made by 'groundbreak nightly'")
        elif self.path.exists() and (not self.path.is_file() or self.path.stat().st_size == 0):
            # an emptied state is damage, not a fresh start: its history and dismissals are gone
            raise StateDamagedError(self.path, "is empty (0 bytes) or not a file; restore it "
                                    "from a backup, or remove it to start a new state")
        else:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._connect(read_only)
        except sqlite3.DatabaseError as err:
            if is_disk_full(err) or "locked" in str(err):
                raise
            raise_healthy_state_error(self.path, err)
            raise StateDamagedError(self.path, f"is damaged or not a state database ({err})") \
                from err

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        if read_only:
            db = connect_read_only(self.path)
        else:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        db.row_factory = sqlite3.Row
        if read_only:
            check_schema(db)
            return db
        self.db = db
        if self.path.stat().st_size > 0:
            check_schema(db)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            upgrade(db)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        return db

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> NightlyState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): committed whole or rolled back whole."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- runs -----------------------------------------------------------------------------------

    def start_run(self, run_id: str, pid: int, config: Mapping[str, Any], model_hash: str) -> int:
        """Record the start of an attempt at a night; mark older unfinished attempts interrupted.

        Call it while holding the run lock: any attempt still ``running`` then belongs to a
        process that died (e.g. SIGKILL).
        """
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status = 'interrupted' WHERE status = 'running'"
            )
            cursor = db.execute(
                "INSERT INTO runs (run_id, started_at, status, pid, model_hash, config) "
                "VALUES (?, ?, 'running', ?, ?, ?)",
                (run_id, utc_now(), pid, model_hash, json.dumps(dict(config), default=str)),
            )
        return int(cursor.lastrowid)

    def finish_run(
        self, attempt: int, status: str, exit_code: int, summary: Mapping[str, Any]
    ) -> None:
        """Record the end of an attempt with its status, exit code and summary."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, exit_code = ?, summary = ? "
                "WHERE attempt = ?",
                (utc_now(), status, exit_code, json.dumps(dict(summary), default=str), attempt),
            )

    def runs(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every attempt (of one night, when given), oldest first."""
        if run_id is None:
            rows = self.db.execute("SELECT * FROM runs ORDER BY attempt").fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM runs WHERE run_id = ? ORDER BY attempt", (run_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    # -- file hashes ----------------------------------------------------------------------------

    def cached_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The stored sha256 of a file when its size and mtime are unchanged, else None."""
        row = self.db.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (path, size, mtime_ns),
        ).fetchone()
        return row["sha256"] if row else None

    def store_hash(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        """Remember a file's sha256 for its current size and mtime."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256) "
                "VALUES (?, ?, ?, ?)",
                (path, size, mtime_ns, sha256),
            )

    # -- acquisitions ---------------------------------------------------------------------------

    def record_acquisitions(self, records: Sequence[AcquisitionRecord], run_id: str) -> None:
        """Store acquisitions not seen before (one already stored keeps its first record)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO acquisitions "
                "(ground_id, acquired, scene, source, footprint, first_run_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.ground_id, r.acquired, r.scene, r.source, r.footprint, run_id)
                    for r in records
                ],
            )

    def record_cloud_fractions(self, fractions: Mapping[str, float], run_id: str) -> None:
        """Store the share of each scene that clouds or shadows hid (the latest measure wins)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO scene_clouds (scene, cloud_fraction, run_id) "
                "VALUES (?, ?, ?)",
                [(scene, float(fraction), run_id) for scene, fraction in fractions.items()],
            )

    def cloud_fractions(self) -> dict[str, float]:
        """The measured share of each scene (by path) that clouds or shadows hid."""
        rows = self.db.execute("SELECT scene, cloud_fraction FROM scene_clouds").fetchall()
        return {r["scene"]: float(r["cloud_fraction"]) for r in rows}

    def acquisitions(self, ground_id: str | None = None) -> list[AcquisitionRecord]:
        """Stored acquisitions (of one ground, when given), ordered by ground and date."""
        query = "SELECT ground_id, acquired, scene, source, footprint FROM acquisitions"
        args: tuple[Any, ...] = ()
        if ground_id is not None:
            query += " WHERE ground_id = ?"
            args = (ground_id,)
        rows = self.db.execute(query + " ORDER BY ground_id, acquired", args).fetchall()
        return [AcquisitionRecord(**dict(r)) for r in rows]

    # -- pairs and site scores ------------------------------------------------------------------

    def find_done(self, pair_id: str, inputs_hash: str, model_hash: str) -> int | None:
        """Row id of the pair already scored with these exact inputs and model, or None."""
        row = self.db.execute(
            "SELECT id FROM pairs WHERE pair_id = ? AND inputs_hash = ? AND model_hash = ? "
            "AND status = 'done'",
            (pair_id, inputs_hash, model_hash),
        ).fetchone()
        return int(row["id"]) if row else None

    def record_done(
        self,
        run_id: str,
        attempt: int,
        pair_id: str,
        inputs_hash: str,
        model_hash: str,
        outputs: str,
        seconds: float,
        sites: Sequence[Mapping[str, Any]],
        changes: Sequence[Mapping[str, Any]] = (),
        site_match_iou: float | None = None,
        scenes: Mapping[str, Any] | None = None,
        revisits: Sequence[Mapping[str, Any]] = (),
    ) -> int:
        """Mark a pair done with its sites and change regions, linked to the night, atomically.

        Call it only after the pair's outputs are in their final place. Site and change rows
        are ranking rows; their columns beyond the site columns go to ``details`` (JSON).
        With ``site_match_iou``, discovered sites take stable ids (see :mod:`.site_identity`).
        ``scenes`` records which scenes the pair was read from (paths and content hashes).
        ``revisits`` are known sites measured again on this pair (:mod:`.revisits`); those that
        a discovered region of the pair matched already are left out.
        A pair done before with the same hashes (scored again because its outputs were
        removed) keeps its row, with the new outputs and scores.
        """
        scenes_json = json.dumps(dict(scenes), default=str) if scenes is not None else None
        with self.transaction() as db:
            if site_match_iou is not None:
                sites, changes = stable_discovered_ids(
                    db, run_id, pair_id, sites, changes, site_match_iou
                )
            found = {str(s["site_id"]) for s in sites}
            sites = [*sites, *(r for r in revisits if str(r["site_id"]) not in found)]
            earlier = db.execute(
                "SELECT id FROM pairs WHERE pair_id = ? AND inputs_hash = ? AND model_hash = ? "
                "AND status = 'done'",
                (pair_id, inputs_hash, model_hash),
            ).fetchone()
            if earlier is not None:
                row = int(earlier["id"])
                db.execute(
                    "UPDATE pairs SET outputs = ?, seconds = ?, finished_at = ?, scenes = ? "
                    "WHERE id = ?",
                    (outputs, seconds, utc_now(), scenes_json, row),
                )
                db.execute("DELETE FROM site_scores WHERE pair_row = ?", (row,))
                db.execute("DELETE FROM change_regions WHERE pair_row = ?", (row,))
            else:
                cursor = db.execute(
                    "INSERT INTO pairs (run_id, attempt, pair_id, inputs_hash, model_hash, "
                    "status, outputs, seconds, finished_at, scenes) "
                    "VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, ?)",
                    (run_id, attempt, pair_id, inputs_hash, model_hash, outputs, seconds,
                     utc_now(), scenes_json),
                )
                row = int(cursor.lastrowid)
            db.executemany(
                "INSERT INTO site_scores (pair_row, site_id, name, score, changed_area_m2, lon, "
                "lat, before_date, after_date, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        row, str(s["site_id"]), s.get("name"), float(s["score"]),
                        float_or_none(s.get("changed_area_m2")), float_or_none(s.get("lon")),
                        float_or_none(s.get("lat")), str_or_none(s.get("before_date")),
                        str_or_none(s.get("after_date")),
                        _details(s, exclude=SITE_COLUMNS),
                    )
                    for s in sites
                ],
            )
            db.executemany(
                "INSERT INTO change_regions (pair_row, region_id, score, details) "
                "VALUES (?, ?, ?, ?)",
                [
                    (row, str(c["region_id"]), float(c["score"]),
                     _details(c, exclude=("region_id",)))
                    for c in changes
                ],
            )
            _unlink_pair(db, run_id, pair_id)
            db.execute(
                "INSERT INTO night_pairs (run_id, pair_row, reused) VALUES (?, ?, 0)",
                (run_id, row),
            )
        return row

    def discovered_sites(self) -> list[dict[str, Any]]:
        """Every discovered site with its stable id and latest outline (WKT), oldest first."""
        rows = self.db.execute("SELECT * FROM discovered_sites ORDER BY number").fetchall()
        return [dict(r) for r in rows]

    def link_reused(self, run_id: str, pair_row: int) -> bool:
        """Rank a pair scored earlier in this night too; False when it was linked already.

        It replaces the night's link to another row of the same pair (scored on other inputs by
        an earlier attempt of this night).
        """
        with self.transaction() as db:
            linked = db.execute(
                "SELECT 1 FROM night_pairs WHERE run_id = ? AND pair_row = ?", (run_id, pair_row)
            ).fetchone()
            if linked:
                return False
            scored_by = db.execute(
                "SELECT run_id, pair_id FROM pairs WHERE id = ?", (pair_row,)
            ).fetchone()
            if scored_by is None:
                raise KeyError(f"no pair row {pair_row}")
            _unlink_pair(db, run_id, scored_by["pair_id"])
            db.execute(
                "INSERT INTO night_pairs (run_id, pair_row, reused) VALUES (?, ?, ?)",
                (run_id, pair_row, int(scored_by["run_id"] != run_id)),
            )
        return True

    def record_failed(
        self,
        run_id: str,
        attempt: int,
        pair_id: str,
        inputs_hash: str | None,
        model_hash: str,
        reason: str,
        seconds: float,
    ) -> None:
        """Record that a pair failed, and why; the night no longer ranks its earlier scores."""
        with self.transaction() as db:
            _unlink_pair(db, run_id, pair_id)
            db.execute(
                "INSERT INTO pairs (run_id, attempt, pair_id, inputs_hash, model_hash, status, "
                "reason, seconds, finished_at) VALUES (?, ?, ?, ?, ?, 'failed', ?, ?, ?)",
                (run_id, attempt, pair_id, inputs_hash, model_hash, reason, seconds, utc_now()),
            )

    def pair_rows(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Pair outcome rows (of one night, when given), oldest first."""
        query, args = "SELECT * FROM pairs", ()
        if run_id is not None:
            query, args = query + " WHERE run_id = ?", (run_id,)
        return [dict(r) for r in self.db.execute(query + " ORDER BY id", args).fetchall()]

    def pair_outputs(self, pair_row: int) -> str | None:
        """Where a done pair's outputs were published."""
        row = self.db.execute("SELECT outputs FROM pairs WHERE id = ?", (pair_row,)).fetchone()
        return row["outputs"] if row else None

    def night_changes(self, run_id: str, new_only: bool = False) -> list[dict[str, Any]]:
        """Every discovered change region of a night's pairs (details expanded), best first;
        with ``new_only``, only those of the pairs the night scored itself."""
        where = " AND n.reused = 0" if new_only else ""
        rows = self.db.execute(
            "SELECT c.region_id, c.score, c.details FROM night_pairs n "
            f"JOIN change_regions c ON c.pair_row = n.pair_row WHERE n.run_id = ?{where} "
            "ORDER BY c.score DESC, c.region_id",
            (run_id,),
        ).fetchall()
        return [{**json.loads(r["details"]), "region_id": r["region_id"]} for r in rows]

    def night_scores(self, run_id: str, new_only: bool = False) -> list[dict[str, Any]]:
        """Every site score of a night's pairs, best first; with ``new_only``, only those of
        the pairs the night scored itself (a reused pair is no new observation)."""
        where = " AND reused = 0" if new_only else ""
        rows = self.db.execute(
            f"SELECT * FROM night_site_scores WHERE run_id = ?{where} "
            "ORDER BY score DESC, site_id, pair_id",
            (run_id,),
        ).fetchall()
        return [dict(r) for r in rows]


def _unlink_pair(db: sqlite3.Connection, run_id: str, pair_id: str) -> None:
    """Drop a night's links to any row of a pair: a night ranks one outcome of each pair."""
    db.execute(
        "DELETE FROM night_pairs WHERE run_id = ? AND pair_row IN "
        "(SELECT id FROM pairs WHERE pair_id = ?)",
        (run_id, pair_id),
    )


def _details(row: Mapping[str, Any], exclude: Sequence[str]) -> str:
    """The columns of a ranking row not stored in their own column, as JSON (geometries as WKT)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in exclude:
            continue
        if isinstance(value, BaseGeometry):  # not hasattr(value, "wkt"): that computes it
            value = value.wkt
        elif hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and value != value:
            value = None
        out[key] = value
    return json.dumps(out, default=str)
