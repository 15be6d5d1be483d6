"""``groundbreak ensemble``: combine model bundles into one ensemble bundle.

Usage::

    groundbreak ensemble checkpoints/oscd-s2-unet runs/cv/oscd_fc_ef_res/final/bundle \\
        --out runs/my-ensemble --threshold 0.43 [--window 512 --overlap 64] \\
        [--member-thresholds 0.58,0.17] [--name NAME]

The ensemble (:class:`~groundbreak.train.ensemble_network.ChangeEnsemble`) averages its members'
logits, each centred on the logit of its member's operating threshold (the member bundle's
``threshold``, or ``--member-thresholds``), so every member counts as much at its own operating
point. ``--threshold`` is the ensemble's own operating threshold (0.5 is the average of the
members' operating points; pick it on held-out data, as ``groundbreak cv-ensemble`` does).

The members must read the same bands with the same normalisation, radiometry, date matching and
pixel size (models trained on the same chips do), or the command refuses them and names the
difference. The bundle is one model for every command (``predict``, ``rank``, ``nightly``...);
``--window``/``--overlap`` become its prediction defaults (``model.json`` ``window``, ``overlap``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groundbreak.datasets.errors import InputError
from groundbreak.train.arguments import positive_int, threshold_argument
from groundbreak.train.bundle import ModelBundle, load_bundle, save_bundle
from groundbreak.train.ensemble_network import MAX_MEMBERS, ChangeEnsemble, logit_offset


def check_members(members: Sequence[ModelBundle]) -> None:
    """Raise InputError (naming the member's model.json) unless the members read the same input.

    Bands, normalisation (float32 values), radiometry, date matching and pixel size must agree,
    and no member may be an ensemble itself.
    """
    for member in members:
        if isinstance(member.model, ChangeEnsemble):
            raise InputError(
                member.path / "model.json",
                "is an ensemble itself; combine its members (training.ensemble_of) instead",
            )
    first = members[0]
    for member in members[1:]:
        where = member.path / "model.json"
        if member.bands != first.bands:
            raise InputError(
                where,
                f"reads bands {','.join(member.bands)}, the first member ({first.path}) "
                f"{','.join(first.bands)}; ensemble members must read the same bands",
            )
        if not (np.array_equal(member.mean, first.mean) and np.array_equal(member.std, first.std)):
            raise InputError(
                where,
                f"normalises its bands otherwise than the first member ({first.path}); ensemble "
                "members must be trained on chips with the same statistics",
            )
        own, firsts = _shared(member), _shared(first)
        for key, value in own.items():
            if value != firsts[key]:
                raise InputError(
                    where,
                    f"{key} {value!r} differs from the first member's ({first.path}) "
                    f"{firsts[key]!r}",
                )


def _shared(bundle: ModelBundle) -> dict[str, Any]:
    """What every member must agree on beside bands and normalisation, as the bundle reads it
    (absent keys as their defaults; the radiometry as its convention, not who stated it)."""
    return {
        "radiometry": bundle.radiometry.to_dict(),
        "date_matching": bundle.date_matching,
        "pixel_size_m": bundle.pixel_size_m,
    }


def combine_bundles(
    members: Sequence[ModelBundle],
    out: str | Path,
    threshold: float = 0.5,
    *,
    member_thresholds: Sequence[float] | None = None,
    name: str | None = None,
    window: int | None = None,
    overlap: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    date_matching: str | None = None,
    threshold_source: str = "given to groundbreak ensemble",
    tta_threshold: float | None = None,
) -> ModelBundle:
    """Write the ensemble bundle of ``members`` to ``out`` and load it back.

    Args:
        members: The member bundles (2 to :data:`MAX_MEMBERS`), checked by
            :func:`check_members`.
        out: The bundle folder to write.
        threshold: The ensemble's operating threshold.
        member_thresholds: The threshold each member's logit is centred on; default each
            member bundle's ``threshold``.
        name: The bundle name (default: the folder name).
        window: The prediction window the ensemble runs with by default (``overlap`` beside it).
        overlap: Its overlap (default a quarter of ``window``, rounded down to the output
            stride, the predictor's rule).
        metrics: ``model.json`` ``metrics`` (e.g. the ensemble's out-of-fold scores).
        date_matching: The bundle's date matching; default the members'.
        threshold_source: Where ``threshold`` comes from (``model.json`` ``training``).
        tta_threshold: The ensemble's threshold with flip TTA, when one was chosen.

    Raises:
        InputError: For members that do not fit together, or a bad threshold or window.
    """
    if len(members) < 2:
        raise InputError(out, f"an ensemble needs at least 2 member bundles, got {len(members)}")
    check_members(members)
    thresholds = (
        [m.threshold for m in members] if member_thresholds is None else list(member_thresholds)
    )
    if len(thresholds) != len(members):
        raise InputError(
            out, f"{len(thresholds)} member thresholds for {len(members)} members; give one each"
        )
    try:
        model = ChangeEnsemble([m.model for m in members], [logit_offset(t) for t in thresholds])
    except ValueError as err:
        raise InputError(out, f"cannot combine the members: {err}") from err
    first = members[0]
    meta: dict[str, Any] = {
        key: value for key, value in first.meta.items()
        if key not in ("architecture", "format_version", "versions", "tta_threshold", "name",
                       "window", "overlap")
    }
    if overlap is not None and window is None:
        raise InputError(out, "--overlap needs --window")
    if window is not None:
        meta["window"] = window
        stride = model.output_stride
        meta["overlap"] = overlap if overlap is not None else window // 4 // stride * stride
    meta.update(
        name=name,
        threshold=threshold,
        metrics=dict(metrics or {}),
        training={
            "ensemble_of": [
                {"name": m.name, "path": str(m.path), "threshold": t,
                 "training": m.meta["training"]}
                for m, t in zip(members, thresholds, strict=True)
            ],
            "threshold_source": threshold_source,
        },
    )
    if date_matching is not None:
        meta["date_matching"] = date_matching
    if tta_threshold is not None:
        meta["tta_threshold"] = tta_threshold
    return load_bundle(save_bundle(model, meta, out))


def build_parser() -> argparse.ArgumentParser:
    """The ``groundbreak ensemble`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="groundbreak ensemble",
        description="Combine model bundles into one ensemble bundle: the members' logits, each "
        "centred on its operating threshold, averaged.",
    )
    parser.add_argument("members", type=Path, nargs="+",
                        help=f"member bundles (2 to {MAX_MEMBERS})")
    parser.add_argument("--out", type=Path, required=True, help="ensemble bundle folder to write")
    parser.add_argument("--threshold", type=threshold_argument, default=0.5,
                        help="the ensemble's operating threshold (default 0.5: the average of "
                        "the members' operating points)")
    parser.add_argument("--member-thresholds", type=_thresholds,
                        help="comma-separated threshold each member is centred on (default each "
                        "member bundle's threshold)")
    parser.add_argument("--window", type=positive_int,
                        help="the bundle's default prediction window (pixels)")
    parser.add_argument("--overlap", type=int, help="its overlap (default window / 4)")
    parser.add_argument("--name", help="bundle name (default: the folder name)")
    return parser


def _thresholds(text: str) -> list[float]:
    return [threshold_argument(item.strip()) for item in text.split(",")]


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak ensemble``."""
    args = build_parser().parse_args(list(argv))
    members = [load_bundle(path) for path in args.members]
    bundle = combine_bundles(
        members, args.out, args.threshold, member_thresholds=args.member_thresholds,
        name=args.name, window=args.window, overlap=args.overlap,
    )
    record = bundle.meta["training"]["ensemble_of"]
    print(f"wrote ensemble bundle {bundle.path} ({bundle.name}: {len(record)} members, "
          f"threshold {bundle.threshold:.3f}, window {bundle.window or 'default'})")
    for member in record:
        print(f"  {member['name']} ({member['path']}), centred on {member['threshold']:.3f}")
    return 0
