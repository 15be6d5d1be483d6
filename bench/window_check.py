"""Window check (issue 25 item 2): what other prediction windows change against today's.

Each window/overlap setting (``--windows 256/64,512/64``: the first is the reference, today's
default) predicts the same real pairs with the same bundle, and the check prints, per setting:

- **max |Δp|** against the reference over every pixel both predict (and the 99.9th percentile,
  the pixels whose mask flips at the bundle's threshold, and any pixel valid in one map only) on
  the OSCD test cities (``--oscd-root``) and the fixtures' OSCD pairs (``tests/fixtures/oscd``);
  the quality bar is max |Δp| <= 0.02;
- the share of model work: pixels computed per scene pixel, ``(window / (window - overlap))²``;
- **F1 of held-out cities** for each ``--fold BUNDLE:city,city`` (a cross-validation fold's
  bundle and the cities it never saw), at the bundle's threshold and at the best threshold of the
  sweep, pooled over the folds given; with ``--committed-oof FOLDER`` (a cv run folder with
  ``foldK/evaluation_mean_std.json``) also the out-of-fold F1 of that folder's histograms with
  the given folds' cities replaced by these predictions (so the change in the pooled OOF F1 that
  rescoring those folds with the setting makes).

Maps are written once per setting under ``--out`` (default ``runs/window_check``) and reused by
a rerun (``--fresh`` predicts again). Usage::

    python bench/window_check.py --windows 256/64,512/64,384/64 \\
        --fold runs/cv/oscd_s2_radio_ref/fold0/bundle:beirut,bordeaux \\
        --committed-oof checkpoints/oscd-s2-default/cv/candidates/oscd_s2_radio
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import rasterio

from groundbreak.datasets.layouts import oscd_pairs
from groundbreak.infer.evaluation import scene_evaluate
from groundbreak.infer.evaluation.scene_evaluate import ChangeHistogram
from groundbreak.infer.prediction.predictor import TiledPredictor
from groundbreak.train.bundle import default_bundle_path, load_bundle

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OSCD = ROOT.parent / "shared" / "data" / "oscd"
FIXTURES = ROOT / "tests" / "fixtures" / "oscd"
ROWS = 1024


def settings(text: str) -> list[tuple[int, int]]:
    """``256/64,512/64`` as [(window, overlap), ...]."""
    pairs = []
    for item in text.split(","):
        window, overlap = item.strip().split("/")
        pairs.append((int(window), int(overlap)))
    return pairs


def name_of(setting: tuple[int, int]) -> str:
    return f"{setting[0]}-{setting[1]}"


def work_share(setting: tuple[int, int]) -> float:
    """Pixels computed per scene pixel (away from the edges)."""
    window, overlap = setting
    return (window / (window - overlap)) ** 2


def predict(predictor: TiledPredictor, pair, folder: Path, fresh: bool) -> Path:  # noqa: ANN001
    """The pair's probability map in ``folder`` (predicted unless already there)."""
    path = folder / "probability.tif"
    if fresh or not path.is_file():
        predictor.predict_pair(pair, folder)
    return path


def compare(reference: Path, other: Path, threshold: float) -> dict[str, float]:
    """max |Δp| and friends of two probability maps of one grid, read in row bands."""
    deltas, flips, one_only, both = [], 0, 0, 0
    with rasterio.open(reference) as a, rasterio.open(other) as b:
        for row in range(0, a.height, ROWS):
            window = rasterio.windows.Window(0, row, a.width, min(ROWS, a.height - row))
            p, q = a.read(1, window=window), b.read(1, window=window)
            fp, fq = np.isfinite(p), np.isfinite(q)
            one_only += int((fp ^ fq).sum())
            valid = fp & fq
            both += int(valid.sum())
            deltas.append(np.abs(p[valid] - q[valid]))
            flips += int(((p[valid] >= threshold) != (q[valid] >= threshold)).sum())
    delta = np.concatenate(deltas) if deltas else np.zeros(0, np.float32)
    return {
        "max": float(delta.max()) if delta.size else 0.0,
        "p999": float(np.quantile(delta, 0.999)) if delta.size else 0.0,
        "mean": float(delta.mean()) if delta.size else 0.0,
        "flips": flips,
        "one_only": one_only,
        "pixels": both,
    }


def probability_pairs(oscd_root: Path) -> list:  # noqa: ANN401
    """The OSCD test cities and the fixtures' OSCD pairs (ids prefixed ``fixture-``)."""
    pairs = [s.open() for s in oscd_pairs(oscd_root) if s.split == "test"]
    for spec in oscd_pairs(FIXTURES):
        pair = spec.open()
        pair.pair_id = f"fixture-{spec.pair_id}"
        pairs.append(pair)
    return pairs


def fold_scores(
    folds: list[tuple[Path, list[str]]], oscd_root: Path, setting: tuple[int, int], out: Path,
    fresh: bool,
) -> dict[str, ChangeHistogram]:
    """Each held-out city's histogram, predicted by its fold's bundle with ``setting``."""
    specs = {s.pair_id: s for s in oscd_pairs(oscd_root) if s.label is not None}
    histograms = {}
    for bundle_dir, cities in folds:
        bundle = load_bundle(bundle_dir)
        predictor = TiledPredictor(bundle, window=setting[0], overlap=setting[1], device="cpu")
        for city in cities:
            pair = specs[city].open()
            folder = out / name_of(setting) / f"fold-{bundle_dir.parent.name}-{city}"
            path = predict(predictor, pair, folder, fresh)
            histograms[city] = scene_evaluate.score_probability_map(pair, path).histogram
    return histograms


def committed_histograms(folder: Path) -> dict[str, ChangeHistogram]:
    """Every city's out-of-fold histogram in a cv folder's ``foldK/evaluation_mean_std.json``."""
    histograms = {}
    for path in sorted(folder.glob("fold*/evaluation_mean_std.json")):
        for row in json.loads(path.read_text())["per_pair"]:
            histograms[row["pair_id"]] = ChangeHistogram.from_json(row["histogram"])
    return histograms


def pooled(histograms: dict[str, ChangeHistogram]) -> ChangeHistogram:
    total = ChangeHistogram()
    for histogram in histograms.values():
        total = total + histogram
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=settings, default=settings("256/64,512/64"),
                        help="window/overlap settings, the reference first")
    parser.add_argument("--bundle", type=Path, default=None, help="default: the shipped bundle")
    parser.add_argument("--oscd-root", type=Path, default=DEFAULT_OSCD)
    parser.add_argument("--fold", action="append", default=[],
                        help="BUNDLE:city,city of a cv fold (repeatable)")
    parser.add_argument("--committed-oof", type=Path, default=None,
                        help="cv folder whose foldK/evaluation_mean_std.json give the other folds")
    parser.add_argument("--skip-maps", action="store_true", help="only the fold F1")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "window_check")
    parser.add_argument("--fresh", action="store_true", help="predict every map again")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    bundle = load_bundle(args.bundle or default_bundle_path())
    reference = args.windows[0]
    folds = []
    for item in args.fold:
        path, cities = item.rsplit(":", 1)
        folds.append((Path(path), cities.split(",")))

    pairs = [] if args.skip_maps else probability_pairs(args.oscd_root)
    maps: dict[tuple[int, int], dict[str, Path]] = {}
    for setting in args.windows:
        started = time.perf_counter()
        predictor = TiledPredictor(bundle, window=setting[0], overlap=setting[1], device="cpu")
        maps[setting] = {
            p.pair_id: predict(predictor, p, args.out / name_of(setting) / p.pair_id, args.fresh)
            for p in pairs
        }
        print(f"{name_of(setting)}: maps in {time.perf_counter() - started:.0f} s", flush=True)

    print(f"\nbundle {bundle.path.name}, threshold {bundle.threshold}; reference "
          f"{reference[0]}/{reference[1]}; {len(pairs)} pairs")
    print(f"{'setting':<10}{'work':>6}{'max|Δp|':>9}{'p99.9':>8}{'mean':>9}{'flips':>8}"
          f"{'one-only':>9}  worst pair")
    for setting in args.windows[1:]:
        rows = {pid: compare(maps[reference][pid], path, bundle.threshold)
                for pid, path in maps[setting].items()}
        if not rows:
            continue
        worst = max(rows, key=lambda pid: rows[pid]["max"])
        total = sum(r["pixels"] for r in rows.values())
        print(f"{name_of(setting):<10}{work_share(setting):>6.2f}{rows[worst]['max']:>9.4f}"
              f"{max(r['p999'] for r in rows.values()):>8.4f}"
              f"{sum(r['mean'] * r['pixels'] for r in rows.values()) / total:>9.5f}"
              f"{sum(r['flips'] for r in rows.values()):>8}"
              f"{sum(r['one_only'] for r in rows.values()):>9}  {worst}", flush=True)
        print("  per pair max|Δp|: " + ", ".join(f"{k} {v['max']:.4f}" for k, v in rows.items()))

    if not folds:
        return
    committed = committed_histograms(args.committed_oof) if args.committed_oof else {}
    print(f"\nheld-out F1 ({', '.join(c for _, cs in folds for c in cs)}), threshold "
          f"{bundle.threshold} and best; with --committed-oof: the pooled OOF F1 (best threshold)")
    for setting in args.windows:
        cities = fold_scores(folds, args.oscd_root, setting, args.out, args.fresh)
        fold = pooled(cities)
        line = (f"{name_of(setting):<10} F1 {fold.scores(bundle.threshold)['f1']:.4f} at "
                f"{bundle.threshold}, best {fold.best()['f1']:.4f} at {fold.best()['threshold']}")
        if committed:
            oof = pooled({**committed, **cities}).best()
            line += f"; OOF F1 {oof['f1']:.4f} at {oof['threshold']}"
        print(line + "; " + ", ".join(
            f"{c} {h.scores(bundle.threshold)['f1']:.4f}" for c, h in cities.items()), flush=True)


if __name__ == "__main__":
    main()
