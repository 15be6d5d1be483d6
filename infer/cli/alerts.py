"""``groundbreak alerts``: the analyst's view of the nightly alerts, and their decisions.

    groundbreak alerts list    [--state STATE_DIR] [--status open|all|new,ongoing,...]
                               [--format table|csv|json]
    groundbreak alerts confirm SITE_ID [--state STATE_DIR] [--note TEXT]
    groundbreak alerts dismiss SITE_ID [--state STATE_DIR] [--note TEXT]
    groundbreak alerts reopen  SITE_ID [--state STATE_DIR] [--note TEXT]
    groundbreak alerts history SITE_ID [--state STATE_DIR]

Without ``--state`` the state directory is the environment variable ``GROUNDBREAK_STATE``.
``list`` shows the open alerts (new and ongoing) by default as a table that fits 100 columns
(long names and notes end in an ellipsis); ``--format csv`` and ``json`` export every alert and
column unless ``--status`` says otherwise. Control characters in names and notes (terminal
escapes) are never printed.

Decisions are recorded with the analyst's name (``--analyst``, default the OS user), as those of
``groundbreak review`` (the browser queue) are.

A dismissed site does not alert again unless it grows (its changed area, or its score by a share
of the headroom left; the nightly config's ``alerts`` key). Safe to run while a nightly run is
going on.
Exit codes: 0 done; 2 bad usage, no state there, or an unknown site; 5 the state database is
damaged (see "Backup and recovery" in docs/operator.md). ``list`` and ``history`` only read:
they work on a read-only copy or mount of the state.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import json
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.infer.nightly.state import ALERT_STATUSES, DB_NAME, OPEN_STATUSES, NightlyState
from groundbreak.infer.nightly.timeline import site_timeline
from groundbreak.infer.sites.alerts_io import spreadsheet_safe

STATE_ENV = "GROUNDBREAK_STATE"
"""The environment variable naming the state directory when ``--state`` is not given."""
LIST_COLUMNS: tuple[str, ...] = (
    "site_id", "name", "status", "score", "max_score", "dismissed_score", "first_run_id",
    "last_run_id", "unobserved_in", "pair_id", "lon", "lat", "note",
)
"""The columns of ``list --format csv|json``."""
TABLE_COLUMNS: tuple[str, ...] = (
    "site_id", "name", "status", "score", "last_run_id", "unobserved_in", "note",
)
"""The columns of the ``list`` table (the triage view)."""
TABLE_HEADERS: dict[str, str] = {"last_run_id": "last_run", "unobserved_in": "unobserved",
                                 "valid_fraction": "seen"}
"""Shorter table headers of some columns (CSV and JSON keep the column names)."""
HISTORY_COLUMNS: tuple[str, ...] = ("at", "run_id", "event", "status", "score", "note", "analyst")
OBSERVATION_COLUMNS: tuple[str, ...] = (
    "acquired", "kind", "score", "changed_area_m2", "valid_fraction", "hidden_near", "pair_id",
    "run_id",
)
"""The columns of ``history``'s timeline: one row per scored acquisition that covered the site."""
TABLE_WIDTH = 100
"""Widest line of a table, in characters."""
SHRINKABLE: tuple[str, ...] = ("name", "note", "pair_id", "analyst")
"""Columns cut short (with an ellipsis) when a table is too wide."""
MIN_SHRUNK = 8
ELLIPSIS = "\u2026"
LISTED_STATUSES: tuple[str, ...] = tuple(dict.fromkeys(
    ("candidate", "new", "ongoing", "confirmed", "dismissed", "cleared", *ALERT_STATUSES)
))
"""The statuses ``list --status`` accepts (besides ``open`` and ``all``)."""
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def status_filter(text: str) -> tuple[str, ...] | str:
    """``--status``: the statuses of a comma list (``open``: new and ongoing), or ``"all"``."""
    wanted: list[str] = []
    for item in (part.strip().lower() for part in text.split(",")):
        if item == "all":
            return "all"
        if item == "open":
            wanted += OPEN_STATUSES
        elif item in LISTED_STATUSES:
            wanted.append(item)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown status {item!r}; use open, all or a comma list of "
                f"{', '.join(LISTED_STATUSES)}"
            )
    return tuple(dict.fromkeys(wanted))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``groundbreak alerts``."""
    parser = argparse.ArgumentParser(
        prog="groundbreak alerts", description="List, confirm or dismiss nightly alerts."
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = commands.add_parser("list", help="list alerts, highest score first")
    listing.add_argument(
        "--status", type=status_filter, default=None, metavar="STATUS[,STATUS...]",
        help=f"alerts with these statuses: open (new and ongoing), all, or a comma list of "
        f"{', '.join(LISTED_STATUSES)}; default open for the table, all for csv and json",
    )
    listing.add_argument("--format", choices=("table", "csv", "json"), default="table",
                         help="table (fits 100 columns), or csv/json with every column")
    for action, help_ in (("confirm", "mark an alert as real construction"),
                          ("dismiss", "mark an alert as not construction (it stays quiet "
                                      "unless the site grows)"),
                          ("reopen", "put a confirmed or dismissed alert back in the queue"),
                          ("history", "every change of one alert's status")):
        sub = commands.add_parser(action, help=help_)
        sub.add_argument("site_id")
        if action != "history":
            sub.add_argument("--note", help="why (kept with the alert and its history)")
            sub.add_argument("--analyst", help="who decides (default: the OS user)")
        sub.set_defaults(format="table")
    for sub in commands.choices.values():
        sub.add_argument("--state", metavar="STATE_DIR",
                         help=f"the nightly state directory (default: ${STATE_ENV})")
    return parser


def open_state(state_dir: str | Path, read_only: bool = False) -> NightlyState:
    """The state of an existing state directory (read-only for reading), or an InputError.

    A damaged database raises :class:`StateDamagedError` (exit code 5).
    """
    path = Path(state_dir)
    if not (path / DB_NAME).is_file():
        raise InputError(path, f"not a nightly state directory (no {DB_NAME}); run "
                               "'groundbreak nightly' first")
    return NightlyState(path, read_only=read_only, existing=True)


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak alerts``; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    state_dir = args.state or os.environ.get(STATE_ENV)
    if not state_dir:
        parser.error(f"no state directory: pass --state STATE_DIR or set {STATE_ENV}")
    with open_state(state_dir, read_only=args.action in ("list", "history")) as state:
        if args.action == "list":
            print(list_alerts(state, args.status, args.format), end="")
            return 0
        if state.alert(args.site_id) is None:
            raise InputError(state.path, f"no alert for site {args.site_id!r}")
        if args.action == "history":
            print(format_history(state, args.site_id), end="")
            return 0
        alert = state.decide(args.site_id, args.action, args.note, args.analyst or os_user())
    print(f"{alert['site_id']}: {alert['status']} (score {alert['score']:.3f})")
    return 0


def list_alerts(state: NightlyState, statuses: tuple[str, ...] | str | None, fmt: str) -> str:
    """The alerts with ``statuses`` (``"all"``; None: the open ones in a table, else all) in
    ``fmt``."""
    if statuses is None:
        statuses = OPEN_STATUSES if fmt == "table" else "all"
    every = state.alerts()
    rows = every if statuses == "all" else [r for r in every if r.get("status") in statuses]
    if fmt != "table":
        return format_rows(rows, LIST_COLUMNS, fmt)
    if not rows and every:
        return (f"no {' or '.join(statuses)} alerts ({len(every)} with other statuses; "
                "--status all lists them)\n")
    return format_rows(rows, TABLE_COLUMNS, fmt)


def format_history(state: NightlyState, site_id: str) -> str:
    """When the site's change began, its observations (the timeline) and its status events."""
    timeline = site_timeline(state.observations(site_id))
    began = timeline.began()
    lines = [f"change began {began}\n" if began else "",
             "observations (one per scored acquisition):\n",
             format_rows(timeline.observations, OBSERVATION_COLUMNS, "table")
             if timeline.observations else "none stored (scored before the state kept them)\n",
             "events:\n", format_rows(state.alert_events(site_id), HISTORY_COLUMNS, "table")]
    return "".join(lines)


def os_user() -> str | None:
    """The OS user's name, or None where the system cannot tell."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Rows as an aligned text table (at most :data:`TABLE_WIDTH` wide), CSV or JSON; no
    control character of the values reaches the output."""
    if fmt == "json":
        return json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore",
                                quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows(
            {c: spreadsheet_safe(_printable(row.get(c), keep_lines=True)) for c in columns}
            for row in rows
        )
        return buffer.getvalue()
    if not rows:
        return "no alerts\n"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    headers = [TABLE_HEADERS.get(c, c) for c in columns]
    widths = _fitted_widths(
        columns, [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    )
    lines = ["  ".join(_cut(h, w).ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(_cut(v, w).ljust(w) for v, w in zip(r, widths, strict=True))
              for r in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _fitted_widths(columns: Sequence[str], widths: list[int]) -> list[int]:
    """Column widths that fit :data:`TABLE_WIDTH`: the shrinkable columns share what the others
    leave, each narrow one keeping its own width (no column below :data:`MIN_SHRUNK`)."""
    shrinkable = sorted((i for i, c in enumerate(columns) if c in SHRINKABLE),
                        key=lambda i: widths[i])
    budget = TABLE_WIDTH - 2 * (len(widths) - 1) - sum(
        w for i, w in enumerate(widths) if i not in shrinkable
    )
    fitted = list(widths)
    for k, i in enumerate(shrinkable):
        share = max(MIN_SHRUNK, budget // (len(shrinkable) - k))
        fitted[i] = min(widths[i], share)
        budget -= fitted[i]
    return fitted


def _cut(text: str, width: int) -> str:
    """``text``, ending in an ellipsis where it is longer than ``width``."""
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return _printable(value)


def _printable(value: Any, keep_lines: bool = False) -> Any:
    """A text value without control or bidirectional-override characters (a terminal escape
    becomes harmless text); line breaks and tabs become spaces unless ``keep_lines``. Other
    values unchanged."""
    if not isinstance(value, str):
        return value
    kept = []
    for char in value:
        if keep_lines and char in "\n\t":
            kept.append(char)
        elif char in "\t\n\r":
            kept.append(" ")
        elif unicodedata.category(char) != "Cc" and char not in _BIDI_CONTROLS:
            kept.append(char)
    return "".join(kept)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
