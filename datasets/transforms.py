"""Augmentation of change chips (Albumentations): one geometry for both dates, photometry per date.

A change chip is a ``before`` image, an ``after`` image and a change mask on one pixel grid. Any
geometric transform (flip, 90-degree rotation, small affine warp) must move all three the same
way, or the mask no longer marks the pixels that changed; :class:`ChangeAugmentation` runs them as
one Albumentations call with ``after`` registered as an additional ``image`` target. Photometric
transforms model differences between acquisitions (sun angle, haze, sensor noise), so each date
gets its own random draw: the photometric pipeline is called once per date. A *product shift*
(:func:`product_shift_transforms`) models a change of processing level that hits both dates alike
(L1C top-of-atmosphere against L2A bottom-of-atmosphere reflectance): one draw, applied to both.

Inputs are normalised float32 chips of ANY band count (z-scores, NaN already replaced by 0).
Albumentations' own photometric transforms assume float images in ``[0, 1]`` and clip to it
(``albucore.clip``), which would destroy z-scores, so this module brings three channel-agnostic,
non-clipping ones: :class:`RandomGainOffset` (contrast and brightness, per band),
:class:`AdditiveGaussianNoise` and :class:`LocalDarkening` (cloud-shadow-like patches). A gain
``g`` and offset ``o`` on z-scores are the same as a brightness/contrast change ``raw * g + c`` of
the raw band values, so they stay physically sensible for 13-band Sentinel-2 as for RGB.
Gamma is left out: it needs positive values.

Geometric transforms with more than 4 channels work in Albumentations 2.0: flips and rot90 are
numpy operations, and ``Affine`` warps channels in chunks of 4
(``albucore.maybe_process_in_chunks``).
"""

from __future__ import annotations

from typing import Any

import albumentations as A  # noqa: N812
import cv2
import numpy as np
import torch
from albumentations.core.transforms_interface import BaseTransformInitSchema

from groundbreak.datasets.labels import IGNORE

IGNORE_INDEX = IGNORE
"""Mask value of pixels that carry no label (the labels' ``IGNORE``); also used to fill pixels
warped in from outside."""


class RandomGainOffset(A.ImageOnlyTransform):
    """Multiply by a random gain and add a random offset, per band or shared; never clips.

    Args:
        gain: Range of the multiplicative factor (contrast).
        offset: Range of the additive shift (brightness), in the image's units (z-scores).
        per_channel: Draw a separate gain and offset for every band.
        p: Probability of applying the transform.
    """

    class InitSchema(BaseTransformInitSchema):
        gain: tuple[float, float]
        offset: tuple[float, float]
        per_channel: bool

    def __init__(
        self,
        gain: tuple[float, float] = (0.9, 1.1),
        offset: tuple[float, float] = (-0.1, 0.1),
        per_channel: bool = True,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        self.gain = gain
        self.offset = offset
        self.per_channel = per_channel

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        """Draw the gains and offsets, one per band when ``per_channel``."""
        image = data["image"]
        count = image.shape[-1] if (self.per_channel and image.ndim == 3) else 1
        gains = self.random_generator.uniform(*self.gain, size=count).astype(np.float32)
        offsets = self.random_generator.uniform(*self.offset, size=count).astype(np.float32)
        return {"gains": gains, "offsets": offsets}

    def apply(
        self, img: np.ndarray, gains: np.ndarray, offsets: np.ndarray, **params: Any
    ) -> np.ndarray:
        """Return ``img * gains + offsets`` (broadcast over the band axis), as float32."""
        return (img * gains + offsets).astype(np.float32, copy=False)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Names of the constructor arguments, for Albumentations' serialisation."""
        return ("gain", "offset", "per_channel")


class AdditiveGaussianNoise(A.ImageOnlyTransform):
    """Add zero-mean Gaussian noise with a random standard deviation; never clips.

    Args:
        std: Range of the noise standard deviation, in the image's units (z-scores).
        p: Probability of applying the transform.
    """

    class InitSchema(BaseTransformInitSchema):
        std: tuple[float, float]

    def __init__(self, std: tuple[float, float] = (0.01, 0.05), p: float = 0.5) -> None:
        super().__init__(p=p)
        self.std = std

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        """Draw the noise field for this image."""
        image = data["image"]
        sigma = self.py_random.uniform(*self.std)
        noise = self.random_generator.normal(0.0, sigma, size=image.shape).astype(np.float32)
        return {"noise": noise}

    def apply(self, img: np.ndarray, noise: np.ndarray, **params: Any) -> np.ndarray:
        """Return ``img + noise`` as float32."""
        return (img + noise).astype(np.float32, copy=False)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Names of the constructor arguments, for Albumentations' serialisation."""
        return ("std",)


class LocalDarkening(A.ImageOnlyTransform):
    """Darken soft-edged elliptical patches, as a cloud shadow does; never clips.

    A shadow takes away the direct sunlight, so the reflectance of every band under it falls by a
    factor (to about 0.6 in the real cumulus sample of ``shared/data/clouds``: B08 0.20 against a
    clear 0.33). On z-scores ``z = (raw - mean) / std`` the factor ``f`` of the raw value is
    ``z * f + (f - 1) * mean / std``, so the transform needs the per-band statistics the chips were
    normalised with. The factor falls smoothly from ``f`` at an ellipse's centre half to 1 at its
    rim, like the penumbra of a real shadow.

    Args:
        mean: Per-band mean of the normalisation (raw units).
        std: Per-band standard deviation of the normalisation (raw units).
        factor: Range of the reflectance factor at a patch's core (lower is darker).
        patches: Range of the number of patches (inclusive).
        radius: Range of a patch's semi-axes, as fractions of the chip's side.
        p: Probability of applying the transform.
    """

    class InitSchema(BaseTransformInitSchema):
        mean: list[float]
        std: list[float]
        factor: tuple[float, float]
        patches: tuple[int, int]
        radius: tuple[float, float]

    def __init__(
        self,
        mean: list[float],
        std: list[float],
        factor: tuple[float, float] = (0.35, 0.8),
        patches: tuple[int, int] = (1, 2),
        radius: tuple[float, float] = (0.1, 0.5),
        p: float = 0.3,
    ) -> None:
        super().__init__(p=p)
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} and {len(std)}")
        if not 0 < factor[0] <= factor[1] <= 1:
            raise ValueError(f"factor must be a range within (0, 1], got {factor}")
        if not 1 <= patches[0] <= patches[1]:
            raise ValueError(f"patches must be a range of counts >= 1, got {patches}")
        if not 0 < radius[0] <= radius[1]:
            raise ValueError(f"radius must be a range of positive fractions, got {radius}")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self._mean_over_std = np.asarray(mean, np.float32) / np.asarray(std, np.float32)
        self.factor = factor
        self.patches = patches
        self.radius = radius

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        """Draw the factor map: 1 outside the patches, down to each patch's factor inside."""
        height, width = data["image"].shape[:2]
        if data["image"].shape[-1] != len(self.mean):
            raise ValueError(
                f"LocalDarkening has statistics of {len(self.mean)} bands, the image has "
                f"{data['image'].shape[-1]}"
            )
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
        factor_map = np.ones((height, width), dtype=np.float32)
        side = float(max(height, width))
        for _ in range(self.py_random.randint(*self.patches)):
            centre_row = self.py_random.uniform(0, height)
            centre_col = self.py_random.uniform(0, width)
            semi_a = self.py_random.uniform(*self.radius) * side
            semi_b = self.py_random.uniform(*self.radius) * side
            angle = self.py_random.uniform(0, np.pi)
            dr, dc = rows - centre_row, cols - centre_col
            along = dr * np.cos(angle) + dc * np.sin(angle)
            across = -dr * np.sin(angle) + dc * np.cos(angle)
            distance = np.sqrt((along / semi_a) ** 2 + (across / semi_b) ** 2)
            weight = np.clip(2.0 * (1.0 - distance), 0.0, 1.0)  # 1 in the inner half, 0 outside
            factor = self.py_random.uniform(*self.factor)
            factor_map = np.minimum(factor_map, 1.0 - (1.0 - factor) * weight)
        return {"factor_map": factor_map}

    def apply(self, img: np.ndarray, factor_map: np.ndarray, **params: Any) -> np.ndarray:
        """Scale the raw reflectance by ``factor_map``, expressed on z-scores, as float32."""
        f = factor_map[..., None]
        return (img * f + (f - 1.0) * self._mean_over_std).astype(np.float32, copy=False)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Names of the constructor arguments, for Albumentations' serialisation."""
        return ("mean", "std", "factor", "patches", "radius")


def geometric_transforms(affine_p: float = 0.0) -> list[A.BasicTransform]:
    """Flips, 90-degree rotations and (with probability ``affine_p``) a small affine warp.

    Pixels warped in from outside the chip are 0 in the images (the normalised mean) and
    :data:`IGNORE_INDEX` in the mask, so they never count as labelled.
    """
    transforms: list[A.BasicTransform] = [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
    ]
    if affine_p > 0:
        transforms.append(
            A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.05, 0.05),
                rotate=(-15, 15),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0.0,
                fill_mask=IGNORE_INDEX,
                p=affine_p,
            )
        )
    return transforms


def photometric_transforms(
    gain: tuple[float, float] = (0.9, 1.1),
    offset: tuple[float, float] = (-0.1, 0.1),
    noise_std: tuple[float, float] = (0.01, 0.05),
    shadow: LocalDarkening | None = None,
) -> list[A.BasicTransform]:
    """Optional shadow-like darkening, then per-band gain/offset and Gaussian noise, for any band
    count (applied to one date)."""
    return [
        *([shadow] if shadow is not None else []),
        RandomGainOffset(gain=gain, offset=offset, per_channel=True, p=0.8),
        AdditiveGaussianNoise(std=noise_std, p=0.5),
    ]


def product_shift_transforms(
    gain: tuple[float, float] = (0.95, 1.7),
    offset: tuple[float, float] = (-1.0, 0.5),
    p: float = 0.5,
) -> list[A.BasicTransform]:
    """A per-band gain/offset (z-score units) shared by both dates: a different product level.

    The default ranges cover what Sen2Cor does to L1C reflectance over the real two-date
    L1C/L2A sample in ``shared/data/clouds/sen2r-barbellino-2dates``: per band, a least-squares
    fit ``BOA = a * TOA + b`` over both dates gives gains 1.05-1.63 and, on the OSCD band
    statistics, z-score offsets of -0.84 (B02) to +0.37 (B12) for the bands B02-B08, B11, B12.
    """
    return [RandomGainOffset(gain=gain, offset=offset, per_channel=True, p=p)]


class ChangeAugmentation:
    """Augment a (before, after, mask) chip: shared geometry, independent photometry per date.

    Args:
        geometric: Transforms applied identically to before, after and mask.
        photometric: Transforms applied to each date separately (independent random draws).
        shared_photometric: Transforms applied to both dates with one draw (a product shift).
        seed: Seed of the Albumentations random state. Inside a DataLoader worker the state is
            re-seeded from ``torch.initial_seed()`` (distinct per worker and per epoch, and
            reproducible under ``seed_everything``), so workers never repeat each other's draws.

    Call with channel-first arrays ``before, after: float32 (C, H, W)`` and ``mask: uint8 (H, W)``;
    returns the three transformed arrays in the same layout.
    """

    def __init__(
        self,
        geometric: list[A.BasicTransform] | None = None,
        photometric: list[A.BasicTransform] | None = None,
        seed: int | None = None,
        shared_photometric: list[A.BasicTransform] | None = None,
    ) -> None:
        self.geometric = A.Compose(
            geometric if geometric is not None else geometric_transforms(),
            additional_targets={"after": "image"},
            seed=seed,
        )
        self.photometric = A.Compose(
            photometric if photometric is not None else photometric_transforms(), seed=seed
        )
        self.shared_photometric = A.Compose(
            shared_photometric or [], additional_targets={"after": "image"}, seed=seed
        )
        self._worker_seed: int | None = None

    def _reseed_in_worker(self) -> None:
        """Give each DataLoader worker its own random state, derived from torch's seed."""
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            return
        seed = worker.seed % 2**32
        if seed != self._worker_seed:
            self._worker_seed = seed
            self.geometric.set_random_seed(seed)
            self.photometric.set_random_seed(seed + 1)
            self.shared_photometric.set_random_seed(seed + 2)

    def __call__(
        self, before: np.ndarray, after: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Transformed ``(before, after, mask)``; band count and mask values are preserved."""
        if before.shape != after.shape or before.ndim != 3:
            raise ValueError(
                f"before and after must both be (C, H, W); got {before.shape} and {after.shape}"
            )
        if mask.shape != before.shape[1:]:
            raise ValueError(f"mask shape {mask.shape} does not match chip {before.shape[1:]}")
        self._reseed_in_worker()
        shared = self.geometric(
            image=_to_hwc(before), after=_to_hwc(after), mask=np.ascontiguousarray(mask)
        )
        shifted = self.shared_photometric(image=shared["image"], after=shared["after"])
        before_hwc = self.photometric(image=shifted["image"])["image"]
        after_hwc = self.photometric(image=shifted["after"])["image"]
        return _to_chw(before_hwc), _to_chw(after_hwc), np.ascontiguousarray(shared["mask"])


def build_train_augmentation(
    photometric: bool = True,
    affine_p: float = 0.0,
    seed: int | None = None,
    product_shift_p: float = 0.0,
    gain: tuple[float, float] = (0.9, 1.1),
    offset: tuple[float, float] = (-0.1, 0.1),
    shadow_p: float = 0.0,
    band_mean: np.ndarray | None = None,
    band_std: np.ndarray | None = None,
) -> ChangeAugmentation:
    """The training augmentation: flips, rot90, optional affine, per-date photometry (with
    probability ``shadow_p`` shadow-like darkening, which needs the normalisation's ``band_mean``
    and ``band_std``; per-band ``gain`` and ``offset`` ranges, z-score units; noise) and, with
    probability ``product_shift_p``, a product-level shift shared by both dates."""
    shadow = None
    if shadow_p > 0:
        if band_mean is None or band_std is None:
            raise ValueError("shadow_p > 0 needs band_mean and band_std")
        shadow = LocalDarkening(mean=list(band_mean), std=list(band_std), p=shadow_p)
    return ChangeAugmentation(
        geometric=geometric_transforms(affine_p=affine_p),
        photometric=photometric_transforms(gain=gain, offset=offset, shadow=shadow)
        if photometric
        else [],
        seed=seed,
        shared_photometric=product_shift_transforms(p=product_shift_p)
        if product_shift_p > 0
        else [],
    )


def _to_hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> contiguous float32 (H, W, C), the layout Albumentations expects."""
    return np.ascontiguousarray(np.moveaxis(image, 0, -1), dtype=np.float32)


def _to_chw(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> contiguous float32 (C, H, W); restores a channel axis OpenCV dropped."""
    if image.ndim == 2:
        image = image[..., None]
    return np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32)
