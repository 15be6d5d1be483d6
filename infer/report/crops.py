"""Site crops for the analyst: before, after and change probability around one site.

Crops read only the site's neighbourhood from the pair's scenes and probability raster (the site's
bounding box plus a margin, at least :data:`MIN_CROP_PIXELS` a side), shown in true colour
(Sentinel-2 B04/B03/B02 or red/green/blue) with a 2-98 percentile stretch shared by both dates,
the site outlined. The report's cards and the review app's pages show them.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from PIL import Image, ImageDraw
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from groundbreak.datasets.bands import RGB_BANDS, SENTINEL2_RGB
from groundbreak.datasets.grid import Grid, geometry_window
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import open_raster
from groundbreak.infer.prediction.raster_io import read_probability

MIN_CROP_PIXELS = 64
"""Smallest side of a site crop, in pair-grid pixels."""

DISPLAY_PIXELS = 240
"""Crops are upsampled (nearest neighbour, whole factors) to about this many screen pixels."""

MAX_CROP_READ_PIXELS = 4 * DISPLAY_PIXELS
"""A crop larger than this on a side (a very large site) is read decimated to at most this many
pixels a side: its pictures hold no more detail than that, and reading it whole could take
gigabytes (a site as large as a tile)."""


PNG_ZLIB = {"compress_level": 6, "compress_type": zlib.Z_RLE}
"""How the crop PNGs are compressed: zlib's run-length strategy suits crops upsampled by whole
factors. On a night's 180 crops it took 0.38 s of CPU for 31.6 kB a crop, where Pillow's
``optimize`` (level 9, the default strategy) took 8.2 s for 31.9 kB."""

OUTLINE_RGB = (0, 229, 255)
NODATA_RGB = (48, 48, 52)

# Control points of the "inferno" colour map (dark purple -> orange -> pale yellow).
_INFERNO = np.array(
    [
        (0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
        (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164),
    ],
    dtype=np.float32,
)



@dataclass(frozen=True)
class SiteCrops:
    """PNG bytes of one site's before, after and probability-overlay crops."""

    before: bytes
    after: bytes
    overlay: bytes
    window: Window



def crop_window(site_window: Window, grid: Grid, margin: float = 0.25) -> Window:
    """The site's box plus a margin, at least :data:`MIN_CROP_PIXELS` a side, inside the grid."""
    width, height = int(site_window.width), int(site_window.height)
    pad = max(8, math.ceil(margin * max(width, height)))
    side_w = min(max(width + 2 * pad, MIN_CROP_PIXELS), grid.width)
    side_h = min(max(height + 2 * pad, MIN_CROP_PIXELS), grid.height)
    col = int(site_window.col_off) + width // 2 - side_w // 2
    row = int(site_window.row_off) + height // 2 - side_h // 2
    col = min(max(col, 0), grid.width - side_w)
    row = min(max(row, 0), grid.height - side_h)
    return Window(col, row, side_w, side_h)


def crop_grid(
    grid: Grid, window: Window, max_pixels: int = MAX_CROP_READ_PIXELS
) -> tuple[Grid, Window]:
    """The grid a crop is read on, and the window of the pair grid it covers.

    That is the window itself, or, when a side is longer than ``max_pixels``, the window with
    pixels a whole factor larger (its last partial coarse row and column left out).
    """
    width, height = int(window.width), int(window.height)
    factor = math.ceil(max(width, height) / max_pixels)
    if factor <= 1:
        return grid.subgrid(window), window
    covered = Window(window.col_off, window.row_off, width // factor * factor,
                     height // factor * factor)
    coarse = Grid(
        width // factor,
        height // factor,
        grid.window_transform(window) @ Affine.scale(factor),
        grid.crs,
    )
    return coarse, covered


def site_crop_grid(
    grid: Grid, geometry: BaseGeometry, max_read_pixels: int = MAX_CROP_READ_PIXELS
) -> tuple[Grid, Window] | None:
    """The grid a site's crop is read on and the pair-grid window it covers (:func:`crop_window`,
    :func:`crop_grid`); None when the site does not fall on the pair grid."""
    site_window = geometry_window(geometry, grid)
    if site_window is None:
        return None
    return crop_grid(grid, crop_window(site_window, grid), max_read_pixels)


def window_key(window: Window) -> str:
    """A crop window as a name: ``col_row_width_height`` on the pair grid."""
    return "_".join(str(int(v)) for v in (window.col_off, window.row_off, window.width,
                                          window.height))


def display_rgb(pair: TilePair, crop: Grid) -> np.ndarray:
    """The before and after true-colour pictures of a crop grid, (2, H, W, 3) uint8, stretched
    alike (:func:`stretch_to_rgb`)."""
    bands = display_bands(pair)
    return np.stack(stretch_to_rgb([pair.before.read(bands, crop), pair.after.read(bands, crop)]))


def display_bands(pair: TilePair) -> list[str]:
    """Bands to show in true colour: B04/B03/B02, red/green/blue, or the first band as grey."""
    common = pair.common_bands
    for rgb in (SENTINEL2_RGB, RGB_BANDS):
        if all(band in common for band in rgb):
            return list(rgb)
    return [common[0]] * 3


def stretch_to_rgb(
    images: Sequence[np.ndarray], low: float = 2.0, high: float = 98.0
) -> list[np.ndarray]:
    """Stretch (3, H, W) float images to uint8 RGB (H, W, 3) with percentiles shared by all.

    Each band is stretched between its ``low`` and ``high`` percentiles over the valid pixels of
    all the images together, so two dates stay comparable. NaN pixels become a dark grey.
    """
    stacked = np.concatenate([img.reshape(img.shape[0], -1) for img in images], axis=1)
    out = [np.empty((*img.shape[1:], 3), np.uint8) for img in images]
    for band in range(3):
        values = stacked[band][np.isfinite(stacked[band])]
        lo, hi = (np.percentile(values, [low, high]) if values.size else (0.0, 1.0))
        span = hi - lo if hi > lo else 1.0
        for img, rgb in zip(images, out, strict=True):
            scaled = np.clip((img[band] - lo) / span, 0.0, 1.0) * 255.0
            rgb[..., band] = np.nan_to_num(scaled, nan=0.0).round().astype(np.uint8)
    for img, rgb in zip(images, out, strict=True):
        rgb[~np.isfinite(img).all(axis=0)] = NODATA_RGB
    return out


def colorize_probability(probability: np.ndarray) -> np.ndarray:
    """Map probabilities in [0, 1] to RGB (H, W, 3) float32 with the inferno colour map."""
    p = np.clip(np.nan_to_num(probability, nan=0.0), 0.0, 1.0) * (len(_INFERNO) - 1)
    index = np.minimum(p.astype(int), len(_INFERNO) - 2)
    frac = (p - index)[..., None]
    return _INFERNO[index] * (1.0 - frac) + _INFERNO[index + 1] * frac


def probability_overlay(after_rgb: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The after image with the probability on top: colour by value, alpha by value (max 0.8)."""
    alpha = (np.clip(np.nan_to_num(probability, nan=0.0), 0.0, 1.0) * 0.8)[..., None]
    base = after_rgb.astype(np.float32) * 0.85
    blended = base * (1.0 - alpha) + colorize_probability(probability) * alpha
    return blended.round().astype(np.uint8)


def _to_png(
    rgb: np.ndarray, scale: int, outline: Sequence[np.ndarray], width: int = 2
) -> bytes:
    """Upsample an RGB array, draw the site outline (crop pixel coordinates), encode as PNG."""
    image = Image.fromarray(rgb, "RGB")
    image = image.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    for ring in outline:
        points = [(float(x) * scale, float(y) * scale) for x, y in ring]
        if len(points) >= 2:
            draw.line(points, fill=OUTLINE_RGB, width=width, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **PNG_ZLIB)
    return buffer.getvalue()


def _outline_rings(geometry: BaseGeometry, crop: Grid) -> list[np.ndarray]:
    """The geometry's outer rings in crop pixel coordinates (column, row).

    Holes are left out: on a ragged change region they would only clutter the picture.
    """
    inverse = ~crop.transform
    rings = []
    for polygon in getattr(geometry, "geoms", [geometry]):
        xy = np.asarray(polygon.exterior.coords)[:, :2]
        cols, rows = inverse @ (xy[:, 0], xy[:, 1])
        rings.append(np.column_stack([cols, rows]))
    return rings


def render_site_crops(
    pair: TilePair,
    probability_path: str | Path,
    geometry: BaseGeometry,
    max_read_pixels: int = MAX_CROP_READ_PIXELS,
    stored: Mapping[str, np.ndarray] | None = None,
) -> SiteCrops | None:
    """Before, after and overlay PNGs of the neighbourhood of a site (geometry in grid CRS).

    Only the crop window is read from the scenes and the probability raster, decimated to at
    most ``max_read_pixels`` a side (:func:`crop_grid`); the true-colour pictures are taken from
    ``stored`` instead where it holds the crop window's (:func:`window_key`: the (2, H, W, 3)
    before and after :func:`display_rgb`). None when the site does not fall on the pair grid.
    """
    placed = site_crop_grid(pair.grid, geometry, max_read_pixels)
    if placed is None:
        return None
    crop, window = placed
    kept = stored.get(window_key(window)) if stored is not None else None
    before_rgb, after_rgb = kept if kept is not None else display_rgb(pair, crop)
    with open_raster(probability_path) as src:
        probability = read_probability(src, window, out_shape=crop.shape)
    scale = max(1, round(DISPLAY_PIXELS / max(crop.width, crop.height)))
    rings = _outline_rings(geometry, crop)
    return SiteCrops(
        before=_to_png(before_rgb, scale, rings),
        after=_to_png(after_rgb, scale, rings),
        overlay=_to_png(probability_overlay(after_rgb, probability), scale, rings),
        window=window,
    )
