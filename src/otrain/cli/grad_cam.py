"""``otrain-grad-cam``: Grad-CAM overlays of correctly and wrongly classified cutouts."""

from __future__ import annotations

import argparse

from otrain.cli.common import (
    add_device,
    add_model_file,
    add_overwrite,
    add_threshold,
    resolve_threshold,
)
from otrain.evaluation.gradcam import run_grad_cam


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-grad-cam`` (those of O'TRAIN plus seed, device, overwrite)."""
    parser.add_argument("--cube", required=True,
                        help="labelled datacube, e.g. the test or validation cube of a training")
    add_model_file(parser, legacy=True)
    parser.add_argument("--cam_path", "--cam-path", dest="cam_path", default="grad_cam",
                        help="output folder, with true_positive/, true_negative/, "
                             "false_positive/ and false_negative/ inside (default: grad_cam)")
    parser.add_argument("--n_random", "--n-random", dest="n_random", type=int, default=30,
                        help="number of randomly chosen correctly classified cutouts per class; "
                             "all misclassified cutouts are drawn (default: 30)")
    add_threshold(parser)
    parser.add_argument("--method", choices=("hirescam", "gradcam", "occlusion"),
                        default="hirescam",
                        help="hirescam (default: gradient times activation, pixel by pixel), "
                             "gradcam (the classic, averaged gradient), or occlusion: the drop "
                             "of the explained class's probability under a sliding patch, a "
                             "model-agnostic check; either way deletion_test.png says whether "
                             "the maps point at pixels the network needs")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random choice of cutouts (default: 0)")
    add_device(parser, "where to run the network; auto = a GPU if any (default: auto)")
    add_overwrite(parser, "replace existing overlays")


def run(args: argparse.Namespace) -> int:
    """Compute and draw the overlays."""
    result = run_grad_cam(args.cube, args.model, args.cam_path, n_random=args.n_random,
                          threshold=resolve_threshold(args.threshold, args.model),
                          seed=args.seed, overwrite=args.overwrite,
                          device=args.device, quiet=args.quiet, method=args.method)
    if not args.quiet:
        print(f"Saved to {result.folder}")
    return 0
