"""Streaming discovery of change regions equals labelling the whole mask at once.

The reference is what ``discover_change_regions`` did before it streamed: the whole mask read,
``scipy.ndimage.label`` (8-connectivity) over it, each region traced and measured on its own
bounding box. Masks are real (OSCD change labels, a prediction of the default model on a real
OSCD pair) and generated edge cases around band edges.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from scipy import ndimage

from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import dataset_grid, open_scene
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.infer.prediction.raster_io import read_probability
from groundbreak.infer.sites.region_stream import StreamingRegionLabeler
from groundbreak.infer.sites.scoring import measure_site
from groundbreak.infer.sites.sites import (
    MIN_AREA_TOLERANCE,
    ChangeRegion,
    discover_change_regions,
    region_polygon,
)
from groundbreak.train.bundle import default_bundle_path, load_bundle

UTM = CRS.from_epsg(32636)
UTM_TRANSFORM = Affine(10.0, 0, 500_000, 0, -10.0, 3_700_000)


def whole_mask_regions(
    mask_path: Path, probability_path: Path, prefix: str, threshold: float, min_area_m2: float
) -> list[ChangeRegion]:
    """The regions as found by labelling the whole mask at once (the former implementation)."""
    with rasterio.open(mask_path) as src:
        grid = dataset_grid(src)
        changed = src.read(1, masked=True).filled(0) == 1
    row_areas = grid.row_pixel_areas_m2()
    floor_m2 = min_area_m2 * (1 - MIN_AREA_TOLERANCE)
    min_pixels = max(1, math.ceil(floor_m2 / row_areas.max() - 1e-9)) if min_area_m2 > 0 else 1
    labels, count = ndimage.label(changed, structure=np.ones((3, 3), bool))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    regions: list[ChangeRegion] = []
    with rasterio.open(probability_path) as prob_src:
        for number, slices in enumerate(ndimage.find_objects(labels), start=1):
            if slices is None or sizes[number] < min_pixels:
                continue
            rows, cols = slices
            window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
            own = labels[slices] == number
            areas = row_areas[rows]
            if float((own * areas).sum()) < floor_m2:
                continue
            probability = read_probability(prob_src, window)
            measure = measure_site(probability, threshold, areas, inside=own, changed=own)
            geometry = region_polygon(own, grid.window_transform(window))
            regions.append(
                ChangeRegion(f"{prefix}-c{len(regions) + 1:04d}", geometry, window, measure)
            )
    return regions


def assert_same_regions(streamed: list[ChangeRegion], reference: list[ChangeRegion]) -> None:
    """Same ids in the same order, windows, counts, scores (to float rounding) and outlines."""
    assert [r.region_id for r in streamed] == [r.region_id for r in reference]
    for mine, theirs in zip(streamed, reference, strict=True):
        assert mine.window == theirs.window, mine.region_id
        a, b = mine.measure, theirs.measure
        assert (a.pixels, a.valid_pixels, a.changed_pixels) == (
            b.pixels, b.valid_pixels, b.changed_pixels
        )
        for name in ("changed_area", "confidence", "mean_probability", "max_probability", "score"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-6, nan_ok=True), name
        assert mine.geometry.is_valid and mine.geometry.geom_type == theirs.geometry.geom_type
        assert mine.geometry.bounds == pytest.approx(theirs.geometry.bounds, rel=1e-12)
        assert mine.geometry.area == pytest.approx(theirs.geometry.area, rel=1e-9)
        difference = mine.geometry.symmetric_difference(theirs.geometry).area
        assert difference <= 1e-9 * theirs.geometry.area
        # the same vertices: no band-edge points left on straight sides
        assert shapely.get_num_coordinates(mine.geometry) == shapely.get_num_coordinates(
            theirs.geometry
        )


def write_rasters(
    folder: Path,
    mask: np.ndarray,
    probability: np.ndarray | None = None,
    crs: CRS | None = UTM,
    transform: Affine = UTM_TRANSFORM,
    block: int = 16,
) -> tuple[Path, Path]:
    """A tiled uint8 mask (nodata 255) and float32 probability raster (NaN nodata)."""
    folder.mkdir(parents=True, exist_ok=True)
    if probability is None:
        rng = np.random.default_rng(mask.size)
        low, high = rng.uniform(0.0, 0.5, mask.shape), rng.uniform(0.5, 1.0, mask.shape)
        probability = np.where(mask == 1, high, low).astype(np.float32)
        probability[mask == 255] = np.nan
    profile = {
        "driver": "GTiff", "height": mask.shape[0], "width": mask.shape[1], "count": 1,
        "crs": crs, "transform": transform, "tiled": True, "blockxsize": block,
        "blockysize": block,
    }
    mask_path, prob_path = folder / "mask.tif", folder / "probability.tif"
    with rasterio.open(mask_path, "w", dtype="uint8", nodata=255, **profile) as dst:
        dst.write(mask.astype(np.uint8), 1)
    with rasterio.open(prob_path, "w", dtype="float32", nodata=float("nan"), **profile) as dst:
        dst.write(probability.astype(np.float32), 1)
    return mask_path, prob_path


def check_equal(
    mask_path: Path, prob_path: Path, band_rows: list[int | None], min_area_m2: float = 0.0
) -> list[ChangeRegion]:
    reference = whole_mask_regions(mask_path, prob_path, "p", 0.5, min_area_m2)
    for rows in band_rows:
        streamed = discover_change_regions(
            mask_path, prob_path, "p", 0.5, min_area_m2=min_area_m2, band_rows=rows
        )
        assert_same_regions(streamed, reference)
    return reference


# ---------------------------------------------------------------------------------------------
# Real masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("city", ["beirut", "mumbai", "hongkong", "abudhabi"])
def test_real_oscd_change_labels(shared_data: Path, tmp_path: Path, city: str) -> None:
    """OSCD's change labels (1 = no change, 2 = change) as masks, on a UTM grid."""
    label = shared_data / "oscd" / "train-labels" / city / "cm" / f"{city}-cm.tif"
    with rasterio.open(label) as src:
        mask = (src.read(1) == 2).astype(np.uint8)
    mask_path, prob_path = write_rasters(tmp_path, mask)
    reference = check_equal(mask_path, prob_path, [None, 7, 64], min_area_m2=300.0)
    assert len(reference) > 5


@pytest.fixture(scope="module")
def predicted_fixtures(
    fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """probability.tif and mask.tif of the default model on the real OSCD fixture pairs."""
    bundle = load_bundle(default_bundle_path())
    predictor = TiledPredictor(bundle, device="cpu", cloud_mask="none")
    outs = []
    for city in ("beirut", "abudhabi"):
        folder = fixtures_dir / "oscd" / city
        pair = TilePair(city, open_scene(folder / "imgs_1"), open_scene(folder / "imgs_2"))
        outs.append(tmp_path_factory.mktemp(city))
        predictor.predict_pair(pair, outs[-1])
    return outs


@pytest.mark.parametrize("threshold", [None, 0.3, 0.15])
def test_real_predictions_of_the_default_model(
    predicted_fixtures: list[Path], tmp_path: Path, threshold: float | None
) -> None:
    """Real predictions (EPSG:4326: pixel areas differ by row): the written mask, and masks
    cut from the real probabilities at lower thresholds (more and larger regions)."""
    found = 0
    for out in predicted_fixtures:
        mask_path, prob_path = out / "mask.tif", out / "probability.tif"
        if threshold is not None:
            with rasterio.open(prob_path) as src:
                probability, profile = src.read(1), src.profile
            mask = np.where(np.isfinite(probability), probability >= threshold, 255)
            mask_path = tmp_path / f"{out.name}-mask.tif"
            profile.update(dtype="uint8", nodata=255)
            with rasterio.open(mask_path, "w", **profile) as dst:
                dst.write(mask.astype(np.uint8), 1)
        for min_area in (0.0, 300.0):
            found += len(check_equal(mask_path, prob_path, [None, 1, 5, 32], min_area))
    assert found > 0


# ---------------------------------------------------------------------------------------------
# Generated edge cases
# ---------------------------------------------------------------------------------------------


def test_region_crossing_band_edges(tmp_path: Path) -> None:
    mask = np.zeros((40, 30), np.uint8)
    mask[5:35, 10:14] = 1  # a bar across several bands
    mask[14:18, 2:28] = 1  # a cross bar exactly at a band edge (16)
    check_equal(*write_rasters(tmp_path, mask), [None, 1, 4, 16, 17, 40])


def test_u_shape_joined_only_below_a_band_edge(tmp_path: Path) -> None:
    """Two arms apart in the first band, one region once the band below joins them."""
    mask = np.zeros((32, 24), np.uint8)
    mask[0:20, 3:6] = 1
    mask[0:20, 16:19] = 1
    mask[20:22, 3:19] = 1  # the bottom of the U, below the edge at row 16
    # an inverted U too: one region at the top that splits into two arms further down
    mask[24:26, 3:19] = 1
    mask[26:32, 3:5] = 1
    mask[26:32, 17:19] = 1
    reference = check_equal(*write_rasters(tmp_path, mask), [None, 1, 8, 16, 21, 24])
    assert len(reference) == 2


def test_diagonal_only_contacts_at_the_band_edge(tmp_path: Path) -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[15, 4] = mask[16, 5] = 1  # down-right across the edge at 16
    mask[15, 10] = mask[16, 9] = 1  # down-left
    mask[13:16, 20:23] = 1
    mask[16:19, 23:26] = 1  # two blocks touching at one corner on the edge
    mask[15, 29] = mask[16, 31] = 1  # two columns apart: separate regions
    reference = check_equal(*write_rasters(tmp_path, mask), [None, 1, 16])
    assert len(reference) == 5
    assert reference[2].geometry.geom_type == "MultiPolygon"  # joined at a corner only


def test_region_touching_every_band(tmp_path: Path) -> None:
    """A snake down the whole raster, with holes and side branches, plus noise around it."""
    rng = np.random.default_rng(3)
    mask = (rng.random((64, 48)) < 0.08).astype(np.uint8)
    for row in range(0, 64, 8):
        mask[row:row + 2, 2:46] = 1
        side = slice(44, 46) if row % 16 == 0 else slice(2, 4)
        mask[row:row + 8, side] = 1
    mask[20:30, 20:30] = 1
    mask[23:26, 23:26] = 0  # a hole
    reference = check_equal(*write_rasters(tmp_path, mask), [None, 1, 3, 16, 64], 0.0)
    window = reference[0].window
    assert (window.row_off, window.height) == (0, 64)


def test_nodata_pixels_are_not_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    mask = (rng.random((48, 40)) < 0.35).astype(np.uint8)
    mask[rng.random(mask.shape) < 0.15] = 255
    mask[:, 20] = 255  # a nodata column cutting regions apart
    check_equal(*write_rasters(tmp_path, mask), [None, 1, 7, 16], 0.0)


def test_random_masks_and_min_area(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    for density in (0.2, 0.45, 0.6):
        mask = (rng.random((50, 45)) < density).astype(np.uint8)
        paths = write_rasters(tmp_path / f"d{density}", mask)
        for min_area in (0.0, 300.0):
            check_equal(*paths, [None, 1, 5], min_area)


def test_geographic_grid_and_plain_image(tmp_path: Path) -> None:
    """Pixel areas that differ by row (EPSG:4326), and pixels as the unit without a CRS."""
    rng = np.random.default_rng(7)
    mask = (rng.random((40, 40)) < 0.4).astype(np.uint8)
    geographic = Affine(0.001, 0, 35.5, 0, -0.001, 60.0)
    check_equal(*write_rasters(tmp_path / "geo", mask, crs=CRS.from_epsg(4326),
                               transform=geographic), [None, 1, 16], 300.0)
    check_equal(*write_rasters(tmp_path / "plain", mask, crs=None, transform=Affine.identity()),
                [None, 1, 16], 3.0)


def test_empty_and_full_masks(tmp_path: Path) -> None:
    empty = np.zeros((20, 20), np.uint8)
    assert check_equal(*write_rasters(tmp_path / "empty", empty), [None, 1]) == []
    nodata = np.full((20, 20), 255, np.uint8)
    assert check_equal(*write_rasters(tmp_path / "nodata", nodata), [None, 1]) == []
    full = np.ones((20, 20), np.uint8)
    assert len(check_equal(*write_rasters(tmp_path / "full", full), [None, 1, 3])) == 1


def test_labeler_refuses_bands_out_of_order() -> None:
    labeler = StreamingRegionLabeler(8)
    labeler.add_band(0, np.zeros((4, 8), bool), None, np.ones(4))
    with pytest.raises(ValueError, match="expected the band at row 4"):
        labeler.add_band(8, np.zeros((4, 8), bool), None, np.ones(4))
