"""One nightly run at a time per state directory: a non-blocking ``fcntl.flock`` on a lock file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "nightly.lock"


class LockHeldError(RuntimeError):
    """Another process holds the run lock; the message names the lock file and its pid."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{path}: another nightly run is in progress ({holder} holds the lock)")


class RunLock:
    """An exclusive, non-blocking lock on ``STATE_DIR/nightly.lock`` holding the owner's pid.

    The kernel drops the lock when its holder exits, even on SIGKILL, so a stale lock file never
    blocks the next run. Use as a context manager.
    """

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockHeldError` at once when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeldError(self.path, read_lock_pid(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; its content is not trusted without the lock)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def read_lock_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid written in a lock file, or None when it is empty or unreadable."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
