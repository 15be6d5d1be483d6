"""Pooling the folds of a cross-validation: the out-of-fold figures of ``groundbreak cv`` and
``groundbreak cv-ensemble`` from their folds' ``evaluation{suffix}.json``.

:func:`aggregate` pools the held-out cities' probability histograms into the out-of-fold
threshold and scores, with their spread over the folds (:func:`spread`) and the recall by
labelled region size (:func:`region_table`); a city scored before region counts were recorded has
them counted from the fold's kept maps (:func:`maps_folder`, :func:`fold_regions`).
:func:`bundle_metrics` and :func:`final_scores` give what a final bundle states of them.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from groundbreak.datasets.errors import InputError
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.datasets.text_files import load_json_file
from groundbreak.infer.evaluation import scene_evaluate


def maps_folder(suffix: str) -> str:
    """The fold's folder of the held-out maps kept for the scores of ``suffix`` (:func:`scored`):
    ``maps`` (as scored plainly or with the dates matched), or ``maps_wWoO``, ``maps_tta``,
    ``maps_wWoO_tta`` for a rescoring with other windows or flip TTA, which keeps the plain maps."""
    rescored = re.search(r"(_w\d+o\d+)?(_tta)?$", suffix)
    return "maps" + (rescored.group(0) if rescored else "")


def fold_regions(
    out: Path, k: int, row: dict[str, Any], specs: Sequence[PairSpec], suffix: str = ""
) -> scene_evaluate.RegionCounts | None:
    """The region counts of one held-out city: recorded in its evaluation, else from the fold's
    kept probability map, else None."""
    if "regions" in row:
        return scene_evaluate.RegionCounts.from_json(row["regions"])
    probability = out / f"fold{k}" / maps_folder(suffix) / row["pair_id"] / "probability.tif"
    spec = next((s for s in specs if s.pair_id == row["pair_id"]), None)
    if spec is None or not probability.is_file():
        return None
    return scene_evaluate.score_probability_map(spec.open(), probability).regions


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, min and max of per-fold values (std 0 for one value)."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def region_table(
    per_fold: Sequence[Sequence[scene_evaluate.RegionCounts]], threshold: float
) -> list[dict[str, Any]]:
    """Pooled recall by region size at ``threshold``, with its spread over the folds (over the
    folds that hold regions of a bin)."""
    total = scene_evaluate.RegionCounts()
    for counts in per_fold:
        for city in counts:
            total = total + city
    fold_tables = []
    for counts in per_fold:
        fold_total = scene_evaluate.RegionCounts()
        for city in counts:
            fold_total = fold_total + city
        fold_tables.append(fold_total.table(threshold))
    rows = total.table(threshold)
    for k, row in enumerate(rows):
        present = [table[k] for table in fold_tables if table[k]["regions"]]
        if present:
            row["fold_pixel_recall"] = spread([r["pixel_recall"] for r in present])
            row["fold_regions_found"] = spread([r["regions_found"] for r in present])
    return rows


def aggregate(
    out: Path, folds: Sequence[Sequence[str]], name: str, suffix: str = "",
    specs: Sequence[PairSpec] = (),
) -> dict[str, Any]:
    """Pool the out-of-fold histograms of every fold (``evaluation{suffix}.json``): the OOF
    threshold and scores, and recall by region size (``specs``: the labelled pairs, to count
    regions from kept maps where an evaluation lacks them)."""
    records = [json.loads((out / f"fold{k}" / f"evaluation{suffix}.json").read_text())
               for k in range(len(folds))]
    cities = {
        row["pair_id"]: scene_evaluate.ChangeHistogram.from_json(row["histogram"])
        for record in records for row in record["per_pair"]
    }
    regions = [
        [fold_regions(out, k, row, specs, suffix) for row in record["per_pair"]]
        for k, record in enumerate(records)
    ]
    total = scene_evaluate.ChangeHistogram()
    for histogram in cities.values():
        total = total + histogram
    best = total.best()
    threshold = best["threshold"]
    fold_f1, fold_precision, fold_recall = [], [], []
    for record in records:
        fold_total = scene_evaluate.ChangeHistogram()
        for row in record["per_pair"]:
            fold_total = fold_total + cities[row["pair_id"]]
        fold_scores = fold_total.scores(threshold)
        fold_f1.append(fold_scores["f1"])
        fold_precision.append(fold_scores["precision"])
        fold_recall.append(fold_scores["recall"])
    counted = [[c for c in counts if c is not None] for counts in regions]
    complete = sum(map(len, counted)) == sum(map(len, regions))
    return {
        "name": name,
        "folds": [list(f) for f in folds],
        "oof_threshold": threshold,
        "pooled": best,
        "pooled_at_0.5": total.scores(0.5),
        "per_city_f1": {c: round(h.scores(threshold)["f1"], 4) for c, h in cities.items()},
        "per_fold_f1": [round(f, 4) for f in fold_f1],
        "fold_f1_mean": statistics.fmean(fold_f1),
        "fold_f1_std": statistics.stdev(fold_f1) if len(fold_f1) > 1 else 0.0,
        "per_fold_precision": [round(v, 4) for v in fold_precision],
        "per_fold_recall": [round(v, 4) for v in fold_recall],
        "fold_precision": spread(fold_precision),
        "fold_recall": spread(fold_recall),
        "by_region_size": region_table(counted, threshold) if complete else None,
        "train_minutes": round(sum(r["train_seconds"] for r in records) / 60, 1),
    }


def bundle_metrics(result: dict[str, Any], prefix: str = "oof") -> dict[str, float]:
    """A bundle's ``model.json`` ``metrics`` from a pooled result (:func:`aggregate`): pooled
    precision, recall, F1 and IoU, the threshold and the fold F1's mean and spread, as
    ``PREFIX/key``."""
    pooled = result["pooled"]
    return {
        **{f"{prefix}/{key}": pooled[key] for key in ("precision", "recall", "f1", "iou")},
        f"{prefix}/threshold": result["oof_threshold"],
        f"{prefix}/fold_f1_mean": result["fold_f1_mean"],
        f"{prefix}/fold_f1_std": result["fold_f1_std"],
    }


def final_scores(
    result: dict[str, Any], tta: bool, plain_json: Path, command: str
) -> tuple[float, float | None, dict[str, float]]:
    """The ``threshold``, ``tta_threshold`` and ``metrics`` a final bundle states.

    Without TTA, ``result`` gives the threshold and the ``oof/*`` metrics. When the folds were
    scored with flip TTA, ``result`` gives the ``tta_threshold`` and ``oof_tta/*`` metrics and the
    plain ones come from ``plain_json`` (the same folds scored without TTA): a bundle's
    ``threshold`` is what a prediction without ``--tta`` uses. Raises InputError naming
    ``plain_json`` when it is missing (run ``command`` without ``--tta`` first).
    """
    if not tta:
        return result["oof_threshold"], None, bundle_metrics(result)
    if not plain_json.is_file():
        raise InputError(plain_json, f"missing: run {command} without --tta first; the final "
                         "bundle's threshold is the one without TTA")
    plain = load_json_file(plain_json, f"{command} result")
    metrics = {**bundle_metrics(plain), **bundle_metrics(result, "oof_tta")}
    return plain["oof_threshold"], result["oof_threshold"], metrics
