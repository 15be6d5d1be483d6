"""What the nightly run tells its operator: a progress bar on a terminal, JSON lines otherwise.

Every event is also appended, as one JSON object per line, to the run's log file
(``RUNDIR/nightly.log.jsonl``) so a cron run leaves a machine-readable trace.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Literal

from tqdm import tqdm

LogFormat = Literal["auto", "progress", "json"]
LOG_FORMATS: tuple[str, ...] = ("auto", "progress", "json")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with seconds (``2024-05-01T02:00:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NightLog:
    """Structured events for one run.

    Args:
        fmt: ``"progress"`` draws a tqdm bar and prints warnings as text; ``"json"`` writes one
            JSON object per event; ``"auto"`` picks ``"progress"`` when ``stream`` is a terminal.
        stream: Where events go (standard error by default, so stdout stays clean).
    """

    def __init__(self, fmt: LogFormat = "auto", stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if fmt not in LOG_FORMATS:
            raise ValueError(f"unknown log format {fmt!r}; expected one of {LOG_FORMATS}")
        if fmt == "auto":
            fmt = "progress" if _isatty(self.stream) else "json"
        self.format: LogFormat = fmt
        self._file: IO[str] | None = None
        self._bar: tqdm | None = None

    def log_to(self, path: str | Path) -> None:
        """Also append every event to a JSON-lines file from now on."""
        self.close_file()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def close_file(self) -> None:
        """Stop writing to the log file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        """Report one event with its fields (values must be JSON-serialisable or str-able)."""
        record = {"ts": utc_now(), "level": level, "event": event, **fields}
        line = json.dumps(record, default=str)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        if self.format == "json":
            self.stream.write(line + "\n")
            self.stream.flush()
        elif level in ("warning", "error") or self._bar is None:
            text = " ".join(f"{k}={v}" for k, v in fields.items())
            message = f"[{level}] {event} {text}".rstrip()
            if self._bar is not None:
                self._bar.write(message, file=self.stream)
            else:
                self.stream.write(message + "\n")
                self.stream.flush()

    def start_progress(self, total: int, description: str = "pairs") -> None:
        """Open the progress bar (only in progress mode)."""
        if self.format == "progress" and total > 0:
            self._bar = tqdm(total=total, desc=description, unit="pair", file=self.stream)

    def advance(self, label: str = "") -> None:
        """Move the progress bar by one item."""
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(1)

    def end_progress(self) -> None:
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:
        return False
