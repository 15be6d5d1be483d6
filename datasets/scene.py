"""A scene: one dated image whose bands are read by name, windowed, onto any target grid.

Four on-disk forms are accepted (see :func:`open_scene`):

1. one multi-band raster (GeoTIFF/COG, any dtype and band count);
2. a folder of single-band rasters named by band, Sentinel-2 style (``..._B02.tif``), whose bands
   may lie on different grids (10/20/60 m): the scene's grid is the finest of them;
3. an image without georeference (PNG/JPEG), whose bands are ``red, green, blue``;
4. a scene manifest, a JSON file ``{"bands": {"B02": "path or URL", ...}, "date": ...}`` naming
   one single-band raster per band (e.g. the assets of a STAC item); relative paths resolve
   against the manifest's folder;
5. a Sentinel-2 product, a ``.SAFE`` folder or its zip, L1C or L2A (:mod:`.sentinel2`), with its
   date, radiometric offsets, SCL and sun angles from the product metadata.

A scene knows its radiometric convention (:mod:`.radiometry`) when something states it (product
metadata, a manifest's keys, STAC): :meth:`Scene.read` converts values to a model's convention.

Reading never loads a whole scene: :meth:`Scene.read` reads only what a target grid needs, through
a windowed read when the grids line up, a bilinear upsampling in numpy when each pixel of a band
holds k x k target pixels (:mod:`.upsample`, equal to the warper's), and a ``WarpedVRT``
(bilinear) otherwise.
Invalid pixels (nodata, outside the scene) come back as NaN.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Interleaving, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from groundbreak.datasets.bands import (
    RGB_BANDS,
    band_name_from_filename,
    normalize_band_name,
    normalize_band_names,
)
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.radiometry import (
    BASELINE_04_OFFSET,
    DEFAULT_QUANTIFICATION,
    UNKNOWN_RADIOMETRY,
    Radiometry,
    convert_radiometry,
)
from groundbreak.datasets.text_files import load_json_file
from groundbreak.datasets.upsample import bilinear_upsample, nesting, source_window

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_COLOR_NAMES = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}


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


class Scene:
    """One dated image: named bands on a reference grid, read windowed onto any grid.

    Args:
        path: Where the scene lives (named in errors).
        sources: Where each band lives, by canonical band name.
        grid: The scene's reference grid.
        date: Acquisition date (ISO 8601), when known.
        radiometry: How the DNs map to reflectance (see :mod:`.radiometry`); unknown by default.
        nodata: A nodata value that overrides the files' own (Sentinel-2 products: 0).
        scl: The Sen2Cor scene classification layer of an L2A product, when there is one.
        cloud_mask: A user-given mask raster of the scene (non-zero = cloud or shadow).
        level: Processing level of a Sentinel-2 product (``"L1C"``, ``"L2A"``), when known.
        sun_angles: Mean sun (azimuth, zenith) in degrees, when known (for cloud shadows).
    """

    def __init__(
        self,
        path: str | Path,
        sources: dict[str, BandSource],
        grid: Grid,
        date: str | None = None,
        *,
        radiometry: Radiometry = UNKNOWN_RADIOMETRY,
        nodata: float | None = None,
        scl: BandSource | None = None,
        cloud_mask: Path | str | None = None,
        level: str | None = None,
        sun_angles: tuple[float, float] | None = None,
    ) -> None:
        if not sources:
            raise InputError(path, "scene has no bands")
        self.path = Path(path)
        if nodata is not None:
            sources = {name: replace(s, nodata=float(nodata)) for name, s in sources.items()}
            scl = replace(scl, nodata=float(nodata)) if scl is not None else None
        self.sources = sources
        self.grid = grid
        self.date = date
        self.radiometry = radiometry
        self.scl = scl
        self.cloud_mask = cloud_mask
        self.level = level
        self.sun_angles = sun_angles

    def __repr__(self) -> str:
        return f"Scene({str(self.path)!r}, bands={self.band_names}, grid={self.grid.shape})"

    @property
    def band_names(self) -> list[str]:
        """Names of the bands this scene provides, in file order."""
        return list(self.sources)

    def check_bands(self, bands: Sequence[str]) -> list[str]:
        """Canonical band names, or an :class:`InputError` naming the bands this scene lacks."""
        wanted = [normalize_band_name(b) for b in bands]
        missing = [b for b in wanted if b not in self.sources]
        if missing:
            raise InputError(
                self.path,
                f"scene has no band(s) {', '.join(missing)}; it has {', '.join(self.band_names)}",
            )
        return wanted

    @property
    def is_sentinel2(self) -> bool:
        """True when the scene's bands carry Sentinel-2 names (``B02``...)."""
        return any(re.fullmatch(r"B(0[1-9]|1[0-2]|8A)", name) for name in self.sources)

    def read(
        self,
        bands: Sequence[str] | None = None,
        grid: Grid | None = None,
        require_valid: bool = False,
        radiometry: Radiometry | None = None,
        resampling: Resampling = Resampling.bilinear,
    ) -> np.ndarray:
        """Read bands onto a target grid (default: the scene's own grid) as float32 (C, H, W).

        Pixels that are nodata or fall outside the scene are NaN. With ``require_valid``, a target
        grid without a single valid pixel is an :class:`InputError` naming the scene. With
        ``radiometry``, values are converted from the scene's convention to that one.
        ``resampling`` applies where a band's grid differs from the target's.
        """
        names = self.check_bands(bands) if bands is not None else self.band_names
        target = grid or self.grid
        out = np.empty((len(names), target.height, target.width), dtype=np.float32)
        by_file: dict[Path | str, dict[int, BandSource]] = {}
        for i, name in enumerate(names):
            by_file.setdefault(self.sources[name].path, {})[i] = self.sources[name]
        for path, sources in by_file.items():  # one open per file: it costs more than a read
            _read_bands_into(out, path, sources, target, resampling)
        if require_valid and not np.isfinite(out).any():
            raise InputError(
                self.path,
                f"the requested {target.width}x{target.height} window holds no valid pixels "
                "(all nodata or outside the scene)",
            )
        if radiometry is not None:
            convert_radiometry(out, names, self.radiometry, radiometry)
        return out

    def read_classes(self, grid: Grid | None = None) -> np.ndarray | None:
        """The scene classification layer (SCL) on a grid, nearest-neighbour; 0 = no data.

        Returns None when the scene has no SCL.
        """
        if self.scl is None:
            return None
        classes = read_band(self.scl, grid or self.grid, Resampling.nearest)
        return np.nan_to_num(classes, nan=0.0).astype(np.uint8)


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


def _opened(path: Path | str) -> contextlib.AbstractContextManager[rasterio.io.DatasetReader]:
    """The file open for reading: the one kept open by :func:`files_kept_open`, or a new one."""
    kept = getattr(_KEPT_OPEN, "kept", None)
    if kept is None:
        return rasterio.open(path)
    if path not in kept.files:
        kept.files[path] = rasterio.open(path)
    return contextlib.nullcontext(kept.files[path])


def _strip_rows(
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


def read_band(source: BandSource, grid: Grid, resampling: Resampling) -> np.ndarray:
    """One band onto a grid as float32 (H, W), NaN = invalid."""
    out = np.empty((1, grid.height, grid.width), dtype=np.float32)
    _read_bands_into(out, source.path, {0: source}, grid, resampling)
    return out[0]


def _read_bands_into(
    out: np.ndarray,
    path: Path | str,
    sources: Mapping[int, BandSource],
    target: Grid,
    resampling: Resampling = Resampling.bilinear,
) -> None:
    """Read bands of one file onto a target grid into ``out[i]`` (float32, NaN = invalid)."""
    index = next(iter(sources.values())).index  # the band being read, for the error message
    remote = isinstance(path, str) and is_remote(path)
    try:
        with warnings.catch_warnings(), remote_reads(path):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with _opened(path) as src:
                for i, source in sources.items():
                    index = source.index
                    offset = _pixel_offset(source.grid, target)
                    decimation = _decimation(source.grid, target) if offset is None else None
                    if offset is not None:
                        out[i] = _read_aligned(src, source, offset, target)
                    elif decimation is not None and resampling in DECIMATED_RESAMPLING:
                        out[i] = _read_decimated(src, source, decimation, target, resampling)
                    else:
                        upsampled = (
                            _read_upsampled(src, source, target)
                            if resampling == Resampling.bilinear
                            else None
                        )
                        if upsampled is None:
                            upsampled = _read_warped(src, source, target, resampling)
                        out[i] = upsampled
                    if np.dtype(src.dtypes[source.index - 1]).kind == "f":
                        band = out[i]
                        band[np.isinf(band)] = np.nan  # +-inf is no reflectance: invalid
    except RasterioError as err:
        detail = err.__cause__ or err
        if remote:
            raise InputError(path, f"cannot read band {index} ({_remote_hint(detail, True)})"
                             ) from err
        raise InputError(
            path, f"cannot read band {index}: truncated or corrupt file? ({detail})"
        ) from err


def _remote_hint(err: BaseException, remote: bool) -> str:
    """An error's text; for a remote location, with the HTTP limits it was read under."""
    text = " ".join(str(err).split())
    if not remote:
        return text
    options = remote_read_options()
    return (f"{text}; remote reads give up after GDAL_HTTP_TIMEOUT={options['GDAL_HTTP_TIMEOUT']} "
            f"s and GDAL_HTTP_MAX_RETRY={options['GDAL_HTTP_MAX_RETRY']} retries")


def _read_aligned(
    src: rasterio.io.DatasetReader, source: BandSource, offset: tuple[int, int], target: Grid
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
    strip = _strip_rows(src, index, (r0, r1))
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
    src: rasterio.io.DatasetReader, source: BandSource, target: Grid
) -> np.ndarray | None:
    """Bilinear read onto a grid that nests k x k pixels in each of the file's (20 and 60 m
    bands onto 10 m), equal to the warper's, from the kept strips of the file's rows; None
    where the warper must do it (no such nesting, invalid pixels among those needed)."""
    nest = nesting(source.grid, target)
    window = nest and source_window(nest, target.shape, (src.height, src.width))
    if not window:
        return None
    (r0, r1), (c0, c1) = window
    strip = _strip_rows(src, source.index, (r0, r1))
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


def _pixel_offset(source: Grid, target: Grid) -> tuple[int, int] | None:
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


def _band_names_of(
    src: rasterio.io.DatasetReader, path: Path, given: Sequence[str] | None
) -> list[str]:
    """Band names of a multi-band file: given by the user, from descriptions, colours or indexes."""
    if given is not None:
        if len(given) != src.count:
            raise InputError(
                path, f"{len(given)} band names were given but the file has {src.count} bands"
            )
        try:
            return normalize_band_names(given)
        except ValueError as err:
            raise InputError(path, str(err)) from err
    descriptions = [d for d in src.descriptions if d]
    if len(descriptions) == src.count:
        try:
            return normalize_band_names(descriptions)
        except ValueError:  # descriptions that name a band twice ("B2", "B02"): not band names
            pass
    colours = [_COLOR_NAMES.get(ci) for ci in src.colorinterp]
    if src.count >= 3 and colours[:3] == list(RGB_BANDS):
        return list(RGB_BANDS) + [f"band{i + 1}" for i in range(3, src.count)]
    return [f"band{i + 1}" for i in range(src.count)]


def open_raster_scene(
    path: str | Path, band_names: Sequence[str] | None = None, date: str | None = None
) -> Scene:
    """A scene from one multi-band raster or image file. An alpha band is not a data band."""
    path = Path(path)
    with open_raster(path) as src:
        grid = dataset_grid(src)
        names = _band_names_of(src, path, band_names)
        alpha = [i + 1 for i, ci in enumerate(src.colorinterp) if ci == ColorInterp.alpha]
        if alpha and band_names is None:
            names = [n for i, n in enumerate(names) if i + 1 not in alpha]
            indexes = [i for i in range(1, src.count + 1) if i not in alpha]
        else:
            indexes = list(range(1, src.count + 1))
        if path.suffix.lower() in IMAGE_SUFFIXES and band_names is None and len(indexes) == 3:
            names = list(RGB_BANDS)
        nodata = src.nodata
    sources = {n: BandSource(path, i, grid, nodata) for n, i in zip(names, indexes, strict=True)}
    return Scene(path, sources, grid, date)


def open_band_folder_scene(folder: str | Path, date: str | None = None) -> Scene:
    """A scene from a folder of single-band rasters named by band (``..._B02.tif``).

    The scene's grid is the finest band grid (smallest pixel); other bands are resampled onto it.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    if not files:
        raise InputError(folder, f"folder holds no raster files ({', '.join(RASTER_SUFFIXES)})")
    sources: dict[str, BandSource] = {}
    for file in files:
        name = band_name_from_filename(file.stem)
        if name is None:
            continue
        if name in sources:
            raise InputError(file, f"band {name} appears twice in {folder}")
        with open_raster(file) as src:
            if src.count != 1:
                raise InputError(file, f"expected a single-band raster, found {src.count} bands")
            sources[name] = BandSource(file, 1, dataset_grid(src), src.nodata)
    if not sources:
        raise InputError(folder, "no file name names a band (expected e.g. T36SYC_..._B02.tif)")
    ordered = dict(sorted(sources.items(), key=lambda kv: _band_sort_key(kv[0])))
    return Scene(folder, ordered, _finest_grid(sources), date)


def _finest_grid(sources: Mapping[str, BandSource]) -> Grid:
    """The grid with the smallest pixel (the largest one among equals), after checking that
    every band lies on the ground it covers.

    Raises:
        InputError: Naming a band's file when it is georeferenced and the others are not (or
            the reverse), or has no ground in common with the finest band.
    """
    finest = min(
        sources.values(),
        key=lambda s: (abs(s.grid.transform.a * s.grid.transform.e), -s.grid.width * s.grid.height),
    )
    for name, source in sources.items():
        if source.grid.georeferenced != finest.grid.georeferenced:
            raise InputError(source.path, f"band {name} and the band in {finest.path} are not "
                             "both georeferenced; cannot read them as one scene")
        if source.grid.georeferenced and not finest.grid.overlaps(source.grid):
            raise InputError(source.path, f"band {name} does not overlap the scene's other "
                             f"bands ({finest.path})")
    return finest.grid


_COLLAPSED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
"""A URL that went through ``pathlib.Path`` (``https://a`` -> ``https:/a``)."""


def is_remote(location: str) -> bool:
    """True for an ``http(s)://``, ``s3://`` or GDAL ``/vsi...`` location (not a local file)."""
    return "://" in location or location.startswith("/vsi")


REMOTE_READ_OPTIONS = {
    "GDAL_HTTP_TIMEOUT": "30",
    "GDAL_HTTP_CONNECTTIMEOUT": "10",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
}
"""GDAL's HTTP limits for remote band reads (seconds; retries): a server that accepts and never
answers fails the read within about a minute and a half instead of hanging; no directory
listing or side-car files are asked for. Each is overridden by the environment variable of its
name."""


def remote_read_options() -> dict[str, str]:
    """The HTTP limits in force: :data:`REMOTE_READ_OPTIONS`, each overridden by the
    environment variable of its name."""
    return {key: os.environ.get(key) or value for key, value in REMOTE_READ_OPTIONS.items()}


def remote_reads(location: str | Path) -> contextlib.AbstractContextManager[object]:
    """A GDAL environment with :func:`remote_read_options` for a remote location (nothing for
    a local file)."""
    if isinstance(location, str) and is_remote(location):
        return rasterio.Env(**remote_read_options())
    return contextlib.nullcontext()


def open_band_files_scene(
    bands: Mapping[str, str | Path],
    path: str | Path | None = None,
    date: str | None = None,
    nodata: float | None = None,
) -> Scene:
    """A scene from a ``{band name: single-band raster path or URL}`` mapping.

    The scene's grid is the finest band grid, as for a folder of per-band files. ``path`` names
    the scene in errors (default: the first band's file); ``nodata`` overrides the files' own.
    """
    if not bands:
        raise InputError(path, "scene names no band files")
    sources: dict[str, BandSource] = {}
    for name, location in bands.items():
        band = normalize_band_name(name)
        if band in sources:
            raise InputError(path, f"band {band} is given twice")
        sources[band] = single_band_source(location)
    ordered = dict(sorted(sources.items(), key=lambda kv: _band_sort_key(kv[0])))
    first = next(iter(ordered.values())).path
    return Scene(
        path if path is not None else first, ordered, _finest_grid(sources), date, nodata=nodata
    )


def read_scene_manifest(path: str | Path) -> dict[str, str]:
    """The ``{band: location}`` mapping of a scene manifest, relative paths made absolute."""
    path = Path(path)
    return _manifest_bands(load_json_file(path, "scene manifest"), path)


def _manifest_bands(document: object, path: Path) -> dict[str, str]:
    """The checked ``bands`` of a parsed manifest, relative paths made absolute."""
    bands = document.get("bands") if isinstance(document, dict) else None
    if not isinstance(bands, dict) or not bands:
        raise InputError(path, 'scene manifest needs a non-empty "bands" object {band: path}')
    resolved: dict[str, str] = {}
    for band, location in bands.items():
        if not isinstance(location, str) or not location:
            raise InputError(path, f"band {band!r}: location must be a non-empty string")
        remote = is_remote(location)
        resolved[str(band)] = location if remote else str((path.parent / location).resolve())
    return resolved


def open_scene_manifest(
    path: str | Path, date: str | None = None, nodata: float | None = None
) -> Scene:
    """A scene from a scene manifest (JSON ``{"bands": {...}, "date": ...}``).

    Optional keys: ``date``; ``nodata`` (a value that overrides the files' own); ``scl`` (the
    path of an L2A scene classification layer); ``cloud_mask`` (a mask raster, non-zero = cloud
    or shadow); ``sun_azimuth`` / ``sun_zenith`` (degrees, for cloud shadows); and the
    radiometric convention: ``add_offset`` (DN, e.g. -1000), ``band_offsets`` (``{band: DN}``)
    and ``quantification_value`` (default 10000), or ``processing_baseline`` (``"04.00"`` and
    later mean an offset of -1000).
    """
    path = Path(path)
    return scene_from_manifest(load_json_file(path, "scene manifest"), path, date, nodata)


def scene_from_manifest(
    document: Mapping[str, Any], path: Path, date: str | None = None, nodata: float | None = None
) -> Scene:
    """A scene from a parsed scene manifest (see :func:`open_scene_manifest`); ``path`` names
    it in errors and anchors relative paths."""
    bands = _manifest_bands(document, path)
    if date is None:
        date = document.get("date") if isinstance(document.get("date"), str) else None
    try:
        radiometry = radiometry_from_keys(document, f"{path.name}")
        if nodata is None and document.get("nodata") is not None:
            nodata = float(document["nodata"])
        sun = (document.get("sun_azimuth"), document.get("sun_zenith"))
        sun_angles = _sun_angles(sun) if None not in sun else None
    except (TypeError, ValueError) as err:
        raise InputError(path, str(err)) from err
    scene = open_band_files_scene(bands, path, date, nodata=nodata)
    scene.radiometry = radiometry or scene.radiometry
    scene.sun_angles = sun_angles
    for key in ("scl", "cloud_mask"):
        location = document.get(key)
        if location is None:
            continue
        if not isinstance(location, str) or not location:
            raise InputError(path, f"{key!r} must be a path or URL")
        resolved = location if is_remote(location) else str((path.parent / location).resolve())
        if key == "scl":
            scene.scl = single_band_source(resolved, nodata=0.0)
        else:
            scene.cloud_mask = resolved
    return scene


def _sun_angles(values: tuple[object, object]) -> tuple[float, float]:
    """(azimuth, zenith) in degrees from a manifest's keys, or ValueError."""
    try:
        azimuth, zenith = (float(v) for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        azimuth = zenith = math.nan
    if not (math.isfinite(azimuth) and math.isfinite(zenith) and 0 <= zenith <= 90):
        raise ValueError(f"sun_azimuth / sun_zenith must be degrees (zenith 0-90), not "
                         f"{values[0]!r} / {values[1]!r}")
    return azimuth, zenith


def radiometry_from_keys(record: Mapping[str, object], source: str) -> Radiometry | None:
    """The convention stated by ``add_offset`` / ``quantification_value`` /
    ``processing_baseline`` keys (a scene manifest, a pairs CSV row), or None when none is there.

    Raises:
        ValueError: For a value that is not a number (or baseline string).
    """
    offset, quantification = record.get("add_offset"), record.get("quantification_value")
    baseline = record.get("processing_baseline")
    stated = (offset, quantification, baseline, record.get("band_offsets"))
    if all(value in (None, "") for value in stated):
        return None
    if not isinstance(record.get("band_offsets") or {}, Mapping):
        raise ValueError("band_offsets must be an object {band: DN}")
    if offset in (None, ""):
        offset = BASELINE_04_OFFSET if _baseline_at_least_4(baseline) else 0.0
    return Radiometry.from_dict(
        {
            "add_offset": offset,
            "quantification_value": quantification
            if quantification not in (None, "")
            else DEFAULT_QUANTIFICATION,
            "band_offsets": {
                normalize_band_name(str(b)): v
                for b, v in (record.get("band_offsets") or {}).items()  # type: ignore[union-attr]
            },
        },
        source=source,
    )


def _baseline_at_least_4(baseline: object) -> bool:
    if baseline in (None, ""):
        return False
    try:
        return float(str(baseline)) >= 4.0
    except ValueError as err:
        raise ValueError(f"processing_baseline {baseline!r} is not a number like '04.00'") from err


def single_band_source(location: str | Path, nodata: float | None = None) -> BandSource:
    """The source of a single-band raster (path or URL); ``nodata`` overrides the file's."""
    remote = isinstance(location, str) and is_remote(location)
    try:
        with warnings.catch_warnings(), remote_reads(location):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(location) if remote else open_raster(location)
    except RasterioError as err:
        raise InputError(location, f"cannot be read as a raster ({_remote_hint(err, remote)})"
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


def open_product_scene(path: str | Path, date: str | None = None) -> Scene:
    """A scene from a Sentinel-2 ``.SAFE`` product folder or zip (L1C or L2A).

    Its date, radiometric convention, level, SCL and sun angles come from the product
    metadata; DN 0 is no data.
    """
    from groundbreak.datasets.sentinel2 import PRODUCT_NODATA, product_files

    path = Path(path)
    files = product_files(path)
    meta = files.metadata
    scene = open_band_files_scene(files.bands, path, date or meta.date, nodata=PRODUCT_NODATA)
    scene.radiometry = meta.radiometry
    scene.level = meta.level
    scene.sun_angles = meta.sun_angles
    if files.scl is not None:
        scene.scl = single_band_source(files.scl, nodata=0.0)
    return scene


def _band_sort_key(name: str) -> tuple[int, str]:
    """Sort Sentinel-2 bands in their usual order (B8A after B08), other names after them."""
    if name.startswith("B") and name[1:3].isdigit():
        return (int(name[1:3]) * 2, name)
    if name == "B8A":
        return (17, name)
    return (100, name)


def open_scene(
    path: str | Path,
    band_names: Sequence[str] | None = None,
    date: str | None = None,
    nodata: float | None = None,
) -> Scene:
    """Open a scene from a multi-band raster, a per-band folder, a Sentinel-2 product
    (``.SAFE`` folder or zip), an RGB image or a scene manifest.

    ``nodata`` overrides the files' own nodata value (Sentinel-2 products: 0, always).
    """
    if is_remote(str(path)) or _COLLAPSED_URL.match(str(path)):
        raise InputError(
            path,
            "a remote scene is read through a scene manifest (.json) that lists its band "
            "URLs; give the manifest's path",
        )
    from groundbreak.datasets.sentinel2 import is_product

    path = Path(path)
    if not path.exists():
        raise InputError(path, "scene does not exist")
    if not path.is_dir() and not path.is_file():  # a FIFO or a device would hang or never end
        raise InputError(path, "is not a regular file or a folder (a device, FIFO or socket)")
    if path.suffix.lower() == ".json":  # a STAC Item is a scene too (None: not STAC)
        from groundbreak.datasets.stac_scene import open_stac_item_scene

        stac_scene = open_stac_item_scene(path, date)
        if stac_scene is not None:
            return with_nodata(stac_scene, nodata)
    if is_product(path):
        if band_names is not None:
            raise InputError(path, "band names cannot be given for a Sentinel-2 product")
        return open_product_scene(path, date)
    if path.is_dir():
        if band_names is not None:
            raise InputError(path, "band names cannot be given for a folder of per-band files")
        scene = open_band_folder_scene(path, date)
    elif path.suffix.lower() == ".json":
        return open_scene_manifest(path, date, nodata)
    else:
        scene = open_raster_scene(path, band_names, date)
    return with_nodata(scene, nodata)


def with_nodata(scene: Scene, nodata: float | None) -> Scene:
    """The scene with every band's nodata value overridden (unchanged for ``None``)."""
    if nodata is None:
        return scene
    scene.sources = {name: replace(s, nodata=float(nodata)) for name, s in scene.sources.items()}
    return scene
