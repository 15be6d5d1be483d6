"""True-colour crops of a pair's best sites, cut while the rows its windows decoded are at hand
and stored with its outputs, so that the report decodes no tile of the pair's scenes again.

The night knows a pair's sites only after its windows were decoded and predicted; a report crop
of a JPEG 2000 scene then decodes every 1024² tile it touches again (six decodes of about
0.25 CPU-s a tile: 18 of the 85 s of a 4096² ``.SAFE`` night). So while a pair is predicted and
scored, the rows the windows decode of its display bands are spilled to disk
(:func:`display_rows_spilled`, :mod:`groundbreak.datasets.scenes.row_spill`); once its sites are
scored the crops of its best ones (those that can become alert cards) are cut from there and
stored next to its probability raster (:data:`DISPLAY_CROPS_FILE`, a few MB), and the spill is
deleted. A card whose crop is not stored (a pair read from COGs, whose crops cost little; a
site alerted by the nightly policy below the pair's best) is read from the scenes as before.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from numpy.lib.npyio import NpzFile
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import files_kept_open
from groundbreak.datasets.scenes.row_spill import SpilledBands, rows_spilled
from groundbreak.infer.atomic import atomic_write_bytes, remove_orphan_temps, temp_sibling
from groundbreak.infer.report.crops import display_bands, display_rgb, site_crop_grid, window_key

DISPLAY_CROPS_FILE = "display_crops.npz"
"""Stored crops of a pair, next to its ``probability.tif``: one (2, H, W, 3) uint8 array (the
before and after pictures) per crop window, named by :func:`~.crops.window_key`."""

SPILL_DIR = "display_rows"
"""The folder of a pair's spilled display rows, inside its output folder while it is scored,
under a temporary name (:func:`~groundbreak.infer.atomic.temp_sibling`): one a killed process
left is removed by a night's cleanup, or by the next process that scores the pair into the same
folder."""


@contextlib.contextmanager
def display_rows_spilled(pair: TilePair, out_dir: Path) -> Iterator[SpilledBands]:
    """Within it, the rows of the pair's display bands (both dates) that its reads decode are
    spilled to ``out_dir`` (:data:`SPILL_DIR`), deleted on exit."""
    bands = list(dict.fromkeys(display_bands(pair)))
    sources = [scene.sources[band] for scene in (pair.before, pair.after) for band in bands]
    remove_orphan_temps(out_dir / SPILL_DIR)  # up to 1.45 GB a killed rank left behind
    with rows_spilled(sources, temp_sibling(out_dir / SPILL_DIR)) as spilled:
        yield spilled


def store_display_crops(
    pair: TilePair, geometries: Iterable[BaseGeometry], out_dir: Path
) -> Path | None:
    """Cut the true-colour crops of these sites (grid CRS) and store them in ``out_dir``
    (:data:`DISPLAY_CROPS_FILE`); None when no site falls on the pair grid."""
    crops: dict[str, np.ndarray] = {}
    with files_kept_open(strips=False):  # each file opened once for all the crops
        for geometry in geometries:
            placed = site_crop_grid(pair.grid, geometry)
            if placed is None:
                continue
            crop, window = placed
            key = window_key(window)
            if key not in crops:
                crops[key] = display_rgb(pair, crop)
    if not crops:
        return None
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **crops)
    return atomic_write_bytes(out_dir / DISPLAY_CROPS_FILE, buffer.getvalue())


class StoredCrops(Mapping[str, np.ndarray]):
    """The crops stored in a pair's output folder, each read as it is asked for; one that cannot
    be read (a damaged file) is as if not stored, so its card reads the scenes. Close it after."""

    def __init__(self, path: Path) -> None:
        self._file: NpzFile | None = None
        try:
            self._file = np.load(path)
        except Exception:  # any damage: read the scenes instead
            self._file = None

    def __getitem__(self, key: str) -> np.ndarray:
        if self._file is None or key not in self._file.files:
            raise KeyError(key)
        try:
            return np.asarray(self._file[key])
        except Exception as err:  # a damaged member: as if not stored
            raise KeyError(key) from err

    def __iter__(self) -> Iterator[str]:
        return iter(self._file.files if self._file is not None else [])

    def __len__(self) -> int:
        return len(self._file.files) if self._file is not None else 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def stored_display_crops(out_dir: Path) -> StoredCrops | None:
    """The crops stored in a pair's output folder (:class:`StoredCrops`), or None."""
    path = out_dir / DISPLAY_CROPS_FILE
    return StoredCrops(path) if path.is_file() else None
