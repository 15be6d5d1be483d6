"""A pair spec: the paths and metadata of one tile pair, before it is opened."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.path_ids import check_path_id
from groundbreak.datasets.radiometry import Radiometry
from groundbreak.datasets.scene import check_mask_raster, open_scene

if TYPE_CHECKING:
    from groundbreak.datasets.labels import ConventionName


@dataclass(frozen=True)
class PairSpec:
    """Where one tile pair lives on disk, its split and its dates.

    ``label`` is a raster mask or a GeoJSON of polygons; None for a pair without labels.
    ``split`` is ``train``, ``val``, ``test`` or ``predict``. ``label_convention`` forces the
    value convention of a raster label (see :mod:`groundbreak.datasets.labels`); None detects it.
    ``before_mask`` / ``after_mask`` are cloud/shadow mask rasters (non-zero = hidden);
    ``before_add_offset`` / ``after_add_offset`` state each date's radiometric offset in DN
    (Sentinel-2 baseline 04.00 and later: -1000); ``nodata`` overrides the files' nodata value.
    """

    pair_id: str
    before: Path
    after: Path
    label: Path | None = None
    split: str = "predict"
    before_date: str | None = None
    after_date: str | None = None
    label_convention: ConventionName | None = None
    before_mask: Path | None = None
    after_mask: Path | None = None
    before_add_offset: float | None = None
    after_add_offset: float | None = None
    nodata: float | None = None

    def __post_init__(self) -> None:
        check_path_id(self.pair_id)  # it names the pair's chip and prediction folders

    def open(self, with_label: bool = True) -> TilePair:
        """Open both scenes (and the label) as a :class:`TilePair` on the before-scene's grid."""
        before = open_scene(self.before, date=self.before_date, nodata=self.nodata)
        after = open_scene(self.after, date=self.after_date, nodata=self.nodata)
        for scene, mask, offset in (
            (before, self.before_mask, self.before_add_offset),
            (after, self.after_mask, self.after_add_offset),
        ):
            if mask is not None:
                scene.cloud_mask = str(check_mask_raster(mask))
            if offset is not None:
                scene.radiometry = Radiometry(default_offset=offset, source="pairs CSV")
        pair = TilePair(self.pair_id, before, after)
        if with_label and self.label is not None:
            from groundbreak.datasets.labels import open_label

            pair.label = open_label(self.label, pair.grid, convention=self.label_convention)
        return pair


def check_unique_pair_ids(specs: Iterable[PairSpec], source: str | Path | None = None) -> None:
    """Raise an :class:`InputError` (naming ``source``) when two specs share a pair id.

    Pair ids name the chip and prediction folders of their pairs, so they must be unique.
    """
    seen: set[str] = set()
    for spec in specs:
        if spec.pair_id in seen:
            raise InputError(source, f"pair id {spec.pair_id!r} appears twice")
        seen.add(spec.pair_id)
