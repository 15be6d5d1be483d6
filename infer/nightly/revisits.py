"""Known discovered sites measured again on a newly scored pair, found or not.

Without a watch-list the sites are the change regions a pair discovers, so a pair that shows
no change at a site yields no row for it, and "not detected" could not be told from "not looked
at". Every discovered site the alert policy still follows (a candidate, an alert; see
:data:`~groundbreak.infer.nightly.alert_policy.TRACKED_STATUSES`) is therefore measured on each
new pair that covers it, on its latest outline, as a watch-list site is: an observed score
below the threshold is a clear non-detection, a site hidden by clouds is unobserved. Sites that
a region of the same pair matches keep that region's row instead
(:meth:`~groundbreak.infer.nightly.state.NightlyState.record_done`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rasterio.warp import transform_bounds
from shapely import wkt

from groundbreak.datasets.scene import dataset_grid, open_raster
from groundbreak.infer.prediction.raster_io import bounded_gdal_cache
from groundbreak.infer.sites.ranking import site_row
from groundbreak.infer.sites.sites import WGS84, measure_watch_site, to_crs

REVISIT_KIND = "revisit"
"""The ``kind`` of a site row measured on a known outline (watch-list rows are ``watch``,
discovered regions ``discovered``)."""


def footprint_lonlat(probability_path: str | Path) -> tuple[float, float, float, float] | None:
    """The bounds (lon/lat) of a pair's probability raster; None on a grid without a CRS."""
    with open_raster(probability_path) as src:
        if src.crs is None:
            return None
        return tuple(transform_bounds(src.crs, WGS84, *src.bounds))  # type: ignore[return-value]


def revisit_sites(
    probability_path: str | Path,
    tracked: Sequence[Mapping[str, Any]],
    pair_id: str,
    threshold: float,
    area_scale: float,
    dates: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Site rows (kind ``revisit``) of ``tracked`` sites (``site_id``, ``name``, ``outline``
    as lon/lat WKT) measured on a pair's probability raster; sites off its pixels are left out.
    """
    rows: list[dict[str, Any]] = []
    with bounded_gdal_cache(), open_raster(probability_path) as src:
        grid = dataset_grid(src)
        if grid.crs is None:
            return rows
        for site in tracked:
            outline = wkt.loads(site["outline"])
            geometry = to_crs(outline, WGS84, grid.crs)
            measured = measure_watch_site(src, geometry, threshold, area_scale)
            if measured is None:
                continue
            rows.append(site_row(str(site["site_id"]), site.get("name") or str(site["site_id"]),
                                 pair_id, REVISIT_KIND, measured[0], geometry, grid, dates,
                                 geometry_wgs84=outline))
    return rows
