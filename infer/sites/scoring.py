"""The site score: one number in [0, 1] that orders sites for an analyst.

A site is a watch-list polygon or a discovered change region. Its *changed pixels* are the valid
pixels inside it whose change probability reaches the model's operating threshold. The score is

    score = confidence x (1 - exp(-changed_area / area_scale))

where ``confidence`` is the mean probability over the changed pixels (0 when there are none) and
``changed_area`` is their ground area (m² on georeferenced grids; pixels on grids without a CRS,
where one pixel counts as one unit, like :meth:`Grid.pixel_area_m2`).

What it rewards, and why it is fair to sites of any size:

- **Confidence.** At equal changed area, a site the model is surer about scores higher; the score
  is linear in it, so it reads as "how sure" once the area term has saturated.
- **Changed area, with diminishing returns.** The area term grows with the changed area and
  saturates: about 0.04 for one 10 m Sentinel-2 pixel (100 m²), 0.63 at ``area_scale`` (default
  2,500 m², a quarter hectare: a large building or a small construction lot) and 0.98 from one
  hectare on. So a speck with a single very confident pixel cannot outrank a large confident
  region, while two large sites are ordered by confidence, not by which one is bigger.
- **Changed area, not site area.** Only changed pixels count. A huge watch-list polygon is not
  rewarded for its size: the same construction inside a small or a huge polygon scores the same,
  and scattered noise in a big polygon sits near the threshold, which keeps its confidence low.

Both factors lie in [0, 1], so the score does too, and it is monotone (non-decreasing) in each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_OBSERVED_FRACTION = 0.5
"""A site is *observed* when at least this share of its pixels has a prediction: seen clearly on
both dates (not hidden by a cloud or its shadow, nor outside either scene). A site observed less
is reported as "not observed" and raises no alert: its score says nothing about the rest."""

DEFAULT_AREA_SCALE_M2 = 2_500.0
"""Changed area (m², or pixels on grids without a CRS) at which the area term reaches 1 - 1/e."""


def area_term(
    changed_area: float | np.ndarray, area_scale: float = DEFAULT_AREA_SCALE_M2
) -> float | np.ndarray:
    """Saturating reward for changed area: ``1 - exp(-changed_area / area_scale)`` in [0, 1)."""
    if area_scale <= 0:
        raise ValueError(f"area_scale must be positive, got {area_scale}")
    return -np.expm1(-np.maximum(changed_area, 0.0) / area_scale)


def site_score(
    confidence: float | np.ndarray,
    changed_area: float | np.ndarray,
    area_scale: float = DEFAULT_AREA_SCALE_M2,
) -> float | np.ndarray:
    """The site score: ``confidence x area_term(changed_area)``, in [0, 1].

    Args:
        confidence: mean change probability over the site's changed pixels (0 when none).
        changed_area: ground area of the changed pixels (m², or pixels on grids without a CRS).
        area_scale: area at which the area term reaches 1 - 1/e (about 0.63).
    """
    score = np.clip(confidence, 0.0, 1.0) * area_term(changed_area, area_scale)
    return float(score) if np.ndim(score) == 0 else score


@dataclass(frozen=True)
class SiteMeasure:
    """What a site's pixels say: counts, changed area, confidence and the score."""

    pixels: int
    """Pixels inside the site (on the raster)."""
    valid_pixels: int
    """Of those, pixels with a probability (not nodata)."""
    changed_pixels: int
    """Of those, pixels whose probability reaches the threshold."""
    changed_area: float
    """Ground area of the changed pixels (m², or pixels on grids without a CRS)."""
    confidence: float
    """Mean probability over the changed pixels; 0 when there are none."""
    mean_probability: float
    """Mean probability over the valid pixels; NaN when there are none."""
    max_probability: float
    """Highest probability over the valid pixels; NaN when there are none."""
    score: float
    """The site score (see the module docstring)."""

    @property
    def valid_fraction(self) -> float:
        """Share of the site's pixels that hold a probability."""
        return self.valid_pixels / self.pixels if self.pixels else 0.0


def measure_site(
    probability: np.ndarray,
    threshold: float,
    pixel_area: float | np.ndarray,
    inside: np.ndarray | None = None,
    changed: np.ndarray | None = None,
    area_scale: float = DEFAULT_AREA_SCALE_M2,
) -> SiteMeasure:
    """Measure and score one site from its probabilities.

    Args:
        probability: change probabilities (any shape), NaN where invalid.
        threshold: operating threshold; a pixel with probability >= threshold is changed.
        pixel_area: ground area of one pixel (m², or 1.0 on grids without a CRS), or an array
            of per-pixel areas that broadcasts to ``probability`` (e.g. one per row, ``(H, 1)``,
            from :meth:`Grid.row_pixel_areas_m2`).
        inside: boolean mask of the site's pixels, same shape; None means every pixel.
        changed: boolean mask of changed pixels (e.g. a discovered region's own pixels); None
            means ``probability >= threshold``.
        area_scale: see :func:`site_score`.
    """
    probability = np.asarray(probability, dtype=np.float32)
    inside = np.ones(probability.shape, bool) if inside is None else np.asarray(inside, bool)
    valid = inside & np.isfinite(probability)
    if changed is None:
        changed = valid & (np.nan_to_num(probability, nan=-1.0) >= threshold)
    else:
        changed = valid & np.asarray(changed, bool)
    values = probability[valid]
    changed_values = probability[changed]
    n_changed = int(changed_values.size)
    areas = np.broadcast_to(np.asarray(pixel_area, dtype=np.float64), probability.shape)
    changed_area = float(areas[changed].sum())
    confidence = float(changed_values.mean()) if n_changed else 0.0
    return SiteMeasure(
        pixels=int(inside.sum()),
        valid_pixels=int(values.size),
        changed_pixels=n_changed,
        changed_area=changed_area,
        confidence=confidence,
        mean_probability=float(values.mean()) if values.size else float("nan"),
        max_probability=float(values.max()) if values.size else float("nan"),
        score=site_score(confidence, changed_area, area_scale),
    )


def combine_measures(
    parts: list[SiteMeasure], area_scale: float = DEFAULT_AREA_SCALE_M2
) -> SiteMeasure:
    """The measure of a site from the measures of disjoint parts of it (e.g. bands of rows)."""
    changed = sum(p.changed_pixels for p in parts)
    valid = sum(p.valid_pixels for p in parts)
    changed_area = float(sum(p.changed_area for p in parts))
    confidence = (
        sum(p.confidence * p.changed_pixels for p in parts) / changed if changed else 0.0
    )
    seen = [p for p in parts if p.valid_pixels]
    return SiteMeasure(
        pixels=sum(p.pixels for p in parts),
        valid_pixels=valid,
        changed_pixels=changed,
        changed_area=changed_area,
        confidence=float(confidence),
        mean_probability=(
            float(sum(p.mean_probability * p.valid_pixels for p in seen) / valid)
            if valid else float("nan")
        ),
        max_probability=max((p.max_probability for p in seen), default=float("nan")),
        score=site_score(confidence, changed_area, area_scale),
    )
