"""``otrain-diagnostics``: metrics, optimal thresholds and misclassified cutouts."""

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
from otrain.evaluation.diagnostics import print_diagnostics, run_diagnostics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-diagnostics`` (those of O'TRAIN plus sample size and seed)."""
    add_validation_inputs(parser)
    add_threshold(parser)
    parser.add_argument("--path-diagnostics", default="cnn_results",
                        help="folder for diagnostics.json and the exported cutouts "
                             "(default: cnn_results)")
    parser.add_argument("--n-examples", type=int, default=30,
                        help="number of well-classified cutouts (TP and TN each) exported at "
                             "random; all misclassified ones are exported (default: 30)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random well-classified sample (default: 0)")
    add_prevalence(parser)
    add_scoring(parser)
    add_overwrite(parser, "replace the outputs of an earlier run in --path-diagnostics")


def run(args: argparse.Namespace) -> int:
    """Score the cube once, write diagnostics.json and the cutouts, print the summary."""
    threshold = resolve_threshold(args.threshold, args.model)
    result = run_diagnostics(args.path_cube_validation, args.model, args.path_diagnostics,
                             threshold=threshold, n_examples=args.n_examples,
                             seed=args.seed, overwrite=args.overwrite,
                             batch_size=args.batch_size, device=args.device, quiet=args.quiet,
                             prevalence=args.prevalence)
    print_diagnostics(result, args.quiet)
    return 0
