"""``otrain-train``: train the CNN on a datacube.

Several processes (DDP): ``otrain-train --nproc N ...`` on one machine, or under torchrun (the
run is distributed when torchrun's ``WORLD_SIZE`` is set)::

    torchrun --standalone --nproc_per_node=4 -m otrain.cli.train --cube ... --model-path ...

``python -m otrain.cli.train`` takes the same flags as ``otrain-train``. In a distributed run
only rank 0 prints; a user error is printed once, by the process that met it (which exits
with status 2; the others exit quietly, so torchrun reports that one as the root cause).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict

from otrain.cli.common import add_device, add_overwrite, add_precision
from otrain.errors import OtrainError
from otrain.metrics import format_metrics
from otrain.models.networks import available_architectures
from otrain.models.normalise import AUTO, TRAIN_METHODS
from otrain.training.config import (
    AUTO_MAX_EPOCHS,
    AUTO_MIN_EPOCHS,
    AUTO_PATIENCE_STEPS,
    AUTO_STEPS,
    AUTO_TARGET_FPR,
    LR_SCHEDULES,
    TrainConfig,
)
from otrain.training.ddp import PeerFailed, env_rank, launched
from otrain.training.loop import RESUME_KEYS, resumable_settings, train


def _auto_or_count(name: str, minimum: int) -> Callable[[str], int | str]:
    """An argparse type: ``auto`` or a whole number of epochs of at least ``minimum``."""
    def parse(text: str) -> int | str:
        if text.strip().lower() == AUTO:
            return AUTO
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of epochs or 'auto', got "
                                             f"{text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be at least {minimum}, got {value}")
        return value
    return parse


#: ``--epochs``: auto or >= 1; ``--patience``: auto or >= 0 (0: never stop early).
_epochs = _auto_or_count("epochs", 1)
_patience = _auto_or_count("patience", 0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-train`` (those of O'TRAIN plus splits, seeds and training)."""
    d = TrainConfig()
    parser.add_argument("--cube", required=True,
                        help="labelled datacube, including its extension (.h5 or O'TRAIN .npz)")
    parser.add_argument("--model-path", required=True,
                        help="output root; the model goes to <model-path>/CNN_training/<name>/")
    parser.add_argument("--model-name", required=True, help="name of the trained model")
    parser.add_argument("--epochs", type=_epochs, default=d.epochs,
                        help="maximum number of epochs, or auto: a budget of "
                             f"{AUTO_STEPS} optimiser steps, at least {AUTO_MIN_EPOCHS} and at "
                             f"most {AUTO_MAX_EPOCHS} epochs, stopping early once "
                             f"{AUTO_PATIENCE_STEPS} steps' worth of epochs (at least 5) bring no "
                             "lower validation loss; the best epoch is kept (default: auto)")
    parser.add_argument("--frac", dest="val_frac", type=float, default=None,
                        help=f"fraction of the cutouts used for validation (default: {d.val_frac})")
    parser.add_argument("--test-frac", type=float, default=None,
                        help="fraction held out as a test set, never seen in training; 0 for "
                             f"none (default: {d.test_frac})")
    parser.add_argument("--dropout", type=float, default=None,
                        help=f"rate of every dropout layer (default: {d.dropout})")
    point = parser.add_mutually_exclusive_group()
    point.add_argument("--threshold", type=float, default=None,
                       help="P(real) above which a candidate counts as real, stored in the "
                            "model and used in the metrics (default: the best MCC on the "
                            "validation rows among the thresholds whose false-positive rate is "
                            f"<= {AUTO_TARGET_FPR:g}; O'TRAIN's fixed 0.5 called about half the "
                            "bogus ZTF alerts real once P(real) is calibrated)")
    point.add_argument("--target-fnr", type=float, default=None, metavar="F",
                       help="choose the stored threshold on the validation rows (calibrated "
                            "scores): the highest whose false-negative rate is <= F, e.g. 0.05")
    point.add_argument("--target-fpr", type=float, default=None, metavar="F",
                       help="as --target-fnr, for the false-positive rate: the lowest "
                            "threshold whose validation FPR is <= F")
    parser.add_argument("--ensemble", type=int, default=d.ensemble, metavar="N",
                        help="train a deep ensemble of N networks (seeds seed..seed+N-1) kept "
                             "in one model file; each member early-stops on its own grouped "
                             "split of the training rows, the --frac validation rows stay "
                             "held out from all of them for calibration, threshold and metrics; "
                             "scores are the members' mean P(real), p_real_std their spread. "
                             "With --nproc the members train one after another, each with DDP "
                             f"(default: {d.ensemble})")
    parser.add_argument("--shared-split", dest="member_splits", action="store_false",
                        default=d.member_splits,
                        help="ensemble members all train on the same rows and early-stop on "
                             "the validation rows (only the seed differs)")
    parser.add_argument("--no-calibration", dest="calibrate", action="store_false",
                        default=d.calibrate,
                        help="do not calibrate (by default label1 is the calibrated P(real): "
                             "the class weights' prior shift undone with log(n_real/n_bogus) "
                             "of the training rows, then a temperature fitted on the validation "
                             "rows; ECE and Brier before and after go to metrics.json)")
    parser.add_argument("--group-by", default=None, metavar="COLUMN",
                        help="table column (e.g. objectId) whose values never straddle the "
                             "train/validation/test split")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed of the split, initial weights, shuffling and augmentation "
                             f"(default: {d.seed})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"cutouts per step (default: {d.batch_size}; O'TRAIN used 1024)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"Adam learning rate (default: {d.lr})")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=None,
                        help="constant, or cosine: from --lr down towards 0 over --epochs "
                             f"(default: {d.lr_schedule})")
    parser.add_argument("--arch", choices=(AUTO, *available_architectures()), default=None,
                        help="network; auto = vgg6 for cubes made from survey alerts (better "
                             "and 3x cheaper there, see the README), the O'TRAIN network "
                             f"otherwise (default: {d.arch})")
    parser.add_argument("--normalise", choices=TRAIN_METHODS, default=None,
                        help="per-cutout scaling, repeated at inference; auto = l2 for alert "
                             "and multi-channel cubes, zscore otherwise; 'none' = raw pixels as "
                             f"the original O'TRAIN (default: {d.normalise})")
    parser.add_argument("--init-from", default=None, metavar="MODEL",
                        help="start from the weights of this model file (fine-tuning: same "
                             "--arch, channels and cutout size) instead of random ones")
    parser.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                        help="do not randomly flip and rotate training cutouts")
    parser.add_argument("--no-class-weights", dest="class_weights", action="store_false",
                        default=None,
                        help="do not weight the loss by inverse class frequency")
    parser.add_argument("--patience", type=_patience, default=d.patience,
                        help="stop after this many epochs without a better validation loss and "
                             "keep the best epoch; 0 never stops early; auto = as --epochs auto "
                             "says, or 5 with a given number of epochs (default: auto)")
    add_device(parser, "where to train; auto = a GPU if any (default: auto)")
    add_precision(parser, "training (fp32 master weights, autocast) and of the validation "
                  "passes")
    parser.add_argument("--workers", type=int, default=d.workers,
                        help="processes reading large cubes in the background (default: 0)")
    parser.add_argument("--nproc", type=int, default=d.nproc, metavar="N",
                        help="train with N local processes (PyTorch DDP: gloo on CPU, NCCL with "
                             "one GPU each); for several machines use torchrun -m "
                             "otrain.cli.train instead (default: 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted (or finished) training from its checkpoint, "
                             "e.g. with more --epochs; split and network settings not given are "
                             "taken from the checkpoint")
    add_overwrite(parser, "replace an existing model of that name")


def run(args: argparse.Namespace) -> int:
    """Train, then print the test metrics (the validation ones when there is no test set)."""
    try:
        return _run(args)
    except PeerFailed:
        # Another process of the distributed run met the error, prints it and exits with 2;
        # exiting quietly with 0 here lets torchrun name that process as the root cause.
        return 0


def _run(args: argparse.Namespace) -> int:
    # Settings fixed by a checkpoint: unless given, --resume takes them from it, else defaults.
    defaults = asdict(TrainConfig())
    try:
        saved = resumable_settings(args.model_path, args.model_name) if args.resume else {}
    except OtrainError as exc:  # every launched process meets it: rank 0 alone reports it
        if launched() and env_rank() != 0:
            raise PeerFailed(str(exc)) from None
        raise
    fixed = {k: saved.get(k, defaults[k]) if getattr(args, k) is None else getattr(args, k)
             for k in RESUME_KEYS}
    config = TrainConfig(
        epochs=args.epochs, patience=args.patience or None,
        threshold=defaults["threshold"] if args.threshold is None else args.threshold,
        target_fnr=args.target_fnr, target_fpr=args.target_fpr, ensemble=args.ensemble,
        member_splits=args.member_splits, calibrate=args.calibrate,
        device=args.device, resume=args.resume, workers=args.workers, nproc=args.nproc,
        init_from=args.init_from, precision=args.precision,
        **fixed,
    )
    result = train(args.cube, args.model_path, args.model_name, config,
                   overwrite=args.overwrite, quiet=args.quiet or env_rank() != 0)
    if not args.quiet and env_rank() == 0:
        print(_calibration_lines(result.metrics))
        if result.metrics.get("test"):
            print(format_metrics(result.metrics["test"],
                                 f"test set, best epoch {result.best_epoch}"))
        else:
            print(format_metrics(result.metrics["validation"],
                                 f"validation set (no test set), best epoch {result.best_epoch}"))
        print(f"Saved to {result.folder}")
    return 0


def _calibration_lines(metrics: dict) -> str:
    """Temperature, ECE / Brier before and after, the threshold and how it was chosen."""
    cal = metrics.get("calibration") or {}
    lines = [f"temperature {cal.get('temperature', 1.0):.4g}, logit bias "
             f"{cal.get('logit_bias', 0.0):.4g}"
             + ("" if cal.get("fitted", True) else " (calibration off)")]
    for part in ("validation", "test"):
        if cal.get(part):
            b, a = cal[part]["before"], cal[part]["after"]
            lines.append(f"  {part}: ECE {b['ece']:.4f} -> {a['ece']:.4f}, Brier "
                         f"{b['brier']:.4f} -> {a['brier']:.4f}")
    choice = metrics.get("threshold_choice") or {"method": "given"}
    how = (choice["method"] if choice["method"] in ("given", "default") else
           f"best MCC with FPR <= {choice['target']:g} on the validation rows, the default"
           if choice["method"] == "max_mcc_within_fpr" else
           f"{choice['method'].replace('_', ' ')} {choice['target']:g} on the validation rows")
    lines.append(f"threshold {metrics['threshold']:.4g} ({how})")
    rates = metrics.get("test_error_rates")
    if rates and rates["fnr"] is not None and rates["fpr"] is not None:
        lines.append(f"  test FNR {rates['fnr']:.4f} [{rates['fnr_low']:.4f}, "
                     f"{rates['fnr_high']:.4f}], FPR {rates['fpr']:.4f} [{rates['fpr_low']:.4f}"
                     f", {rates['fpr_high']:.4f}] (95% Wilson)")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m otrain.cli.train, e.g. under torchrun
    from otrain.cli.main import run_command

    sys.exit(run_command("train"))
