"""Scenes of an image without georeference (PNG/JPEG): one grid of pixels, no CRS; three bands
(an alpha band aside) are ``red, green, blue``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from groundbreak.datasets.bands import RGB_BANDS
from groundbreak.datasets.scenes.base import Scene
from groundbreak.datasets.scenes.raster_file import open_raster_scene

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def is_image(path: Path) -> bool:
    """True for a file whose suffix names an image format (PNG/JPEG)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_image_scene(
    path: str | Path, band_names: Sequence[str] | None = None, date: str | None = None
) -> Scene:
    """A scene from an image file: three bands are ``red, green, blue`` unless named."""
    scene = open_raster_scene(path, band_names, date)
    if band_names is None and len(scene.sources) == 3:
        scene.sources = dict(zip(RGB_BANDS, scene.sources.values(), strict=True))
    return scene
