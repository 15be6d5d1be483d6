"""Change-chip augmentation: one geometry for before/after/mask, photometry per date, any bands."""

from __future__ import annotations

import numpy as np
import pytest

from groundbreak.datasets.transforms import (
    IGNORE_INDEX,
    AdditiveGaussianNoise,
    ChangeAugmentation,
    LocalDarkening,
    RandomGainOffset,
    build_train_augmentation,
    geometric_transforms,
)


def chip(bands: int = 13, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A normalised-looking chip and a change mask with all three mask values."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(bands, size, size)).astype(np.float32)
    mask = (image[0] > 1.0).astype(np.uint8)
    mask[:2, :] = IGNORE_INDEX
    return image, mask


def dihedral_variants(array: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of the last two axes."""
    variants = []
    for k in range(4):
        rotated = np.rot90(array, k, axes=(-2, -1))
        variants += [rotated, np.flip(rotated, axis=-1)]
    return variants


def test_geometry_is_identical_for_before_after_and_mask() -> None:
    image, mask = chip(bands=13)
    augment = ChangeAugmentation(geometric=geometric_transforms(), photometric=[], seed=3)
    changed = 0
    for _ in range(12):
        before, after, out_mask = augment(image, image.copy(), mask)
        np.testing.assert_array_equal(before, after)
        matches = [
            i for i, v in enumerate(dihedral_variants(image)) if np.array_equal(before, v)
        ]
        assert len(matches) == 1
        np.testing.assert_array_equal(out_mask, dihedral_variants(mask)[matches[0]])
        changed += matches[0] != 0
    assert changed > 0, "12 draws never flipped or rotated"


def test_affine_warp_moves_both_dates_and_mask_together() -> None:
    image, mask = chip(bands=13, size=48)
    geometric = geometric_transforms(affine_p=1.0)
    augment = ChangeAugmentation(geometric=geometric, photometric=[], seed=0)
    before, after, out_mask = augment(image, image.copy(), mask)
    np.testing.assert_array_equal(before, after)
    assert before.shape == image.shape
    assert set(np.unique(out_mask)) <= {0, 1, IGNORE_INDEX}
    assert not np.array_equal(out_mask, mask)


def test_photometry_differs_between_dates_and_does_not_clip() -> None:
    image, mask = chip(bands=13)
    photometric = [RandomGainOffset(p=1.0), AdditiveGaussianNoise(p=1.0)]
    augment = ChangeAugmentation(geometric=[], photometric=photometric, seed=1)
    before, after, out_mask = augment(image, image.copy(), mask)
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(out_mask, mask)
    # z-scores keep their range: nothing clipped to [0, 1] as Albumentations' own would.
    assert before.min() < -1.0 and before.max() > 1.0
    # gain/offset and noise stay small perturbations of the input.
    assert np.abs(before - image).mean() < 0.3


@pytest.mark.parametrize("bands", [1, 3, 4, 10, 13])
def test_band_count_dtype_and_mask_values_preserved(bands: int) -> None:
    image, mask = chip(bands=bands)
    augment = build_train_augmentation(affine_p=0.5, seed=bands)
    for _ in range(4):
        before, after, out_mask = augment(image, image, mask)
        assert before.shape == after.shape == image.shape
        assert before.dtype == after.dtype == np.float32
        assert out_mask.dtype == np.uint8 and out_mask.shape == mask.shape
        assert set(np.unique(out_mask)) <= {0, 1, IGNORE_INDEX}


def test_gain_offset_is_drawn_per_band() -> None:
    image = np.ones((13, 8, 8), dtype=np.float32)
    transform = RandomGainOffset(gain=(0.5, 1.5), offset=(0.0, 0.0), per_channel=True, p=1.0)
    transform.set_random_seed(0)
    out = transform(image=np.moveaxis(image, 0, -1))["image"]
    per_band = out.reshape(-1, 13).mean(axis=0)
    assert len(np.unique(per_band.round(6))) == 13


def test_same_seed_same_augmentation() -> None:
    image, mask = chip(bands=10)
    first = build_train_augmentation(affine_p=0.5, seed=7)(image, image, mask)
    second = build_train_augmentation(affine_p=0.5, seed=7)(image, image, mask)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_mismatched_shapes_are_rejected() -> None:
    image, mask = chip(bands=4)
    augment = build_train_augmentation(seed=0)
    with pytest.raises(ValueError, match="before and after"):
        augment(image, image[:3], mask)
    with pytest.raises(ValueError, match="mask shape"):
        augment(image, image, mask[:10])


def shadowed_raw(factor: tuple[float, float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A chip in raw units (Sentinel-2-like band statistics) and the same chip after
    :class:`LocalDarkening` on its z-scores, brought back to raw units."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(800, 3000, size=13).astype(np.float32)
    std = rng.uniform(200, 900, size=13).astype(np.float32)
    raw = rng.uniform(500, 4000, size=(48, 48, 13)).astype(np.float32)
    transform = LocalDarkening(mean=list(mean), std=list(std), factor=factor, p=1.0)
    transform.set_random_seed(seed)
    out = transform(image=(raw - mean) / std)["image"]
    return raw, out * std + mean


def test_shadow_scales_every_band_by_one_factor_within_its_range() -> None:
    raw, shadowed = shadowed_raw(factor=(0.4, 0.7), seed=3)
    ratio = shadowed / raw
    # a reflectance factor, the same in all bands of a pixel: (f - 1) * mean / std is what makes
    # a z-score darkening physical, and a wrong sign or a missing term breaks this equality.
    np.testing.assert_allclose(ratio, ratio[..., :1].repeat(13, axis=-1), rtol=1e-4)
    per_pixel = ratio[..., 0]
    assert per_pixel.min() >= 0.4 - 1e-4 and per_pixel.max() <= 1.0 + 1e-4
    assert (per_pixel < 0.75).any(), "no pixel darkened"
    assert (per_pixel > 1.0 - 1e-4).any(), "the whole chip darkened: no patch edge"


def test_shadow_is_drawn_per_date_and_leaves_the_mask() -> None:
    image, mask = chip(bands=13)
    shadow = LocalDarkening(mean=[3000.0] * 13, std=[500.0] * 13, p=1.0)  # raw > 0
    augment = ChangeAugmentation(geometric=[], photometric=[shadow], seed=5)
    before, after, out_mask = augment(image, image.copy(), mask)
    assert not np.allclose(before, after)
    assert (before <= image + 1e-5).all() and (after <= image + 1e-5).all()
    np.testing.assert_array_equal(out_mask, mask)


def test_shadow_needs_statistics_of_the_image_bands() -> None:
    image, mask = chip(bands=10)
    augment = build_train_augmentation(seed=0, shadow_p=1.0, band_mean=np.ones(13),
                                       band_std=np.ones(13))
    with pytest.raises(ValueError, match="statistics of 13 bands, the image has 10"):
        augment(image, image, mask)
    with pytest.raises(ValueError, match="needs band_mean and band_std"):
        build_train_augmentation(seed=0, shadow_p=0.5)


@pytest.mark.parametrize(
    ("option", "message"),
    [({"factor": (0.0, 0.5)}, "factor"), ({"patches": (0, 2)}, "patches"),
     ({"radius": (0.0, 0.5)}, "radius"), ({"std": [1.0] * 12}, "differ in length")],
)
def test_shadow_rejects_bad_settings(option: dict, message: str) -> None:
    settings = {"mean": [1.0] * 13, "std": [1.0] * 13, **option}
    with pytest.raises(ValueError, match=message):
        LocalDarkening(**settings)
