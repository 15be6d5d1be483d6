"""The nightly state's alerts: their statuses, observations and events, stored and queried.

:class:`AlertStore` is the part of :class:`~groundbreak.infer.nightly.state.NightlyState` that
keeps the alert policy's evidence (``site_observations``: one observation per site and newly
scored pair), each site's status (``alerts``) and every change to it (``alert_events``). What an
observation does to a status is decided by :mod:`~groundbreak.infer.nightly.alert_policy`, a pure
function; this module only stores and applies it. Analysts' decisions
(:meth:`AlertStore.decide`) may carry the decision version they saw: when another decision came
first, they raise :class:`AlertConflictError` instead of overwriting it. A night's own updates do
not count as decisions, so a decision made while a night runs is kept.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from groundbreak.infer.nightly.alert_policy import (
    TRACKED_STATUSES,
    AlertPolicy,
    Observation,
    SiteStatus,
    next_status,
)
from groundbreak.infer.nightly.logging import utc_now

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


class AlertStore:
    """Alert storage of a nightly state (a mixin of ``NightlyState``, which opens ``db``)."""

    db: sqlite3.Connection

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction (provided by the state)."""
        raise NotImplementedError

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
                score = float_or_none(site.get("score"))
                observation = Observation(
                    pair_id, str_or_none(site.get("after_date")),
                    policy.classify(_observed(site), score), score,
                    float_or_none(site.get("changed_area_m2")),
                    str_or_none(site.get("before_date")),
                    float_or_none(site.get("hidden_near")),
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


def _observations(db: sqlite3.Connection, site_id: str) -> list[Observation]:
    """A site's stored observations, in acquisition order."""
    rows = db.execute(
        "SELECT pair_id, acquired, kind, score, changed_area_m2, reference, hidden_near "
        "FROM site_observations WHERE site_id = ? ORDER BY COALESCE(acquired, ''), id",
        (site_id,),
    ).fetchall()
    return [Observation(r["pair_id"], r["acquired"], r["kind"], r["score"],
                        r["changed_area_m2"], r["reference"], r["hidden_near"]) for r in rows]


def _store_observation(
    db: sqlite3.Connection, site: Mapping[str, Any], observation: Observation, run_id: str
) -> None:
    db.execute(
        "INSERT INTO site_observations (site_id, pair_id, pair_row, run_id, acquired, "
        "reference, kind, score, changed_area_m2, valid_fraction, hidden_near) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (str(site["site_id"]), observation.pair_id, site.get("pair_row"), run_id,
         observation.acquired, observation.reference, observation.kind, observation.score,
         observation.changed_area_m2, float_or_none(site.get("valid_fraction")),
         observation.hidden_near),
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
             observation.pair_id, float_or_none(site.get("lon")),
             float_or_none(site.get("lat")), now, observation.changed_area_m2),
        )
        return
    if observation.kind == "unobserved":
        return
    db.execute(
        "UPDATE alerts SET name = ?, status = ?, score = ?, max_score = MAX(max_score, ?), "
        "last_run_id = ?, pair_id = ?, lon = ?, lat = ?, changed_area_m2 = ?, updated_at = ? "
        "WHERE site_id = ?",
        (site.get("name") or known["name"], status, observation.score, observation.score,
         run_id, observation.pair_id, float_or_none(site.get("lon")),
         float_or_none(site.get("lat")), observation.changed_area_m2, now, site_id),
    )


def float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return None if number != number else number


def str_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    return str(value)
