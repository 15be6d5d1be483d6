"""Change-chip augmentation: one geometry for before/after/mask, photometry per date, any bands."""

from __future__ import annotations

import numpy as np
import pytest

from groundbreak.datasets.transforms import (
    IGNORE_INDEX,
    AdditiveGaussianNoise,
    ChangeAugmentation,
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
