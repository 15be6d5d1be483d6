"""``groundbreak predict``: change probability and mask rasters for one tile pair.

Example::

    groundbreak predict --before images/beirut/imgs_1 --after images/beirut/imgs_2 \\
        --out runs/beirut [--model checkpoints/oscd-s2-default] [--tta] [--threshold 0.5] \\
        [--devices 2]

Each scene is a multi-band raster, a folder of per-band rasters (Sentinel-2 style) or an RGB
image. Writes ``OUT/probability.tif`` and ``OUT/mask.tif`` on the before-scene's grid and prints
their paths.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from groundbreak.datasets.clouds import CLOUD_MASK_MODES
from groundbreak.datasets.date_matching import DATE_MATCHING_MODES
from groundbreak.datasets.pair import TilePair
from groundbreak.datasets.scene import check_mask_raster, open_scene
from groundbreak.infer.prediction.blending import BLEND_MODES
from groundbreak.infer.prediction.coverage import too_little_valid_data
from groundbreak.infer.prediction.inference import RUNTIMES
from groundbreak.train.arguments import device_argument, positive_int, threshold_argument


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``groundbreak predict``."""
    parser = argparse.ArgumentParser(
        prog="groundbreak predict",
        description="Predict change between two scenes: writes OUT/probability.tif and "
        "OUT/mask.tif on the before-scene's grid.",
    )
    parser.add_argument("--before", required=True, type=Path, help="the older scene")
    parser.add_argument("--after", required=True, type=Path, help="the newer scene")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--model", type=Path, default=None, help="model bundle folder (default: the shipped one)"
    )
    parser.add_argument("--tta", action="store_true", help="average identity and flips")
    parser.add_argument(
        "--threshold", type=threshold_argument, default=None,
        help="cut the mask at this change probability, in (0, 1) (default: the bundle's "
        "threshold; with --tta its TTA threshold when it states one)",
    )
    parser.add_argument(
        "--date-matching", choices=DATE_MATCHING_MODES, default=None,
        help="match the after date to the before date this way before the model (none; "
        "mean_std: band by band, mean and standard deviation over the pixels both dates see); "
        "default: as the model bundle says",
    )
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="windows read and predicted together (default: 4 of 256², 1 of 512²)")
    parser.add_argument(
        "--window", type=positive_int, default=None,
        help="window side (default: the predictor's, from the bundle's chip size)"
    )
    parser.add_argument(
        "--overlap", type=int, default=None, help="window overlap (default: window / 4)"
    )
    parser.add_argument("--blend", choices=BLEND_MODES, default="cosine", help="overlap blending")
    parser.add_argument(
        "--device", type=device_argument, default="auto",
        help="auto (CUDA when available), cpu, cuda, cuda:1, ..."
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the model: auto (OpenVINO on a CPU when installed, else torch; "
        "$GROUNDBREAK_CPU_RUNTIME over it), "
        "torch, onnx (ONNX Runtime) or openvino (OpenVINO); the last two on a CPU only, see the "
        "README",
    )
    parser.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        help="processes/GPUs to share the windows among (through Lightning) when above 1",
    )
    parser.add_argument(
        "--cloud-mask",
        choices=CLOUD_MASK_MODES,
        default="auto",
        help="clouds and shadows on either date are unobserved (nodata), never change: auto "
        "(a given mask, else the product's SCL, else s2cloudless on Sentinel-2 L1C), "
        "s2cloudless, scl, none",
    )
    parser.add_argument("--before-mask", type=Path, default=None,
                        help="a cloud/shadow mask raster of the before-scene (non-zero = hidden)")
    parser.add_argument("--after-mask", type=Path, default=None,
                        help="a cloud/shadow mask raster of the after-scene (non-zero = hidden)")
    parser.add_argument("--nodata", type=float, default=None,
                        help="a nodata value for both scenes that overrides the files' own")
    parser.add_argument("--pair-id", default=None, help="name of the pair (default: OUT's name)")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``groundbreak predict``; InputError propagates to the dispatcher (exit code 2)."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.devices > 1 and args.runtime not in ("auto", "torch"):
        parser.error("--devices above 1 runs the model with torch; leave out --runtime")

    from groundbreak.infer.prediction.predictor import TiledPredictor
    from groundbreak.train.bundle import default_bundle_path, load_bundle

    bundle = load_bundle(args.model if args.model is not None else default_bundle_path(),
                         build=False)  # built by the predictor if it must
    before = open_scene(args.before, nodata=args.nodata)
    after = open_scene(args.after, nodata=args.nodata)
    for scene, mask in ((before, args.before_mask), (after, args.after_mask)):
        if mask is not None:
            scene.cloud_mask = str(check_mask_raster(mask))
    for scene in (before, after):
        bundle.check_scene_bands(scene)
    pair = TilePair(args.pair_id or args.out.resolve().name, before, after)
    try:
        predictor = TiledPredictor(
            bundle,
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            tta=args.tta,
            device=args.device,
            blend=args.blend,
            runtime=args.runtime,
            cloud_mask=args.cloud_mask,
            date_matching=args.date_matching,
            threshold=args.threshold,
        )
    except ValueError as err:
        parser.error(str(err))

    if args.devices > 1:
        from groundbreak.infer.prediction.distributed import DistributedPredictor

        result = DistributedPredictor(predictor, devices=args.devices).predict_pair(pair, args.out)
        if result is None:  # a rank launched by Lightning: rank 0 reports
            return 0
    else:
        result = predictor.predict_pair(pair, args.out)
    print(result.probability_path)
    print(result.mask_path)
    too_little = too_little_valid_data(result)
    if too_little:
        print(f"groundbreak predict: warning: {too_little}", file=sys.stderr)
    if result.unobserved_fraction > 0:
        print(
            f"clouds/shadows hide {result.unobserved_fraction:.1%} of the pair "
            f"(cloud mask: before {result.cloud_masks[0]}, after {result.cloud_masks[1]})",
            file=sys.stderr,
        )
    return 0
