"""One raster file opened and checked: its grid, its size limit, a band source of it."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.scenes.remote import is_remote, remote_hint, remote_reads

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")

@dataclass(frozen=True)
class BandSource:
    """Where one band lives: a file (or a URL), a 1-based band index in it, that file's grid."""

    path: Path | str
    index: int
    grid: Grid
    nodata: float | None


def open_raster(path: str | Path) -> rasterio.io.DatasetReader:
    """Open a raster with rasterio, turning any failure into an :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():  # a FIFO or a device would hang or never end
        raise InputError(path, "is not a regular file (a folder, device, FIFO or socket)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as err:
        raise InputError(path, f"cannot be read as a raster ({err})") from err


MAX_RASTER_PIXELS = 2_500_000_000
"""Largest raster (width x height) a scene, label or mask may declare: 50 000 x 50 000 px, 20
full Sentinel-2 tiles at 10 m. A tiny file can declare a huge size and keep a run busy for hours;
set the environment variable ``GROUNDBREAK_MAX_RASTER_PIXELS`` to allow larger rasters."""


def max_raster_pixels() -> int:
    """The raster size limit in force (:data:`MAX_RASTER_PIXELS` or its override)."""
    text = os.environ.get("GROUNDBREAK_MAX_RASTER_PIXELS", "")
    try:
        return int(float(text)) if text else MAX_RASTER_PIXELS
    except ValueError:
        return MAX_RASTER_PIXELS


def dataset_grid(src: rasterio.io.DatasetReader) -> Grid:
    """The grid of an open raster (CRS None when the file has no georeference).

    Raises:
        InputError: When the raster declares more than :func:`max_raster_pixels` pixels, or
            holds complex values (not an image of reflectances, classes or a mask).
    """
    complex_types = sorted({d for d in src.dtypes if np.dtype(d).kind == "c"})
    if complex_types:
        raise InputError(src.name, f"holds complex values ({', '.join(complex_types)}); "
                         "give a raster of real numbers")
    limit = max_raster_pixels()
    if src.width * src.height > limit:
        raise InputError(
            src.name,
            f"declares {src.width} x {src.height} pixels, more than the limit of {limit:,} "
            "(set GROUNDBREAK_MAX_RASTER_PIXELS to read larger rasters)",
        )
    return Grid(src.width, src.height, src.transform, src.crs if src.crs else None)


def single_band_source(location: str | Path, nodata: float | None = None) -> BandSource:
    """The source of a single-band raster (path or URL); ``nodata`` overrides the file's."""
    remote = isinstance(location, str) and is_remote(location)
    try:
        with warnings.catch_warnings(), remote_reads(location):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(location) if remote else open_raster(location)
    except RasterioError as err:
        raise InputError(location, f"cannot be read as a raster ({remote_hint(err, remote)})"
                         ) from err
    with src:
        if src.count != 1:
            raise InputError(location, f"expected a single-band raster, found {src.count} bands")
        return BandSource(
            location if remote else Path(location),
            1,
            dataset_grid(src),
            nodata if nodata is not None else src.nodata,
        )


def check_mask_raster(path: str | Path) -> Path:
    """A user-given cloud mask raster, checked to be a readable single-band raster."""
    single_band_source(path)
    return Path(path)

