"""A scene: one dated image whose bands are read by name, windowed, onto any target grid.

Three on-disk forms are accepted (see :func:`open_scene`):

1. one multi-band raster (GeoTIFF/COG, any dtype and band count);
2. a folder of single-band rasters named by band, Sentinel-2 style (``..._B02.tif``), whose bands
   may lie on different grids (10/20/60 m): the scene's grid is the finest of them;
3. an image without georeference (PNG/JPEG), whose bands are ``red, green, blue``.

Reading never loads a whole scene: :meth:`Scene.read` reads only what a target grid needs, through
a windowed read when the grids line up and a ``WarpedVRT`` (bilinear) when they do not.
Invalid pixels (nodata, outside the scene) come back as NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
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

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_COLOR_NAMES = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}


@dataclass(frozen=True)
class BandSource:
    """Where one band lives: a file, a 1-based band index in it, and that file's grid."""

    path: Path
    index: int
    grid: Grid
    nodata: float | None


def open_raster(path: str | Path) -> rasterio.io.DatasetReader:
    """Open a raster with rasterio, turning any failure into an :class:`InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as err:
        raise InputError(path, f"cannot be read as a raster ({err})") from err


def dataset_grid(src: rasterio.io.DatasetReader) -> Grid:
    """The grid of an open raster (CRS None when the file has no georeference)."""
    return Grid(src.width, src.height, src.transform, src.crs if src.crs else None)


class Scene:
    """One dated image: named bands on a reference grid, read windowed onto any grid."""

    def __init__(
        self,
        path: str | Path,
        sources: dict[str, BandSource],
        grid: Grid,
        date: str | None = None,
    ) -> None:
        if not sources:
            raise InputError(path, "scene has no bands")
        self.path = Path(path)
        self.sources = sources
        self.grid = grid
        self.date = date

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

    def read(self, bands: Sequence[str] | None = None, grid: Grid | None = None) -> np.ndarray:
        """Read bands onto a target grid (default: the scene's own grid) as float32 (C, H, W).

        Pixels that are nodata or fall outside the scene are NaN.
        """
        names = self.check_bands(bands) if bands is not None else self.band_names
        target = grid or self.grid
        out = np.empty((len(names), target.height, target.width), dtype=np.float32)
        for i, name in enumerate(names):
            out[i] = _read_band(self.sources[name], target)
        return out

    def valid_fraction(self, grid: Grid, band: str | None = None) -> float:
        """Fraction of a target grid that holds valid (not nodata, inside) pixels of one band."""
        data = self.read([band or self.band_names[0]], grid)
        return float(np.isfinite(data).mean())


def _read_band(source: BandSource, target: Grid) -> np.ndarray:
    """One band of one file onto a target grid, as float32 with NaN where invalid."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(source.path) as src:
                offset = _pixel_offset(source.grid, target)
                if offset is not None:
                    window = Window(offset[1], offset[0], target.width, target.height)
                    data = src.read(source.index, window=window, boundless=True, masked=True)
                else:
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
                        resampling=Resampling.bilinear,
                        **nodata_args,
                    ) as vrt:
                        data = vrt.read(source.index, masked=True)
    except RasterioError as err:
        raise InputError(source.path, f"cannot read band {source.index} ({err})") from err
    return data.astype(np.float32).filled(np.nan)


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


def _band_names_of(src: rasterio.io.DatasetReader, path: Path, given: Sequence[str] | None) -> list[str]:
    """Band names of a multi-band file: given by the user, from descriptions, colours or indexes."""
    if given is not None:
        if len(given) != src.count:
            raise InputError(
                path, f"{len(given)} band names were given but the file has {src.count} bands"
            )
        return normalize_band_names(given)
    descriptions = [d for d in src.descriptions if d]
    if len(descriptions) == src.count and len(set(descriptions)) == src.count:
        return normalize_band_names(descriptions)
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
        raise InputError(folder, "folder holds no raster files (.tif, .tiff, .jp2)")
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
    finest = min(
        sources.values(),
        key=lambda s: (abs(s.grid.transform.a * s.grid.transform.e), -s.grid.width * s.grid.height),
    )
    ordered = dict(sorted(sources.items(), key=lambda kv: _band_sort_key(kv[0])))
    return Scene(folder, ordered, finest.grid, date)


def _band_sort_key(name: str) -> tuple[int, str]:
    """Sort Sentinel-2 bands in their usual order (B8A after B08), other names after them."""
    if name.startswith("B") and name[1:3].isdigit():
        return (int(name[1:3]) * 2, name)
    if name == "B8A":
        return (17, name)
    return (100, name)


def open_scene(
    path: str | Path, band_names: Sequence[str] | None = None, date: str | None = None
) -> Scene:
    """Open a scene from a multi-band raster, a folder of per-band rasters, or an RGB image."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "scene does not exist")
    if path.is_dir():
        if band_names is not None:
            raise InputError(path, "band names cannot be given for a folder of per-band files")
        return open_band_folder_scene(path, date)
    return open_raster_scene(path, band_names, date)
