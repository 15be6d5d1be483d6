"""Scenes by source: one module per kind of scene, and the band reading they share.

Kinds of scene, each opened by one module (:func:`groundbreak.datasets.scene.open_scene` picks):

- :mod:`.band_files`: a folder of single-band rasters named by band, or a ``{band: file}``
  mapping (their grid is the finest band's);
- :mod:`.raster_file`: one multi-band raster (GeoTIFF/COG, any dtype and band count);
- :mod:`.image`: an image without georeference (PNG/JPEG), bands ``red, green, blue``;
- :mod:`.manifest`: a scene manifest (JSON ``{"bands": {...}}``), the form a STAC item becomes
  (:mod:`groundbreak.datasets.stac_scene`);
- Sentinel-2 products (``.SAFE``, zipped or not): :mod:`groundbreak.datasets.sentinel2`.

Below them, shared by all: :mod:`.base` (the :class:`~.base.Scene`), :mod:`.reading` (bands
read onto a target grid: windowed, decimated, upsampled or warped), :mod:`.upsample` (the one
hand-written resampling kernel, and why), :mod:`.strips` (files and decoded rows kept open
across reads), :mod:`.rasters` (opening and checking one raster file) and :mod:`.remote` (the
HTTP limits of remote reads).
"""

from groundbreak.datasets.scenes.base import Scene
from groundbreak.datasets.scenes.rasters import BandSource

__all__ = ["BandSource", "Scene"]
