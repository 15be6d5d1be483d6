"""A scene: one dated image whose bands are read by name, windowed, onto any target grid.

:func:`open_scene` opens any kind of scene, each by its own module:

1. a folder of single-band rasters named by band, Sentinel-2 style (``..._B02.tif``), whose bands
   may lie on different grids (10/20/60 m): the scene's grid is the finest of them
   (:mod:`.scenes.band_files`);
2. one multi-band raster (GeoTIFF/COG, any dtype and band count) (:mod:`.scenes.raster_file`);
3. an image without georeference (PNG/JPEG), whose bands are ``red, green, blue``
   (:mod:`.scenes.image`);
4. a scene manifest, a JSON file ``{"bands": {"B02": "path or URL", ...}, "date": ...}`` naming
   one single-band raster per band; relative paths resolve against the manifest's folder
   (:mod:`.scenes.manifest`), or a STAC Item (:mod:`.stac_scene`);
5. a Sentinel-2 product, a ``.SAFE`` folder or its zip, L1C or L2A (:mod:`.sentinel2`), with its
   date, radiometric offsets, SCL and sun angles from the product metadata.

A scene knows its radiometric convention (:mod:`.radiometry`) when something states it (product
metadata, a manifest's keys, STAC): :meth:`Scene.read` converts values to a model's convention.
Reading never loads a whole scene: :meth:`Scene.read` reads only what a target grid needs
(:mod:`.scenes.reading`). Invalid pixels (nodata, outside the scene) come back as NaN.

The names of :mod:`groundbreak.datasets.scenes` that other code uses are importable from here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.scenes.band_files import open_band_files_scene, open_band_folder_scene
from groundbreak.datasets.scenes.base import Scene, bands_kept, with_nodata
from groundbreak.datasets.scenes.image import IMAGE_SUFFIXES, is_image, open_image_scene
from groundbreak.datasets.scenes.manifest import (
    open_scene_manifest,
    radiometry_from_keys,
    read_scene_manifest,
    scene_from_manifest,
)
from groundbreak.datasets.scenes.raster_file import open_raster_scene
from groundbreak.datasets.scenes.rasters import (
    MAX_RASTER_PIXELS,
    RASTER_SUFFIXES,
    BandSource,
    check_mask_raster,
    dataset_grid,
    max_raster_pixels,
    open_raster,
    single_band_source,
)
from groundbreak.datasets.scenes.reading import pixel_offset, read_band
from groundbreak.datasets.scenes.remote import (
    REMOTE_READ_OPTIONS,
    is_remote,
    remote_read_options,
    remote_reads,
)
from groundbreak.datasets.scenes.strips import (
    files_kept_open,
    release_free_heap,
    strip_block_cache_bytes,
)
from groundbreak.datasets.sentinel2 import is_product, open_product_scene
from groundbreak.datasets.stac_scene import open_stac_item_scene

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_RASTER_PIXELS",
    "RASTER_SUFFIXES",
    "REMOTE_READ_OPTIONS",
    "BandSource",
    "Scene",
    "bands_kept",
    "check_mask_raster",
    "dataset_grid",
    "files_kept_open",
    "is_remote",
    "max_raster_pixels",
    "open_band_files_scene",
    "open_band_folder_scene",
    "open_image_scene",
    "open_product_scene",
    "open_raster",
    "open_raster_scene",
    "open_scene",
    "open_scene_manifest",
    "pixel_offset",
    "radiometry_from_keys",
    "read_band",
    "read_scene_manifest",
    "release_free_heap",
    "remote_read_options",
    "remote_reads",
    "scene_from_manifest",
    "single_band_source",
    "strip_block_cache_bytes",
    "with_nodata",
]

_COLLAPSED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
"""A URL that went through ``pathlib.Path`` (``https://a`` -> ``https:/a``)."""


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
    path = Path(path)
    if not path.exists():
        raise InputError(path, "scene does not exist")
    if not path.is_dir() and not path.is_file():  # a FIFO or a device would hang or never end
        raise InputError(path, "is not a regular file or a folder (a device, FIFO or socket)")
    if path.suffix.lower() == ".json":  # a STAC Item is a scene too (None: not STAC)
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
    elif is_image(path):
        scene = open_image_scene(path, band_names, date)
    else:
        scene = open_raster_scene(path, band_names, date)
    return with_nodata(scene, nodata)

