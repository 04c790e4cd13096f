"""``otrain-optimise-dataset-size``: learning curve, test scores against training-set size."""

from __future__ import annotations

import argparse

from otrain.cli.common import add_device, add_overwrite
from otrain.evaluation.learning_curve import LearningCurveConfig, learning_curve
from otrain.models.networks import available_architectures
from otrain.models.normalise import TRAIN_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-optimise-dataset-size`` (O'TRAIN's plus repeats, seeds, ...)."""
    d = LearningCurveConfig()
    parser.add_argument("--cube", required=True, help="labelled datacube (.h5 or O'TRAIN .npz)")
    parser.add_argument("--model-path", required=True,
                        help="root of the models: <model-path>/CNN_training/<name>_size_<n>_r<k>/")
    parser.add_argument("--model-name", required=True, help="base name of the trained models")
    parser.add_argument("--outdir", required=True,
                        help="folder for learning_curve.csv / .json and the plots")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help=f"maximum epochs per training (default: {d.epochs})")
    parser.add_argument("--n_sections", "--n-sections", dest="n_sections", type=int,
                        default=d.n_sections,
                        help="number of sizes: the pool is used in n_sections growing steps, "
                             f"the last being all of it (default: {d.n_sections})")
    parser.add_argument("--repeats", type=int, default=d.repeats,
                        help="trainings per size with different seeds and subsets, for error "
                             f"bars; 1 = O'TRAIN's single run (default: {d.repeats})")
    parser.add_argument("--dropout", type=float, default=d.dropout,
                        help=f"rate of every dropout layer (default: {d.dropout})")
    parser.add_argument("--test-frac", type=float, default=d.test_frac,
                        help="fraction of the cube held out once as the common test set "
                             f"(default: {d.test_frac})")
    parser.add_argument("--frac", dest="val_frac", type=float, default=d.val_frac,
                        help="fraction of each subset used for validation "
                             f"(default: {d.val_frac})")
    parser.add_argument("--arch", choices=available_architectures(), default=d.arch,
                        help=f"network (default: {d.arch})")
    parser.add_argument("--threshold", type=float, default=d.threshold,
                        help="P(real) above which a cutout counts as real in the metrics "
                             f"(default: {d.threshold})")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of the test split; repeat r trains with seed + r "
                             f"(default: {d.seed})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"cutouts per step (default: {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr,
                        help=f"Adam learning rate (default: {d.lr})")
    parser.add_argument("--normalise", choices=TRAIN_METHODS, default=d.normalise,
                        help="per-cutout scaling (as otrain-train; default: "
                             f"{d.normalise})")
    parser.add_argument("--group-by", default=None, metavar="COLUMN",
                        help="table column (e.g. objectId) whose values never straddle the "
                             "test set and the pool, nor a run's train/validation split")
    parser.add_argument("--patience", type=int, default=d.patience,
                        help="early-stopping patience in epochs; 0 never stops early "
                             f"(default: {d.patience})")
    add_device(parser, "where to train; auto = a GPU if any (default: auto)")
    parser.add_argument("--lean", action="store_true",
                        help="after scoring each run, delete its checkpoint.pt and validation "
                             "cube (keeps the model file, history and metrics)")
    add_overwrite(parser, "replace existing outputs and models of the same names")


def run(args: argparse.Namespace) -> int:
    """Run the trainings, write the table and plots, and print the plateau size."""
    config = LearningCurveConfig(
        epochs=args.epochs, n_sections=args.n_sections, repeats=args.repeats,
        dropout=args.dropout, seed=args.seed, test_frac=args.test_frac, val_frac=args.val_frac,
        arch=args.arch, threshold=args.threshold, batch_size=args.batch_size, lr=args.lr,
        normalise=args.normalise, patience=args.patience or None, device=args.device,
        lean=args.lean, group_by=args.group_by)
    result = learning_curve(args.cube, args.model_path, args.model_name, args.outdir, config,
                            overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        print(f"Saved to {result.csv.parent}")
    return 0
