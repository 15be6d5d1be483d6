"""The nightly state's tables, their migrations, and how the database file is opened.

``STATE_DIR/state.sqlite`` (SQLite, WAL). Tables: ``runs`` (one row per attempt at a night),
``pairs`` (each pair outcome, with the hashes of its inputs and model and, from schema 3, the
scenes it was read from), ``site_scores`` and ``change_regions`` (the rows of a done pair),
``night_pairs`` (which done pairs each night linked; ``reused`` = scored by an earlier night),
``acquisitions``, ``scene_clouds``, ``file_hashes``, ``discovered_sites`` (stable ids), ``alerts``,
``site_observations`` (the alert policy's evidence: one row per site and scored pair) and
``alert_events``. :func:`upgrade` brings an older state up to :data:`SCHEMA_VERSION` in place.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import quote

from groundbreak.datasets.errors import InputError

DB_NAME = "state.sqlite"
SCHEMA_VERSION = 4

SCHEMA = """
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
    reference TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('detection', 'clear', 'unobserved')),
    score REAL,
    changed_area_m2 REAL,
    valid_fraction REAL,
    hidden_near REAL,
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


class StateDamagedError(sqlite3.DatabaseError):
    """The state database is damaged, truncated, or not a groundbreak state at all."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


def connect_read_only(path: Path) -> sqlite3.Connection:
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


def raise_healthy_state_error(path: Path, err: sqlite3.DatabaseError) -> None:
    """Raise what a healthy state that cannot be written says: a full disk (exit 4) or a
    read-only file system or folder (exit 2); return for anything else (real damage)."""
    text = str(err)
    if "disk I/O error" in text and shutil.disk_usage(path.parent).free < 1_048_576:
        raise OSError(errno.ENOSPC, f"{path}: no space left on the state's disk ({text})") \
            from err
    if "readonly" in text or "read-only" in text:
        raise InputError(path, "cannot be written (a read-only file system, or a folder this "
                         "user may not write); 'alerts list' and 'alerts history' can read it")


def check_schema(db: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError unless the database holds a state's tables."""
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise sqlite3.DatabaseError("no schema version")
    check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if check != "ok":
        raise sqlite3.DatabaseError(str(check))


def upgrade(db: sqlite3.Connection) -> None:
    """Bring an older state's tables up to :data:`SCHEMA_VERSION` (inside the schema
    transaction), keeping every row. Schema 1 -> 2: ``alert_events.analyst``. 2 -> 3: the
    ``candidate`` and ``cleared`` statuses (the alerts table is rebuilt: SQLite cannot change a
    CHECK constraint), ``alerts.changed_area_m2`` and ``dismissed_area_m2``, ``pairs.scenes``
    (``site_observations`` is created by the schema). 3 -> 4: ``site_observations.hidden_near``
    (older observations keep NULL: unknown, which holds no confirmation back)."""
    if "analyst" not in _columns(db, "alert_events"):
        db.execute("ALTER TABLE alert_events ADD COLUMN analyst TEXT")
    if "scenes" not in _columns(db, "pairs"):
        db.execute("ALTER TABLE pairs ADD COLUMN scenes TEXT")
    if "reference" not in _columns(db, "site_observations"):
        db.execute("ALTER TABLE site_observations ADD COLUMN reference TEXT")
    if "hidden_near" not in _columns(db, "site_observations"):
        db.execute("ALTER TABLE site_observations ADD COLUMN hidden_near REAL")
    alerts_sql = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'alerts'"
    ).fetchone()[0]
    if "'candidate'" not in alerts_sql:
        old = sorted(_columns(db, "alerts"))
        db.execute("ALTER TABLE alerts RENAME TO alerts_schema2")
        create = next(s for s in SCHEMA.split(";") if "TABLE IF NOT EXISTS alerts " in s)
        db.execute(create)
        names = ", ".join(old)
        db.execute(f"INSERT INTO alerts ({names}) SELECT {names} FROM alerts_schema2")
        db.execute("DROP TABLE alerts_schema2")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
