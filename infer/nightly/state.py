"""The nightly state: one SQLite database (WAL mode) in the state directory.

It records every run, every pair processed (with the content hashes of its inputs and of the
model), every site score per night, every acquisition seen (for STAC and drop-folder sources),
a cache of file hashes, and each alert's status with its history. Every change is one
transaction, so a run killed at any moment leaves either the whole change or none of it.

Tables (``STATE_DIR/state.sqlite``):

- ``runs``: one row per invocation (``attempt``) of a night (``run_id``): start, end, status
  (``running``, ``ok``, ``failed``, ``interrupted``), exit code, pid, config, summary;
- ``pairs``: one row per pair outcome: ``done`` (at most once per pair id, inputs hash and
  model hash; enforced by a unique index) or ``failed`` with its reason;
- ``site_scores``: the site rows of a done pair (score, changed area, centroid, dates, and the
  other columns of a ranking row, geometries as WKT, in ``details``);
- ``change_regions``: the discovered change regions of a done pair (for ``changes.geojson``);
- ``night_pairs``: which done pairs each night ranked (``reused`` = scored by an earlier run);
- ``acquisitions``: dated scenes per ground (the baseline of a ground is its first);
- ``scene_clouds``: the share of each scored scene that clouds or shadows hid;
- ``file_hashes``: sha256 per (path, size, mtime_ns);
- ``discovered_sites``: the latest outline of every discovered site, for stable ids across nights
  (see :mod:`~groundbreak.infer.nightly.site_identity`);
- ``alerts`` and ``alert_events``: alert status per site and every change to it (an analyst's
  decision names the analyst; schema 2 added that column, an older state is upgraded when opened
  for writing).

Analysts' decisions (:meth:`NightlyState.decide`) may carry the decision version they saw
(:meth:`NightlyState.decision_version`): when another decision came first, they raise
:class:`AlertConflictError` instead of overwriting it. A night's own updates do not count as
decisions, so a decision made while a night runs is kept.

Read commands (``groundbreak alerts list``, ``history``) open it with ``read_only=True``: no
write, no WAL switch, no schema statement (a read-only copy or mount works). A file that is not
a readable state database raises :class:`StateDamagedError`.
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import quote

from groundbreak.datasets.errors import InputError, is_disk_full
from groundbreak.infer.nightly.alert_policy import (
    TRACKED_STATUSES,
    AlertPolicy,
    Observation,
    SiteStatus,
    next_status,
)
from groundbreak.infer.nightly.logging import utc_now

DB_NAME = "state.sqlite"
SCHEMA_VERSION = 3

AlertStatus = Literal["candidate", "new", "ongoing", "confirmed", "dismissed", "cleared"]
ALERT_STATUSES: tuple[str, ...] = get_args(AlertStatus)
OPEN_STATUSES: tuple[str, ...] = ("new", "ongoing")
"""Statuses of an alert that waits for an analyst (a ``candidate`` waits for confirmation)."""

Decision = Literal["confirm", "dismiss", "reopen"]
DECISIONS: tuple[str, ...] = ("confirm", "dismiss", "reopen")
DECISION_EVENTS: tuple[str, ...] = ("confirmed", "dismissed", "reopened")
"""Events an analyst's decision writes (a night writes the others)."""

SITE_COLUMNS: tuple[str, ...] = (
    "site_id", "name", "pair_id", "score", "changed_area_m2", "lon", "lat",
    "before_date", "after_date",
)
"""Columns of a site row, as in a ranking's ``sites.csv`` (without ``rank``)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    attempt INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    exit_code INTEGER,
    pid INTEGER NOT NULL,
    model_hash TEXT,
    config TEXT NOT NULL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL REFERENCES runs(attempt),
    pair_id TEXT NOT NULL,
    inputs_hash TEXT,
    model_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    reason TEXT,
    outputs TEXT,
    seconds REAL,
    finished_at TEXT NOT NULL,
    scenes TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS pairs_done_once
    ON pairs (pair_id, inputs_hash, model_hash) WHERE status = 'done';
CREATE INDEX IF NOT EXISTS pairs_by_run ON pairs (run_id);
CREATE TABLE IF NOT EXISTS site_scores (
    pair_row INTEGER NOT NULL REFERENCES pairs(id),
    site_id TEXT NOT NULL,
    name TEXT,
    score REAL NOT NULL,
    changed_area_m2 REAL,
    lon REAL,
    lat REAL,
    before_date TEXT,
    after_date TEXT,
    details TEXT,
    PRIMARY KEY (pair_row, site_id)
);
CREATE TABLE IF NOT EXISTS change_regions (
    pair_row INTEGER NOT NULL REFERENCES pairs(id),
    region_id TEXT NOT NULL,
    score REAL NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (pair_row, region_id)
);
CREATE TABLE IF NOT EXISTS night_pairs (
    run_id TEXT NOT NULL,
    pair_row INTEGER NOT NULL REFERENCES pairs(id),
    reused INTEGER NOT NULL,
    PRIMARY KEY (run_id, pair_row)
);
CREATE VIEW IF NOT EXISTS night_site_scores AS
    SELECT n.run_id, n.reused, p.run_id AS scored_by, p.pair_id, s.*
    FROM night_pairs n JOIN pairs p ON p.id = n.pair_row JOIN site_scores s ON s.pair_row = p.id;
CREATE TABLE IF NOT EXISTS acquisitions (
    ground_id TEXT NOT NULL,
    acquired TEXT NOT NULL,
    scene TEXT NOT NULL,
    source TEXT NOT NULL,
    footprint TEXT,
    first_run_id TEXT NOT NULL,
    PRIMARY KEY (ground_id, acquired)
);
CREATE TABLE IF NOT EXISTS scene_clouds (
    scene TEXT PRIMARY KEY,
    cloud_fraction REAL NOT NULL,
    run_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    site_id TEXT PRIMARY KEY,
    name TEXT,
    status TEXT NOT NULL CHECK (status IN
        ('candidate', 'new', 'ongoing', 'confirmed', 'dismissed', 'cleared')),
    score REAL NOT NULL,
    max_score REAL NOT NULL,
    dismissed_score REAL,
    first_run_id TEXT NOT NULL,
    last_run_id TEXT NOT NULL,
    pair_id TEXT,
    lon REAL,
    lat REAL,
    note TEXT,
    updated_at TEXT NOT NULL,
    changed_area_m2 REAL,
    dismissed_area_m2 REAL
);
CREATE TABLE IF NOT EXISTS site_observations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL,
    pair_id TEXT NOT NULL,
    pair_row INTEGER,
    run_id TEXT NOT NULL,
    acquired TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('detection', 'clear', 'unobserved')),
    score REAL,
    changed_area_m2 REAL,
    valid_fraction REAL,
    UNIQUE (site_id, pair_id)
);
CREATE TABLE IF NOT EXISTS discovered_sites (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL UNIQUE,
    space TEXT NOT NULL,
    outline TEXT NOT NULL,
    minx REAL NOT NULL, miny REAL NOT NULL, maxx REAL NOT NULL, maxy REAL NOT NULL,
    first_pair_id TEXT NOT NULL,
    first_run_id TEXT NOT NULL,
    last_run_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL,
    at TEXT NOT NULL,
    run_id TEXT,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    score REAL,
    note TEXT,
    analyst TEXT
);
"""


@dataclass(frozen=True)
class AcquisitionRecord:
    """A dated scene of one ground, as stored in the state."""

    ground_id: str
    acquired: str
    scene: str
    source: str
    footprint: str | None = None


@dataclass
class AlertOutcome:
    """What one night did to the alerts: site ids by what happened."""

    new: list[str] = field(default_factory=list)
    realerted: list[str] = field(default_factory=list)
    ongoing: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    unobserved: list[str] = field(default_factory=list)
    """Alerting sites that clouds (or the swath) hid this night: their status stays."""
    candidates: list[str] = field(default_factory=list)
    """Sites detected, not yet confirmed (first detection, or not enough detections yet)."""
    cleared: list[str] = field(default_factory=list)
    """Candidates and undecided alerts ended by repeated clear non-detections."""
    seen: list[str] = field(default_factory=list)
    """Confirmed sites detected again."""


_OUTCOME_OF_EVENT = {
    "new": "new", "realerted": "realerted", "ongoing": "ongoing", "suppressed": "suppressed",
    "unobserved": "unobserved", "candidate": "candidates", "detected": "candidates",
    "cleared": "cleared", "seen": "seen",
}
"""Which :class:`AlertOutcome` list a night's alert event counts in."""


class AlertConflictError(Exception):
    """Another decision on the alert came after the version the analyst decided on."""

    def __init__(self, site_id: str, current: Mapping[str, Any], last: Mapping[str, Any] | None):
        self.site_id, self.current, self.last = site_id, dict(current), dict(last or {})
        who = self.last.get("analyst") or "someone"
        super().__init__(
            f"alert {site_id} was {self.last.get('event', 'changed')} by {who} at "
            f"{self.last.get('at', '?')} (now {self.current.get('status')}); nothing was changed"
        )


class StateDamagedError(sqlite3.DatabaseError):
    """The state database is damaged, truncated, or not a groundbreak state at all."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


class NightlyState:
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
            _raise_healthy_state_error(self.path, err)
            raise StateDamagedError(self.path, f"is damaged or not a state database ({err})") \
                from err

    def _connect(self, read_only: bool) -> sqlite3.Connection:
        if read_only:
            db = _connect_read_only(self.path)
        else:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        db.row_factory = sqlite3.Row
        if read_only:
            _check_schema(db)
            return db
        self.db = db
        if self.path.stat().st_size > 0:
            _check_schema(db)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            _upgrade(db)
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

    def cloudy_scenes(self, cloudy_fraction: float) -> set[str]:
        """Scenes measured at least ``cloudy_fraction`` hidden: never the 'before' of a pair."""
        rows = self.db.execute(
            "SELECT scene FROM scene_clouds WHERE cloud_fraction >= ?", (cloudy_fraction,)
        ).fetchall()
        return {r["scene"] for r in rows}

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
                sites, changes = _stable_discovered_ids(
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
                        _float_or_none(s.get("changed_area_m2")), _float_or_none(s.get("lon")),
                        _float_or_none(s.get("lat")), _str_or_none(s.get("before_date")),
                        _str_or_none(s.get("after_date")),
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

    def tracked_sites(self, bounds: tuple[float, float, float, float]) -> list[dict[str, Any]]:
        """Discovered sites with a tracked status (:data:`TRACKED_STATUSES`) whose latest
        outline (lon/lat) meets ``bounds`` (min lon, min lat, max lon, max lat)."""
        marks = ", ".join("?" * len(TRACKED_STATUSES))
        rows = self.db.execute(
            "SELECT d.site_id, d.outline, a.name, a.status FROM discovered_sites d "
            f"JOIN alerts a ON a.site_id = d.site_id WHERE a.status IN ({marks}) "
            "AND d.space = 'EPSG:4326' AND d.maxx >= ? AND d.minx <= ? AND d.maxy >= ? "
            "AND d.miny <= ? ORDER BY d.number",
            (*TRACKED_STATUSES, bounds[0], bounds[2], bounds[1], bounds[3]),
        ).fetchall()
        return [dict(r) for r in rows]

    def open_alert_rows(self) -> list[dict[str, Any]]:
        """The latest stored site row of every open alert (new, ongoing), best first; alerts
        without a stored row (older states) give their own columns."""
        marks = ", ".join("?" * len(OPEN_STATUSES))
        alerts = self.db.execute(
            f"SELECT * FROM alerts WHERE status IN ({marks}) ORDER BY score DESC, site_id",
            OPEN_STATUSES,
        ).fetchall()
        rows = []
        for alert in map(dict, alerts):
            stored = self.db.execute(
                "SELECT s.*, p.pair_id FROM site_scores s JOIN pairs p ON p.id = s.pair_row "
                "WHERE s.site_id = ? AND p.pair_id = ? ORDER BY p.id DESC LIMIT 1",
                (alert["site_id"], alert["pair_id"]),
            ).fetchone()
            row = dict(stored) if stored else {k: alert.get(k) for k in SITE_COLUMNS}
            row.setdefault("changed_area_m2", alert["changed_area_m2"])
            rows.append({**row, "status": alert["status"]})
        return rows

    def observations(self, site_id: str) -> list[dict[str, Any]]:
        """A site's timeline: every observation (oldest acquisition first) with its pair's
        dates, outputs and the scenes it was read from."""
        if not self._has_table("site_observations"):
            return []
        rows = self.db.execute(
            "SELECT o.*, p.outputs, p.scenes, s.before_date, s.after_date "
            "FROM site_observations o LEFT JOIN pairs p ON p.id = o.pair_row "
            "LEFT JOIN site_scores s ON s.pair_row = o.pair_row AND s.site_id = o.site_id "
            "WHERE o.site_id = ? ORDER BY COALESCE(o.acquired, ''), o.id",
            (site_id,),
        ).fetchall()
        out = []
        for r in rows:
            row = dict(r)
            row["scenes"] = json.loads(row["scenes"]) if row.get("scenes") else None
            out.append(row)
        return out

    def _has_table(self, name: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone() is not None

    # -- alerts ---------------------------------------------------------------------------------

    def update_alerts(
        self,
        run_id: str,
        sites: Sequence[Mapping[str, Any]],
        policy: AlertPolicy,
    ) -> AlertOutcome:
        """Apply a night's new observations to the alert statuses, in one transaction.

        Each site row of a pair scored this night is one observation of its site (see
        :mod:`~groundbreak.infer.nightly.alert_policy`, whose :func:`next_status` decides);
        observations are applied in acquisition order and stored in ``site_observations``, at
        most once per site and pair: re-applying a night changes nothing.
        """
        outcome = AlertOutcome()
        now = utc_now()
        ordered = sorted(sites, key=lambda s: (str(s.get("after_date") or ""),
                                               str(s.get("pair_id") or ""), str(s["site_id"])))
        with self.transaction() as db:
            for site in ordered:
                site_id, pair_id = str(site["site_id"]), str(site.get("pair_id") or "")
                known = db.execute("SELECT * FROM alerts WHERE site_id = ?", (site_id,)).fetchone()
                if db.execute(
                    "SELECT 1 FROM site_observations WHERE site_id = ? AND pair_id = ?",
                    (site_id, pair_id),
                ).fetchone():
                    if known is not None:
                        _count_again(db, known, run_id, outcome)
                    continue
                score = _float_or_none(site.get("score"))
                observation = Observation(
                    pair_id, _str_or_none(site.get("after_date")),
                    policy.classify(_observed(site), score), score,
                    _float_or_none(site.get("changed_area_m2")),
                )
                current = SiteStatus(
                    known["status"] if known else None,
                    known["dismissed_score"] if known else None,
                    known["dismissed_area_m2"] if known else None,
                )
                step = next_status(policy, current, _observations(db, site_id), observation)
                _store_observation(db, site, observation, run_id)
                if step.status is not None:
                    _store_alert(db, known, site, observation, step.status, run_id, now)
                if step.event is not None:
                    _event(db, site_id, run_id, step.event, step.status or "", score)
                    getattr(outcome, _OUTCOME_OF_EVENT[step.event]).append(site_id)
        return outcome

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        """Alerts (with one status, when given), highest score first.

        ``unobserved_in`` is the night that last could not see the site (clouds, shadows, outside
        a scene) when that is the alert's latest event, else None.
        """
        query, args = (
            "SELECT alerts.*, (SELECT CASE WHEN e.event = 'unobserved' THEN e.run_id END "
            "FROM alert_events e WHERE e.site_id = alerts.site_id ORDER BY e.id DESC LIMIT 1) "
            "AS unobserved_in FROM alerts",
            (),
        )
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        return [
            dict(r)
            for r in self.db.execute(query + " ORDER BY score DESC, site_id", args).fetchall()
        ]

    def alert(self, site_id: str) -> dict[str, Any] | None:
        """One alert, or None when the site never alerted."""
        row = self.db.execute("SELECT * FROM alerts WHERE site_id = ?", (site_id,)).fetchone()
        return dict(row) if row else None

    def set_alert_status(self, site_id: str, status: AlertStatus, note: str | None = None) -> dict:
        """An analyst's decision on an alert (``confirmed`` or ``dismissed``), with a note.

        Dismissing remembers the current score: the site alerts again only above it plus the
        dismissal margin. Raises KeyError for a site that never alerted.
        """
        if status not in ALERT_STATUSES:
            raise ValueError(f"unknown alert status {status!r}")
        with self.transaction() as db:
            known = db.execute("SELECT * FROM alerts WHERE site_id = ?", (site_id,)).fetchone()
            if known is None:
                raise KeyError(site_id)
            _apply_status(db, known, status, status, note, None)
        return self.alert(site_id) or {}

    def decide(
        self,
        site_id: str,
        decision: Decision,
        note: str | None = None,
        analyst: str | None = None,
        expected_version: int | None = None,
    ) -> dict:
        """An analyst's decision: ``confirm``, ``dismiss`` or ``reopen`` an alert, with a note.

        ``reopen`` puts a confirmed or dismissed alert back in the queue (``new`` when one night
        saw it, else ``ongoing``). With ``expected_version`` (:meth:`decision_version` as the
        analyst saw it), a decision made by someone else since raises
        :class:`AlertConflictError` and nothing is written. Raises KeyError for a site that
        never alerted.
        """
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}")
        with self.transaction() as db:
            known = db.execute("SELECT * FROM alerts WHERE site_id = ?", (site_id,)).fetchone()
            if known is None:
                raise KeyError(site_id)
            if expected_version is not None:
                last = _last_decision(db, site_id)
                if (last["id"] if last else 0) != expected_version:
                    raise AlertConflictError(site_id, dict(known), dict(last) if last else None)
            if decision == "reopen":
                once = known["first_run_id"] == known["last_run_id"]
                _apply_status(db, known, "new" if once else "ongoing", "reopened", note, analyst)
            else:
                status = "confirmed" if decision == "confirm" else "dismissed"
                _apply_status(db, known, status, status, note, analyst)
        return self.alert(site_id) or {}

    def decision_version(self, site_id: str) -> int:
        """The version of an alert's decisions: the id of its last decision event, 0 if none.

        A night's updates leave it unchanged; every analyst's decision changes it.
        """
        last = _last_decision(self.db, site_id)
        return int(last["id"]) if last else 0

    def alert_events(self, site_id: str | None = None) -> list[dict[str, Any]]:
        """The history of alert changes (of one site, when given), oldest first."""
        query, args = "SELECT * FROM alert_events", ()
        if site_id is not None:
            query, args = query + " WHERE site_id = ?", (site_id,)
        return [dict(r) for r in self.db.execute(query + " ORDER BY id", args).fetchall()]

    def night_alert_events(self, run_id: str) -> list[dict[str, Any]]:
        """The alert changes a night made, oldest first."""
        rows = self.db.execute(
            "SELECT * FROM alert_events WHERE run_id = ? ORDER BY id", (run_id,)
        ).fetchall()
        return [dict(r) for r in rows]


def _stable_discovered_ids(
    db: sqlite3.Connection,
    run_id: str,
    pair_id: str,
    sites: Sequence[Mapping[str, Any]],
    changes: Sequence[Mapping[str, Any]],
    min_iou: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Give a pair's discovered sites (and their change regions) their stable ids."""
    from shapely import wkt

    from groundbreak.infer.nightly.site_identity import discovered_id, match_regions

    sites = [dict(s) for s in sites]
    found = [
        (i, *_outline(s, pair_id)) for i, s in enumerate(sites) if s.get("kind") == "discovered"
    ]
    found = [(i, space, outline) for i, space, outline in found if outline is not None]
    renamed: dict[str, str] = {}
    for space in sorted({space for _, space, _ in found}):
        regions = [(i, outline) for i, s, outline in found if s == space]
        minx = min(o.bounds[0] for _, o in regions)
        miny = min(o.bounds[1] for _, o in regions)
        maxx = max(o.bounds[2] for _, o in regions)
        maxy = max(o.bounds[3] for _, o in regions)
        known = db.execute(
            "SELECT site_id, outline FROM discovered_sites WHERE space = ? AND maxx >= ? AND "
            "minx <= ? AND maxy >= ? AND miny <= ?",
            (space, minx, maxx, miny, maxy),
        ).fetchall()
        matched = match_regions(
            [outline for _, outline in regions],
            [(k["site_id"], wkt.loads(k["outline"])) for k in known], min_iou,
        )
        for position, (i, outline) in enumerate(regions):
            site_id = matched.get(position)
            bounds = (*outline.bounds, run_id)
            if site_id is None:
                number = db.execute(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM discovered_sites"
                ).fetchone()[0]
                site_id = discovered_id(int(number))
                db.execute(
                    "INSERT INTO discovered_sites (number, site_id, space, outline, minx, miny, "
                    "maxx, maxy, first_pair_id, first_run_id, last_run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (number, site_id, space, outline.wkt, *outline.bounds, pair_id, run_id,
                     run_id),
                )
            else:  # follow the site as it grows: the latest outline is matched next time
                db.execute(
                    "UPDATE discovered_sites SET outline = ?, minx = ?, miny = ?, maxx = ?, "
                    "maxy = ?, last_run_id = ? WHERE site_id = ?",
                    (outline.wkt, *bounds, site_id),
                )
            first = db.execute(
                "SELECT first_pair_id FROM discovered_sites WHERE site_id = ?", (site_id,)
            ).fetchone()[0]
            renamed[str(sites[i]["site_id"])] = site_id
            sites[i]["site_id"] = site_id
            sites[i]["name"] = f"Discovered site {site_id} (first seen in {first})"
    changes = [
        {**c, "region_id": renamed.get(str(c.get("region_id")), c.get("region_id"))}
        for c in changes
    ]
    return sites, changes


def _outline(site: Mapping[str, Any], pair_id: str) -> tuple[str, Any]:
    """(matching space, outline) of a site row: lon/lat when georeferenced, else pair pixels."""
    geometry = site.get("geometry")
    if hasattr(geometry, "wkt") and not geometry.is_empty:
        return "EPSG:4326", geometry
    grid_geometry = site.get("grid_geometry")
    if hasattr(grid_geometry, "wkt") and not grid_geometry.is_empty:
        return f"px:{pair_id}", grid_geometry
    return "", None


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; ``immutable`` where SQLite cannot make its WAL index (a read-only
    folder without the ``-shm`` file: nobody can be writing there)."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as err:
        db.close()
        if "unable to open" not in str(err) and "readonly" not in str(err):
            raise
        db = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
    db.execute("PRAGMA query_only=ON")
    return db


def _raise_healthy_state_error(path: Path, err: sqlite3.DatabaseError) -> None:
    """Raise what a healthy state that cannot be written says: a full disk (exit 4) or a
    read-only file system or folder (exit 2); return for anything else (real damage)."""
    text = str(err)
    if "disk I/O error" in text and shutil.disk_usage(path.parent).free < 1_048_576:
        raise OSError(errno.ENOSPC, f"{path}: no space left on the state's disk ({text})") \
            from err
    if "readonly" in text or "read-only" in text:
        raise InputError(path, "cannot be written (a read-only file system, or a folder this "
                         "user may not write); 'alerts list' and 'alerts history' can read it")


def _check_schema(db: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError unless the database holds a state's tables."""
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise sqlite3.DatabaseError("no schema version")
    check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if check != "ok":
        raise sqlite3.DatabaseError(str(check))


def _unlink_pair(db: sqlite3.Connection, run_id: str, pair_id: str) -> None:
    """Drop a night's links to any row of a pair: a night ranks one outcome of each pair."""
    db.execute(
        "DELETE FROM night_pairs WHERE run_id = ? AND pair_row IN "
        "(SELECT id FROM pairs WHERE pair_id = ?)",
        (run_id, pair_id),
    )


def _observed(site: Mapping[str, Any]) -> bool:
    """False for a site row marked not observed (rows from before the flag count as seen)."""
    value = site.get("observed", True)
    return bool(True if value is None else value)


def best_per_site(sites: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per site: the highest-scoring one (a site may lie in several pairs)."""
    best: dict[str, Mapping[str, Any]] = {}
    for site in sites:
        key = str(site["site_id"])
        if key not in best or float(site["score"]) > float(best[key]["score"]):
            best[key] = site
    return sorted(best.values(), key=lambda s: (-float(s["score"]), str(s["site_id"])))


def _count_again(
    db: sqlite3.Connection, known: sqlite3.Row, run_id: str, outcome: AlertOutcome
) -> None:
    """Report, without changing anything, what this night already did to an alert."""
    last = db.execute(
        "SELECT event FROM alert_events WHERE site_id = ? AND run_id = ? ORDER BY id DESC LIMIT 1",
        (known["site_id"], run_id),
    ).fetchone()
    event = last["event"] if last else None
    if event in _OUTCOME_OF_EVENT and known["site_id"] not in getattr(
        outcome, _OUTCOME_OF_EVENT[event]
    ):
        getattr(outcome, _OUTCOME_OF_EVENT[event]).append(known["site_id"])


def _event(
    db: sqlite3.Connection,
    site_id: str,
    run_id: str | None,
    event: str,
    status: str,
    score: float | None,
    note: str | None = None,
    analyst: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO alert_events (site_id, at, run_id, event, status, score, note, analyst) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (site_id, utc_now(), run_id, event, status, score, note, analyst),
    )


def _apply_status(
    db: sqlite3.Connection,
    known: sqlite3.Row,
    status: str,
    event: str,
    note: str | None,
    analyst: str | None,
) -> None:
    """Set an alert's status by an analyst's decision, with its event; dismissing remembers the
    score and changed area (what a site must outgrow to alert again), reopening forgets them."""
    if status == "dismissed":
        dismissed = (known["score"], known["changed_area_m2"])
    elif event == "reopened":
        dismissed = (None, None)
    else:
        dismissed = (known["dismissed_score"], known["dismissed_area_m2"])
    db.execute(
        "UPDATE alerts SET status = ?, dismissed_score = ?, dismissed_area_m2 = ?, "
        "note = COALESCE(?, note), updated_at = ? WHERE site_id = ?",
        (status, *dismissed, note, utc_now(), known["site_id"]),
    )
    _event(db, known["site_id"], None, event, status, known["score"], note, analyst)


def _last_decision(db: sqlite3.Connection, site_id: str) -> sqlite3.Row | None:
    """The last analyst's decision event of an alert (a night's events have a run id)."""
    return db.execute(
        "SELECT * FROM alert_events WHERE site_id = ? AND run_id IS NULL ORDER BY id DESC "
        "LIMIT 1",
        (site_id,),
    ).fetchone()


def _upgrade(db: sqlite3.Connection) -> None:
    """Bring an older state's tables up to :data:`SCHEMA_VERSION` (inside the schema
    transaction), keeping every row. Schema 1 -> 2: ``alert_events.analyst``. 2 -> 3: the
    ``candidate`` and ``cleared`` statuses (the alerts table is rebuilt: SQLite cannot change a
    CHECK constraint), ``alerts.changed_area_m2`` and ``dismissed_area_m2``, ``pairs.scenes``
    (``site_observations`` is created by the schema)."""
    if "analyst" not in _columns(db, "alert_events"):
        db.execute("ALTER TABLE alert_events ADD COLUMN analyst TEXT")
    if "scenes" not in _columns(db, "pairs"):
        db.execute("ALTER TABLE pairs ADD COLUMN scenes TEXT")
    alerts_sql = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'alerts'"
    ).fetchone()[0]
    if "'candidate'" not in alerts_sql:
        old = sorted(_columns(db, "alerts"))
        db.execute("ALTER TABLE alerts RENAME TO alerts_schema2")
        create = next(s for s in _SCHEMA.split(";") if "TABLE IF NOT EXISTS alerts " in s)
        db.execute(create)
        names = ", ".join(old)
        db.execute(f"INSERT INTO alerts ({names}) SELECT {names} FROM alerts_schema2")
        db.execute("DROP TABLE alerts_schema2")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}


def _observations(db: sqlite3.Connection, site_id: str) -> list[Observation]:
    """A site's stored observations, in acquisition order."""
    rows = db.execute(
        "SELECT pair_id, acquired, kind, score, changed_area_m2 FROM site_observations "
        "WHERE site_id = ? ORDER BY COALESCE(acquired, ''), id",
        (site_id,),
    ).fetchall()
    return [Observation(r["pair_id"], r["acquired"], r["kind"], r["score"],
                        r["changed_area_m2"]) for r in rows]


def _store_observation(
    db: sqlite3.Connection, site: Mapping[str, Any], observation: Observation, run_id: str
) -> None:
    db.execute(
        "INSERT INTO site_observations (site_id, pair_id, pair_row, run_id, acquired, kind, "
        "score, changed_area_m2, valid_fraction) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (str(site["site_id"]), observation.pair_id, site.get("pair_row"), run_id,
         observation.acquired, observation.kind, observation.score,
         observation.changed_area_m2, _float_or_none(site.get("valid_fraction"))),
    )


def _store_alert(
    db: sqlite3.Connection,
    known: sqlite3.Row | None,
    site: Mapping[str, Any],
    observation: Observation,
    status: str,
    run_id: str,
    now: str,
) -> None:
    """Write a site's alert row after an observation: its status, and the latest observed
    score and area (an unobserved acquisition leaves an existing row as it was)."""
    site_id = str(site["site_id"])
    if known is None:
        score = observation.score or 0.0
        db.execute(
            "INSERT INTO alerts (site_id, name, status, score, max_score, first_run_id, "
            "last_run_id, pair_id, lon, lat, updated_at, changed_area_m2) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (site_id, site.get("name"), status, score, score, run_id, run_id,
             observation.pair_id, _float_or_none(site.get("lon")),
             _float_or_none(site.get("lat")), now, observation.changed_area_m2),
        )
        return
    if observation.kind == "unobserved":
        return
    db.execute(
        "UPDATE alerts SET name = ?, status = ?, score = ?, max_score = MAX(max_score, ?), "
        "last_run_id = ?, pair_id = ?, lon = ?, lat = ?, changed_area_m2 = ?, updated_at = ? "
        "WHERE site_id = ?",
        (site.get("name") or known["name"], status, observation.score, observation.score,
         run_id, observation.pair_id, _float_or_none(site.get("lon")),
         _float_or_none(site.get("lat")), observation.changed_area_m2, now, site_id),
    )


def _details(row: Mapping[str, Any], exclude: Sequence[str]) -> str:
    """The columns of a ranking row not stored in their own column, as JSON (geometries as WKT)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in exclude:
            continue
        if hasattr(value, "wkt") and hasattr(value, "geom_type"):
            value = value.wkt
        elif hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and value != value:
            value = None
        out[key] = value
    return json.dumps(out, default=str)


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return None if number != number else number


def _str_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    return str(value)
