"""Content hashes of a pair's inputs and of a model bundle: sha256 of the files' bytes.

Hashes are cached in the state by (path, size, mtime_ns), so a big scene is read in full only
when it is new or has changed, not every night.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat as stat_mode
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scene import RASTER_SUFFIXES, is_remote, read_scene_manifest
from groundbreak.infer.nightly.state import NightlyState

_CHUNK = 1 << 20
BUNDLE_FILES = ("model.json", "model.safetensors")


class ContentHasher:
    """sha256 of files, cached in the nightly state by (path, size, mtime_ns); no cache without
    a state (a cluster worker checks the model it loads so). With ``store`` False the cache is
    read but never written (a read-only state)."""

    def __init__(self, state: NightlyState | None, store: bool = True) -> None:
        self.state = state
        self.store = store
        self.hashed_bytes = 0
        """Bytes actually read (not served from the cache) by this hasher."""

    def file_sha256(self, path: str | os.PathLike[str]) -> str:
        """The sha256 of one file's bytes (from the cache when size and mtime are unchanged)."""
        path = Path(path).resolve()
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise InputError(path, "file does not exist") from None
        except OSError as err:
            raise InputError(path, f"cannot be read ({err.strerror})") from err
        if not stat_mode.S_ISREG(stat.st_mode):  # a FIFO or /dev/zero would never end
            raise InputError(path, "is not a regular file (a device, FIFO or socket)")
        cached = None if self.state is None else self.state.cached_hash(
            str(path), stat.st_size, stat.st_mtime_ns
        )
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        try:
            with open(path, "rb", opener=_open_regular) as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        except OSError as err:
            raise InputError(path, f"cannot be read ({err.strerror})") from err
        self.hashed_bytes += stat.st_size
        value = digest.hexdigest()
        if self.state is not None and self.store:
            self.state.store_hash(str(path), stat.st_size, stat.st_mtime_ns, value)
        return value

    def scene_digest(self, scene: str | os.PathLike[str]) -> list[tuple[str, str]]:
        """(name, sha256) of every file a scene is read from.

        A folder scene hashes each visible file in it; a scene manifest (``.json``) hashes the
        band files it lists (a URL stands for itself: its text is hashed, not its bytes);
        any other path is one file.
        """
        path = Path(scene)
        if path.is_dir():
            files = sorted(  # a raster name that is no regular file fails in file_sha256
                p for p in path.iterdir() if not p.name.startswith(".") and (
                    p.is_file() or (p.suffix.lower() in RASTER_SUFFIXES and not p.is_dir()))
            )
            if not files:
                raise InputError(path, "scene folder is empty")
            return [(p.name, self.file_sha256(p)) for p in files]
        if path.suffix.lower() == ".json" and path.is_file():
            bands = read_scene_manifest(path)
            return [
                (band, _text_sha256(location) if is_remote(location)
                 else self.file_sha256(location))
                for band, location in sorted(bands.items())
            ]
        return [(path.name, self.file_sha256(path))]

    def bundle_hash(self, bundle: str | os.PathLike[str]) -> str:
        """One hash for a model bundle: its weights and its ``model.json``."""
        folder = Path(bundle)
        return digest_of({name: self.file_sha256(folder / name) for name in BUNDLE_FILES})

    def optional_file_sha256(self, path: str | os.PathLike[str] | None) -> str | None:
        """sha256 of a file, or None when no file is given."""
        return None if path is None else self.file_sha256(path)


def _open_regular(path: str, flags: int) -> int:
    """Open without blocking (a file swapped for a FIFO since its stat must not hang us)."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    if not stat_mode.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(0, "not a regular file")
    return fd


def digest_of(obj: Mapping[str, Any] | Iterable[Any]) -> str:
    """sha256 of the canonical JSON of an object (keys sorted)."""
    return _text_sha256(json.dumps(obj, sort_keys=True, default=str))


def _text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
