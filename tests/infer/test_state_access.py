"""A healthy state that cannot be written is not reported damaged (issue 26 item 18): a read-only
user lists it, a full disk is exit 4, a read-only mount exit 2. Only real damage is exit 5.

These need root (to switch user, and to mount a small tmpfs); they are skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from groundbreak.infer.nightly.state import NightlyState

SCHEMA2 = Path(__file__).resolve().parents[1] / "fixtures" / "state" / "state_schema2.sqlite"
GROUNDBREAK = [sys.executable, "-m", "groundbreak.infer.cli"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def groundbreak(*args: str, user: int | None = None) -> subprocess.CompletedProcess:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run([*prefix, *GROUNDBREAK, *args], capture_output=True, text=True,
                          timeout=120, check=False)


def make_state(folder: Path) -> Path:
    """A cleanly closed state (WAL mode, no -wal or -shm file left), as a night leaves it."""
    folder.mkdir(parents=True)
    shutil.copy(SCHEMA2, folder / "state.sqlite")
    NightlyState(folder).close()
    return folder


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.skipif(not ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_read_only_user_lists_a_cleanly_closed_state() -> None:
    shared = Path(tempfile.mkdtemp(prefix="groundbreak-ro-"))  # pytest's tmp_path is private
    try:
        _list_as_another_user(shared)
    finally:
        shutil.rmtree(shared)


def _list_as_another_user(shared: Path) -> None:
    state = make_state(shared / "state")
    for path in (shared, state, state / "state.sqlite"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    listed = groundbreak("alerts", "list", "--state", str(state), "--status", "all",
                         user=65534)
    assert listed.returncode == 0, listed.stderr
    assert "Hall A" in listed.stdout and "Yard B" in listed.stdout
    assert groundbreak("alerts", "history", "s1", "--state", str(state),
                       user=65534).returncode == 0


@pytest.mark.skipif(not ROOT, reason="needs root to mount a tmpfs")
def test_a_full_disk_is_exit_4_and_a_read_only_mount_exit_2(small_disk: Path) -> None:
    state = make_state(small_disk / "state")
    filler = small_disk / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    full = groundbreak("alerts", "confirm", "s2", "--state", str(state))
    assert full.returncode == 4 and "no space left" in full.stderr
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    read_only = groundbreak("alerts", "confirm", "s2", "--state", str(state))
    assert read_only.returncode == 2 and "cannot be written" in read_only.stderr
    assert groundbreak("alerts", "list", "--state", str(state)).returncode == 0
