"""Writes never seen half done: a temporary name in the same folder, then ``os.replace``.

The one home of atomic writes: the run tables (:mod:`.alerts_io`), the report and the nightly
batch's summaries, manifests and published pair folders all write through here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"
"""Every temporary file or folder written here is ``.<name>.tmp-<pid>``."""


def temp_sibling(path: str | os.PathLike[str]) -> Path:
    """A hidden temporary name next to ``path``, unique to this process."""
    path = Path(path)
    return path.parent / f".{path.name}{TEMP_MARK}{os.getpid()}"


def is_temp_name(name: str) -> bool:
    """True for names made by :func:`temp_sibling`."""
    return name.startswith(".") and TEMP_MARK in name


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries so a rename survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text so that readers see the old file or the whole new one."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write an object as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def publish_dir(staging: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Move a fully written staging folder to its final name, replacing an older copy.

    An older copy exists only when a run was killed after publishing a folder but before
    recording it; it is replaced whole, so the final name never shows a mix of both.
    """
    staging, final = Path(staging), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        old = temp_sibling(final.with_name(final.name + ".old"))
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    _fsync_dir(final.parent)
    return final


def remove_orphan_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary siblings of ``path`` (:func:`temp_sibling`) left by processes that
    are no longer running; for folders no run lock covers (``rank``'s), where a killed run's
    temporaries would otherwise stay. This process's own and a running one's are kept."""
    path = Path(path)
    prefix = f".{path.name}{TEMP_MARK}"
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        pid = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
        if not pid.isdigit() or process_alive(int(pid)):  # this process's own too
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def process_alive(pid: int) -> bool:
    """True when a process of this id runs on this machine (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def remove_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Delete every temporary file or folder left under ``root`` by a killed run.

    Call it only while holding the run lock: no other writer can own them then.
    """
    root = Path(root)
    if not root.exists():
        return []
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [d for d in dirnames if is_temp_name(d)]:
            shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
            removed.append(Path(dirpath) / name)
            dirnames.remove(name)
        for name in filenames:
            if is_temp_name(name):
                (Path(dirpath) / name).unlink(missing_ok=True)
                removed.append(Path(dirpath) / name)
    return removed
