"""``groundbreak cv-ensemble``: the out-of-fold figure of an ensemble of finished cv runs.

Usage::

    groundbreak cv-ensemble --members runs/cv/oscd_s2_radio_ref,runs/cv/oscd_fc_ef_res \\
        --out runs/cv/ens_ref_fc_ef_res --date-matching mean_std [--window 512 --overlap 64] \\
        [--keep-maps] [--tta] [--final BUNDLE,BUNDLE]

The members are ``groundbreak cv`` run folders with the same folds, every fold scored with the
same ``--date-matching`` (``foldK/bundle`` and ``foldK/evaluation_MODE.json``). For each fold K,
the ensemble of the members' fold-K bundles (:mod:`groundbreak.train.ensemble`) is written to
``OUT/foldK/bundle`` and its held-out cities are predicted whole and scored, as ``cv`` scores a
trained fold. Each member's logit is centred on that member's best pooled threshold over the
**other** folds' held-out cities, so nothing of fold K's cities chooses how fold K is combined.
The folds are then pooled as ``cv`` pools them (``OUT/cv_MODE.json``, ``OUT/cv_MODE.md``: the
out-of-fold threshold, scores and recall by region size).

With ``--tta`` the same fold bundles (each member centred on its threshold without TTA) predict the
held-out cities with flip test-time augmentation (as ``predict --tta``) into
``evaluation_MODE_tta.json``, pooled into ``cv_MODE_tta.json``/``.md``: the ensemble's TTA
figures at its own out-of-fold TTA threshold.

``--final A,B`` then combines the members' final bundles (trained on every city, each exported at
its own out-of-fold threshold, which centres it) into ``OUT/final/bundle`` at the ensemble's
out-of-fold threshold, its ``metrics`` the out-of-fold scores, with ``--window``/``--overlap`` as
its prediction defaults; with ``--tta`` its ``tta_threshold`` is the pooled TTA threshold, and its
``threshold`` comes from the same ``OUT``'s ``cv_MODE.json`` (run without ``--tta`` first). A fold
with its evaluation is skipped on a rerun; the settings are recorded in ``OUT/cv_settings.json``
and a rerun with others is refused.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from groundbreak.datasets.date_matching import DATE_MATCHING_MODES
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.layouts import oscd_pairs
from groundbreak.datasets.text_files import load_json_file
from groundbreak.infer.evaluation import crossval, scene_evaluate
from groundbreak.infer.evaluation.cv_markdown import markdown
from groundbreak.infer.evaluation.cv_pooling import aggregate, final_scores
from groundbreak.infer.evaluation.evaluate import comma_list
from groundbreak.train.arguments import positive_int
from groundbreak.train.bundle import ModelBundle, load_bundle
from groundbreak.train.ensemble import combine_bundles
from groundbreak.train.ensemble_network import MAX_MEMBERS


def member_settings(members: Sequence[Path]) -> dict[str, Any]:
    """The first member's ``cv_settings.json``, after checking every member has the same folds
    and OSCD root (an InputError naming the file that differs)."""
    settings = []
    for member in members:
        path = member / "cv_settings.json"
        if not path.is_file():
            raise InputError(path, "missing: not a groundbreak cv run folder")
        record = load_json_file(path, "cv settings")
        if not isinstance(record, dict) or "folds" not in record:
            raise InputError(path, "is not the settings of a groundbreak cv run (no folds)")
        settings.append(record)
    for member, other in zip(members[1:], settings[1:], strict=True):
        for key in ("folds", "oscd_root"):
            if other.get(key) != settings[0].get(key):
                raise InputError(
                    member / "cv_settings.json",
                    f"{key} differs from {members[0] / 'cv_settings.json'}; ensemble members "
                    "must be cross-validated on the same folds",
                )
    return settings[0]


def member_threshold(member: Path, k: int, folds: int, suffix: str) -> float:
    """The member's best pooled threshold over the held-out cities of every fold but ``k``."""
    total = scene_evaluate.ChangeHistogram()
    for j in range(folds):
        if j == k:
            continue
        path = member / f"fold{j}" / f"evaluation{suffix}.json"
        if not path.is_file():
            raise InputError(path, f"missing: fold {j} of this member is not scored yet")
        for row in json.loads(path.read_text())["per_pair"]:
            total = total + scene_evaluate.ChangeHistogram.from_json(row["histogram"])
    return float(total.best()["threshold"])


def member_train_seconds(member: Path, k: int, suffix: str) -> float:
    """The training seconds a member's fold ``k`` recorded."""
    path = member / f"fold{k}" / f"evaluation{suffix}.json"
    return float(json.loads(path.read_text()).get("train_seconds", 0.0))


def build_parser() -> argparse.ArgumentParser:
    """The ``groundbreak cv-ensemble`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="groundbreak cv-ensemble",
        description="Out-of-fold scores of an ensemble of finished 'groundbreak cv' runs: per "
        "fold, the members' fold bundles combined (each centred on its threshold from the other "
        "folds) and the held-out cities scored; pooled as 'cv' pools them.",
    )
    parser.add_argument("--members", type=comma_list, required=True,
                        help="comma-separated cv run folders (2 to 8), the same folds")
    parser.add_argument("--out", type=Path, required=True, help="run folder (resumable)")
    parser.add_argument("--window", type=positive_int,
                        help="prediction window of the ensemble (default: the predictor's)")
    parser.add_argument("--overlap", type=int, help="its overlap (default window / 4)")
    parser.add_argument("--date-matching", choices=DATE_MATCHING_MODES, default=None,
                        help="as cv --date-matching; the members' folds must be scored with it")
    crossval.add_held_out_arguments(parser)
    parser.add_argument("--tta", action="store_true",
                        help="score the held-out cities with flip test-time augmentation "
                        "(evaluation_MODE_tta.json, cv_MODE_tta.json); the fold bundles are the "
                        "same")
    parser.add_argument("--final", type=comma_list,
                        help="the members' final bundles, in --members order: combined at the "
                        "out-of-fold threshold into OUT/final/bundle")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak cv-ensemble``."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    members = [Path(m) for m in args.members]
    if not 2 <= len(members) <= MAX_MEMBERS:
        parser.error(f"--members: 2 to {MAX_MEMBERS} cv run folders, got {len(members)}")
    if args.final is not None and len(args.final) != len(members):
        parser.error(f"--final: one bundle per member ({len(members)}), got {len(args.final)}")
    base = member_settings(members)
    folds = [list(f) for f in base["folds"]]
    suffix = crossval.scored(args)
    member_suffix = suffix.removesuffix("_tta")  # members are centred without TTA either way
    settings = {
        "members": [str(m) for m in members],
        "folds": folds,
        "oscd_root": base["oscd_root"],
        "window": [args.window, args.overlap],
        "cloud_mask": args.cloud_mask,
    }
    crossval.check_settings(args.out, settings)
    specs = [s for s in oscd_pairs(Path(base["oscd_root"])) if s.label is not None]
    for k, held_out in enumerate(folds):
        if (args.out / f"fold{k}" / f"evaluation{suffix}.json").is_file():
            print(f"fold {k}: done, skipped", flush=True)
            continue
        thresholds = [member_threshold(m, k, len(folds), member_suffix) for m in members]
        bundle = combine_bundles(
            [load_bundle(m / f"fold{k}" / "bundle") for m in members],
            args.out / f"fold{k}" / "bundle",
            member_thresholds=thresholds, name=f"{args.out.name}-fold{k}",
            window=args.window, overlap=args.overlap,
        )
        print(f"fold {k}: members centred on {', '.join(f'{t:.2f}' for t in thresholds)}",
              flush=True)
        seconds = sum(member_train_seconds(m, k, member_suffix) for m in members)
        crossval.score_fold(bundle, k, held_out, specs, seconds, args)
    name = args.out.name + (f" + date matching {args.date_matching}" if args.date_matching else "")
    name += " + flip TTA" if args.tta else ""
    result = aggregate(args.out, folds, name, suffix, specs)
    cv_json, cv_md = (args.out / f"cv{suffix}{ext}" for ext in (".json", ".md"))
    cv_json.write_text(json.dumps(result, indent=2) + "\n")
    table = {"config": "ensemble of " + ", ".join(m.name for m in members), "size": "-",
             "stride": "-", "train_overrides": []}
    cv_md.write_text(markdown(result, table))
    p = result["pooled"]
    print(f"out-of-fold, {len(folds)} folds, threshold {result['oof_threshold']:.2f}: F1 "
          f"{p['f1']:.4f}  precision {p['precision']:.4f}  recall {p['recall']:.4f}")
    if result["by_region_size"]:
        print("\n".join(scene_evaluate.format_region_table(
            result["by_region_size"], result["oof_threshold"]
        )))
    if args.final is not None:
        final = write_final(args, result, suffix)
        tta = f", {final.tta_threshold:.2f} with TTA" if final.tta_threshold is not None else ""
        print(f"wrote the final ensemble {final.path} at threshold {final.threshold:.2f}{tta}")
    print(f"wrote {cv_json} and {cv_md}")
    return 0


def write_final(args: argparse.Namespace, result: dict[str, Any], suffix: str) -> ModelBundle:
    """Combine the members' final bundles (``--final``) into ``OUT/final/bundle`` at the pooled
    out-of-fold threshold, with the out-of-fold scores as its metrics; with ``--tta``, the
    threshold and scores without TTA come from ``OUT/cv_MODE.json`` and ``result`` gives the
    ``tta_threshold`` (:func:`cv_pooling.final_scores`)."""
    cv_json = args.out / f"cv{suffix.removesuffix('_tta')}.json"
    threshold, tta_threshold, metrics = final_scores(result, args.tta, cv_json, "cv-ensemble")
    return combine_bundles(
        [load_bundle(path) for path in args.final], args.out / "final" / "bundle",
        threshold, name=args.out.name, window=args.window, overlap=args.overlap,
        date_matching=args.date_matching, metrics=metrics, tta_threshold=tta_threshold,
        threshold_source=f"best pooled out-of-fold F1 of the ensemble ({cv_json})",
    )
