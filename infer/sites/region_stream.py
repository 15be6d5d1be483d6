"""Connected change regions of a mask found band of rows by band of rows, in bounded memory.

:class:`StreamingRegionLabeler` takes a change mask as consecutive bands of full-width rows
(with the probabilities and the pixel areas of those rows), labels each band (8-connectivity)
and joins labels across band edges (a union-find over the last row of one band and the first row
of the next, done as connected components of a small graph). What it keeps between bands is
only the *open* regions, those with pixels in the last row seen: their running counts, sums,
bounding box and traced outline pieces. A region is finished when a band does not continue it;
it is then kept (and returned) when it reaches the minimum size, else forgotten.

The regions are those :func:`scipy.ndimage.label` finds on the whole mask with an all-ones 3x3
structure, numbered the same way: in raster order of their first pixel (a band's labels are in
raster order, and bands come in row order, so ``(band, first label)`` sorts as the whole mask's
labels do). The outline of a region is the union of its 4-connected pieces traced band by band
(in pixel coordinates, where band edges are exact integers), with the vertices the band edges
leave on straight sides removed: the same polygon as tracing the whole region at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class RegionPixels:
    """The running measure of one connected region of changed pixels.

    Attributes:
        key: ``(band index, label in that band)`` of its first pixel: sorts in raster order.
        pixels: Changed pixels of the region.
        area: Ground area of those pixels (sum of their rows' pixel areas).
        valid_pixels: Of those, pixels with a finite probability.
        valid_area: Ground area of the valid pixels.
        probability_sum: Sum of the probabilities of the valid pixels (float64).
        probability_max: Highest probability of a valid pixel (``-inf`` when none).
        row0, row1, col0, col1: Bounding box on the grid (``row1``, ``col1`` exclusive).
        parts: Outline pieces, polygons in pixel coordinates ``(col, row)`` of the grid.
    """

    key: tuple[int, int]
    pixels: int = 0
    area: float = 0.0
    valid_pixels: int = 0
    valid_area: float = 0.0
    probability_sum: float = 0.0
    probability_max: float = -np.inf
    row0: int = 2**62
    row1: int = -1
    col0: int = 2**62
    col1: int = -1
    parts: list[BaseGeometry] = field(default_factory=list)

    def absorb(self, other: RegionPixels) -> None:
        """Add another piece of the same region (met through a band edge)."""
        self.key = min(self.key, other.key)
        self.pixels += other.pixels
        self.area += other.area
        self.valid_pixels += other.valid_pixels
        self.valid_area += other.valid_area
        self.probability_sum += other.probability_sum
        self.probability_max = max(self.probability_max, other.probability_max)
        self.row0, self.row1 = min(self.row0, other.row0), max(self.row1, other.row1)
        self.col0, self.col1 = min(self.col0, other.col0), max(self.col1, other.col1)
        self.parts.extend(other.parts)

    def pixel_geometry(self) -> BaseGeometry:
        """The region's outline in grid pixel coordinates, a valid (multi)polygon."""
        if len(self.parts) == 1:
            return self.parts[0]
        merged = shapely.unary_union(self.parts)
        # band edges leave vertices on straight sides: drop exactly collinear ones
        return shapely.simplify(merged, 0.0)


@dataclass
class _BandStats:
    """Per-label sums of one band (index 0 unused: the background)."""

    pixels: np.ndarray
    area: np.ndarray
    valid_pixels: np.ndarray
    valid_area: np.ndarray
    probability_sum: np.ndarray
    probability_max: np.ndarray


class StreamingRegionLabeler:
    """Labels a change mask band by band; returns each region once it is finished.

    Args:
        width: Width of the grid (every band has it).
        min_pixels: Regions with fewer pixels are dropped.
        min_area: Regions whose area (sum of their pixels' areas) is smaller are dropped.
    """

    def __init__(self, width: int, min_pixels: int = 1, min_area: float = 0.0) -> None:
        self.width = width
        self.min_pixels = max(1, int(min_pixels))
        self.min_area = float(min_area)
        self._open: list[RegionPixels] = []
        self._last_row = np.zeros(width, dtype=np.int64)  # 1 + index into _open, 0 = none
        self._next_row = 0
        self._band = 0

    def add_band(
        self,
        row0: int,
        changed: np.ndarray,
        probability: np.ndarray | None,
        row_areas: np.ndarray,
    ) -> list[RegionPixels]:
        """Add the next band of rows; returns the kept regions that it finished.

        Args:
            row0: Grid row of the band's first row (bands must follow each other).
            changed: Bool ``(rows, width)``, True where the mask says change.
            probability: Float ``(rows, width)``, NaN where invalid; None when every changed
                pixel is to count as valid with probability 0 (no probability raster).
            row_areas: Pixel area of each row of the band, ``(rows,)`` or ``(rows, 1)``.
        """
        if row0 != self._next_row:
            raise ValueError(f"band at row {row0}: expected the band at row {self._next_row}")
        if changed.ndim != 2 or changed.shape[1] != self.width:
            raise ValueError(f"expected a band of width {self.width}, got shape {changed.shape}")
        self._next_row = row0 + changed.shape[0]
        band = self._band
        self._band += 1
        labels, count = ndimage.label(changed, structure=EIGHT_CONNECTED)
        stats = self._stats(labels, count, probability, np.asarray(row_areas, float).ravel())
        objects = ndimage.find_objects(labels)

        # components of the graph {open regions} + {this band's labels}, joined at the edge
        m = len(self._open)
        first = labels[0].astype(np.int64)
        rows, cols = [], []
        for shift in (-1, 0, 1):  # open pixel at column c meets band pixel at column c + shift
            above = self._last_row[max(0, -shift): self.width - max(0, shift)]
            below = first[max(0, shift): self.width - max(0, -shift)]
            hit = (above > 0) & (below > 0)
            rows.append(above[hit] - 1)
            cols.append(m + below[hit] - 1)
        edges_from, edges_to = np.concatenate(rows), np.concatenate(cols)
        nodes = m + count
        if nodes == 0:
            return []
        graph = coo_matrix(
            (np.ones(edges_from.size, dtype=np.int8), (edges_from, edges_to)), shape=(nodes, nodes)
        )
        _, component = connected_components(graph, directed=False)
        comp_of_open, comp_of_label = component[:m], component[m:]
        n_comp = int(component.max()) + 1

        # per-component sums of this band's labels
        def total(values: np.ndarray) -> np.ndarray:
            return np.bincount(comp_of_label, weights=values[1:], minlength=n_comp)

        pixels = total(stats.pixels).round().astype(np.int64)
        area = total(stats.area)
        for i, region in enumerate(self._open):
            pixels[comp_of_open[i]] += region.pixels
            area[comp_of_open[i]] += region.area
        continues = np.zeros(n_comp, dtype=bool)
        last = np.unique(labels[-1])
        continues[comp_of_label[last[last > 0] - 1]] = True
        kept = ~continues & (pixels >= self.min_pixels) & (area >= self.min_area)
        wanted = continues | kept  # the components whose pixels are still of use

        regions: dict[int, RegionPixels] = {}
        for label in np.flatnonzero(wanted[comp_of_label]) + 1:
            c = int(comp_of_label[label - 1])
            rows_slice, cols_slice = objects[label - 1]
            piece = RegionPixels(
                key=(band, int(label)),
                pixels=int(stats.pixels[label]),
                area=float(stats.area[label]),
                valid_pixels=int(stats.valid_pixels[label]),
                valid_area=float(stats.valid_area[label]),
                probability_sum=float(stats.probability_sum[label]),
                probability_max=float(stats.probability_max[label]),
                row0=row0 + rows_slice.start,
                row1=row0 + rows_slice.stop,
                col0=cols_slice.start,
                col1=cols_slice.stop,
            )
            if c in regions:
                regions[c].absorb(piece)
            else:
                regions[c] = piece
        for i, region in enumerate(self._open):
            c = int(comp_of_open[i])
            if not wanted[c]:
                continue
            if c in regions:
                region.absorb(regions[c])
            regions[c] = region
        self._trace(labels, row0, comp_of_label, wanted, regions)

        finished = [regions[c] for c in np.flatnonzero(kept)]
        self._open = [regions[c] for c in np.flatnonzero(continues)]
        open_index = np.zeros(n_comp + 1, dtype=np.int64)
        open_index[np.flatnonzero(continues)] = np.arange(1, len(self._open) + 1)
        self._last_row = np.concatenate([[0], open_index[comp_of_label]])[labels[-1]]
        return finished

    def close(self) -> list[RegionPixels]:
        """Finish every open region (the mask has no more rows); returns the kept ones."""
        finished = [
            r for r in self._open if r.pixels >= self.min_pixels and r.area >= self.min_area
        ]
        self._open = []
        self._last_row = np.zeros(self.width, dtype=np.int64)
        return finished

    @staticmethod
    def _stats(
        labels: np.ndarray, count: int, probability: np.ndarray | None, row_areas: np.ndarray
    ) -> _BandStats:
        """Per-label sums over the band's changed pixels only."""
        flat = np.flatnonzero(labels)
        label = labels.ravel()[flat]
        pixel_area = row_areas[flat // labels.shape[1]]
        if probability is None:
            values = np.zeros(flat.size, dtype=np.float32)
        else:
            values = np.asarray(probability, dtype=np.float32).ravel()[flat]
        valid = np.isfinite(values)
        size = count + 1
        maximum = np.full(size, -np.inf)
        np.maximum.at(maximum, label[valid], values[valid])
        return _BandStats(
            pixels=np.bincount(label, minlength=size).astype(np.float64),
            area=np.bincount(label, weights=pixel_area, minlength=size),
            valid_pixels=np.bincount(label[valid], minlength=size),
            valid_area=np.bincount(label[valid], weights=pixel_area[valid], minlength=size),
            probability_sum=np.bincount(
                label[valid], weights=values[valid].astype(np.float64), minlength=size
            ),
            probability_max=maximum,
        )

    @staticmethod
    def _trace(
        labels: np.ndarray,
        row0: int,
        comp_of_label: np.ndarray,
        wanted: np.ndarray,
        regions: dict[int, RegionPixels],
    ) -> None:
        """Trace the 4-connected pieces of the wanted labels into their regions' parts."""
        if not regions:
            return
        trace = np.concatenate([[False], wanted[comp_of_label]])[labels]
        transform = Affine.translation(0, row0)
        for geometry, value in shapes(labels, mask=trace, connectivity=4, transform=transform):
            regions[int(comp_of_label[int(value) - 1])].parts.append(shape(geometry))
