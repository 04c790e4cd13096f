"""``otrain report``: one self-contained HTML report of a trained model."""

from __future__ import annotations

import argparse

from otrain.cli.common import add_overwrite, add_prevalence, add_scoring, add_threshold
from otrain.evaluation.report import build_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain report``."""
    parser.add_argument("--model-dir", default=None,
                        help="training folder <model-path>/CNN_training/<name>/ (model file, "
                             "metrics.json, history.csv, test and validation cubes)")
    parser.add_argument("--model", default=None,
                        help="model file (.safetensors); default: the one in --model-dir")
    parser.add_argument("--cube", default=None,
                        help="labelled cube to evaluate on; default: the test cube of "
                             "--model-dir (test_set/datacube/cube_test.h5)")
    parser.add_argument("--output", "-o", default=None,
                        help="HTML file to write (default: <model-dir>/report.html, or "
                             "<model>_report.html beside the model file)")
    add_threshold(parser)
    add_prevalence(parser)
    add_scoring(parser)
    add_overwrite(parser, "replace an existing report")


def run(args: argparse.Namespace) -> int:
    """Evaluate once and write the report; its path is printed."""
    threshold = None if args.threshold == "model" else args.threshold  # None: the model's
    build_report(model_dir=args.model_dir, model=args.model, cube=args.cube, output=args.output,
                 threshold=threshold, overwrite=args.overwrite,
                 batch_size=args.batch_size, device=args.device, quiet=args.quiet,
                 prevalence=args.prevalence)
    return 0
