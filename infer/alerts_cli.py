"""``groundbreak alerts``: the analyst's view of the nightly alerts, and their decisions.

    groundbreak alerts list    --state STATE_DIR [--status new|ongoing|confirmed|dismissed]
                               [--format table|csv|json]
    groundbreak alerts confirm SITE_ID --state STATE_DIR [--note TEXT]
    groundbreak alerts dismiss SITE_ID --state STATE_DIR [--note TEXT]
    groundbreak alerts reopen  SITE_ID --state STATE_DIR [--note TEXT]
    groundbreak alerts history SITE_ID --state STATE_DIR

Decisions are recorded with the analyst's name (``--analyst``, default the OS user), as those of
``groundbreak review`` (the browser queue) are.

A dismissed site does not alert again unless its score rises by the config's ``dismiss_margin``
(default 0.15) above its score when dismissed. Safe to run while a nightly run is going on.
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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.infer.alerts_io import spreadsheet_safe
from groundbreak.infer.nightly.state import ALERT_STATUSES, DB_NAME, NightlyState

LIST_COLUMNS: tuple[str, ...] = (
    "site_id", "name", "status", "score", "max_score", "dismissed_score", "first_run_id",
    "last_run_id", "unobserved_in", "pair_id", "lon", "lat", "note",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``groundbreak alerts``."""
    parser = argparse.ArgumentParser(
        prog="groundbreak alerts", description="List, confirm or dismiss nightly alerts."
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = commands.add_parser("list", help="list alerts, highest score first")
    listing.add_argument("--status", choices=ALERT_STATUSES, help="only alerts with this status")
    listing.add_argument("--format", choices=("table", "csv", "json"), default="table")
    for action, help_ in (("confirm", "mark an alert as real construction"),
                          ("dismiss", "mark an alert as not construction (it stays quiet "
                                      "unless its score rises by the dismissal margin)"),
                          ("reopen", "put a confirmed or dismissed alert back in the queue"),
                          ("history", "every change of one alert's status")):
        sub = commands.add_parser(action, help=help_)
        sub.add_argument("site_id")
        if action != "history":
            sub.add_argument("--note", help="why (kept with the alert and its history)")
            sub.add_argument("--analyst", help="who decides (default: the OS user)")
        sub.set_defaults(format="table")
    for sub in commands.choices.values():
        sub.add_argument("--state", required=True, metavar="STATE_DIR",
                         help="the nightly state directory")
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
    with open_state(args.state, read_only=args.action in ("list", "history")) as state:
        if args.action == "list":
            print(format_rows(state.alerts(args.status), LIST_COLUMNS, args.format), end="")
            return 0
        if state.alert(args.site_id) is None:
            raise InputError(state.path, f"no alert for site {args.site_id!r}")
        if args.action == "history":
            columns = ("at", "run_id", "event", "status", "score", "note", "analyst")
            print(format_rows(state.alert_events(args.site_id), columns, "table"), end="")
            return 0
        alert = state.decide(args.site_id, args.action, args.note, args.analyst or os_user())
    print(f"{alert['site_id']}: {alert['status']} (score {alert['score']:.3f})")
    return 0


def os_user() -> str | None:
    """The OS user's name, or None where the system cannot tell."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Rows as an aligned text table, CSV or JSON."""
    if fmt == "json":
        return json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore",
                                quoting=csv.QUOTE_NONNUMERIC)
        writer.writeheader()
        writer.writerows({c: spreadsheet_safe(row.get(c)) for c in columns} for row in rows)
        return buffer.getvalue()
    if not rows:
        return "no alerts\n"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
