"""``groundbreak cv``: K-fold cross-validation by city on OSCD, scored on whole held-out scenes.

Usage::

    groundbreak cv --config configs/oscd_s2.yaml --folds configs/cv/oscd_folds5.yaml \\
        --out runs/cv/NAME [--oscd-root ../shared/data/oscd] [--size 128] [--stride 64] \\
        [--only-folds 0,3] [--device auto] [--tta] [--keep-maps] [--final | --only-final] \\
        [--date-matching MODE] [-- TRAIN OVERRIDES...]

For each fold (a set of held-out labelled cities) in ``OUT/foldK/``:

1. ``chips/``: chips of the *other* cities only (``--size``/``--stride``), statistics from them,
   dates matched as the config's ``data.date_matching`` says;
2. ``train/``: ``groundbreak train fit --config CONFIG`` on those chips for the config's fixed
   number of epochs (plus the overrides after ``--``), **without validation**; the model is the
   last epoch's (``last.ckpt``). Nothing about the held-out cities (epoch, threshold,
   normalisation) is seen before they are scored. An interrupted run resumes from ``last.ckpt``;
3. ``bundle/``: the exported model bundle of ``last.ckpt``;
4. ``evaluation.json``: the held-out cities predicted whole by the tiled predictor, counted as a
   histogram of probabilities per class (:mod:`groundbreak.infer.evaluation.scene_evaluate`).

``{fold_dir}`` in a training override stands for the fold's folder name (``fold0`` ... or
``final``): ``-- --model.teacher runs/cv/ens/{fold_dir}/bundle`` distils each fold from the
ensemble of the same fold (trained without its cities; ``groundbreak cv-ensemble``'s folds).

With ``--final``, a model is then trained the same way on every labelled city (``OUT/final/``)
and exported at the out-of-fold threshold, its ``metrics`` the out-of-fold scores. Its training
does not depend on the folds: ``--only-final`` trains it alone (a process beside the folds), and
the ``--final`` run after the folds then only exports it.

With ``--tta``, the held-out cities are predicted with flip test-time augmentation (as
``predict --tta``) into ``evaluation_tta.json``, pooled into ``cv_tta.json``/``cv_tta.md``. The
trained folds are the same, so a run without it can be rescored with it at the cost of prediction.
``--date-matching MODE`` likewise predicts them with the dates matched as MODE says (as ``predict
--date-matching``), whatever the fold models were trained on, into ``evaluation_MODE.json``; with
``--final`` the final bundle then records MODE. ``--window W --overlap O`` predicts them with
those windows instead of the bundles' (``evaluation_MODE_wWoO.json``; with ``--final`` the final
bundle's ``window``/``overlap``): a window for the bundle, chosen on the folds.

A fold with ``evaluation.json`` is done and skipped on a rerun. When every fold is done, the
out-of-fold (OOF) histograms of all cities are pooled: the OOF threshold is the best pooled F1
over the sweep, and pooled precision/recall/F1/IoU, per-city F1 and per-fold F1, precision and
recall (mean, std, min, max) at that threshold go to ``OUT/cv.json`` and ``OUT/cv.md`` (a table
row for the model card), with the out-of-fold recall by labelled region size (pixel recall and
share of regions found, pooled and mean ± std over the folds; see
:class:`~groundbreak.infer.evaluation.scene_evaluate.RegionCounts`). A fold scored before region
counts were recorded has them computed from its kept maps (``--keep-maps``: ``OUT/foldK/maps``;
a rescoring with ``--window`` or ``--tta`` keeps its own, ``maps_wWoO_tta``) when a rerun pools the
folds; without maps the region table is left out.

``--folds`` is a YAML/JSON file (``folds: [[city, ...], ...]``, every labelled city once) or a
number N: the cities, largest change first, each dealt to the fold with the fewest changed pixels
so far. The folds and settings are recorded in ``OUT/cv_settings.json``; a rerun with other
settings is refused (use another ``--out``).

It sits in ``infer``, above both stages it drives: it trains through ``groundbreak train`` and
scores through the tiled predictor (see :mod:`groundbreak.infer.evaluation`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from groundbreak.datasets.chips import (
    DEFAULT_CHIP_SIZE,
    DEFAULT_CHIP_STRIDE,
    ChipConfig,
    cut_chips,
)
from groundbreak.datasets.clouds import CLOUD_MASK_MODES
from groundbreak.datasets.date_matching import DATE_MATCHING_MODES, check_date_matching
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.layouts import oscd_pairs
from groundbreak.datasets.pair_spec import PairSpec
from groundbreak.infer.evaluation import scene_evaluate
from groundbreak.infer.evaluation.cv_markdown import markdown
from groundbreak.infer.evaluation.cv_pooling import aggregate, final_scores, maps_folder
from groundbreak.infer.evaluation.evaluate import comma_list
from groundbreak.train.arguments import device_argument, positive_int
from groundbreak.train.task import CHECKPOINT_KEY

DEFAULT_OSCD_ROOT = Path("../shared/data/oscd")
NO_VALIDATION = [
    "--data.val_split", "train",  # never read: validation is off
    "--trainer.limit_val_batches", "0",
    "--trainer.num_sanity_val_steps", "0",
    "--checkpoint.save_top_k", "0",  # no "best": the model is last.ckpt
    "--checkpoint.save_last", "false",  # last.ckpt comes from groundbreak train's own callback
]


def changed_pixels(spec: PairSpec) -> int:
    """Changed pixels of a labelled pair."""
    label = spec.open().read_label()
    return int((label == 1).sum()) if label is not None else 0


def balanced_folds(specs: Sequence[PairSpec], count: int) -> list[list[str]]:
    """Cities dealt, largest change first, to the fold with the fewest changed pixels so far."""
    if not 2 <= count <= len(specs):
        raise InputError(None, f"--folds {count}: need between 2 and {len(specs)} folds")
    sizes = {s.pair_id: changed_pixels(s) for s in specs}
    folds: list[list[str]] = [[] for _ in range(count)]
    totals = [0] * count
    for city in sorted(sizes, key=lambda c: (-sizes[c], c)):
        k = min(range(count), key=lambda i: (totals[i], i))
        folds[k].append(city)
        totals[k] += sizes[city]
    return folds


def read_folds(path: Path, cities: Sequence[str]) -> list[list[str]]:
    """The folds of a YAML/JSON file; each labelled city must appear exactly once."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(path, f"cannot be read as YAML ({err})") from err
    folds = data.get("folds") if isinstance(data, dict) else None
    if not isinstance(folds, list) or len(folds) < 2 or not all(
        isinstance(f, list) and f and all(isinstance(c, str) for c in f) for f in folds
    ):
        raise InputError(path, "expected 'folds:' with at least two non-empty lists of cities")
    listed = [c for fold in folds for c in fold]
    unknown = sorted(set(listed) - set(cities))
    if unknown:
        raise InputError(path, f"unknown or unlabelled cities: {', '.join(unknown)}")
    twice = sorted({c for c in listed if listed.count(c) > 1})
    missing = sorted(set(cities) - set(listed))
    if twice or missing:
        raise InputError(
            path, f"every labelled city must be in one fold (twice: {', '.join(twice) or '-'}; "
            f"in none: {', '.join(missing) or '-'})"
        )
    return folds


def date_matching_of(config: Path, extra: Sequence[str]) -> str:
    """The ``data.date_matching`` a training asks for (a ``--data.date_matching`` override in
    ``extra``, else the config's), ``none`` when neither says: how its chips must be cut."""
    for i, arg in enumerate(extra):
        if arg.startswith("--data.date_matching="):
            return check_mode(arg.split("=", 1)[1], config)
        if arg == "--data.date_matching" and i + 1 < len(extra):
            return check_mode(extra[i + 1], config)
    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(config, f"cannot be read as YAML ({err})") from err
    section = data.get("data") if isinstance(data, dict) else None
    mode = section.get("date_matching") if isinstance(section, dict) else None
    return check_mode(mode or "none", config)


def check_mode(mode: str, config: Path) -> str:
    """A known date-matching mode, else an InputError naming the config."""
    try:
        return check_date_matching(mode)
    except ValueError as err:
        raise InputError(config, str(err)) from err


def resolve_folds(text: str, specs: Sequence[PairSpec]) -> list[list[str]]:
    """``--folds``: a number (balanced folds) or a folds file."""
    if text.isdigit():
        return balanced_folds(specs, int(text))
    path = Path(text)
    if not path.is_file():
        raise InputError(path, "folds file does not exist (or give a number of folds)")
    return read_folds(path, [s.pair_id for s in specs])


CV_SET_PATHS = (("trainer", "default_root_dir"), ("data", "chips_dir"))
"""Config keys that ``cv`` sets itself for every training: left out of the config's content hash."""


def config_content_sha256(config: Path) -> str:
    """SHA-256 of a training config's parsed content, without comments, layout and the paths
    ``cv`` sets itself (:data:`CV_SET_PATHS`): what the trainings depend on."""
    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise InputError(config, f"cannot be read as YAML ({err})") from err
    if isinstance(data, dict):
        for section, key in CV_SET_PATHS:
            if isinstance(data.get(section), dict):
                data[section] = {k: v for k, v in data[section].items() if k != key}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings, or refuse when ``out`` was started with others.

    Runs that record ``config_content_sha256`` compare the config by its content, so an edit of
    its comments or of the paths ``cv`` sets does not stop a resume; older runs compare the file.
    """
    path = out / "cv_settings.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if "config_content_sha256" in previous:
            previous = {**previous, "config_sha256": settings["config_sha256"]}
        else:
            settings = {k: v for k, v in settings.items() if k != "config_content_sha256"}
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise InputError(
                path, f"this run was started with other settings ({', '.join(changed)}); "
                "give another --out"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".partial")
    temporary.write_text(json.dumps(settings, indent=2) + "\n")
    os.replace(temporary, path)


def train_command(
    config: Path, chips: Path, train_dir: Path, extra: Sequence[str]
) -> list[str]:
    """The ``groundbreak train fit`` command of one fold (resuming from its last.ckpt).

    ``{fold_dir}`` in an override becomes the fold's folder name (``fold0`` ... or ``final``),
    e.g. ``--model.teacher runs/cv/ens/{fold_dir}/bundle``: each fold's teacher trained
    without that fold's cities."""
    fold_dir = train_dir.parent.name
    command = [
        sys.executable, "-m", "groundbreak.infer.cli", "train", "fit", "--config", str(config),
        "--trainer.default_root_dir", str(train_dir), "--data.chips_dir", str(chips),
        *NO_VALIDATION, *(arg.replace("{fold_dir}", fold_dir) for arg in extra),
    ]
    last = train_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        command += ["--ckpt_path", str(last)]
    return command


def train_last(
    work_dir: Path, training: Sequence[PairSpec], args: argparse.Namespace,
    extra: Sequence[str], what: str,
) -> tuple[Path, Path, float]:
    """Chips of ``training`` and a fixed-length training in ``work_dir`` (each skipped if done).

    Returns:
        The chips folder, the ``last.ckpt`` to export and the training's wall seconds.
    """
    chips, train_dir = work_dir / "chips", work_dir / "train"
    if not (chips / "manifest.parquet").is_file():
        print(f"{what}: chips of {', '.join(s.pair_id for s in training)}", flush=True)
        cut_chips(
            [replace(s, split="train") for s in training], chips,
            ChipConfig(chip_size=args.size, stride=args.stride, splits=["train"],
                       date_matching=args.chips_date_matching),
            layout="oscd", root=args.oscd_root, overwrite=True,
        )
    done, last = train_dir / "DONE", train_dir / "checkpoints" / "last.ckpt"
    if not done.is_file():
        command = train_command(args.config, chips, train_dir, extra)
        print(f"{what}: training ({' '.join(command[3:])})", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command)
        if code != 0:
            raise InputError(train_dir, f"{what}: training exited with code {code}")
        # the checkpoint counts the seconds of every run a resumed training continues
        record = torch.load(last, map_location="cpu", weights_only=True).get(CHECKPOINT_KEY, {})
        seconds = record.get("train_seconds", time.perf_counter() - start)
        done.write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")
    seconds = float(json.loads(done.read_text())["seconds"])
    return chips, last, seconds


def scored(args: argparse.Namespace) -> str:
    """File-name suffix of the held-out scores: ``_MODE`` for dates matched by ``--date-matching
    MODE`` at prediction, ``_wWoO`` for ``cv --window W --overlap O``, then ``_tta`` with flip
    test-time augmentation."""
    matching = f"_{args.date_matching}" if args.date_matching else ""
    window = getattr(args, "held_out_window", None)
    if window is not None:
        matching += f"_w{window[0]}o{window[1]}"
    return matching + ("_tta" if args.tta else "")


def run_fold(k: int, held_out: list[str], specs: Sequence[PairSpec], args: argparse.Namespace,
             extra: Sequence[str]) -> None:
    """Chips, training, export and whole-scene scoring of one fold (each step skipped if done)."""
    from groundbreak.train.export import export_checkpoint

    fold_dir = args.out / f"fold{k}"
    training = [s for s in specs if s.pair_id not in held_out]
    chips, last, seconds = train_last(fold_dir, training, args, extra, f"fold {k}")
    bundle = export_checkpoint(
        last, fold_dir / "bundle", name=f"{args.out.name}-fold{k}", chips_dir=chips
    )
    score_fold(bundle, k, held_out, specs, seconds, args)


def score_fold(
    bundle: Any, k: int, held_out: list[str], specs: Sequence[PairSpec], seconds: float,
    args: argparse.Namespace,
) -> None:
    """Predict fold ``k``'s held-out cities whole with ``bundle`` (a ModelBundle) and write
    ``OUT/foldK/evaluation{suffix}.json`` (``args``: ``out``, ``device``, ``cloud_mask``, ``tta``,
    ``date_matching``, ``keep_maps``)."""
    from groundbreak.infer.prediction.predictor import TiledPredictor

    fold_dir = args.out / f"fold{k}"
    window, overlap = getattr(args, "held_out_window", None) or (None, None)
    predictor = TiledPredictor(
        bundle, device=args.device, cloud_mask=args.cloud_mask, tta=args.tta,
        date_matching=args.date_matching, window=window, overlap=overlap,
    )
    pairs = scene_evaluate.open_labelled_pairs([s for s in specs if s.pair_id in held_out],
                                               predictor)
    maps = fold_dir / maps_folder(scored(args)) if args.keep_maps else None
    results = scene_evaluate.evaluate_scenes(predictor, pairs, maps_dir=maps)
    record = {
        "fold": k,
        "held_out": held_out,
        "trained_on": [s.pair_id for s in specs if s.pair_id not in held_out],
        "train_seconds": seconds,
        "tta": args.tta,
        "date_matching": predictor.date_matching,
        "window": [predictor.window, predictor.overlap],
        "per_pair": [r.to_json(0.5) for r in results],
    }
    path = fold_dir / f"evaluation{scored(args)}.json"
    path.with_suffix(".partial").write_text(scene_evaluate.dumps(record))
    os.replace(path.with_suffix(".partial"), path)
    f1 = scene_evaluate.pooled(results).scores(0.5)["f1"]
    print(f"fold {k}: held-out {', '.join(held_out)}: F1 {f1:.4f} at 0.5", flush=True)


def train_final(
    specs: Sequence[PairSpec], args: argparse.Namespace, extra: Sequence[str],
    result: dict[str, Any],
) -> Path:
    """Train on every labelled city with the same settings; export at the out-of-fold threshold.

    The bundle's ``metrics`` are the out-of-fold scores (``oof/*``), its ``training`` record names
    the CV run. With ``--tta`` the threshold and scores without TTA come from ``cv_MODE.json``
    (checked before training) and the TTA ones become ``tta_threshold`` and ``oof_tta/*``.
    """
    from groundbreak.train.bundle import save_bundle
    from groundbreak.train.export import export_checkpoint

    cv_json = args.out / f"cv{scored(args)}.json"
    plain_json = args.out / f"cv{scored(args).removesuffix('_tta')}.json"
    threshold, tta_threshold, metrics = final_scores(result, args.tta, plain_json, "cv")
    work_dir = args.out / "final"
    chips, last, seconds = train_last(work_dir, specs, args, extra, "final")
    bundle = export_checkpoint(
        last, work_dir / "bundle", name=args.out.name, chips_dir=chips, threshold=threshold,
    )
    meta = json.loads((bundle.path / "model.json").read_text())
    meta["metrics"] = metrics
    source = (f"best pooled out-of-fold F1 of {len(result['folds'])}-fold cross-validation by "
              f"city ({plain_json})")
    if tta_threshold is not None:
        meta["tta_threshold"] = tta_threshold
        source += f"; tta_threshold: the same predicted with flip TTA ({cv_json})"
    meta["training"]["threshold_source"] = source
    if args.date_matching:  # the dates are matched as they were when it was scored
        meta["date_matching"] = args.date_matching
    if getattr(args, "held_out_window", None) is not None:  # and predicted with these windows
        meta["window"], meta["overlap"] = args.held_out_window
    meta["training"]["train_seconds"] = seconds
    save_bundle(bundle.model, meta, bundle.path)
    return bundle.path


def build_parser() -> argparse.ArgumentParser:
    """The ``groundbreak cv`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="groundbreak cv",
        description="K-fold cross-validation by city on OSCD: per fold, chips of the training "
        "cities, a fixed-length training (last epoch, no validation), export, and the held-out "
        "cities scored on whole scenes; pooled out-of-fold scores at the end. Arguments after "
        "'--' go to 'groundbreak train fit'.",
    )
    parser.add_argument("--config", type=Path, required=True, help="training config (YAML)")
    parser.add_argument("--folds", required=True,
                        help="folds file (YAML: folds: [[city, ...], ...]) or a number of folds")
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumable)")
    parser.add_argument("--oscd-root", type=Path, default=DEFAULT_OSCD_ROOT, help="OSCD folder")
    parser.add_argument("--size", type=positive_int, default=DEFAULT_CHIP_SIZE,
                        help=f"chip size (default {DEFAULT_CHIP_SIZE}, as 'groundbreak chips')")
    parser.add_argument("--stride", type=positive_int, default=DEFAULT_CHIP_STRIDE,
                        help=f"chip stride (default {DEFAULT_CHIP_STRIDE})")
    parser.add_argument("--only-folds", type=comma_list,
                        help="run only these folds (e.g. 0,1), e.g. one process per core")
    add_held_out_arguments(parser)
    parser.add_argument("--tta", action="store_true",
                        help="score the held-out cities with flip test-time augmentation "
                        "(evaluation_tta.json, cv_tta.json; with --final, the final bundle's "
                        "tta_threshold, its threshold from the run without --tta); training is "
                        "the same")
    parser.add_argument("--date-matching", choices=DATE_MATCHING_MODES, default=None,
                        help="match the held-out cities' dates this way at prediction instead of "
                        "as each fold's bundle says (evaluation_MODE.json, cv_MODE.json; with "
                        "--final, the final bundle's date_matching); training is the same")
    parser.add_argument("--window", type=positive_int,
                        help="predict the held-out cities with windows of this size instead of "
                        "each fold bundle's (with --overlap; evaluation_MODE_wWoO.json; with "
                        "--final, the final bundle's window); training is the same")
    parser.add_argument("--overlap", type=int, help="the overlap of --window's windows")
    parser.add_argument("--final", action="store_true",
                        help="after the folds, train on every labelled city (OUT/final) and "
                        "export it at the out-of-fold threshold")
    parser.add_argument("--only-final", action="store_true",
                        help="train only the final model (OUT/final), e.g. in a process of its "
                        "own beside the folds; a later run with --final exports it")
    return parser


def add_held_out_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--cloud-mask`` and ``--keep-maps``: how the held-out cities are predicted
    (as ``predict`` does) and whether their maps are kept (``cv`` and ``cv-ensemble``)."""
    parser.add_argument("--device", type=device_argument, default="auto",
                        help="device of the held-out prediction (auto, cpu, cuda, cuda:N)")
    parser.add_argument("--cloud-mask", choices=CLOUD_MASK_MODES, default="auto",
                        help="cloud masking of the held-out prediction, as in predict")
    parser.add_argument("--keep-maps", action="store_true",
                        help="keep the held-out probability/mask rasters in OUT/foldK/maps "
                        "(a rescoring with --window or --tta: maps_wWoO_tta)")


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak cv``."""
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.final and args.only_final:
        parser.error("--final and --only-final exclude each other")
    if (args.window is None) != (args.overlap is None):
        parser.error("--window and --overlap go together")
    if args.overlap is not None and not 0 <= args.overlap < args.window:
        parser.error(f"--overlap must be in [0, {args.window}), got {args.overlap}")
    args.held_out_window = None if args.window is None else (args.window, args.overlap)
    if not args.config.is_file():
        raise InputError(args.config, "training config does not exist")
    args.chips_date_matching = date_matching_of(args.config, extra)
    specs = [s for s in oscd_pairs(args.oscd_root) if s.label is not None]
    folds = resolve_folds(args.folds, specs)
    only = range(len(folds))
    if args.only_folds is not None:
        if not all(f.isdigit() and int(f) < len(folds) for f in args.only_folds):
            parser.error(f"--only-folds: fold numbers between 0 and {len(folds) - 1}")
        only = [int(f) for f in args.only_folds]
    settings = {
        "config": str(args.config),
        "config_sha256": hashlib.sha256(args.config.read_bytes()).hexdigest(),
        "config_content_sha256": config_content_sha256(args.config),
        "oscd_root": str(args.oscd_root.resolve()),
        "size": args.size,
        "stride": args.stride,
        "folds": folds,
        "train_overrides": extra,
        "cloud_mask": args.cloud_mask,
    }
    check_settings(args.out, settings)
    if args.only_final:
        train_last(args.out / "final", specs, args, extra, "final")
        print(f"final model trained in {args.out / 'final'}; when every fold is done, a run with "
              "--final exports it at the out-of-fold threshold")
        return 0
    evaluation = f"evaluation{scored(args)}.json"
    for k in only:
        if (args.out / f"fold{k}" / evaluation).is_file():
            print(f"fold {k}: done, skipped", flush=True)
            continue
        run_fold(k, folds[k], specs, args, extra)
    done = [k for k in range(len(folds)) if (args.out / f"fold{k}" / evaluation).is_file()]
    if len(done) < len(folds):
        print(f"{len(done)} of {len(folds)} folds done; rerun for the rest")
        return 0
    name = args.out.name + (f" + date matching {args.date_matching}" if args.date_matching else "")
    name += f" + windows {args.window}/{args.overlap}" if args.window is not None else ""
    name += " + flip TTA" if args.tta else ""
    result = aggregate(args.out, folds, name, scored(args), specs)
    cv_json, cv_md = (args.out / f"cv{scored(args)}{ext}" for ext in (".json", ".md"))
    cv_json.write_text(json.dumps(result, indent=2) + "\n")
    cv_md.write_text(markdown(result, settings))
    p = result["pooled"]
    print(
        f"out-of-fold, {len(folds)} folds, {len(result['per_city_f1'])} cities, threshold "
        f"{result['oof_threshold']:.2f} (best pooled): F1 {p['f1']:.4f}  precision "
        f"{p['precision']:.4f}  recall {p['recall']:.4f}  IoU {p['iou']:.4f}"
    )
    print(f"F1 at 0.5: {result['pooled_at_0.5']['f1']:.4f}; per fold: "
          f"{', '.join(f'{f:.3f}' for f in result['per_fold_f1'])} "
          f"(mean {result['fold_f1_mean']:.3f} ± {result['fold_f1_std']:.3f})")
    print("per city: " + ", ".join(f"{c} {f:.3f}" for c, f in result["per_city_f1"].items()))
    if result["by_region_size"]:
        print("\n".join(scene_evaluate.format_region_table(
            result["by_region_size"], result["oof_threshold"]
        )))
    print(f"wrote {cv_json} and {cv_md}")
    if args.final:
        path = train_final(specs, args, extra, result)
        meta = json.loads((path / "model.json").read_text())
        tta = f", {meta['tta_threshold']:.2f} with TTA" if "tta_threshold" in meta else ""
        print(f"final bundle (all {len(specs)} cities, threshold {meta['threshold']:.2f}{tta}): "
              f"{path}")
    return 0

