"""Decoded rows of chosen bands spilled to disk while a pair is predicted, and read back by later
reads of the same rows: the pictures of a JPEG 2000 pair's sites then decode nothing again.

GDAL decodes a JPEG 2000 tile whole (1024² px of a 10 m band, about 0.25 CPU-s) even for a 96 px
crop, and a pair's sites are known only after its windows have been decoded and predicted. So
the rows the windows decode of the bands a crop shows are written, as they are decoded, to one
raw file per band (full-width rows, the file's own data type; 1.45 GB for the three display bands
of a full-tile pair's two dates), in the operating system's page cache rather than the process's
memory, and deleted when the pair is done. Only JPEG 2000 files are spilled: a COG's 512² blocks
cost little to decode again, less than the writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from groundbreak.datasets.scenes.rasters import BandSource

log = logging.getLogger(__name__)

SPILLED_DRIVERS = ("JP2OpenJPEG",)
"""GDAL drivers whose decoded rows are spilled: those whose blocks are costly to decode again."""

_LOCK = threading.Lock()


@dataclass
class _Spill:
    """One band's spill file: which rows of the band it holds (``written``), once it has any."""

    path: Path
    fd: int | None = None
    dtype: np.dtype | None = None
    width: int = 0
    written: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    failed: bool = False


_SPILLS: dict[tuple[str, int], _Spill] = {}


@dataclass(frozen=True)
class SpilledBands:
    """The spills :func:`rows_spilled` holds."""

    spills: tuple[_Spill, ...]

    @property
    def every_band(self) -> bool:
        """Whether every band asked for has rows spilled (its reads then decode nothing
        where its rows were decoded before)."""
        return bool(self.spills) and all(
            s.fd is not None and bool(s.written.any()) for s in self.spills
        )


def _key(path: Path | str, index: int) -> tuple[str, int]:
    return (os.fspath(path), index)


@contextlib.contextmanager
def rows_spilled(sources: Iterable[BandSource], directory: Path) -> Iterator[SpilledBands]:
    """Within it, rows of these bands that any thread decodes whole-width (a kept whole band,
    a strip of the tiled predictor) are also written into ``directory``, and a later read of
    rows all written is served from there (:func:`spilled_rows`); the files and the directory
    are deleted on exit. A band whose file is not JPEG 2000 is not spilled; a spill that cannot
    be written (a full disk) is dropped, and its reads decode as without it."""
    keys, spills = [], []
    with _LOCK:
        for number, source in enumerate(sources):
            key = _key(source.path, source.index)
            if key not in _SPILLS:
                _SPILLS[key] = _Spill(directory / f"band{number}.rows")
                keys.append(key)
            spills.append(_SPILLS[key])
    try:
        yield SpilledBands(tuple(spills))
    finally:
        with _LOCK:
            for key in keys:
                _close(_SPILLS.pop(key))
        with contextlib.suppress(OSError):
            directory.rmdir()


def spill_rows(src: rasterio.io.DatasetReader, index: int, start: int, rows: np.ndarray) -> None:
    """Write decoded full-width rows ``[start, start + len(rows))`` of a band to its spill,
    when :func:`rows_spilled` holds one for it."""
    spill = _SPILLS.get(_key(src.name, index))
    if spill is None or spill.failed:
        return
    with _LOCK:
        try:
            if spill.failed or (spill.fd is None and not _open(spill, src, index)):
                return
            data = np.ascontiguousarray(rows, dtype=spill.dtype)
            view, offset = data.data.cast("B"), start * data.strides[0]
            while view:  # pwrite may write less than asked
                assert spill.fd is not None
                done = os.pwrite(spill.fd, view, offset)
                view, offset = view[done:], offset + done
            spill.written[start : start + len(data)] = True
        except OSError as err:  # a full disk costs the crops a decode, not the pair
            log.warning("cannot spill decoded rows to %s (%s); crops will decode them", spill.path,
                        err)
            _close(spill)


def spilled_rows(
    src: rasterio.io.DatasetReader, index: int, rows: tuple[int, int]
) -> tuple[np.ndarray, int] | None:
    """Rows ``[r0, r1)`` of a band as (full-width rows, first row) read back from its spill,
    or None when it has no spill or lacks one of the rows."""
    spill = _SPILLS.get(_key(src.name, index))
    r0, r1 = rows
    if spill is None or spill.fd is None or r1 > len(spill.written):
        return None
    with _LOCK:
        if spill.fd is None or not spill.written[r0:r1].all():
            return None
        assert spill.dtype is not None
        out = np.empty((r1 - r0, spill.width), dtype=spill.dtype)
        read = os.preadv(spill.fd, [out.data.cast("B")], r0 * out.strides[0])
    return (out, r0) if read == out.nbytes else None


def _open(spill: _Spill, src: rasterio.io.DatasetReader, index: int) -> bool:
    """Create the spill file on the first write; False (and no more tries) for a file whose
    driver is not spilled."""
    if src.driver not in SPILLED_DRIVERS:
        spill.failed = True
        return False
    spill.path.parent.mkdir(parents=True, exist_ok=True)
    spill.fd = os.open(spill.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    spill.dtype = np.dtype(src.dtypes[index - 1])
    spill.width = src.width
    spill.written = np.zeros(src.height, bool)
    return True


def _close(spill: _Spill) -> None:
    """Close and delete a spill's file, for good (a read still running on another thread
    writes nothing more)."""
    spill.failed = True
    if spill.fd is not None:
        os.close(spill.fd)
        spill.fd = None
    with contextlib.suppress(OSError):
        spill.path.unlink()
