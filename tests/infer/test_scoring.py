"""The site score: bounded, monotone in area and confidence, fair to sites of any size."""

from __future__ import annotations

import numpy as np
import pytest

from groundbreak.infer.sites.scoring import (
    DEFAULT_AREA_SCALE_M2,
    area_term,
    measure_site,
    site_score,
)

S2_PIXEL_M2 = 100.0  # one 10 m Sentinel-2 pixel
AREAS = np.array([0.0, 1.0, 100.0, 500.0, 2_500.0, 10_000.0, 1e5, 1e7, 1e12])
CONFIDENCES = np.linspace(0.0, 1.0, 11)


def test_score_is_bounded_in_unit_interval() -> None:
    conf, area = np.meshgrid(CONFIDENCES, AREAS)
    scores = site_score(conf, area)
    assert scores.min() >= 0.0
    assert scores.max() <= 1.0
    assert site_score(1.0, 1e12) == pytest.approx(1.0)
    assert site_score(0.0, 1e12) == 0.0
    assert site_score(1.0, 0.0) == 0.0


def test_score_is_monotone_in_changed_area() -> None:
    for confidence in (0.3, 0.6, 0.95):
        scores = site_score(np.full(AREAS.shape, confidence), AREAS)
        assert np.all(np.diff(scores) >= 0.0)
        assert np.all(np.diff(scores[:6]) > 0.0)  # strictly, below saturation


def test_score_is_monotone_in_confidence() -> None:
    for area in (100.0, 2_500.0, 50_000.0):
        scores = site_score(CONFIDENCES, np.full(CONFIDENCES.shape, area))
        assert np.all(np.diff(scores) > 0.0)


def test_area_term_saturates_around_the_area_scale() -> None:
    assert area_term(DEFAULT_AREA_SCALE_M2) == pytest.approx(1 - np.exp(-1))
    assert area_term(S2_PIXEL_M2) < 0.05
    assert area_term(10_000.0) > 0.98


def test_one_confident_pixel_does_not_outrank_a_large_confident_region() -> None:
    speck = site_score(1.0, S2_PIXEL_M2)
    region = site_score(0.7, 30 * S2_PIXEL_M2)
    assert region > 5 * speck


def test_large_sites_are_ordered_by_confidence_not_size() -> None:
    five_hectares_unsure = site_score(0.7, 50_000.0)
    one_hectare_sure = site_score(0.9, 10_000.0)
    assert one_hectare_sure > five_hectares_unsure


def test_huge_polygon_is_not_rewarded_for_its_size() -> None:
    """The same construction scores the same inside a small or a huge watch-list polygon."""
    probability = np.full((400, 400), 0.05, dtype=np.float32)
    probability[100:110, 100:112] = 0.9  # 120 changed pixels
    small_site = np.zeros(probability.shape, bool)
    small_site[95:115, 95:117] = True
    huge_site = np.ones(probability.shape, bool)
    small = measure_site(probability, 0.5, S2_PIXEL_M2, inside=small_site)
    huge = measure_site(probability, 0.5, S2_PIXEL_M2, inside=huge_site)
    assert small.changed_pixels == huge.changed_pixels == 120
    assert huge.pixels > 100 * small.pixels
    assert huge.score == pytest.approx(small.score)


def test_measure_site_counts_changed_valid_pixels_only() -> None:
    probability = np.array([[0.2, 0.6, np.nan], [0.9, 0.5, 0.1]], dtype=np.float32)
    inside = np.array([[True, True, True], [True, True, False]])
    measure = measure_site(probability, 0.5, pixel_area=2.0, inside=inside, area_scale=10.0)
    assert measure.pixels == 5
    assert measure.valid_pixels == 4
    assert measure.changed_pixels == 3  # 0.6, 0.9 and 0.5 (threshold inclusive)
    assert measure.changed_area == 6.0
    assert measure.confidence == pytest.approx((0.6 + 0.9 + 0.5) / 3)
    assert measure.max_probability == pytest.approx(0.9)
    assert measure.mean_probability == pytest.approx((0.2 + 0.6 + 0.9 + 0.5) / 4)
    assert measure.valid_fraction == pytest.approx(0.8)
    assert measure.score == pytest.approx(measure.confidence * (1 - np.exp(-0.6)))


def test_measure_site_with_explicit_changed_pixels() -> None:
    probability = np.array([[0.4, 0.8], [0.3, 0.2]], dtype=np.float32)
    own = np.array([[True, True], [False, False]])
    measure = measure_site(probability, 0.5, 1.0, inside=own, changed=own)
    assert measure.changed_pixels == 2
    assert measure.confidence == pytest.approx(0.6)


def test_site_without_valid_or_changed_pixels_scores_zero() -> None:
    nothing_valid = measure_site(np.full((3, 3), np.nan, np.float32), 0.5, 100.0)
    assert nothing_valid.valid_pixels == 0
    assert nothing_valid.score == 0.0
    assert np.isnan(nothing_valid.max_probability)
    calm = measure_site(np.full((3, 3), 0.1, np.float32), 0.5, 100.0)
    assert (calm.changed_pixels, calm.confidence, calm.score) == (0, 0.0, 0.0)


def test_area_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="area_scale"):
        site_score(0.5, 100.0, area_scale=0.0)
