"""``otrain-plot-results``: ROC, precision-recall, threshold, magnitude and calibration plots."""

from __future__ import annotations

import argparse

from otrain.evaluation.plots import plot_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-plot-results`` (those of O'TRAIN plus bins and overwrite)."""
    parser.add_argument("--path-cube-validation", required=True,
                        help="labelled datacube to evaluate on, including its extension (.h5, "
                             "or O'TRAIN .npz such as cube_validation.npz)")
    parser.add_argument("--model-path", required=True,
                        help="the trained model file, including its extension (.safetensors)")
    parser.add_argument("--path-plots", required=True,
                        help="folder for the plots; created if needed, never emptied")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="P(real) above which a candidate is called real (default: 0.5)")
    parser.add_argument("--n-bins", type=int, default=6,
                        help="magnitude and magnitude-error bins, from the data's quantiles "
                             "(default: 6)")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="cutouts scored at a time (default: 512)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run the model; auto = a GPU if any (default: auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace plots of the same names written by an earlier run")


def run(args: argparse.Namespace) -> int:
    """Score the cube once and write the plots."""
    plot_results(args.path_cube_validation, args.model_path, args.path_plots,
                 threshold=args.threshold, overwrite=args.overwrite, n_bins=args.n_bins,
                 batch_size=args.batch_size, device=args.device, quiet=args.quiet)
    return 0
