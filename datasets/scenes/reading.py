"""Bands of a file read onto a target grid as float32, NaN where invalid.

One way per case, picked per band:

- the grids share pixels (:func:`pixel_offset`): a windowed read, no resampling;
- each target pixel is a whole k x k block of the file's and the resampling is nearest, average
  or mode (a cloud mask's coarse grid): a read with ``out_shape``, which GDAL serves from the
  file's overviews (JPEG 2000 resolution levels, COG overviews) instead of decoding every pixel;
- bilinear onto a grid nested k x k in the file's (20 and 60 m bands onto 10 m) without invalid
  pixels: the numpy kernel of :mod:`.upsample` over the file's rows (the kept strip inside
  :func:`~.strips.files_kept_open`), equal to GDAL's warp bit for bit and about twice as fast
  per predictor window (``tests/datasets/test_scene.py`` shows both);
- nearest onto such a nested grid (the date matching's sample of a small pair): each source
  pixel repeated k x k times in numpy, equal to GDAL's nearest warp bit for bit, without the
  warper's cost (it took as long as decoding the band);
- anything else: GDAL's warper over the file (a :class:`~rasterio.vrt.WarpedVRT`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.scenes.rasters import BandSource
from groundbreak.datasets.scenes.remote import is_remote, remote_hint, remote_reads
from groundbreak.datasets.scenes.strips import KeptBands, band_rows, opened, plain_validity
from groundbreak.datasets.scenes.upsample import (
    bilinear_upsample,
    nearest_upsample,
    nearest_window,
    nesting,
    source_window,
)


def read_band(source: BandSource, grid: Grid, resampling: Resampling) -> np.ndarray:
    """One band onto a grid as float32 (H, W), NaN = invalid."""
    out = np.empty((1, grid.height, grid.width), dtype=np.float32)
    read_bands_into(out, source.path, {0: source}, grid, resampling)
    return out[0]


def read_bands_into(
    out: np.ndarray,
    path: Path | str,
    sources: Mapping[int, BandSource],
    target: Grid,
    resampling: Resampling = Resampling.bilinear,
    kept: KeptBands | None = None,
) -> None:
    """Read bands of one file onto a target grid into ``out[i]`` (float32, NaN = invalid);
    whole bands decoded on the way are kept in ``kept`` and read from it after."""
    index = next(iter(sources.values())).index  # the band being read, for the error message
    remote = isinstance(path, str) and is_remote(path)
    try:
        with warnings.catch_warnings(), remote_reads(path):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with opened(path) as src:
                for i, source in sources.items():
                    index = source.index
                    offset = pixel_offset(source.grid, target)
                    decimation = _decimation(source.grid, target) if offset is None else None
                    if offset is not None:
                        out[i] = _read_aligned(src, source, offset, target, kept)
                    elif decimation is not None and resampling in DECIMATED_RESAMPLING:
                        out[i] = _read_decimated(src, source, decimation, target, resampling)
                    else:
                        upsampled = None
                        if resampling == Resampling.bilinear:
                            upsampled = _read_upsampled(src, source, target, kept)
                        elif resampling == Resampling.nearest:
                            upsampled = _read_nearest(src, source, target, kept)
                        if upsampled is None:
                            upsampled = _read_warped(src, source, target, resampling)
                        out[i] = upsampled
                    if np.dtype(src.dtypes[source.index - 1]).kind == "f":
                        band = out[i]
                        band[np.isinf(band)] = np.nan  # +-inf is no reflectance: invalid
    except RasterioError as err:
        detail = err.__cause__ or err
        if remote:
            raise InputError(path, f"cannot read band {index} ({remote_hint(detail, True)})"
                             ) from err
        raise InputError(
            path, f"cannot read band {index}: truncated or corrupt file? ({detail})"
        ) from err

def _read_aligned(
    src: rasterio.io.DatasetReader,
    source: BandSource,
    offset: tuple[int, int],
    target: Grid,
    kept: KeptBands | None = None,
) -> np.ndarray:
    """Read the pixels a target grid shares with the file; NaN outside it and where invalid.

    Only the part inside the file is read (a plain windowed read, no boundless VRT). A nodata
    value of the source that the file does not declare (an override) is honoured too.
    """
    index = source.index
    out = np.full(target.shape, np.nan, dtype=np.float32)
    row, col = offset
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + target.height, src.height), min(col + target.width, src.width)
    if r1 <= r0 or c1 <= c0:
        return out
    window = Window(c0, r0, c1 - c0, r1 - r0)
    inside = out[r0 - row : r1 - row, c0 - col : c1 - col]
    strip = band_rows(src, index, (r0, r1), (c0, c1), kept)
    if strip is not None:
        data, start = strip
        inside[:] = data[r0 - start : r1 - start, c0:c1]
        if src.nodata is not None:
            inside[data[r0 - start : r1 - start, c0:c1] == src.nodata] = np.nan
    elif src.nodata is None and src.mask_flag_enums[index - 1] == [MaskFlags.all_valid]:
        inside[:] = src.read(index, window=window)
    else:
        data = src.read(index, window=window, masked=True)
        inside[:] = data.astype(np.float32).filled(np.nan)
    if source.nodata is not None and source.nodata != src.nodata:
        inside[inside == source.nodata] = np.nan
    return out


DECIMATED_RESAMPLING = (Resampling.nearest, Resampling.average, Resampling.mode)
"""Resamplings a coarse read takes straight from the file (and its overviews); others warp."""


def _read_decimated(
    src: rasterio.io.DatasetReader,
    source: BandSource,
    decimation: tuple[int, int, int],
    target: Grid,
    resampling: Resampling,
) -> np.ndarray:
    """Read onto a coarser grid whose pixels are whole blocks of the file's (a cloud mask's).

    A plain read with ``out_shape``, so GDAL reads from overviews where the file has them (JPEG
    2000 resolution levels, COG overviews) instead of decoding every pixel. Target pixels only
    partly inside the file are NaN.
    """
    row, col, k = decimation
    out = np.full(target.shape, np.nan, dtype=np.float32)
    r0, c0 = -(-max(-row, 0) // k), -(-max(-col, 0) // k)
    r1 = min(target.height, (src.height - row) // k)
    c1 = min(target.width, (src.width - col) // k)
    if r1 <= r0 or c1 <= c0:
        return out
    window = Window(col + c0 * k, row + r0 * k, (c1 - c0) * k, (r1 - r0) * k)
    data = src.read(
        source.index,
        window=window,
        out_shape=(r1 - r0, c1 - c0),
        resampling=resampling,
        masked=True,
    )
    inside = data.astype(np.float32).filled(np.nan)
    if source.nodata is not None and source.nodata != src.nodata:
        inside[inside == source.nodata] = np.nan
    out[r0:r1, c0:c1] = inside
    return out


def _decimation(source: Grid, target: Grid) -> tuple[int, int, int] | None:
    """(row, col, k) when each target pixel is a k x k block of source pixels (k >= 2) and the
    target's origin lies on a source pixel corner (row, col); else None."""
    nest = nesting(target, source)  # the same nesting, seen from the coarse grid
    return None if nest is None else (-nest[0], -nest[1], nest[2])


def _read_upsampled(
    src: rasterio.io.DatasetReader, source: BandSource, target: Grid, kept: KeptBands | None = None
) -> np.ndarray | None:
    """Bilinear read onto a grid that nests k x k pixels in each of the file's (20 and 60 m
    bands onto 10 m), equal to the warper's, from the kept strips of the file's rows; None
    where the warper must do it (no such nesting, invalid pixels among those needed)."""
    nest = nesting(source.grid, target)
    window = source_window(nest, target.shape, (src.height, src.width)) if nest else None
    if nest is None or window is None:
        return None
    (r0, r1), (c0, c1) = window
    strip = band_rows(src, source.index, (r0, r1), (c0, c1), kept)
    if strip is not None:
        data, start = strip
        block = data[r0 - start : r1 - start, c0:c1]
        invalid = src.nodata is not None and bool((block == src.nodata).any())
    else:
        read = src.read(source.index, window=Window(c0, r0, c1 - c0, r1 - r0), masked=True)
        block, invalid = read.data, bool(np.ma.getmaskarray(read).any())
    if invalid or (source.nodata is not None and bool((block == source.nodata).any())):
        return None
    if block.dtype.kind == "f" and not np.isfinite(block).all():  # NaN or inf: the warper's job
        return None
    return bilinear_upsample(block, (r0, c0), nest, target.shape, (src.height, src.width))


def _read_nearest(
    src: rasterio.io.DatasetReader, source: BandSource, target: Grid, kept: KeptBands | None = None
) -> np.ndarray | None:
    """Nearest read onto a grid nested k x k in the file's (NaN outside the file and at
    nodata), equal to the warper's; None where the warper must do it (no such nesting, a file
    whose validity is not plain: a mask band, alpha, or a float nodata value)."""
    nest = nesting(source.grid, target)
    window = nearest_window(nest, target.shape, (src.height, src.width)) if nest else None
    if nest is None or window is None or not plain_validity(src, source.index):
        return None
    (r0, r1), (c0, c1) = window
    strip = band_rows(src, source.index, (r0, r1), (c0, c1), kept)
    if strip is not None:
        data, start = strip
        block = data[r0 - start : r1 - start, c0:c1]
    else:
        block = src.read(source.index, window=Window(c0, r0, c1 - c0, r1 - r0))
    size = (src.height, src.width)
    out = nearest_upsample(block, (r0, c0), nest, target.shape, size)
    nodata = source.nodata if source.nodata is not None else src.nodata  # as the warper's
    if nodata is not None and bool((block == nodata).any()):
        hidden = nearest_upsample((block == nodata).astype(np.uint8), (r0, c0), nest,
                                  target.shape, size)
        out[hidden == 1] = np.nan
    return out


def _read_warped(
    src: rasterio.io.DatasetReader,
    source: BandSource,
    target: Grid,
    resampling: Resampling = Resampling.bilinear,
) -> np.ndarray:
    """Resample (bilinear) or reproject one band onto a target grid; NaN where invalid."""
    nodata_args = (
        {"src_nodata": source.nodata, "nodata": source.nodata}
        if source.nodata is not None
        else {"add_alpha": True}
    )
    with WarpedVRT(
        src,
        crs=target.crs,
        transform=target.transform,
        width=target.width,
        height=target.height,
        resampling=resampling,
        dtype="float32",  # no rounding of resampled values to the file dtype
        **nodata_args,
    ) as vrt:
        if source.nodata is not None:
            return vrt.read(source.index, masked=True).astype(np.float32).filled(np.nan)
        data = vrt.read(source.index).astype(np.float32, copy=False)
        # the alpha band (last) marks pixels outside the file or masked in it; a masked read
        # does not see it (GDAL reports the VRT's bands as all valid)
        data[vrt.read(vrt.count) == 0] = np.nan
    return data


def pixel_offset(source: Grid, target: Grid) -> tuple[int, int] | None:
    """(row, col) of the target's origin in the source grid when both share pixels, else None."""
    if source.crs != target.crs:
        return None
    s, t = source.transform, target.transform
    if not (math.isclose(s.a, t.a, rel_tol=1e-9) and math.isclose(s.e, t.e, rel_tol=1e-9)):
        return None
    if s.b != 0 or s.d != 0 or t.b != 0 or t.d != 0:
        return None
    col = (t.c - s.c) / s.a
    row = (t.f - s.f) / s.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return (round(row), round(col))

