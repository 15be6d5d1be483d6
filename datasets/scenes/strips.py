"""Decoded pixels kept across reads, so that a night decodes each block of a band once: files and
decoded row strips kept open across the reads of one thread (:func:`files_kept_open`), so that
windows read row after row decode each block once; and whole bands a scene's reads decoded, kept
for the scene's later reads (:class:`KeptBands`): a pair's date matching decodes whole the bands
its windows then read again."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Interleaving, MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from groundbreak.datasets.scenes.rasters import BandSource
from groundbreak.datasets.scenes.row_spill import spill_rows, spilled_rows

_KEPT_OPEN = threading.local()

MMAP_THRESHOLD_BYTES = 16 * 2**20
"""Once pixels are kept (:func:`files_kept_open`, :func:`~.base.bands_kept`), every allocation
this large or larger is a memory map of its own, returned to the system when freed (see
:func:`map_large_allocations`). 16 MB maps the strips of full-width 10 m bands (22 MB a 1024-row
JPEG 2000 block row) and the batches of windows (27 MB), and with 512 px windows the largest
of the model's activations too, which each forward pass then faults in again: 4 MB made the
model 35-60 % slower, 16 MB 10 % (256 px windows, 2048² COG pair, quiet machine); the full-width
10980² .SAFE crop's peak is 1740 MB at 16 MB, 1714 at 4 MB, 1895-1916 without (bench/README.md).
With ``THP_MEM_ALLOC_ENABLE=1`` (torch's tensors on huge pages; docs/operator.md) those faults
are 2 MB each, not 4 kB: a window's system time falls, a night's wall time did not measurably."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


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
    several reads share. With strips, large allocations are memory maps of their own from then
    on (:func:`map_large_allocations`).
    """
    if strips:
        map_large_allocations()
    previous = getattr(_KEPT_OPEN, "kept", None)
    kept = _KeptFiles({}, {} if strips else None)
    _KEPT_OPEN.kept = kept
    try:
        yield
    finally:
        _KEPT_OPEN.kept = previous
        for src in kept.files.values():
            src.close()


def map_large_allocations() -> bool:
    """Have glibc's malloc give each allocation of :data:`MMAP_THRESHOLD_BYTES` or more a memory
    map of its own, returned to the system when freed; True where it took (glibc).

    By default glibc raises that threshold to the size of each mapped block freed, up to 32 MB:
    after a night's first large arrays are freed, the strips, the batches of windows and the
    JPEG 2000 decoder's tiles come from the heaps of the threads that allocate them, and what
    they free there stays resident (about 200 MB of a full-width .SAFE pair's peak, see
    bench/README.md). A fixed threshold also stops that raising; it is process-wide and stays.
    """
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return mallopt is not None and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def release_free_heap() -> bool:
    """Return the free pages inside glibc's heaps to the system (``malloc_trim(0)``); True where
    it released any (glibc).

    What the model's activations and the decoders' buffers free below the map threshold stays in
    the heaps of the threads that freed it, and the heaps grow through a pair's windows (about
    200 MB free inside them late in a 4096² pair's). Called once per row band of windows (the
    next band faults in again only what it uses): a full-tile .SAFE night's peak 2012 -> 1909 MB,
    no time measurably lost; once per window cost 14 % of the time (bench/README.md)."""
    if not sys.platform.startswith("linux"):
        return False
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    return trim is not None and trim(0) == 1


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


def plain_validity(src: rasterio.io.DatasetReader, index: int) -> bool:
    """Whether a band's valid pixels are known from its values alone: all valid, or invalid
    where they equal an integer nodata value (no mask band, no alpha, no float nodata)."""
    flags = src.mask_flag_enums[index - 1]
    plain = flags == [MaskFlags.all_valid] and src.nodata is None
    by_value = flags == [MaskFlags.nodata] and np.issubdtype(src.dtypes[index - 1], np.integer)
    return plain or by_value


KEPT_BAND_BYTES = 128 * 2**20
"""The most a scene keeps of the whole bands its reads decoded (:class:`KeptBands`): every band of
a 2048² scene, the 20 and 60 m bands of a 4096² one, the 60 m bands of a full tile."""


@dataclass
class KeptBands:
    """Whole bands of a scene's compressed files, decoded once by a read that spanned them (the
    date matching's sample of a pair up to 4096² px, a cloud mask's 60 m bands) and kept for the
    scene's later reads (the windows), up to ``limit`` bytes. ``decodes`` counts whole-band
    decodes per (file, band)."""

    limit: int = KEPT_BAND_BYTES
    bands: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    decodes: Counter[tuple[str, int]] = field(default_factory=Counter)

    def rows(
        self, src: rasterio.io.DatasetReader, index: int, rows: tuple[int, int],
        cols: tuple[int, int],
    ) -> np.ndarray | None:
        """The whole band when kept, or decoded now when the read touches every block of it
        (``rows`` and ``cols``: it decodes them all anyway) and it fits; None for a band whose
        validity is not plain or an uncompressed GeoTIFF (nothing to decode)."""
        key = (src.name, index)
        band = self.bands.get(key)
        if band is not None:
            return band
        height, width = src.block_shapes[index - 1]
        first = rows[0] < height and cols[0] < width
        last = (rows[1] - 1) // height == (src.height - 1) // height and (
            (cols[1] - 1) // width == (src.width - 1) // width
        )
        if not (first and last) or not _worth_keeping(src, index):
            return None
        nbytes = src.height * src.width * np.dtype(src.dtypes[index - 1]).itemsize
        if nbytes + sum(b.nbytes for b in self.bands.values()) > self.limit:
            return None
        band = self.bands[key] = src.read(index)
        self.decodes[key] += 1
        spill_rows(src, index, 0, band)
        return band


def _worth_keeping(src: rasterio.io.DatasetReader, index: int) -> bool:
    """A band whose decoded rows are worth keeping: compressed, with plain validity."""
    if src.driver == "GTiff" and src.compression is None:
        return False
    return plain_validity(src, index)


def band_rows(
    src: rasterio.io.DatasetReader,
    index: int,
    rows: tuple[int, int],
    cols: tuple[int, int],
    kept: KeptBands | None = None,
) -> tuple[np.ndarray, int] | None:
    """Rows ``[r0, r1)`` (columns ``[c0, c1)`` needed) of a band as (full-width rows, first
    row of them): the scene's kept whole band (:class:`KeptBands`), else the thread's kept strip
    (:func:`strip_rows`), else the rows spilled to disk when they were decoded
    (:mod:`.row_spill`); None: read them plainly."""
    band = kept.rows(src, index, rows, cols) if kept is not None else None
    if band is not None:
        return band, 0
    return strip_rows(src, index, rows) or spilled_rows(src, index, rows)


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
    if not _worth_keeping(src, index):
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
    spill_rows(src, index, r0 + kept_rows, buffer[kept_rows : stop - r0])
    kept.strips[key] = strip = _Strip(r0, stop - r0, buffer)
    return strip.data, strip.start

