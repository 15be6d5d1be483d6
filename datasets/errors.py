"""The one error type for bad input (naming the file and the problem); the full-disk test."""

from __future__ import annotations

import errno
from os import PathLike


class InputError(ValueError):
    """Bad input data: a file that is missing, corrupt, mismatched or unusable.

    The message always reads ``<path>: <problem>`` so a CLI can print it as one line.
    """

    def __init__(self, path: str | PathLike[str] | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


DISK_FULL_ERRNOS: tuple[int, ...] = (errno.ENOSPC, errno.EDQUOT)
"""errno values of a full disk and of an exceeded quota."""

_DISK_FULL_TEXTS: tuple[str, ...] = (
    "No space left on device",
    "Disk quota exceeded",
    "database or disk is full",  # SQLite's SQLITE_FULL
    *(f"[Errno {code}]" for code in DISK_FULL_ERRNOS),
)


def is_disk_full(err: BaseException | None) -> bool:
    """True when an error, or one it was raised from, is a full disk or an exceeded quota.

    Only these errors are the machine's (exit code 4, "rerun"); any other ``OSError`` is the
    input's or the user's (a bad path, a missing permission).
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(err) for text in _DISK_FULL_TEXTS):
            return True
        err = err.__cause__ or err.__context__
    return False
