"""Change labels: raster masks in several conventions and GeoJSON polygons, read on the pair grid.

:func:`open_label` opens a label for a tile pair; :meth:`Label.read` returns it on any window-grid
of the pair grid as ``uint8`` with 0 = no change, 1 = change, 255 = ignore.

**Raster conventions.** A raster label stores two classes with one of three value pairs:

============  =========  ======  ==========================================
convention    no change  change  also allowed (read as ignore)
============  =========  ======  ==========================================
``"0-1"``     0          1       255
``"0-255"``   0          255     —
``"1-2"``     1          2       0 (OSCD ``<city>-cm.tif``)
============  =========  ======  ==========================================

Colour labels are reduced to one value per pixel first: RGB(A) PNGs take the brightest channel,
palette PNGs the brightest channel of each pixel's palette colour; a transparent pixel
(alpha 0) is ignore. Then, unless the caller forces a convention, it is detected from the set of
values the whole label holds (minus ``ignore_value``):

1. ``{1}`` alone is ambiguous (all change in ``0-1``, no change in ``1-2``): an error that asks
   for the convention to be given;
2. a subset of ``{0, 1}`` is ``0-1``;
3. a subset of ``{0, 255}`` is ``0-255``;
4. a subset of ``{0, 1, 2}`` that holds 2 is ``1-2``;
5. a subset of ``{0, 1, 255}`` is ``0-1`` with 255 = ignore;
6. anything else is an error that lists the values found.

A declared nodata value of a label file is not used (label tools set it carelessly, often to 0);
give ``ignore_value`` instead. Pixels outside the label are ignore.

**Georeference.** A label raster with a CRS is reprojected onto the pair grid (nearest neighbour).
A label raster without georeference is taken to lie on the pair grid when its size matches it;
another size is an error.

**Vector labels.** A GeoJSON of polygons (``FeatureCollection``, ``Feature`` or a bare geometry) in
any CRS (a legacy ``crs`` member names it; EPSG:4326 otherwise, see
:mod:`groundbreak.datasets.geojson`) is reprojected onto the pair grid's
CRS and rasterised: inside a polygon is change, elsewhere no change.
"""

from __future__ import annotations

import json
import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import shapely
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.features import rasterize
from rasterio.warp import reproject, transform_bounds, transform_geom
from rasterio.windows import Window, from_bounds
from shapely.errors import ShapelyError
from shapely.geometry import box, mapping, shape

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.geojson import geojson_crs
from groundbreak.datasets.grid import Grid
from groundbreak.datasets.scenes.rasters import dataset_grid, open_raster
from groundbreak.datasets.scenes.reading import pixel_offset

NO_CHANGE: int = 0
CHANGE: int = 1
IGNORE: int = 255

ConventionName = Literal["0-1", "0-255", "1-2"]
VECTOR_SUFFIXES = (".geojson", ".json")
_TRANSPARENT = -1  # code of a transparent pixel (alpha 0) in a colour label
_SCAN_ROWS = 1024  # rows per strip when a label is scanned for its values


@dataclass(frozen=True)
class LabelConvention:
    """How a raster label stores its classes: the no-change value, the change value, ignores."""

    name: ConventionName
    no_change: int
    change: int
    ignore: tuple[int, ...] = ()

    @property
    def allowed(self) -> set[int]:
        """Every value this convention accepts."""
        return {self.no_change, self.change, *self.ignore}


CONVENTIONS: dict[str, LabelConvention] = {
    "0-1": LabelConvention("0-1", 0, 1, (255,)),
    "0-255": LabelConvention("0-255", 0, 255),
    "1-2": LabelConvention("1-2", 1, 2, (0,)),
}


def detect_convention(values: set[int], path: str | Path | None = None) -> LabelConvention:
    """The convention of a raster label from the set of values it holds (see the module doc)."""
    if values == {1}:
        raise InputError(
            path,
            "label holds only the value 1: it is all change in the 0/1 convention and all "
            "no change in the 1/2 convention; give the convention explicitly",
        )
    if values <= {0, 1}:
        return CONVENTIONS["0-1"]
    if values <= {0, 255}:
        return CONVENTIONS["0-255"]
    if values <= {0, 1, 2}:
        return CONVENTIONS["1-2"]
    if values <= {0, 1, 255}:
        return CONVENTIONS["0-1"]
    shown = ", ".join(str(v) for v in sorted(values)[:12])
    raise InputError(
        path,
        f"label values {{{shown}}} fit none of the conventions 0/1, 0/255 or 1/2 "
        "(give ignore_value for an extra 'not labelled' value)",
    )


class Label(ABC):
    """A change label that can be read on any window-grid of the pair grid."""

    path: Path

    @abstractmethod
    def read(self, grid: Grid) -> np.ndarray:
        """The label on ``grid`` as uint8 (H, W): 0 = no change, 1 = change, 255 = ignore."""


class RasterLabel(Label):
    """A raster mask (GeoTIFF, PNG...) in one of the :data:`CONVENTIONS`."""

    def __init__(
        self,
        path: str | Path,
        pair_grid: Grid,
        convention: ConventionName | None = None,
        ignore_value: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.ignore_value = ignore_value
        with open_raster(self.path) as src:
            self._colour_lut = _colour_lookup(src, self.path)
            self.grid = self._label_grid(dataset_grid(src), pair_grid)
            values = self._scan_values(src)
        if convention is None:
            self.convention = detect_convention(values, self.path)
        else:
            if convention not in CONVENTIONS:
                raise InputError(
                    self.path,
                    f"unknown label convention {convention!r}; use one of {', '.join(CONVENTIONS)}",
                )
            self.convention = CONVENTIONS[convention]
            unexpected = values - self.convention.allowed
            if unexpected:
                shown = ", ".join(str(v) for v in sorted(unexpected)[:12])
                raise InputError(
                    self.path,
                    f"label holds values {{{shown}}} that the {convention} convention does not use",
                )

    def __repr__(self) -> str:
        return f"RasterLabel({str(self.path)!r}, convention={self.convention.name!r})"

    def _label_grid(self, own: Grid, pair_grid: Grid) -> Grid:
        """The grid the label lies on: its own, or the pair grid when it has no georeference."""
        if own.georeferenced:
            if not pair_grid.georeferenced:
                raise InputError(
                    self.path, "label is georeferenced but the tile pair's images are not"
                )
            _check_label_overlap(self.path, own, pair_grid)
            return own
        if own.shape != pair_grid.shape:
            raise InputError(
                self.path,
                f"label has no georeference and its size {own.width}x{own.height} differs from "
                f"the pair grid {pair_grid.width}x{pair_grid.height}",
            )
        return pair_grid

    def _scan_values(self, src: rasterio.io.DatasetReader) -> set[int]:
        """Every value the label holds (strip by strip), without transparent or ignore_value."""
        values: set[int] = set()
        for row in range(0, src.height, _SCAN_ROWS):
            window = Window(0, row, src.width, min(_SCAN_ROWS, src.height - row))
            codes = self._codes(self._read_raw(src, window))
            if codes.dtype == np.uint8:
                present = np.flatnonzero(np.bincount(codes.ravel(), minlength=256))
            else:
                present = np.unique(codes)
            values.update(int(v) for v in present)
        values.discard(_TRANSPARENT)
        if self.ignore_value is not None:
            values.discard(int(self.ignore_value))
        return values

    def _read_raw(self, src: rasterio.io.DatasetReader, window: Window) -> np.ndarray:
        """Raw values of a window of the label file (all bands), InputError on a read failure."""
        try:
            return src.read(window=window)
        except RasterioError as err:
            detail = err.__cause__ or err
            raise InputError(
                self.path, f"cannot read the label: truncated or corrupt file? ({detail})"
            ) from err

    def _codes(self, raw: np.ndarray) -> np.ndarray:
        """One integer value per pixel: the band itself, or a colour label's brightness code."""
        if self._colour_lut is not None:
            return self._colour_lut[raw[0]]
        if raw.shape[0] >= 3:
            codes = raw[:3].max(axis=0).astype(np.int32)
            if raw.shape[0] >= 4:
                codes[raw[3] == 0] = _TRANSPARENT
            return _integral(codes, self.path)
        return _integral(raw[0], self.path)

    def _classes(self, codes: np.ndarray) -> np.ndarray:
        """Map value codes to 0 / 1 / 255."""
        out = np.full(codes.shape, IGNORE, dtype=np.uint8)
        out[codes == self.convention.no_change] = NO_CHANGE
        out[codes == self.convention.change] = CHANGE
        if self.ignore_value is not None:
            out[codes == self.ignore_value] = IGNORE
        return out

    def read(self, grid: Grid) -> np.ndarray:
        """The label on ``grid`` as uint8 (H, W): 0 = no change, 1 = change, 255 = ignore."""
        out = np.full(grid.shape, IGNORE, dtype=np.uint8)
        offset = pixel_offset(self.grid, grid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(self.path) as src:
                if offset is not None:
                    self._read_aligned(src, offset, out)
                else:
                    self._read_resampled(src, grid, out)
        return out

    def _read_aligned(
        self, src: rasterio.io.DatasetReader, offset: tuple[int, int], out: np.ndarray
    ) -> None:
        """Fill ``out`` from the label pixels it shares (the rest stays ignore)."""
        row, col = offset
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + out.shape[0], self.grid.height), min(col + out.shape[1], self.grid.width)
        if r1 <= r0 or c1 <= c0:
            return
        raw = self._read_raw(src, Window(c0, r0, c1 - c0, r1 - r0))
        out[r0 - row : r1 - row, c0 - col : c1 - col] = self._classes(self._codes(raw))

    def _read_resampled(self, src: rasterio.io.DatasetReader, grid: Grid, out: np.ndarray) -> None:
        """Fill ``out`` by nearest-neighbour reprojection of the label pixels around ``grid``."""
        if grid.crs is None or self.grid.crs is None:
            raise InputError(self.path, "cannot resample a label without georeference")
        bounds = transform_bounds(grid.crs, self.grid.crs, *grid.bounds, densify_pts=21)
        window = _covering_window(self.grid, bounds)
        if window is None:
            return
        classes = self._classes(self._codes(self._read_raw(src, window)))
        reproject(
            classes,
            out,
            src_transform=self.grid.window_transform(window),
            src_crs=self.grid.crs,
            src_nodata=IGNORE,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=IGNORE,
            resampling=Resampling.nearest,
        )


class VectorLabel(Label):
    """Change polygons from a GeoJSON file, rasterised onto the pair grid (inside = change)."""

    def __init__(self, path: str | Path, pair_grid: Grid) -> None:
        self.path = Path(path)
        if pair_grid.crs is None:
            raise InputError(
                self.path, "vector labels need georeferenced images; the pair has no CRS"
            )
        self.pair_grid = pair_grid
        document = _load_geojson(self.path)
        source_crs = geojson_crs(document, self.path)
        geometries = []
        for geometry in _polygons(document, self.path):
            try:
                geometries.append(shape(transform_geom(source_crs, pair_grid.crs, geometry)))
            except (TypeError, ValueError, KeyError, RasterioError, ShapelyError) as err:
                raise InputError(self.path, f"invalid polygon geometry ({err})") from err
        self.geometries = [g for g in geometries if not g.is_empty]
        self._tree = shapely.STRtree(self.geometries)

    def __repr__(self) -> str:
        return f"VectorLabel({str(self.path)!r}, polygons={len(self.geometries)})"

    def read(self, grid: Grid) -> np.ndarray:
        """The label on ``grid`` as uint8 (H, W): 0 = no change, 1 = change, 255 = ignore."""
        if grid.crs is None or grid.crs != self.pair_grid.crs:
            raise InputError(
                self.path, f"vector labels are read on the pair grid's CRS, not {grid.crs}"
            )
        hits = self._tree.query(box(*grid.bounds))
        if len(hits):
            out = rasterize(
                ((mapping(self.geometries[i]), CHANGE) for i in hits),
                out_shape=grid.shape,
                transform=grid.transform,
                fill=NO_CHANGE,
                dtype=np.uint8,
            )
        else:
            out = np.zeros(grid.shape, dtype=np.uint8)
        _mark_outside(out, self.pair_grid, grid)
        return out


def open_label(
    path: str | Path,
    grid: Grid,
    convention: ConventionName | None = None,
    ignore_value: int | None = None,
) -> Label:
    """Open a change label for a tile pair whose grid is ``grid``.

    Args:
        path: A raster mask (GeoTIFF, PNG, ...) or a GeoJSON of change polygons.
        grid: The pair grid (the before-scene's grid).
        convention: Force a raster convention (``"0-1"``, ``"0-255"``, ``"1-2"``); detected from
            the values present when None.
        ignore_value: A raster value that means "not labelled" (read as 255).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "label file does not exist")
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return VectorLabel(path, grid)
    return RasterLabel(path, grid, convention, ignore_value)


def _colour_lookup(src: rasterio.io.DatasetReader, path: Path) -> np.ndarray | None:
    """For a palette label, a table from palette index to brightness code; else None."""
    if src.count != 1 or src.colorinterp[0] != ColorInterp.palette:
        return None
    try:
        colormap = src.colormap(1)
    except ValueError as err:
        raise InputError(path, f"palette label without a readable colour map ({err})") from err
    size = max(256, max(colormap) + 1)
    lut = np.zeros(size, dtype=np.int32)
    for index, colour in colormap.items():
        red, green, blue, *alpha = colour
        lut[index] = _TRANSPARENT if alpha and alpha[0] == 0 else max(red, green, blue)
    return lut


def _integral(values: np.ndarray, path: Path) -> np.ndarray:
    """Label values as integers; float labels must hold whole numbers."""
    if np.issubdtype(values.dtype, np.integer):
        return values
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise InputError(path, "label holds values that are not whole numbers")
    return values.astype(np.int64)


def _covering_window(grid: Grid, bounds: tuple[float, float, float, float]) -> Window | None:
    """The whole-pixel window of ``grid`` (plus a one-pixel margin) covering ``bounds``, clipped."""
    window = from_bounds(*bounds, transform=grid.transform)
    col0 = max(0, math.floor(window.col_off) - 1)
    row0 = max(0, math.floor(window.row_off) - 1)
    col1 = min(grid.width, math.ceil(window.col_off + window.width) + 1)
    row1 = min(grid.height, math.ceil(window.row_off + window.height) + 1)
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _check_label_overlap(path: Path, label_grid: Grid, pair_grid: Grid) -> None:
    """Raise when a georeferenced label does not overlap the pair grid."""
    if not pair_grid.overlaps(label_grid):
        raise InputError(path, "label does not overlap the tile pair")


def _mark_outside(out: np.ndarray, pair_grid: Grid, grid: Grid) -> None:
    """Set the pixels of ``grid`` that fall outside the pair grid to ignore."""
    offset = pixel_offset(pair_grid, grid)
    if offset is None:
        return
    row, col = offset
    rows = np.arange(row, row + grid.height)
    cols = np.arange(col, col + grid.width)
    out[(rows < 0) | (rows >= pair_grid.height), :] = IGNORE
    out[:, (cols < 0) | (cols >= pair_grid.width)] = IGNORE


def _load_geojson(path: Path) -> dict:
    """Parse a GeoJSON file, InputError when it is not JSON."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot be read as GeoJSON ({err})") from err
    if not isinstance(document, dict):
        raise InputError(path, "cannot be read as GeoJSON (not a JSON object)")
    return document


def _polygons(document: dict, path: Path) -> list[dict]:
    """The polygon geometries of a GeoJSON document; other geometry types are an error."""
    kind = document.get("type")
    if kind == "FeatureCollection":
        features = document.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
            raise InputError(path, "GeoJSON features must be a list of Feature objects")
        geometries = [f.get("geometry") for f in features]
    elif kind == "Feature":
        geometries = [document.get("geometry")]
    elif kind in ("Polygon", "MultiPolygon", "GeometryCollection"):
        geometries = [document]
    else:
        raise InputError(
            path, f"not a GeoJSON FeatureCollection, Feature or polygon (type {kind!r})"
        )
    polygons: list[dict] = []
    for geometry in geometries:
        if geometry is None:
            continue
        if isinstance(geometry, dict) and geometry.get("type") == "GeometryCollection":
            parts = geometry.get("geometries", [])
        else:
            parts = [geometry]
        for part in parts if isinstance(parts, list) else [parts]:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind not in ("Polygon", "MultiPolygon"):
                raise InputError(path, f"vector labels must be polygons, found a {kind} geometry")
            polygons.append(part)
    return polygons
