"""Scenes of one single-band raster per band: a folder of files named by band
(``T36SYC_..._B02.tif``) or a ``{band: path or URL}`` mapping. Bands may lie on different grids
(10/20/60 m): the scene's grid is the finest of them, the others are resampled onto it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from groundbreak.datasets.bands import band_name_from_filename, normalize_band_name
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scenes.base import Scene, band_sort_key, finest_grid
from groundbreak.datasets.scenes.rasters import (
    RASTER_SUFFIXES,
    BandSource,
    dataset_grid,
    open_raster,
    single_band_source,
)


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
    ordered = dict(sorted(sources.items(), key=lambda kv: band_sort_key(kv[0])))
    return Scene(folder, ordered, finest_grid(sources), date)



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
    ordered = dict(sorted(sources.items(), key=lambda kv: band_sort_key(kv[0])))
    first = next(iter(ordered.values())).path
    return Scene(
        path if path is not None else first, ordered, finest_grid(sources), date, nodata=nodata
    )

