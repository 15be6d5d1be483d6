"""Prediction rasters: written georeferenced, tiled, DEFLATE-compressed, Cloud Optimized GeoTIFF;
read back as float32 with NaN for nodata (:func:`read_probability`).

Rasters are written band of rows by band of rows into a hidden temporary tiled GeoTIFF beside
the final file. :meth:`TiledRasterWriter.commit` then turns it into a Cloud Optimized GeoTIFF
(GDAL's COG driver, with overviews) when the installed GDAL has that driver, and renames it to
its final name, so a file under the final name is always complete. An error before the commit
removes the temporary files.

The prediction outputs (:class:`PredictionRasterWriter`):

- ``probability.tif``: float32 change probability in [0, 1]; nodata is NaN (pixels with no
  valid input on either date, or outside every predicted window);
- ``mask.tif``: uint8, 1 where the probability is at least the threshold, else 0; nodata 255.

Both have exactly the pair grid's size, CRS and transform (no CRS for images without one).

GDAL's own lines on stderr (libtiff's ``_tiffWriteProc: No space left on device``...) are
captured during each write instead of being shown; a write that fails on a full disk or quota is
raised as ``OSError(ENOSPC)`` (the run stops, exit code 4), whatever words GDAL used.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from groundbreak.datasets.errors import is_disk_full
from groundbreak.datasets.grid import Grid
from groundbreak.infer.atomic import process_alive

BLOCK_SIZE = 256
PROBABILITY_FILE = "probability.tif"
MASK_FILE = "mask.tif"
PROBABILITY_NODATA = float("nan")
MASK_NODATA = 255
GDAL_CACHE_BYTES = 256 * 2**20
"""GDAL's block cache during a prediction. GDAL's own default is 5% of the machine's RAM, which
alone would break the memory bound on a large machine."""


def bounded_gdal_cache(cache_bytes: int = GDAL_CACHE_BYTES) -> rasterio.Env:
    """A rasterio environment whose GDAL block cache holds at most ``cache_bytes``."""
    return rasterio.Env(GDAL_CACHEMAX=cache_bytes)


def read_probability(
    src: rasterio.io.DatasetReader,
    window: Window | None = None,
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Band 1 of an open probability raster as float32, NaN where nodata (windowed; decimated
    to ``out_shape``, nearest neighbour, when given)."""
    data = src.read(1, window=window, masked=True, out_shape=out_shape)
    return np.ma.filled(data.astype(np.float32), np.nan)


_GDAL_WRITE_FAILURE = re.compile(
    r"Write failed|Write error|Seek error|IO error writing|TIFFAppendToStrip|errno[ =:]*(28|122)\b",
    re.IGNORECASE,
)
LOW_SPACE_BYTES = 1 << 20
"""A GDAL write failure in a folder with less free space than this is a full disk."""


@contextmanager
def gdal_stderr() -> Iterator[list[str]]:
    """Capture what C code (GDAL, libtiff) prints on stderr during a call, instead of showing it.

    The captured text is appended to the yielded list when the call ends. Writes beyond the
    pipe's buffer are dropped, never blocked.
    """
    captured: list[str] = []
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    saved = os.dup(2)
    try:
        os.dup2(write_fd, 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            with suppress(BlockingIOError):
                captured.append(os.read(read_fd, 1 << 16).decode("utf-8", "replace"))
    finally:
        for fd in (read_fd, write_fd, saved):
            os.close(fd)


@contextmanager
def gdal_writes(path: Path) -> Iterator[None]:
    """Run GDAL writes to ``path`` quietly; a failure on a full disk becomes ``OSError(ENOSPC)``."""
    captured: list[str] = []
    try:
        with gdal_stderr() as captured:
            yield
    except Exception as err:
        if is_disk_full(err):
            raise
        messages, cause = [], err
        while cause is not None and len(messages) < 10:
            messages.append(str(cause))
            cause = cause.__cause__ or cause.__context__
        said = " ".join(" ".join([*messages, *captured]).split())
        if _GDAL_WRITE_FAILURE.search(said) is None:
            raise
        if not (is_disk_full(OSError(said)) or _free_bytes(path.parent) < LOW_SPACE_BYTES):
            raise
        raise OSError(
            errno.ENOSPC, f"No space left on device (GDAL: {said[:200]})", str(path)
        ) from err


def _free_bytes(folder: Path) -> int:
    """Free bytes for this user in a folder's file system (large when it cannot be told)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62


def cog_driver_available() -> bool:
    """True when the GDAL inside rasterio has the COG driver (GDAL >= 3.1)."""
    with rasterio.Env() as env:
        return "COG" in env.drivers()


_PARTIAL_NAME = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.(partial|cog)\.tif$")


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the hidden temporary rasters a killed writer left in a folder.

    A temporary raster's name holds its writer's pid; only those of processes that no longer
    run on this machine are removed, so a writer running beside this one keeps its files.
    """
    removed: list[Path] = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = _PARTIAL_NAME.match(entry.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


class TiledRasterWriter:
    """A single-band raster written in row bands to a temporary file, then committed.

    Use as a context manager: rows written with :meth:`write_rows`, the file made final with
    :meth:`commit`. Leaving the context without a commit (e.g. on an error) deletes the
    temporary files and leaves no file under ``path``.

    Args:
        path: The final file.
        grid: Size, transform and CRS of the raster.
        dtype: Numpy dtype name of the band (``"float32"``, ``"uint8"``).
        nodata: The band's nodata value.
        block_size: Tile side in pixels (a multiple of 16).
        overview_resampling: Resampling of the COG's overviews (``"average"``, ``"nearest"``).
        cog: Write a Cloud Optimized GeoTIFF; default: when the COG driver is available.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: Grid,
        dtype: str,
        nodata: float,
        *,
        block_size: int = BLOCK_SIZE,
        overview_resampling: str = "nearest",
        cog: bool | None = None,
    ) -> None:
        if block_size % 16:
            raise ValueError(f"block_size must be a multiple of 16, got {block_size}")
        self.path = Path(path)
        self.grid = grid
        self.dtype = np.dtype(dtype)
        self.nodata = nodata
        self.block_size = block_size
        self.overview_resampling = overview_resampling
        self.cog = cog_driver_available() if cog is None else cog
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._partial = self.path.with_name(f".{self.path.name}.{token}.partial.tif")
        self._cog_partial = self.path.with_name(f".{self.path.name}.{token}.cog.tif")
        self._dataset: rasterio.io.DatasetWriter | None = None
        self._committed = False

    def __enter__(self) -> TiledRasterWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.path.parent)
        profile = {
            "driver": "GTiff",
            "width": self.grid.width,
            "height": self.grid.height,
            "count": 1,
            "dtype": self.dtype.name,
            "nodata": self.nodata,
            "crs": self.grid.crs,
            "transform": self.grid.transform,
            "tiled": True,
            "blockxsize": self.block_size,
            "blockysize": self.block_size,
            "compress": "deflate",
            # The temporary file is rewritten into a COG: compress it fast then.
            "zlevel": 1 if self.cog else 6,
            "predictor": 3 if self.dtype.kind == "f" else 2,
            "bigtiff": "IF_SAFER",
        }
        with warnings.catch_warnings(), gdal_writes(self._partial):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dataset = rasterio.open(self._partial, "w", **profile)
        return self

    def write_rows(self, row_off: int, rows: np.ndarray) -> None:
        """Write full-width rows ``(n, width)`` starting at scene row ``row_off``."""
        if self._dataset is None:
            raise RuntimeError("the writer is not open; use it as a context manager")
        if rows.ndim != 2 or rows.shape[1] != self.grid.width:
            raise ValueError(f"expected rows of width {self.grid.width}, got shape {rows.shape}")
        window = Window(0, row_off, self.grid.width, rows.shape[0])
        with gdal_writes(self._partial):
            self._dataset.write(rows.astype(self.dtype, copy=False), 1, window=window)

    def commit(self) -> Path:
        """Finish the file: convert to COG if asked, then rename it to its final name."""
        if self._dataset is None:
            raise RuntimeError("the writer is not open; use it as a context manager")
        dataset, self._dataset = self._dataset, None
        with gdal_writes(self._partial):
            dataset.close()
        if self.cog:
            with warnings.catch_warnings(), gdal_writes(self._cog_partial):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                rasterio.shutil.copy(
                    self._partial,
                    self._cog_partial,
                    driver="COG",
                    compress="DEFLATE",
                    predictor="YES",
                    blocksize=self.block_size,
                    overview_resampling=self.overview_resampling.upper(),
                    bigtiff="IF_SAFER",
                    # blocks compressed on every core, byte for byte the same file: the model
                    # has finished, so the cores are free (4096² probability 2.6-2.9 s -> 1.5-1.7)
                    num_threads="ALL_CPUS",
                )
            os.replace(self._cog_partial, self.path)
            self._partial.unlink()
        else:
            os.replace(self._partial, self.path)
        self._committed = True
        return self.path

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._dataset is not None:
            dataset, self._dataset = self._dataset, None
            try:
                with gdal_stderr():
                    dataset.close()
            except Exception:  # already failing: the error being raised is the one to report
                if exc is None:
                    raise
        for partial in (self._partial, self._cog_partial):
            partial.unlink(missing_ok=True)


class PredictionRasterWriter:
    """Writes ``probability.tif`` and ``mask.tif`` of one pair from probability rows.

    Args:
        out_dir: Folder of the two rasters (created if needed).
        grid: The pair grid.
        threshold: Probabilities at or above it are change (mask 1).
        block_size: Tile side of both rasters.
        cog: Write Cloud Optimized GeoTIFFs; default: when the COG driver is available.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        grid: Grid,
        threshold: float,
        *,
        block_size: int = BLOCK_SIZE,
        cog: bool | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.grid = grid
        self.threshold = threshold
        self.valid_pixels = 0
        self.probability = TiledRasterWriter(
            self.out_dir / PROBABILITY_FILE,
            grid,
            "float32",
            PROBABILITY_NODATA,
            block_size=block_size,
            overview_resampling="average",
            cog=cog,
        )
        self.mask = TiledRasterWriter(
            self.out_dir / MASK_FILE,
            grid,
            "uint8",
            MASK_NODATA,
            block_size=block_size,
            overview_resampling="nearest",
            cog=cog,
        )

    def __enter__(self) -> PredictionRasterWriter:
        self.probability.__enter__()
        try:
            self.mask.__enter__()
        except BaseException:
            self.probability.__exit__(None, None, None)
            raise
        return self

    def write_rows(self, row_off: int, probability: np.ndarray) -> None:
        """Write probability rows (NaN = nodata) and the mask they give."""
        valid = np.isfinite(probability)
        mask = np.full(probability.shape, MASK_NODATA, dtype=np.uint8)
        mask[valid] = probability[valid] >= self.threshold
        self.probability.write_rows(row_off, probability)
        self.mask.write_rows(row_off, mask)
        self.valid_pixels += int(valid.sum())

    @property
    def valid_fraction(self) -> float:
        """Fraction of the grid's pixels written with a valid probability so far."""
        return self.valid_pixels / (self.grid.width * self.grid.height)

    def commit(self) -> tuple[Path, Path]:
        """Make both rasters final; returns (probability path, mask path)."""
        return self.probability.commit(), self.mask.commit()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.mask.__exit__(exc_type, exc, traceback)
        self.probability.__exit__(exc_type, exc, traceback)
