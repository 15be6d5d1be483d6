"""Files and decoded row strips kept open across the reads of one thread
(:func:`files_kept_open`), so that windows read row after row decode each block once."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Interleaving, MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from groundbreak.datasets.scenes.rasters import BandSource

_KEPT_OPEN = threading.local()


@dataclass
class _Strip:
    """Decoded rows ``[start, start + rows)`` of one band of a file, full width, held in the
    first ``rows`` rows of a buffer that later reads down the file reuse (no new array per
    read, so freed strips do not pile up in the allocator's arenas)."""

    start: int
    rows: int
    buffer: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + self.rows

    @property
    def data(self) -> np.ndarray:
        return self.buffer[: self.rows]


@dataclass
class _KeptFiles:
    """The files and decoded row strips :func:`files_kept_open` keeps."""

    files: dict[Path | str, rasterio.io.DatasetReader]
    strips: dict[tuple[Path | str, int], _Strip] | None  # None: no strips, files only


@contextlib.contextmanager
def files_kept_open(strips: bool = True) -> Iterator[None]:
    """Within it, this thread's scene reads keep every file they open open, and reads on a
    file's own grid go through a strip of whole block rows that reads further down reuse.

    Each file's header is then parsed once, and each JPEG 2000 tile or COG block is decoded
    once when windows are read row after row (as the tiled predictor does), instead of once
    per window touching it. A strip spans the file's width and holds at most the rows of the
    last read plus one block row. Without ``strips`` (reads scattered over a file, such as a
    report's crops), only the files are kept: GDAL's block cache then serves the blocks that
    several reads share.
    """
    previous = getattr(_KEPT_OPEN, "kept", None)
    kept = _KeptFiles({}, {} if strips else None)
    _KEPT_OPEN.kept = kept
    try:
        yield
    finally:
        _KEPT_OPEN.kept = previous
        for src in kept.files.values():
            src.close()


def strip_block_cache_bytes(sources: Iterable[BandSource]) -> int:
    """GDAL block cache that reading these bands through strips needs: the strips keep every
    decoded row, except that GDAL decodes a block of a pixel-interleaved file for all its bands
    at once and caches the others' until their own strips ask; so one block row of every band
    of the largest such file that several of the bands are read from (0 when there is none or
    none can be opened). Files read for one band only (a Sentinel-2 product's) are not opened."""
    bands_per_file = Counter(s.path for s in sources)
    largest = 0
    for path in (path for path, count in bands_per_file.items() if count > 1):
        try:
            with rasterio.open(path) as src:
                if src.count > 1 and src.interleaving == Interleaving.pixel:
                    itemsize = max(np.dtype(d).itemsize for d in src.dtypes)
                    row = src.block_shapes[0][0] * src.width * src.count * itemsize
                    largest = max(largest, row)
        except RasterioError:  # reported by the read itself, with its file named
            continue
    return largest


def opened(path: Path | str) -> contextlib.AbstractContextManager[rasterio.io.DatasetReader]:
    """The file open for reading: the one kept open by :func:`files_kept_open`, or a new one."""
    kept = getattr(_KEPT_OPEN, "kept", None)
    if kept is None:
        return rasterio.open(path)
    if path not in kept.files:
        kept.files[path] = rasterio.open(path)
    return contextlib.nullcontext(kept.files[path])


def strip_rows(
    src: rasterio.io.DatasetReader, index: int, rows: tuple[int, int]
) -> tuple[np.ndarray, int] | None:
    """Rows ``[r0, r1)`` of a band as (strip, first row of the strip) from the kept strip,
    decoding only the block rows it lacks; None outside :func:`files_kept_open`, for an
    uncompressed GeoTIFF (nothing to decode: a plain read costs a copy, a strip its memory) or
    for a band whose validity is not plain (no nodata, or an integer nodata value)."""
    kept = getattr(_KEPT_OPEN, "kept", None)
    if kept is None or kept.strips is None:
        return None
    if src.driver == "GTiff" and src.compression is None:
        return None
    flags = src.mask_flag_enums[index - 1]
    plain = flags == [MaskFlags.all_valid] and src.nodata is None
    by_value = flags == [MaskFlags.nodata] and np.issubdtype(src.dtypes[index - 1], np.integer)
    if not (plain or by_value):
        return None
    r0, r1 = rows
    key = (src.name, index)
    strip = kept.strips.get(key)
    if strip is not None and strip.start <= r0 and r1 <= strip.stop:
        return strip.data, strip.start
    block = src.block_shapes[index - 1][0]
    stop = min(src.height, -(-r1 // block) * block)
    buffer = strip.buffer if strip is not None and len(strip.buffer) >= stop - r0 else None
    if buffer is None:
        buffer = np.empty((stop - r0, src.width), dtype=src.dtypes[index - 1])
    kept_rows = 0
    if strip is not None and strip.start <= r0 < strip.stop:  # carry on down the file
        kept_rows = strip.stop - r0
        buffer[:kept_rows] = strip.buffer[r0 - strip.start : strip.rows]  # overlap-safe copy
    fresh = Window(0, r0 + kept_rows, src.width, stop - r0 - kept_rows)
    src.read(index, window=fresh, out=buffer[kept_rows : stop - r0])
    kept.strips[key] = strip = _Strip(r0, stop - r0, buffer)
    return strip.data, strip.start

