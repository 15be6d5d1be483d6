"""Stable ids of discovered sites across nights: the same ground keeps its id.

A discovered change region is named ``<pair_id>-cNNNN`` by the pair that found it, in raster
order; a nightly pair id holds both dates, so the next acquisition would rename every region.
The nightly state therefore keeps every discovered site's latest outline, and a new region takes
the id of the earlier site whose outline overlaps it with an intersection over union of at least
``site_match_iou`` (default 0.3: a site that grows to three times its area stays the same site; a
large new region around a small dismissed one does not inherit its dismissal). Each earlier site
goes to at most one region of a pair, best overlap first; a region matching none gets a new id,
``d-NNNNNN``. Outlines are compared in longitude/latitude (any pair of the same ground), or, on
grids without a CRS, in pixels of the same pair id only.
"""

from __future__ import annotations

from collections.abc import Sequence

from shapely.geometry.base import BaseGeometry

DISCOVERED_ID_PREFIX = "d-"


def intersection_over_union(a: BaseGeometry, b: BaseGeometry) -> float:
    """Area of ``a & b`` over area of ``a | b``; 0 when the union has no area.

    The one measure of "the same ground" in the nightly batch: discovered sites across nights,
    and STAC footprints without a tile id (:class:`~.sources.GroundMatcher`).
    """
    union = a.union(b).area
    return a.intersection(b).area / union if union > 0 else 0.0


def match_regions(
    regions: Sequence[BaseGeometry],
    known: Sequence[tuple[str, BaseGeometry]],
    min_iou: float,
) -> dict[int, str]:
    """{region index: known site id} for regions that overlap a known site enough, one to one.

    A pair counts only with a positive overlap, even for ``min_iou`` 0.
    """
    candidates: list[tuple[float, int, str]] = []
    for index, region in enumerate(regions):
        for site_id, outline in known:
            if not region.intersects(outline):
                continue
            iou = intersection_over_union(region, outline)
            if iou > 0 and iou >= min_iou:  # a positive iou is a positive overlap
                candidates.append((iou, index, site_id))
    matched: dict[int, str] = {}
    taken: set[str] = set()
    for _, index, site_id in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if index not in matched and site_id not in taken:
            matched[index] = site_id
            taken.add(site_id)
    return matched


def discovered_id(number: int) -> str:
    """The id of the ``number``-th discovered site of a state (``d-000001``...)."""
    return f"{DISCOVERED_ID_PREFIX}{number:06d}"
