"""``otrain-plot-results``: ROC, precision-recall, threshold, magnitude and calibration plots."""

from __future__ import annotations

import argparse

from otrain.cli.common import (
    add_overwrite,
    add_prevalence,
    add_scoring,
    add_threshold,
    add_validation_inputs,
    resolve_threshold,
)
from otrain.evaluation.plots import plot_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-plot-results`` (those of O'TRAIN plus bins and overwrite)."""
    add_validation_inputs(parser)
    parser.add_argument("--path-plots", required=True,
                        help="folder for the plots; created if needed (its parent must exist), "
                             "never emptied")
    add_threshold(parser)
    parser.add_argument("--n-bins", type=int, default=6,
                        help="magnitude and magnitude-error bins, from the data's quantiles "
                             "(default: 6)")
    add_prevalence(parser)
    add_scoring(parser)
    add_overwrite(parser, "replace plots of the same names written by an earlier run")


def run(args: argparse.Namespace) -> int:
    """Score the cube once and write the plots."""
    plot_results(args.path_cube_validation, args.model, args.path_plots,
                 threshold=resolve_threshold(args.threshold, args.model),
                 overwrite=args.overwrite, n_bins=args.n_bins,
                 batch_size=args.batch_size, device=args.device, quiet=args.quiet,
                 prevalence=args.prevalence)
    return 0
