"""The scene: one dated image whose bands are read by name, windowed, onto any target grid.

A :class:`Scene` is built by the module of its kind (see :mod:`groundbreak.datasets.scenes`)
from one :class:`~.rasters.BandSource` per band; this module also holds what several kinds
share: the finest grid of per-band files, the usual band order, a nodata override.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling

from groundbreak.datasets.bands import normalize_band_name
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.radiometry import UNKNOWN_RADIOMETRY, Radiometry, convert_radiometry
from groundbreak.datasets.scenes.rasters import BandSource
from groundbreak.datasets.scenes.reading import read_band, read_bands_into
from groundbreak.datasets.scenes.strips import KeptBands, map_large_allocations


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
        self.kept_bands: KeptBands | None = None
        """Whole bands kept while :func:`bands_kept` holds the scene (None: none kept)."""

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
            read_bands_into(out, path, sources, target, resampling, self.kept_bands)
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



@contextlib.contextmanager
def bands_kept(*scenes: Scene) -> Iterator[None]:
    """Within it, the whole bands these scenes' reads decode are kept for their later reads
    (:class:`~.strips.KeptBands`): a pair's date matching decodes whole bands (all of a small
    pair, the 20 and 60 m bands of a 4096² one) that its windows then read again, and a cloud
    mask the 60 m bands the date matching reads again. Kept bands are dropped on exit; large
    allocations are memory maps of their own from then on (:func:`.map_large_allocations`)."""
    map_large_allocations()
    fresh = [scene for scene in scenes if scene.kept_bands is None]
    for scene in fresh:
        scene.kept_bands = KeptBands()
    try:
        yield
    finally:
        for scene in fresh:
            scene.kept_bands = None


def finest_grid(sources: Mapping[str, BandSource]) -> Grid:
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


def band_sort_key(name: str) -> tuple[int, str]:
    """Sort Sentinel-2 bands in their usual order (B8A after B08), other names after them."""
    if name.startswith("B") and name[1:3].isdigit():
        return (int(name[1:3]) * 2, name)
    if name == "B8A":
        return (17, name)
    return (100, name)


def with_nodata(scene: Scene, nodata: float | None) -> Scene:
    """The scene with every band's nodata value overridden (unchanged for ``None``)."""
    if nodata is None:
        return scene
    scene.sources = {name: replace(s, nodata=float(nodata)) for name, s in scene.sources.items()}
    return scene
