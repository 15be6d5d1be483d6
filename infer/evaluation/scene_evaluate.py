"""Whole-scene evaluation: score a model bundle on labelled tile pairs, as ``predict`` runs it.

Every pair is predicted by the same :class:`~groundbreak.infer.prediction.predictor.TiledPredictor`
that ``groundbreak predict`` uses (overlapping windows, blended), its ``probability.tif`` is read
back in row bands beside the label, and every labelled pixel is counted once (label 255 is left
out). A labelled pixel the model could not predict (invalid input, or hidden by a cloud or its
shadow on a date) counts as "no change", so a detector is never rewarded for declining to answer;
their number is reported, and how many of them are labelled change (recall the mask costs).

Counts are kept as a histogram of probabilities per class (:class:`ChangeHistogram`, 1000 bins),
so memory does not grow with the scenes and the pooled F1 of any threshold on the sweep (0.01 to
0.99 by 0.01) is exact: the best threshold is chosen from pooled counts, never per scene.

Recall by region size (:class:`RegionCounts`): the labelled change of a pair is split into
regions (8-connected pixels of label 1), binned by size in pixels (:data:`REGION_SIZE_BINS`:
1-9, 10-29, 30-99, 100-299 and 300 or more, named "1-10" ... "300+"). Per bin, the pixel recall
and the share of regions found (at least :data:`FOUND_PERCENT` % of their pixels at or above the
threshold) are exact at any threshold too: each bin keeps a histogram of its pixels'
probabilities, each region the probability bin at which it is found. The label is read whole for
this (its region numbers take 4 bytes a pixel).

It sits in ``infer`` beside its two users, ``evaluate`` and ``cv``, which run the tiled predictor
(see :mod:`groundbreak.infer.evaluation`).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from scipy import ndimage

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.labels import IGNORE
from groundbreak.datasets.layouts import oscd_pairs, read_pairs_csv
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.train.metrics import best_in_sweep, scores_from_counts

HISTOGRAM_BINS = 1000
"""Bins of the probability histogram: bin k holds k/1000 <= p < (k+1)/1000 (p = 1 in the last)."""
SWEEP: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(1, 100))
"""Thresholds among which the best pooled F1 is chosen."""
ROWS_PER_READ = 512
REGION_SIZE_BINS: tuple[tuple[int, int | None], ...] = (
    (1, 10), (10, 30), (30, 100), (100, 300), (300, None)
)
"""Size bins of labelled change regions in pixels, ``low <= size < high``."""
FOUND_PERCENT = 30
"""A region is found when at least this share (%) of its pixels are predicted change."""


@dataclass
class ChangeHistogram:
    """Labelled pixels counted by class (changed / unchanged) and probability bin."""

    changed: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, np.int64))
    unchanged: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, np.int64))

    @property
    def bins(self) -> int:
        """Number of probability bins."""
        return len(self.changed)

    def add(self, probability: np.ndarray, label: np.ndarray) -> int:
        """Count the labelled pixels of one block; returns how many had no prediction (NaN)."""
        labelled = label != IGNORE
        values = probability[labelled].astype(np.float64)
        missing = ~np.isfinite(values)
        values[missing] = 0.0  # no prediction: counted as "no change"
        index = np.clip(np.floor(values * self.bins), 0, self.bins - 1).astype(np.int64)
        truth = label[labelled] == 1
        self.changed += np.bincount(index[truth], minlength=self.bins)
        self.unchanged += np.bincount(index[~truth], minlength=self.bins)
        return int(missing.sum())

    def __add__(self, other: ChangeHistogram) -> ChangeHistogram:
        return ChangeHistogram(self.changed + other.changed, self.unchanged + other.unchanged)

    def counts(self, threshold: float) -> dict[str, int]:
        """``tp``, ``fp``, ``fn``, ``tn`` of ``probability >= threshold``.

        Exact for a threshold on the bin edges (a multiple of 0.001), the nearest edge above
        otherwise.
        """
        first = min(max(int(np.ceil(round(threshold * self.bins, 6))), 0), self.bins)
        tp = int(self.changed[first:].sum())
        fp = int(self.unchanged[first:].sum())
        return {
            "tp": tp,
            "fp": fp,
            "fn": int(self.changed.sum()) - tp,
            "tn": int(self.unchanged.sum()) - fp,
        }

    def scores(self, threshold: float) -> dict[str, Any]:
        """Counts and scores at one threshold."""
        counts = self.counts(threshold)
        ratios = scores_from_counts(*(torch.tensor(counts[k]) for k in ("tp", "fp", "fn")))
        return {"threshold": threshold, **counts, **{k: v.item() for k, v in ratios.items()}}

    def best(self, thresholds: Sequence[float] = SWEEP) -> dict[str, Any]:
        """Scores at the threshold of the best F1 (ties: the one nearest 0.5), chosen by the
        training metrics' sweep rule (:func:`~groundbreak.train.metrics.best_in_sweep`)."""
        table = [self.counts(t) for t in thresholds]
        tp, fp, fn = (torch.tensor([row[k] for row in table]) for k in ("tp", "fp", "fn"))
        f1 = scores_from_counts(tp, fp, fn)["f1"]
        best = best_in_sweep(torch.tensor(thresholds, dtype=torch.float64), f1)
        return self.scores(thresholds[best])

    def to_json(self) -> dict[str, list[int]]:
        """The histogram as plain lists."""
        return {"changed": self.changed.tolist(), "unchanged": self.unchanged.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, list[int]]) -> ChangeHistogram:
        """The inverse of :meth:`to_json`."""
        return cls(np.asarray(data["changed"], np.int64), np.asarray(data["unchanged"], np.int64))


def region_bin_names() -> list[str]:
    """Names of :data:`REGION_SIZE_BINS`: ``"1-10"``, ..., ``"300+"``."""
    return [f"{low}-{high}" if high else f"{low}+" for low, high in REGION_SIZE_BINS]


def _first_bin(threshold: float, bins: int = HISTOGRAM_BINS) -> int:
    """The first histogram bin at or above ``threshold`` (as :meth:`ChangeHistogram.counts`)."""
    return min(max(int(np.ceil(round(threshold * bins, 6))), 0), bins)


@dataclass
class RegionCounts:
    """Labelled change regions (8-connected) of scored pairs: each one's size and the probability
    bin at which it is found, and per size bin a histogram of its pixels' probabilities.

    Attributes:
        sizes: Pixels of each region.
        found_bin: Per region, the histogram bin of its ``ceil(FOUND_PERCENT % x size)``-th
            highest probability: the region is found at a threshold whose first bin is at most
            this (an unpredicted pixel counts as probability 0).
        pixels: ``(len(REGION_SIZE_BINS), HISTOGRAM_BINS)`` counts of the regions' pixels by size
            bin and probability bin.
    """

    sizes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    found_bin: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pixels: np.ndarray = field(
        default_factory=lambda: np.zeros((len(REGION_SIZE_BINS), HISTOGRAM_BINS), np.int64)
    )

    @classmethod
    def from_pixels(cls, region: np.ndarray, probability: np.ndarray, count: int) -> RegionCounts:
        """The counts of ``count`` regions from their pixels: region numbers (1 to ``count``) and
        probabilities (NaN: no prediction, counted as 0), in any order."""
        region = np.asarray(region, np.int64)
        values = np.nan_to_num(np.asarray(probability, np.float64), nan=0.0, posinf=1.0)
        index = np.clip(np.floor(values * HISTOGRAM_BINS), 0, HISTOGRAM_BINS - 1).astype(np.int64)
        sizes = np.bincount(region, minlength=count + 1)[1:]
        order = np.lexsort((-index, region))  # by region, highest probability first
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        needed = np.maximum(-(-FOUND_PERCENT * sizes // 100), 1)
        found_bin = index[order][starts + needed - 1] if count else np.zeros(0, np.int64)
        edges = [low for low, _ in REGION_SIZE_BINS]
        size_bin = np.searchsorted(edges, sizes, side="right") - 1
        pixel_bin = size_bin[region - 1] if count else np.zeros(0, np.int64)
        pixels = np.bincount(
            pixel_bin * HISTOGRAM_BINS + index, minlength=len(edges) * HISTOGRAM_BINS
        ).reshape(len(edges), HISTOGRAM_BINS)
        return cls(sizes.astype(np.int64), found_bin.astype(np.int64), pixels.astype(np.int64))

    def __add__(self, other: RegionCounts) -> RegionCounts:
        return RegionCounts(
            np.concatenate([self.sizes, other.sizes]),
            np.concatenate([self.found_bin, other.found_bin]),
            self.pixels + other.pixels,
        )

    def table(self, threshold: float) -> list[dict[str, Any]]:
        """Per size bin at ``threshold``: regions, changed pixels, pixel recall and the share of
        regions found (0 where a bin is empty)."""
        first = _first_bin(threshold, self.pixels.shape[1])
        edges = [low for low, _ in REGION_SIZE_BINS]
        size_bin = np.searchsorted(edges, self.sizes, side="right") - 1
        rows = []
        for k, name in enumerate(region_bin_names()):
            in_bin = size_bin == k
            regions, pixels = int(in_bin.sum()), int(self.pixels[k].sum())
            found = int((self.found_bin[in_bin] >= first).sum())
            rows.append({
                "size": name,
                "regions": regions,
                "changed_pixels": pixels,
                "pixel_recall": int(self.pixels[k, first:].sum()) / pixels if pixels else 0.0,
                "regions_found": found / regions if regions else 0.0,
            })
        return rows

    def to_json(self) -> dict[str, Any]:
        """The counts as plain lists."""
        return {
            "sizes": self.sizes.tolist(),
            "found_bin": self.found_bin.tolist(),
            "pixels": self.pixels.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegionCounts:
        """The inverse of :meth:`to_json`."""
        return cls(
            np.asarray(data["sizes"], np.int64).reshape(-1),
            np.asarray(data["found_bin"], np.int64).reshape(-1),
            np.asarray(data["pixels"], np.int64).reshape(len(REGION_SIZE_BINS), -1),
        )


def label_regions(label: np.ndarray) -> tuple[np.ndarray, int]:
    """The 8-connected regions of label 1: region numbers (0 outside) and how many there are."""
    regions, count = ndimage.label(label == 1, structure=np.ones((3, 3), bool))
    return regions, int(count)


@dataclass
class PairEvaluation:
    """One scored pair: its histogram, pixel counts and prediction time."""

    pair_id: str
    histogram: ChangeHistogram
    pixels: int
    changed_pixels: int
    unpredicted_pixels: int
    seconds: float
    unpredicted_changed_pixels: int
    regions: RegionCounts = field(default_factory=RegionCounts)

    def to_json(self, threshold: float) -> dict[str, Any]:
        """Counts and scores at ``threshold``, recall by region size, and the histograms."""
        return {
            "pair_id": self.pair_id,
            "pixels": self.pixels,
            "changed_pixels": self.changed_pixels,
            "unpredicted_pixels": self.unpredicted_pixels,
            "unpredicted_changed_pixels": self.unpredicted_changed_pixels,
            "seconds": round(self.seconds, 2),
            **self.histogram.scores(threshold),
            "by_region_size": self.regions.table(threshold),
            "histogram": self.histogram.to_json(),
            "regions": self.regions.to_json(),
        }


def labelled_pair_specs(
    oscd_root: str | Path | None = None,
    pairs_csv: str | Path | None = None,
    cities: Sequence[str] | None = None,
) -> list[PairSpec]:
    """The labelled pairs to score: OSCD cities or rows of a pairs CSV, optionally selected.

    Without ``cities``: every labelled OSCD train city, or every row of the CSV (each must have
    a label).

    Raises:
        InputError: For an unknown city or pair id, or a selected pair without a label.
    """
    if (oscd_root is None) == (pairs_csv is None):
        raise ValueError("give exactly one of oscd_root and pairs_csv")
    source = Path(oscd_root if oscd_root is not None else pairs_csv)  # type: ignore[arg-type]
    if oscd_root is not None:
        specs = oscd_pairs(oscd_root)
        if cities is None:
            specs = [s for s in specs if s.label is not None]
    else:
        specs = read_pairs_csv(pairs_csv)  # type: ignore[arg-type]
    if cities is not None:
        by_id = {s.pair_id: s for s in specs}
        unknown = [c for c in cities if c not in by_id]
        if unknown:
            known = ", ".join(s.pair_id for s in specs if s.label is not None)
            raise InputError(
                source, f"unknown pair(s) {', '.join(unknown)}; the labelled ones are: {known}"
            )
        specs = [by_id[c] for c in dict.fromkeys(cities)]
    if not specs:
        raise InputError(source, "no labelled pair to score")
    for spec in specs:
        if spec.label is None:
            raise InputError(source, f"pair {spec.pair_id} has no label to score against")
    return specs


def open_labelled_pairs(specs: Sequence[PairSpec], predictor: Any) -> list[TilePair]:
    """Open every pair and its label, and check it has the model's bands, before predicting."""
    pairs = []
    for spec in specs:
        pair = spec.open()
        if pair.label is None:
            raise InputError(spec.before, f"pair {spec.pair_id} has no label to score against")
        predictor.check_bands(pair)
        pairs.append(pair)
    return pairs


def score_probability_map(pair: TilePair, probability_path: Path) -> PairEvaluation:
    """Count the labelled pixels of a pair against a probability raster on its grid."""
    histogram = ChangeHistogram()
    pixels = changed = missing = missing_changed = 0
    whole_label = pair.read_label()
    assert whole_label is not None
    regions, count = label_regions(whole_label)
    region_ids, region_probability = [], []
    with rasterio.open(probability_path) as src:
        if (src.height, src.width) != pair.grid.shape:
            raise InputError(probability_path, f"is not on the grid of pair {pair.pair_id}")
        for row in range(0, src.height, ROWS_PER_READ):
            height = min(ROWS_PER_READ, src.height - row)
            window = Window(0, row, src.width, height)
            probability = src.read(1, window=window)
            label = whole_label[row:row + height]
            missing += histogram.add(probability, label)
            in_region = regions[row:row + height]
            region_ids.append(in_region[in_region > 0])
            region_probability.append(probability[in_region > 0])
            is_changed = label == 1
            pixels += int((label != IGNORE).sum())
            changed += int(is_changed.sum())
            missing_changed += int((is_changed & ~np.isfinite(probability)).sum())
    region_counts = RegionCounts.from_pixels(
        np.concatenate(region_ids), np.concatenate(region_probability), count
    )
    return PairEvaluation(
        pair.pair_id, histogram, pixels, changed, missing, 0.0, missing_changed, region_counts
    )


def evaluate_scenes(
    predictor: Any,
    pairs: Sequence[TilePair],
    maps_dir: str | Path | None = None,
    progress: Any = None,
) -> list[PairEvaluation]:
    """Predict every pair with ``predictor`` (a TiledPredictor) and score its whole scene.

    ``maps_dir`` keeps each pair's ``probability.tif`` and ``mask.tif`` in ``maps_dir/<pair_id>``;
    without it they are written to a temporary folder and removed.
    """
    results = []
    with tempfile.TemporaryDirectory(prefix="groundbreak-evaluate-") as tmp:
        base = Path(maps_dir) if maps_dir is not None else Path(tmp)
        for pair in pairs:
            start = time.perf_counter()
            prediction = predictor.predict_pair(pair, base / pair.pair_id)
            result = score_probability_map(pair, prediction.probability_path)
            result.seconds = time.perf_counter() - start
            results.append(result)
            if progress is not None:
                progress(result)
    return results


def pooled(results: Sequence[PairEvaluation]) -> ChangeHistogram:
    """The histogram of all pairs together."""
    total = ChangeHistogram()
    for result in results:
        total = total + result.histogram
    return total


def pooled_regions(results: Sequence[PairEvaluation]) -> RegionCounts:
    """The region counts of all pairs together."""
    total = RegionCounts()
    for result in results:
        total = total + result.regions
    return total


def summary(results: Sequence[PairEvaluation], threshold: float) -> dict[str, Any]:
    """Pooled scores at ``threshold`` and at the best threshold, recall by region size at
    ``threshold``, and every pair's, as JSON."""
    histogram = pooled(results)
    best = histogram.best()
    return {
        "threshold": threshold,
        "pairs_count": len(results),
        "pixels": sum(r.pixels for r in results),
        "changed_pixels": sum(r.changed_pixels for r in results),
        "unpredicted_pixels": sum(r.unpredicted_pixels for r in results),
        "unpredicted_changed_pixels": sum(r.unpredicted_changed_pixels for r in results),
        "pooled": histogram.scores(threshold),
        "by_region_size": pooled_regions(results).table(threshold),
        "best": best,
        "per_pair": [r.to_json(threshold) for r in results],
        "pooled_histogram": histogram.to_json(),
    }


def format_summary(result: dict[str, Any], name: str) -> str:
    """The lines ``groundbreak evaluate`` prints for a whole-scene evaluation."""
    at, best = result["pooled"], result["best"]
    lines = [
        f"{name} on {result['pairs_count']} whole scene(s), {result['pixels']} labelled pixels "
        f"({result['changed_pixels']} changed, {result['unpredicted_pixels']} unpredicted, "
        f"{result['unpredicted_changed_pixels']} of them changed):",
        f"  pooled at threshold {at['threshold']:.3f}: precision {at['precision']:.4f}  "
        f"recall {at['recall']:.4f}  F1 {at['f1']:.4f}  IoU {at['iou']:.4f}",
        f"  best pooled threshold {best['threshold']:.2f}: precision {best['precision']:.4f}  "
        f"recall {best['recall']:.4f}  F1 {best['f1']:.4f}  IoU {best['iou']:.4f}",
        *format_region_table(result["by_region_size"], at["threshold"]),
        f"  {'pair':<14} {'pixels':>9} {'changed':>8} {'precision':>9} {'recall':>7} "
        f"{'F1':>6} {'IoU':>6} {'s':>6}",
    ]
    for row in result["per_pair"]:
        lines.append(
            f"  {row['pair_id']:<14} {row['pixels']:>9} {row['changed_pixels']:>8} "
            f"{row['precision']:>9.4f} {row['recall']:>7.4f} {row['f1']:>6.4f} "
            f"{row['iou']:>6.4f} {row['seconds']:>6.1f}"
        )
    return "\n".join(lines)


def format_region_table(rows: Sequence[dict[str, Any]], threshold: float) -> list[str]:
    """Lines of the recall-by-region-size table (labelled regions, 8-connected)."""
    lines = [
        f"  by labelled region size at threshold {threshold:.3f} (pixels; found: >= "
        f"{FOUND_PERCENT} % of a region):",
        f"    {'size':<8} {'regions':>7} {'changed':>8} {'pixel recall':>12} {'found':>6}",
    ]
    for row in rows:
        lines.append(
            f"    {row['size']:<8} {row['regions']:>7} {row['changed_pixels']:>8} "
            f"{row['pixel_recall']:>12.3f} {row['regions_found']:>6.3f}"
        )
    return lines


def dumps(data: Any) -> str:
    """JSON with two-space indentation and lists of numbers (histograms) on one line."""
    text = json.dumps(data, indent=2)
    return re.sub(
        r"\[\s+([-\d.eE+,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text
    ) + "\n"
