"""A tile pair: a before-scene and an after-scene (and optionally a label) on ONE grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.scene import Scene, single_band_source


@dataclass
class TilePair:
    """Before and after scenes of the same ground, read on the before-scene's grid.

    The pair grid is ``before.grid``; the after-scene is resampled or reprojected onto it when its
    CRS, transform or size differ. A label, when present, is read on the same grid.
    """

    pair_id: str
    before: Scene
    after: Scene
    label: object | None = (
        None  # a groundbreak.datasets.labels.Label; typed loosely to avoid a cycle
    )

    def __post_init__(self) -> None:
        check_overlap(self.before, self.after)
        for scene in (self.before, self.after):
            check_cloud_mask(scene, self.grid)

    @property
    def grid(self) -> Grid:
        """The pair grid: the before-scene's reference grid."""
        return self.before.grid

    @property
    def common_bands(self) -> list[str]:
        """Bands that both scenes provide, in the before-scene's order."""
        after = set(self.after.band_names)
        return [b for b in self.before.band_names if b in after]

    def read(
        self,
        bands: Sequence[str] | None = None,
        window: Window | None = None,
        require_valid: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Before and after as float32 (C, H, W) on a window of the pair grid (NaN = invalid).

        With ``require_valid``, a window where either scene has no valid pixel is an
        :class:`InputError` naming that scene.
        """
        names = list(bands) if bands is not None else self.common_bands
        target = self.grid.subgrid(window) if window is not None else self.grid
        return (
            self.before.read(names, target, require_valid=require_valid),
            self.after.read(names, target, require_valid=require_valid),
        )

    def read_label(self, window: Window | None = None) -> np.ndarray | None:
        """The label on a window of the pair grid (uint8: 0, 1, 255 = ignore), or None."""
        if self.label is None:
            return None
        target = self.grid.subgrid(window) if window is not None else self.grid
        return self.label.read(target)  # type: ignore[attr-defined]


def check_overlap(before: Scene, after: Scene) -> None:
    """Raise an :class:`InputError` when two scenes cannot share a grid or do not overlap."""
    b, a = before.grid, after.grid
    if b.georeferenced != a.georeferenced:
        raise InputError(
            after.path,
            f"one scene is georeferenced and the other is not ({before.path}); cannot pair them",
        )
    if not b.georeferenced:
        if b.shape != a.shape:
            raise InputError(
                after.path,
                f"images without georeference must have the same size: {a.shape} vs "
                f"{b.shape} in {before.path}",
            )
        return
    if not b.overlaps(a):
        raise InputError(after.path, f"does not overlap the before-scene {before.path}")


def check_cloud_mask(scene: Scene, grid: Grid) -> None:
    """Raise an :class:`InputError` naming a scene's user cloud mask when it cannot be placed
    on the pair grid: no georeference on a georeferenced pair (or the reverse), no ground in
    common with the pair, or, without georeference, another size."""
    if scene.cloud_mask is None:
        return
    mask = single_band_source(scene.cloud_mask).grid
    if mask.georeferenced != grid.georeferenced:
        problem = (
            f"cloud mask has no georeference (CRS), so it cannot be placed on the grid of "
            f"{scene.path}"
            if grid.georeferenced
            else f"cloud mask is georeferenced but {scene.path} is not: it cannot be placed on it"
        )
        raise InputError(scene.cloud_mask, problem)
    if not grid.georeferenced and mask.shape != grid.shape:
        raise InputError(scene.cloud_mask, f"cloud mask without georeference must have the "
                         f"pair's size {grid.shape}, not {mask.shape}")
    if grid.georeferenced and not grid.overlaps(mask):
        raise InputError(scene.cloud_mask, f"cloud mask does not overlap the pair (scene "
                         f"{scene.path})")
