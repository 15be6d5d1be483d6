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

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from shapely import wkt
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


def stable_discovered_ids(
    db: sqlite3.Connection,
    run_id: str,
    pair_id: str,
    sites: Sequence[Mapping[str, Any]],
    changes: Sequence[Mapping[str, Any]],
    min_iou: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Give a pair's discovered sites (and their change regions) their stable ids."""
    sites = [dict(s) for s in sites]
    found = [
        (i, *_outline(s, pair_id)) for i, s in enumerate(sites) if s.get("kind") == "discovered"
    ]
    found = [(i, space, outline) for i, space, outline in found if outline is not None]
    renamed: dict[str, str] = {}
    for space in sorted({space for _, space, _ in found}):
        regions = [(i, outline) for i, s, outline in found if s == space]
        minx = min(o.bounds[0] for _, o in regions)
        miny = min(o.bounds[1] for _, o in regions)
        maxx = max(o.bounds[2] for _, o in regions)
        maxy = max(o.bounds[3] for _, o in regions)
        known = db.execute(
            "SELECT site_id, outline FROM discovered_sites WHERE space = ? AND maxx >= ? AND "
            "minx <= ? AND maxy >= ? AND miny <= ?",
            (space, minx, maxx, miny, maxy),
        ).fetchall()
        matched = match_regions(
            [outline for _, outline in regions],
            [(k["site_id"], wkt.loads(k["outline"])) for k in known], min_iou,
        )
        for position, (i, outline) in enumerate(regions):
            site_id = matched.get(position)
            bounds = (*outline.bounds, run_id)
            if site_id is None:
                number = db.execute(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM discovered_sites"
                ).fetchone()[0]
                site_id = discovered_id(int(number))
                db.execute(
                    "INSERT INTO discovered_sites (number, site_id, space, outline, minx, miny, "
                    "maxx, maxy, first_pair_id, first_run_id, last_run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (number, site_id, space, outline.wkt, *outline.bounds, pair_id, run_id,
                     run_id),
                )
            else:  # follow the site as it grows: the latest outline is matched next time
                db.execute(
                    "UPDATE discovered_sites SET outline = ?, minx = ?, miny = ?, maxx = ?, "
                    "maxy = ?, last_run_id = ? WHERE site_id = ?",
                    (outline.wkt, *bounds, site_id),
                )
            first = db.execute(
                "SELECT first_pair_id FROM discovered_sites WHERE site_id = ?", (site_id,)
            ).fetchone()[0]
            renamed[str(sites[i]["site_id"])] = site_id
            sites[i]["site_id"] = site_id
            sites[i]["name"] = f"Discovered site {site_id} (first seen in {first})"
    changes = [
        {**c, "region_id": renamed.get(str(c.get("region_id")), c.get("region_id"))}
        for c in changes
    ]
    return sites, changes


def _outline(site: Mapping[str, Any], pair_id: str) -> tuple[str, Any]:
    """(matching space, outline) of a site row: lon/lat when georeferenced, else pair pixels."""
    geometry = site.get("geometry")
    if isinstance(geometry, BaseGeometry) and not geometry.is_empty:
        return "EPSG:4326", geometry
    grid_geometry = site.get("grid_geometry")
    if isinstance(grid_geometry, BaseGeometry) and not grid_geometry.is_empty:
        return f"px:{pair_id}", grid_geometry
    return "", None
