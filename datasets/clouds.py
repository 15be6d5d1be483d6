"""Cloud and cloud-shadow masks of a scene: which pixels the satellite did not see.

A pixel hidden by a cloud or its shadow on either date is *unobserved*: the predictor writes it as
nodata (NaN probability, 255 in the mask) and it never counts as change. Masks are computed once
per scene on a coarse version of the pair grid (``factor`` x ``factor`` pair pixels per mask
pixel, about 60 m), which keeps a full 10980 x 10980 tile at about 3 M mask pixels.

Methods (``--cloud-mask``):

- ``scl``: the Sen2Cor scene classification of an L2A product: classes 1 (saturated or
  defective), 3 (cloud shadow), 8 and 9 (cloud, medium and high probability) and 10 (thin cirrus).
  A mask pixel is hidden when any SCL pixel under it is; the mask is dilated as s2cloudless's.
- ``s2cloudless``: Sentinel Hub's LightGBM pixel classifier (its model ships in the PyPI wheel,
  nothing is downloaded) on L1C top-of-atmosphere reflectance of B01, B02, B04, B05, B08, B8A,
  B09, B10, B11, B12 in 180 m blocks, averaged over a disk and dilated; clouds without a
  water-vapour or thick-cloud signature (bright sand, roofs) dropped, thin cirrus (B10) added,
  rims and small clouds near the clouds classified again at 60 m; plus cloud shadows by
  :func:`shadow_mask`. Measured by ``python bench/cloud_bench.py --masks``.
- ``auto`` (the default): a user-given mask raster when the scene has one, else ``scl`` when the
  scene has an SCL, else ``s2cloudless`` when it has the bands, else no mask. Scenes that are not
  Sentinel-2 get no mask.
- ``none``: no mask.

A user-given mask raster (a scene manifest's ``cloud_mask``, a pairs CSV's
``before_mask``/``after_mask``, ``predict --before-mask``) marks unobserved pixels with any
non-zero value; a coarse mask pixel is unobserved when any pair pixel under it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import cv2
import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.radiometry import Radiometry
from groundbreak.datasets.scene import Scene, read_band, single_band_source

CloudMaskMode = Literal["auto", "s2cloudless", "scl", "none"]
CLOUD_MASK_MODES: tuple[str, ...] = ("auto", "s2cloudless", "scl", "none")

S2CLOUDLESS_BANDS: tuple[str, ...] = (
    "B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12",
)
"""The bands s2cloudless's classifier takes, in its order."""

SCL_UNOBSERVED: tuple[int, ...] = (1, 3, 8, 9, 10)
"""SCL classes that hide the ground: defective, cloud shadow, cloud (medium, high), cirrus."""
SCL_SHADOW = 3

MASK_PIXEL_M = 60.0
"""Ground size of a mask pixel (the pair grid's pixels are grouped to about this size)."""

S2CLOUDLESS_THRESHOLD = 0.6
"""Cloud probability above which a (disk-averaged) pixel is cloud. With s2cloudless's default 0.4
the final mask marks bright roofs, sand and haze of OSCD's clear scenes as cloud: 15.2 % of Hong
Kong (2015), 20.3 % of Hong Kong (2017), 12.4 % of Dubai; at 0.6 it marks 0.1 %, 2.6 % and 1.8 %,
and still covers 47.9 % of the real cumulus sample (63.2 % at 0.4, which takes in its haze)."""
S2CLOUDLESS_PIXEL_M = 180.0
"""Pixel size the s2cloudless classifier runs at (it was designed for about 160 m)."""
S2CLOUDLESS_AVERAGE_M = 60.0
"""Radius of the disk the probabilities are averaged over."""
S2CLOUDLESS_DILATION_M = 120.0
"""Radius by which the cloud mask is dilated."""
WATER_VAPOUR_RISE = 1.1
"""A cloud found by s2cloudless is kept only when, in one of its blocks at least, B09 / B8A (the
water-vapour band over the near infrared) exceeds this multiple of the scene's clear blocks'
median: a cloud top lies above part of the water vapour that dims B09, bright sand and roofs do
not. Measured: the 92 clouds s2cloudless finds on 47 clear OSCD scenes peak at 1.07 at most,
but one (1.12, one block of Milan 2015, kept); the real cumulus sample's large clouds at
1.17-1.37, the small real clouds of OSCD's Paris 2018 at 1.17 and 1.27. Without this rule the
mask hid 2.2 % of the clear OSCD scenes on average (up to 21.8 %) and 16.3 % of the demo's
Dubai; with it 0.01 % (up to 0.4 %) and 0 %."""
THICK_B02 = 0.25
"""...or when one of its blocks is a thick cloud: brighter than this in B02 (TOA)..."""
THICK_WHITENESS = 0.1
"""...and white: the mean absolute deviation of B02, B03, B04 from their mean, over the mean, below
this (Fmask's whiteness). No block of a clear OSCD scene passes both; 4 of the cumulus sample's
7 clouds, its 4 large ones, have such a block. This keeps clouds pasted from another scene
(whose water vapour is not the scene's)."""
MIN_CLEAR_BLOCKS = 10
"""The water-vapour median is taken on the blocks that are not cloud; with fewer of them than
this (an overcast scene) no cloud is dropped."""
CIRRUS_B10 = 0.012
"""Blocks whose B10 (cirrus band) TOA reflectance exceeds this are thin cirrus or haze and masked
(Sen2Cor's lower cirrus bound). Clear OSCD blocks reach 0.005; the real cirrus sample 0.018-0.048,
of which s2cloudless alone marks 73 %."""
RIM_M = 600.0
"""Around the clouds of the block pass, pixels within this distance are classified again one by
one (at the mask's 60 m) to take in cloud rims, haze and small clouds the 180 m blocks miss..."""
RIM_BLUE_MARGIN = 0.01
"""...when brighter in B02 than the median of the pixels that are not cloud by this much (cloud
and haze brighten the blue; this leaves 14 % of the cumulus sample's ring to classify, and every
rim pixel found)..."""
RIM_THRESHOLD = 0.5
"""...and their own s2cloudless probability exceeds this; they are dilated by one pixel. On the
real cumulus sample the visibly cloudy pixels (B02 > 0.18) left visible fall from 2.8 % (block
pass only) to 0.8 % (5.8 % with the earlier mask); on clear OSCD scenes it adds 0.1 % to Milan
2015 only. Rims do not cast shadows (only the block pass's clouds do)."""

SHADOW_NIR_RATIO = 0.65
"""Shadow candidates are darker in B08 than this share of the clear pixels' median..."""
SHADOW_NIR_MAX = 0.15
"""...or darker than this B08 reflectance, where too few clear pixels give a median."""
SHADOW_WATER_NDWI = 0.2
"""...and not water: (B03 - B08) / (B03 + B08) at or below this."""
CLOUD_HEIGHT_M = (200.0, 4000.0)
"""Cloud heights searched for shadows (the shadow lies ``height * tan(zenith)`` away)."""
SHADOW_SEARCH_M = 1500.0
"""Without sun angles, shadows are searched this far from a cloud in every direction."""
SHADOW_MIN_CLOUD_M2 = 100_000.0
"""Only clouds of at least this area (0.1 km²) cast shadows: smaller detections are mostly
bright roofs or sand (without this rule, the false clouds of an early setting, threshold 0.4 at
60 m, cast spurious shadows over 13-15 % of OSCD's clear Dubai and Hong Kong)."""

_REFLECTANCE = Radiometry(quantification=1.0, source="reflectance")


@dataclass
class CloudMask:
    """Cloud and shadow pixels of one scene on a coarse version of a pair grid.

    Attributes:
        factor: Pair-grid pixels per mask pixel along each axis.
        cloud: Bool ``(ceil(H / factor), ceil(W / factor))``: cloud (or defective) pixels.
        shadow: Bool, same shape: cloud-shadow pixels.
        method: How the mask was made (``scl``, ``s2cloudless``, ``user``).
    """

    factor: int
    cloud: np.ndarray
    shadow: np.ndarray
    method: str

    @property
    def unobserved(self) -> np.ndarray:
        """Cloud or shadow, on the coarse grid."""
        return self.cloud | self.shadow

    def fraction(self) -> float:
        """Share of the mask's pixels that are cloud or shadow."""
        return float(self.unobserved.mean()) if self.unobserved.size else 0.0


def window_of(coarse: np.ndarray, factor: int, window: Window) -> np.ndarray:
    """A window of the pair grid cut from a coarse mask (nearest, exact for any offset)."""
    row0, col0 = int(window.row_off), int(window.col_off)
    rows = np.arange(row0, row0 + int(window.height))
    cols = np.arange(col0, col0 + int(window.width))
    return mask_at(coarse, factor, rows, cols)


def mask_at(coarse: np.ndarray, factor: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """A coarse mask at the pair-grid pixels ``rows`` x ``cols`` (nearest; pixels past its edge
    take the edge's value)."""
    rows = (rows // factor).clip(0, coarse.shape[0] - 1)
    cols = (cols // factor).clip(0, coarse.shape[1] - 1)
    return coarse[np.ix_(rows, cols)]


def coarse_factor(grid: Grid, pixel_m: float = MASK_PIXEL_M) -> int:
    """Pair pixels per mask pixel for about ``pixel_m`` metres (1 for plain images)."""
    if not grid.georeferenced:
        return 1
    size = math.sqrt(grid.pixel_area_m2())
    return max(1, round(pixel_m / size)) if size > 0 else 1


def coarse_grid(grid: Grid, factor: int) -> Grid:
    """The pair grid with pixels ``factor`` times larger (covering it, rounded up)."""
    return Grid(
        math.ceil(grid.width / factor),
        math.ceil(grid.height / factor),
        grid.transform @ Affine.scale(factor),
        grid.crs,
    )


def resolve_mode(scene: Scene, mode: CloudMaskMode) -> str:
    """The method ``mode`` means for this scene: ``user``, ``scl``, ``s2cloudless`` or ``none``.

    Raises:
        InputError: When an explicit method cannot run on the scene (no SCL, missing bands).
        ValueError: For an unknown mode.
    """
    if mode not in CLOUD_MASK_MODES:
        raise ValueError(f"unknown cloud mask {mode!r}; expected one of {CLOUD_MASK_MODES}")
    if mode == "none":
        return "none"
    if mode == "auto":
        if scene.cloud_mask is not None:
            return "user"
        if scene.scl is not None:
            return "scl"
        if scene.is_sentinel2 and all(b in scene.sources for b in S2CLOUDLESS_BANDS):
            return "s2cloudless"
        return "none"
    if mode == "scl" and scene.scl is None:
        raise InputError(scene.path, "--cloud-mask scl: the scene has no SCL layer (L2A only)")
    if mode == "s2cloudless":
        missing = [b for b in S2CLOUDLESS_BANDS if b not in scene.sources]
        if missing:
            raise InputError(
                scene.path,
                f"--cloud-mask s2cloudless needs the L1C band(s) {', '.join(missing)}, which "
                "the scene lacks (use scl for L2A products)",
            )
    return mode


def scene_cloud_mask(
    scene: Scene, grid: Grid, mode: CloudMaskMode = "auto", factor: int | None = None
) -> CloudMask | None:
    """The cloud and shadow mask of a scene on a pair grid, or None when no method applies."""
    method = resolve_mode(scene, mode)
    if method == "none":
        return None
    factor = factor or coarse_factor(grid)
    coarse = coarse_grid(grid, factor)
    if method == "user":
        source = single_band_source(scene.cloud_mask)  # type: ignore[arg-type]
        values = read_band(source, coarse, Resampling.max)
        cloud = np.nan_to_num(values, nan=0.0) != 0
        return CloudMask(factor, cloud, np.zeros_like(cloud), "user")
    if method == "scl":
        cloud, shadow = scl_mask(scene, coarse)
        return CloudMask(factor, cloud, shadow & ~cloud, "scl")
    extra = ["B03"] if "B03" in scene.sources else []  # for the water test of shadows
    bands = scene.read(
        [*S2CLOUDLESS_BANDS, *extra], coarse, radiometry=_REFLECTANCE,
        resampling=Resampling.average,
    )
    _fill_partial_edges(bands, grid, factor)
    pixel_m = math.sqrt(coarse.pixel_area_m2()) if coarse.georeferenced else 10.0 * factor
    green = bands[-1] if extra else None
    cloud, core = s2cloudless_mask(bands[: len(S2CLOUDLESS_BANDS)], pixel_m, green)
    shadow = shadow_mask(
        core,
        nir=bands[S2CLOUDLESS_BANDS.index("B08")],
        green=bands[-1] if extra else None,
        pixel_m=pixel_m,
        sun_angles=scene.sun_angles,
    )
    return CloudMask(factor, cloud, shadow & ~cloud, "s2cloudless")


def _fill_partial_edges(bands: np.ndarray, grid: Grid, factor: int) -> None:
    """Give the last mask row (column), when it lies only partly over the pair grid and reads
    as invalid, its inner neighbour's values (in place): its pair pixels are masked like those
    beside them instead of never."""
    if grid.height % factor and bands.shape[1] > 1:
        last = bands[:, -1]
        np.copyto(last, bands[:, -2], where=np.isnan(last))
    if grid.width % factor and bands.shape[2] > 1:
        last = bands[:, :, -1]
        np.copyto(last, bands[:, :, -2], where=np.isnan(last))


def scl_mask(scene: Scene, coarse: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(cloud, shadow) of a scene's SCL on a coarse grid: a coarse pixel is cloud (shadow) when
    any SCL pixel under it is, then dilated as the s2cloudless path dilates (clouds by
    :data:`S2CLOUDLESS_DILATION_M`, shadows by one pixel). The SCL is read at its own pixel size
    onto a grid nested in the coarse one (nearest on class codes is exact there)."""
    assert scene.scl is not None
    cloud = np.zeros(coarse.shape, bool)
    shadow = np.zeros(coarse.shape, bool)
    k = _nested_factor(coarse, scene.scl.grid)
    rows_per_strip = max(1, 1024 // k)  # a fine strip of about 1024 rows at a time
    for row0 in range(0, coarse.height, rows_per_strip):
        rows = min(rows_per_strip, coarse.height - row0)
        fine = Grid(
            coarse.width * k,
            rows * k,
            coarse.transform @ Affine.translation(0, row0) @ Affine.scale(1 / k),
            coarse.crs,
        )
        classes = scene.read_classes(fine)
        assert classes is not None
        blocks = (rows, k, coarse.width, k)
        shadow[row0 : row0 + rows] = (classes == SCL_SHADOW).reshape(blocks).any(axis=(1, 3))
        hidden = np.isin(classes, SCL_UNOBSERVED) & (classes != SCL_SHADOW)
        cloud[row0 : row0 + rows] = hidden.reshape(blocks).any(axis=(1, 3))
    pixel_m = math.sqrt(coarse.pixel_area_m2()) if coarse.georeferenced else MASK_PIXEL_M
    cloud = _dilate(cloud, max(1, round(S2CLOUDLESS_DILATION_M / pixel_m)))
    return cloud, _dilate(shadow, 1)


def _nested_factor(coarse: Grid, source: Grid) -> int:
    """How many source-sized pixels fit along a coarse pixel (1 when not georeferenced)."""
    if not (coarse.georeferenced and source.georeferenced):
        return 1
    source_m = math.sqrt(source.pixel_area_m2())
    return max(1, round(math.sqrt(coarse.pixel_area_m2()) / source_m)) if source_m > 0 else 1


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by a disk of ``radius`` pixels (s2cloudless's structuring element)."""
    if not mask.any():
        return mask
    disk = cv2.circle(np.zeros((2 * radius + 1,) * 2, np.uint8), (radius, radius), radius, 1, -1)
    return cv2.dilate(mask.astype(np.uint8), disk).astype(bool)


def s2cloudless_mask(
    reflectance: np.ndarray, pixel_m: float, green: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """s2cloudless cloud mask of ``(10, H, W)`` TOA reflectance in :data:`S2CLOUDLESS_BANDS`
    order (and B03, ``green``, when there is one), on pixels of ``pixel_m`` metres:
    ``(cloud, core)``, where ``core`` are the clouds of the block pass (they cast the shadows)
    and ``cloud`` adds their rims. Invalid (NaN) pixels are never cloud.

    The classifier runs on blocks of about :data:`S2CLOUDLESS_PIXEL_M` (its design resolution,
    and what keeps its cost bounded: LightGBM on every 60 m pixel of a full tile took 2.5 min a
    scene here). Clouds without a water-vapour or thick-cloud signature (bright surfaces) are
    dropped and thin cirrus added (:data:`WATER_VAPOUR_RISE`, :data:`CIRRUS_B10`); the
    probabilities are spread back over the mask pixels, averaged over a disk, thresholded and
    dilated there. Pixels near these clouds are then classified one by one for the rims
    (:data:`RIM_M`).
    """
    valid = np.isfinite(reflectance).all(axis=0)
    data = np.nan_to_num(reflectance, nan=0.0).astype(np.float32)
    block = max(1, round(S2CLOUDLESS_PIXEL_M / pixel_m))
    coarse = _block_mean(reflectance, block)
    detector = _s2cloudless_detector(
        max(1, round(S2CLOUDLESS_AVERAGE_M / pixel_m)),
        max(1, round(S2CLOUDLESS_DILATION_M / pixel_m)),
    )
    filled = np.nan_to_num(coarse, nan=0.0)
    probability = detector.get_cloud_probability_maps(np.moveaxis(filled, 0, -1)[None])[0]
    seen = np.isfinite(coarse).all(axis=0)
    green_blocks = _block_mean(green[None], block)[0] if green is not None else None
    probability = _without_bright_surfaces(probability, filled, seen, green_blocks)
    probability[filled[S2CLOUDLESS_BANDS.index("B10")] > CIRRUS_B10] = 1.0
    probability[~seen] = 0.0
    probability = np.repeat(np.repeat(probability, block, 0), block, 1)
    probability = probability[: data.shape[1], : data.shape[2]].astype(np.float32)
    core = detector.get_mask_from_prob(probability[None])[0].astype(bool) & valid
    return core | _rims(detector, data, core, valid, pixel_m), core


def _without_bright_surfaces(
    probability: np.ndarray, blocks: np.ndarray, seen: np.ndarray, green: np.ndarray | None
) -> np.ndarray:
    """Block probabilities with the clouds (8-connected blocks above the threshold) that have
    neither a block above :data:`WATER_VAPOUR_RISE` nor a thick white block set to 0; ``seen``
    marks the blocks with valid pixels (the others are never clear ground)."""
    nir = np.maximum(blocks[S2CLOUDLESS_BANDS.index("B8A")], 1e-6)
    water_vapour = blocks[S2CLOUDLESS_BANDS.index("B09")] / nir
    clear = (probability <= S2CLOUDLESS_THRESHOLD) & seen
    if int(clear.sum()) < MIN_CLEAR_BLOCKS:
        return probability
    cloudlike = water_vapour / max(float(np.median(water_vapour[clear])), 1e-6) > WATER_VAPOUR_RISE
    if green is not None:
        blue, red = blocks[S2CLOUDLESS_BANDS.index("B02")], blocks[S2CLOUDLESS_BANDS.index("B04")]
        mean = np.maximum((blue + green + red) / 3, 1e-6)
        whiteness = (abs(blue - mean) + abs(green - mean) + abs(red - mean)) / mean
        cloudlike |= (blue > THICK_B02) & (whiteness < THICK_WHITENESS)
    count, labels = cv2.connectedComponents(
        (probability > S2CLOUDLESS_THRESHOLD).astype(np.uint8), connectivity=8
    )
    keep = np.zeros(count, bool)
    keep[labels[cloudlike]] = True
    keep[0] = True  # not a cloud
    return np.where(keep[labels], probability, 0.0)


def _rims(
    detector: Any, data: np.ndarray, core: np.ndarray, valid: np.ndarray, pixel_m: float
) -> np.ndarray:
    """Pixels within :data:`RIM_M` of ``core``, bluer than the rest by :data:`RIM_BLUE_MARGIN`,
    whose own probability exceeds :data:`RIM_THRESHOLD`, dilated by one pixel."""
    rim = np.zeros_like(core)
    rest = valid & ~core
    if not core.any() or not rest.any():
        return rim
    blue = data[S2CLOUDLESS_BANDS.index("B02")]
    ring = _dilate(core, max(1, round(RIM_M / pixel_m))) & rest
    ring &= blue > float(np.median(blue[rest])) + RIM_BLUE_MARGIN
    if ring.any():
        pixels = np.moveaxis(data[:, ring], 0, -1)[None, :, None, :]  # (1, N, 1, bands)
        rim[ring] = detector.get_cloud_probability_maps(pixels)[0, :, 0] > RIM_THRESHOLD
    return _dilate(rim, 1) & valid


def _block_mean(data: np.ndarray, block: int) -> np.ndarray:
    """Means over ``block`` x ``block`` pixels of ``(C, H, W)`` over their valid (finite)
    pixels (edge blocks may be partial); NaN where a block has none."""
    if block == 1:
        return data
    channels, height, width = data.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.pad(data, [(0, 0), (0, rows * block - height), (0, cols * block - width)],
                    constant_values=np.nan)
    blocks = padded.reshape(channels, rows, block, cols, block)
    count = np.isfinite(blocks).sum(axis=(2, 4))
    total = np.nan_to_num(blocks, copy=False, nan=0.0).sum(axis=(2, 4), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


@lru_cache(maxsize=4)
def _s2cloudless_detector(average_over: int, dilation_size: int) -> Any:
    """An s2cloudless detector (its LightGBM model loads once per process, not per scene)."""
    from s2cloudless import S2PixelCloudDetector

    return S2PixelCloudDetector(
        threshold=S2CLOUDLESS_THRESHOLD,
        all_bands=False,
        average_over=average_over,
        dilation_size=dilation_size,
    )


def shadow_mask(
    cloud: np.ndarray,
    nir: np.ndarray,
    green: np.ndarray | None,
    pixel_m: float,
    sun_angles: tuple[float, float] | None,
) -> np.ndarray:
    """Cloud shadows: dark, non-water pixels where a cloud's shadow can fall.

    With the sun's (azimuth, zenith) the cloud mask is cast away from the sun for cloud heights
    :data:`CLOUD_HEIGHT_M`; without them every direction within :data:`SHADOW_SEARCH_M` is
    searched. A candidate is dark in B08 and not water (NDWI <= :data:`SHADOW_WATER_NDWI`), as
    in the s2cloudless shadow recipe of Sentinel Hub and Google Earth Engine; "dark" is relative
    to the scene (below :data:`SHADOW_NIR_RATIO` of the clear pixels' median B08), because
    shadows over bright vegetation stay above that recipe's fixed 0.15 (measured on the real
    cumulus sample in shared/data/clouds: shadow B08 about 0.20 against a clear median of 0.33).
    Invalid (NaN) pixels are never shadow.
    """
    if not cloud.any():
        return np.zeros_like(cloud)
    clear = np.isfinite(nir) & ~cloud
    enough = int(clear.sum()) >= 100
    limit = SHADOW_NIR_RATIO * float(np.median(nir[clear])) if enough else SHADOW_NIR_MAX
    dark = np.nan_to_num(nir, nan=np.inf) < limit
    if green is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            ndwi = (green - nir) / (green + nir)
        dark &= ~(np.nan_to_num(ndwi, nan=0.0) > SHADOW_WATER_NDWI)
    casting = _large_components(cloud, SHADOW_MIN_CLOUD_M2 / pixel_m**2)
    if not casting.any():
        return np.zeros_like(cloud)
    reach = _cast(casting, pixel_m, sun_angles)
    shadow = dark & reach
    if shadow.any():  # close small gaps and take the penumbra
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        shadow = cv2.dilate(shadow.astype(np.uint8), kernel).astype(bool)
    return shadow


def _large_components(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """The connected parts of ``mask`` (8-connected) of at least ``min_pixels`` pixels."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # the background
    return keep[labels]


def _cast(cloud: np.ndarray, pixel_m: float, sun_angles: tuple[float, float] | None) -> np.ndarray:
    """Where the shadows of ``cloud`` can fall (bool)."""
    if sun_angles is None:
        radius = max(1, round(SHADOW_SEARCH_M / pixel_m))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        return cv2.dilate(cloud.astype(np.uint8), kernel).astype(bool)
    azimuth, zenith = sun_angles
    tan_zenith = math.tan(math.radians(min(zenith, 80.0)))
    # The shadow lies opposite the sun: azimuth is clockwise from north; rows grow southwards.
    direction = math.radians(azimuth + 180.0)
    d_col, d_row = math.sin(direction), -math.cos(direction)
    near, far = (h * tan_zenith / pixel_m for h in CLOUD_HEIGHT_M)
    reach = np.zeros_like(cloud)
    steps = max(2, math.ceil(far - near) + 1)
    for distance in np.linspace(near, far, steps):
        reach |= _shift(cloud, round(distance * d_row), round(distance * d_col))
    return reach


def _shift(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``mask`` moved by (rows, cols) pixels, False where nothing moved in."""
    out = np.zeros_like(mask)
    height, width = mask.shape
    if abs(rows) >= height or abs(cols) >= width:
        return out
    src_r = slice(max(0, -rows), height - max(0, rows))
    dst_r = slice(max(0, rows), height - max(0, -rows))
    src_c = slice(max(0, -cols), width - max(0, cols))
    dst_c = slice(max(0, cols), width - max(0, -cols))
    out[dst_r, dst_c] = mask[src_r, src_c]
    return out
