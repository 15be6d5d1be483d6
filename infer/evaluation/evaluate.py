"""``groundbreak evaluate``: score a model bundle on whole labelled scenes, or on chips.

Usage::

    groundbreak evaluate --model BUNDLE --oscd-root ../shared/data/oscd \\
        --cities cupertino,hongkong,nantes [--threshold T] [--maps DIR] [--out metrics.json]
    groundbreak evaluate --model BUNDLE --pairs pairs.csv [--cities ID,ID]
    groundbreak evaluate --model BUNDLE --chips chips/oscd [--split val] [--batch-size 16]

With ``--oscd-root`` or ``--pairs`` every pair is predicted whole by the tiled predictor that
``groundbreak predict`` uses and every labelled pixel counts once; the pooled scores at the
bundle's threshold (or ``--threshold``), the best pooled threshold and each pair's scores are
printed (see :mod:`groundbreak.infer.evaluation.scene_evaluate`). This is the evaluation the model
card and a bundle's threshold rest on. A scored pair that the bundle was trained or selected on (its
``model.json`` records the training chips' pairs) is named in a warning on stderr and flagged in
the JSON (``seen_in_training``: ``"training"``, ``"validation"`` or null): its scores are not
held-out figures.

With ``--chips`` the bundle scores the chips of one split instead (overlapping chips count a pixel
up to four times, unblended: a quick check, not the figure to publish).

The bundle is run over every chip of the split (batched, without gradients, on the CPU or a
CUDA GPU), with the bundle's own bands and normalisation, never the chips directory's. True and
false positives and false negatives are pooled over all labelled pixels of the split (label 255,
and pixels of unlabelled chips, are left out), then precision, recall, F1 and IoU of the change
class are computed from the pooled counts; a ratio with nothing to count (0/0) is 0, never NaN.

It sits in ``infer``, not ``train``: scene scores come from the tiled predictor, which needs the
bundle from ``train`` (:mod:`groundbreak.infer.evaluation` says why evaluation moved up rather
than the predictor down).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.data import DataLoader, Dataset

from groundbreak.datasets.clouds import CLOUD_MASK_MODES
from groundbreak.datasets.datamodule import ChipsDirectory, read_chip
from groundbreak.datasets.date_matching import DATE_MATCHING_MODES
from groundbreak.datasets.errors import InputError
from groundbreak.datasets.labels import IGNORE
from groundbreak.train.arguments import (
    device_argument,
    non_negative_int,
    positive_int,
    threshold_argument,
)
from groundbreak.train.bundle import ModelBundle, default_bundle_path, load_bundle
from groundbreak.train.devices import resolve_device
from groundbreak.train.metrics import PooledChangeMetrics


class BundleChipDataset(Dataset[dict[str, torch.Tensor]]):
    """The labelled chips of one split, as a bundle expects them (its bands, its normalisation).

    Each item holds ``before`` and ``after`` float32 ``(C, H, W)`` tensors and ``mask`` uint8
    ``(H, W)`` (0, 1, or 255 = ignore), all padded to ``size`` (0 in the images, 255 in the mask).
    """

    def __init__(
        self, directory: ChipsDirectory, split: str, bundle: ModelBundle, size: int
    ) -> None:
        rows = directory.split_rows(split)
        labelled = rows[rows["label"].fillna("").astype(str) != ""].reset_index(drop=True)
        if labelled.empty:
            raise InputError(directory.root, f"split {split!r} has no labelled chips to score")
        if bundle.date_matching != directory.date_matching:
            raise InputError(
                directory.root / "dataset.json",
                f"the chips were cut with date matching {directory.date_matching!r} but model "
                f"{bundle.name!r} matches dates with {bundle.date_matching!r}: score it on whole "
                "scenes (--oscd-root or --pairs) or on chips cut its way",
            )
        self.root = directory.root
        self.paths = [directory.root / str(p) for p in labelled["path"]]
        self.band_count = len(directory.bands)
        self.band_indices = [directory.bands.index(b) for b in bundle.bands]
        self.bundle = bundle
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.paths[index]
        before, after, label = self._read(path)
        if max(label.shape) > self.size:
            raise InputError(path, f"chip {label.shape} is larger than the chip size {self.size}")
        pad_h, pad_w = self.size - label.shape[0], self.size - label.shape[1]
        images = [
            F.pad(torch.from_numpy(self.bundle.normalize(x)), (0, pad_w, 0, pad_h))
            for x in (before, after)
        ]
        mask = F.pad(torch.from_numpy(label), (0, pad_w, 0, pad_h), value=IGNORE)
        return {"before": images[0], "after": images[1], "mask": mask}

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The bundle's bands of one chip file and its label."""
        before, after, label = read_chip(path, self.band_count, self.band_indices)
        if label is None:
            raise InputError(path, f"no label of shape {before.shape[1:]} in a labelled chip")
        return before, after, label


@torch.no_grad()
def evaluate_bundle(
    bundle: ModelBundle,
    chips_dir: str | Path,
    split: str = "val",
    threshold: float | None = None,
    batch_size: int = 16,
    device: str = "auto",
    num_workers: int = 0,
) -> dict[str, Any]:
    """Pooled precision, recall, F1 and IoU of a bundle on one split of a chips directory.

    Returns:
        A JSON-ready dict: ``bundle``, ``bundle_path``, ``chips``, ``split``, ``threshold``,
        ``chips_count``, ``pixels`` (labelled pixels scored), ``changed_pixels``, ``tp``,
        ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``iou``, and ``best_f1`` with its
        ``best_threshold`` over a sweep of thresholds.

    Raises:
        InputError: When the chips lack the bundle's bands, the split is empty or unlabelled,
            or a chip file is unreadable.
    """
    directory = ChipsDirectory(chips_dir)
    bundle.check_scene_bands(directory.bands, source=directory.root / "dataset.json")
    threshold = bundle.threshold if threshold is None else float(threshold)
    stride = bundle.model.output_stride
    size = -(-max(directory.chip_size, 1) // stride) * stride
    dataset = BundleChipDataset(directory, split, bundle, size)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)

    target = resolve_device(device)
    model = bundle.model.to(target).eval()
    metrics = PooledChangeMetrics(threshold=threshold, ignore_index=IGNORE).to(target)
    pixels = changed = 0
    try:
        for batch in loader:
            mask = batch["mask"].to(target)
            logits = model(batch["before"].to(target), batch["after"].to(target))
            metrics.update(torch.sigmoid(logits.float()), mask)
            pixels += int((mask != IGNORE).sum())
            changed += int((mask == 1).sum())
    finally:
        bundle.model.to("cpu")
    counts = {name: int(getattr(metrics, name)) for name in ("tp", "fp", "fn")}
    scores = {name: float(value) for name, value in metrics.compute().items()}
    return {
        "bundle": bundle.name,
        "bundle_path": str(bundle.path.resolve()),
        "chips": str(directory.root.resolve()),
        "split": split,
        "threshold": threshold,
        "chips_count": len(dataset),
        "pixels": pixels,
        "changed_pixels": changed,
        **counts,
        **scores,
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``groundbreak evaluate`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="groundbreak evaluate",
        description="Score a model bundle on whole labelled scenes (--oscd-root or --pairs, "
        "through the tiled predictor) or on the chips of one split (--chips): pooled precision, "
        "recall, F1 and IoU of the change class.",
    )
    parser.add_argument(
        "--model", type=Path, help="model bundle folder (default: the shipped oscd-s2-default)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--oscd-root", type=Path, help="OSCD folder: score whole city scenes")
    source.add_argument("--pairs", type=Path, help="pairs CSV with labels: score whole scenes")
    source.add_argument("--chips", type=Path, help="chips directory: score the chips of --split")
    parser.add_argument(
        "--cities", type=comma_list, help="pairs (OSCD: cities) to score, comma-separated "
        "(default: every labelled one)",
    )
    parser.add_argument("--maps", type=Path, help="keep each pair's probability/mask rasters here")
    parser.add_argument("--tta", action="store_true", help="average identity and flips")
    parser.add_argument(
        "--cloud-mask", choices=CLOUD_MASK_MODES, default="auto",
        help="as in predict: clouds/shadows are unobserved (their labelled pixels count as no "
        "change); auto, s2cloudless, scl, none",
    )
    parser.add_argument(
        "--date-matching", choices=DATE_MATCHING_MODES, default=None,
        help="as in predict: match the after date to the before date this way instead of as "
        "the model bundle says",
    )
    parser.add_argument("--split", default="val", help="manifest split to score (default: val)")
    parser.add_argument(
        "--threshold", type=threshold_argument, help="probability threshold (default: the bundle's)"
    )
    parser.add_argument("--out", type=Path, help="write the metrics as JSON here")
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="chips (or windows) per batch"
    )
    parser.add_argument(
        "--workers", type=non_negative_int, default=0, help="DataLoader worker processes"
    )
    parser.add_argument("--device", type=device_argument, default="auto",
                        help="auto, cpu, cuda or cuda:N")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak evaluate``."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.chips is None:
        return _main_scenes(args)
    if (args.cities is not None or args.maps is not None or args.tta or args.cloud_mask != "auto"
            or args.date_matching is not None):
        parser.error(
            "--cities, --maps, --tta, --cloud-mask and --date-matching score whole scenes: "
            "use --oscd-root or --pairs"
        )
    bundle = load_bundle(args.model if args.model is not None else default_bundle_path())
    result = evaluate_bundle(
        bundle,
        args.chips,
        split=args.split,
        threshold=args.threshold,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
    )
    print(
        f"{result['bundle']} on {result['split']} ({result['chips_count']} chips, "
        f"{result['pixels']} labelled pixels, threshold {result['threshold']:.3f}): "
        f"precision {result['precision']:.4f}  recall {result['recall']:.4f}  "
        f"F1 {result['f1']:.4f}  IoU {result['iou']:.4f}"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def comma_list(text: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; an empty list is an error."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return items


def _main_scenes(args: argparse.Namespace) -> int:
    """``groundbreak evaluate --oscd-root/--pairs``: whole-scene evaluation."""
    from groundbreak.infer.evaluation import scene_evaluate
    from groundbreak.infer.prediction.predictor import TiledPredictor

    bundle = load_bundle(args.model if args.model is not None else default_bundle_path())
    specs = scene_evaluate.labelled_pair_specs(args.oscd_root, args.pairs, args.cities)
    predictor = TiledPredictor(
        bundle, batch_size=args.batch_size, tta=args.tta, device=args.device,
        cloud_mask=args.cloud_mask, date_matching=args.date_matching,
    )
    pairs = scene_evaluate.open_labelled_pairs(specs, predictor)
    seen = bundle.seen_pairs
    for role in ("training", "validation"):
        named = [spec.pair_id for spec in specs if seen.get(spec.pair_id) == role]
        if named:
            print(
                f"warning: {', '.join(named)} {'is' if len(named) == 1 else 'are'} in the "
                f"{role} data of model {bundle.name!r} ({bundle.path / 'model.json'}): "
                "not held-out scores",
                file=sys.stderr,
            )
    threshold = bundle.threshold if args.threshold is None else float(args.threshold)
    results = scene_evaluate.evaluate_scenes(predictor, pairs, maps_dir=args.maps)
    result = {
        "bundle": bundle.name,
        "bundle_path": str(bundle.path.resolve()),
        "source": str((args.oscd_root or args.pairs).resolve()),
        "tta": args.tta,
        "cloud_mask": args.cloud_mask,
        "date_matching": predictor.date_matching,
        **scene_evaluate.summary(results, threshold),
    }
    for row in result["per_pair"]:
        row["seen_in_training"] = seen.get(row["pair_id"])
    print(scene_evaluate.format_summary(result, bundle.name))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(scene_evaluate.dumps(result))
        print(f"wrote {args.out}")
    return 0
