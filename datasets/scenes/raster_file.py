"""Scenes of one multi-band raster (GeoTIFF/COG, any dtype and band count): bands named by the
user, the file's band descriptions or colours, else ``band1``, ``band2``...; an alpha band is
not a data band."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import rasterio
from rasterio.enums import ColorInterp

from groundbreak.datasets.bands import RGB_BANDS, normalize_band_names
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scenes.base import Scene
from groundbreak.datasets.scenes.rasters import BandSource, dataset_grid, open_raster

_COLOR_NAMES = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}

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
    """A scene from one multi-band raster (or image) file. An alpha band is not a data band."""
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
        nodata = src.nodata
    sources = {n: BandSource(path, i, grid, nodata) for n, i in zip(names, indexes, strict=True)}
    return Scene(path, sources, grid, date)
