"""How well does the site score rank real construction? Model vs a change-vector baseline.

On the OSCD validation cities (cupertino, hongkong, nantes) each city's grid is cut into square
cells (default 32 x 32 px = 320 m); every cell is scored as a site with the same score function
as ``groundbreak rank`` (:func:`groundbreak.infer.sites.scoring.measure_site`), from

- the model's probability map (``--model BUNDLE``, default the shipped default bundle), and
- a change-vector-analysis (CVA) baseline: the per-pixel L2 norm of the band differences, each
  standardised by its own std over the city, divided by its 99th percentile and clipped to
  [0, 1]; its changed pixels are those >= 0.5 (half the 99th-percentile magnitude).

A cell counts as construction when its labelled changed pixels are at least
``--positive-fraction`` (default 5 %) of its labelled pixels; cells with less than half their
pixels labelled are left out. Printed: average precision (AP, the area under the precision-recall
curve, ties handled as one threshold) and precision at 10 and 50, per city and pooled, with the
share of construction cells (the AP of a random ranking).

    python bench/ranking_quality.py [--data ../shared/data] [--model BUNDLE] [--cell 32]

Exits 0 with a message when the OSCD data are not there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from groundbreak.datasets.layouts import OSCD_VAL_CITIES, oscd_pairs
from groundbreak.datasets.pair import TilePair
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.infer.sites.scoring import DEFAULT_AREA_SCALE_M2, measure_site
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data"
CVA_THRESHOLD = 0.5


@dataclass
class CellTable:
    """Scored cells of one city: one score per method, and the construction label."""

    scores: dict[str, np.ndarray]
    positive: np.ndarray


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise; tied scores form one threshold)."""
    if positive.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    last_of_tie = np.r_[np.diff(scores) != 0, True]
    true_pos = np.cumsum(positive)[last_of_tie]
    seen = np.arange(1, len(scores) + 1)[last_of_tie]
    precision = true_pos / seen
    recall = true_pos / positive.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """Share of construction cells among the k best-scored (ties in cell order)."""
    order = np.argsort(-scores, kind="mergesort")[:k]
    return float(positive[order].mean()) if len(order) else float("nan")


def cva_probability(pair: TilePair, bands: Sequence[str]) -> np.ndarray:
    """Change-vector magnitude of standardised band differences, scaled to [0, 1]."""
    before, after = pair.read(bands)
    difference = after - before
    std = np.nanstd(difference, axis=(1, 2))
    std[~(std > 0)] = 1.0
    magnitude = np.sqrt(np.sum((difference / std[:, None, None]) ** 2, axis=0))
    scale = np.nanpercentile(magnitude, 99)
    return np.clip(magnitude / (scale if scale > 0 else 1.0), 0.0, 1.0).astype(np.float32)


def model_probability(pair: TilePair, predictor: TiledPredictor, workdir: Path) -> np.ndarray:
    """The model's probability map of a pair (via the tiled predictor)."""
    result = predictor.predict_pair(pair, workdir / pair.pair_id)
    with rasterio.open(result.probability_path) as src:
        return src.read(1, masked=True).astype(np.float32).filled(np.nan)


def score_cells(
    maps: dict[str, tuple[np.ndarray, float]],
    label: np.ndarray,
    pixel_area: float,
    cell: int,
    positive_fraction: float,
    area_scale: float,
) -> CellTable:
    """Score every labelled cell of a grid with each probability map (map, threshold)."""
    scores: dict[str, list[float]] = {name: [] for name in maps}
    positive = []
    height, width = label.shape
    for row in range(0, height - cell + 1, cell):
        for col in range(0, width - cell + 1, cell):
            window = (slice(row, row + cell), slice(col, col + cell))
            labelled = label[window] != 255
            if labelled.mean() < 0.5:
                continue
            positive.append((label[window] == 1).sum() >= positive_fraction * labelled.sum())
            for name, (probability, threshold) in maps.items():
                measure = measure_site(
                    probability[window], threshold, pixel_area, area_scale=area_scale
                )
                scores[name].append(measure.score)
    return CellTable(
        {name: np.asarray(values) for name, values in scores.items()}, np.asarray(positive)
    )


def pixel_counts(probability: np.ndarray, threshold: float, label: np.ndarray) -> np.ndarray:
    """TP, FP, FN of the change class over labelled pixels (each pixel counted once)."""
    labelled = (label != 255) & np.isfinite(probability)
    predicted = np.nan_to_num(probability) >= threshold
    truth = label == 1
    return np.array([
        (predicted & truth & labelled).sum(),
        (predicted & ~truth & labelled).sum(),
        (~predicted & truth & labelled).sum(),
    ], dtype=np.int64)


def print_pixel_scores(name: str, counts: dict[str, np.ndarray]) -> None:
    """Pixel precision, recall, F1 and IoU of each method (0 where undefined)."""
    for method, (tp, fp, fn) in counts.items():
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
        print(f"    {method:<6} pixels: precision {precision:.3f}  recall {recall:.3f}  "
              f"F1 {f1:.3f}  IoU {iou:.3f}   ({name})")


def print_row(name: str, table: CellTable) -> None:
    base = table.positive.mean() if len(table.positive) else float("nan")
    print(f"{name:<11} cells {len(table.positive):>5}  construction {base:6.1%}")
    for method, scores in table.scores.items():
        ap = average_precision(scores, table.positive)
        p10 = precision_at(scores, table.positive, 10)
        p50 = precision_at(scores, table.positive, 50)
        print(f"    {method:<6} AP {ap:.3f}   P@10 {p10:.2f}   P@50 {p50:.2f}")


def run(args: argparse.Namespace, bundle: ModelBundle) -> int:
    """Score the validation cities with a bundle and the CVA baseline; print the figures."""
    predictor = TiledPredictor(bundle, device=args.device)
    print(f"model {bundle.name!r} (threshold {bundle.threshold:g}); cells {args.cell} px; "
          f"construction cell: >= {args.positive_fraction:.0%} changed; CVA changed >= "
          f"{CVA_THRESHOLD} x p99 magnitude")
    specs = [s for s in oscd_pairs(args.data / "oscd") if s.pair_id in args.cities]
    tables = []
    pooled_pixels = {"model": np.zeros(3, np.int64), "CVA": np.zeros(3, np.int64)}
    with tempfile.TemporaryDirectory(prefix="ranking_quality_") as tmp:
        for spec in specs:
            started = time.perf_counter()
            pair = spec.open()
            label = pair.read_label()
            maps = {
                "model": (model_probability(pair, predictor, Path(tmp)), bundle.threshold),
                "CVA": (cva_probability(pair, pair.common_bands), CVA_THRESHOLD),
            }
            table = score_cells(maps, label, pair.grid.pixel_area_m2(), args.cell,
                                args.positive_fraction, args.area_scale)
            tables.append(table)
            print_row(spec.pair_id, table)
            city_pixels = {m: pixel_counts(p, t, label) for m, (p, t) in maps.items()}
            for method, counts in city_pixels.items():
                pooled_pixels[method] += counts
            print_pixel_scores(spec.pair_id, city_pixels)
            print(f"    ({pair.grid.width}x{pair.grid.height} px, "
                  f"{time.perf_counter() - started:.1f} s)")
    if not tables:
        print(f"none of the cities {', '.join(args.cities)} is in {args.data / 'oscd'}")
        return 0
    pooled = CellTable(
        {m: np.concatenate([t.scores[m] for t in tables]) for m in tables[0].scores},
        np.concatenate([t.positive for t in tables]),
    )
    print_row("pooled", pooled)
    print_pixel_scores("pooled over the cities' pixels", pooled_pixels)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--model", type=Path, help="model bundle (default: the shipped one)")
    parser.add_argument("--cities", nargs="+", default=list(OSCD_VAL_CITIES))
    parser.add_argument("--cell", type=int, default=32, help="cell side in pixels")
    parser.add_argument("--positive-fraction", type=float, default=0.05)
    parser.add_argument("--area-scale", type=float, default=DEFAULT_AREA_SCALE_M2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    args.data = args.data.resolve()
    if not (args.data / "oscd").is_dir():
        print(f"OSCD data not found at {args.data / 'oscd'}; nothing to measure.")
        return 0
    return run(args, load_bundle(args.model or default_bundle_path()))


if __name__ == "__main__":
    sys.exit(main())
