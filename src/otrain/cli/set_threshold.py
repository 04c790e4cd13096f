"""``otrain set-threshold``: write an operating point into a model file."""

from __future__ import annotations

import argparse

from otrain.cli.common import add_overwrite, add_scoring, parse_threshold
from otrain.errors import OtrainError
from otrain.evaluation.operating_point import choose_threshold
from otrain.models.threshold import write_threshold


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain set-threshold``."""
    parser.add_argument("model", help="the model file (.safetensors) to record the threshold in")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--threshold", type=parse_threshold,
                     help="the P(real) threshold to record, in [0, 1]")
    how.add_argument("--target-fnr", type=float, default=None,
                     help="choose on --cube the largest threshold losing at most this fraction "
                          "of the real candidates")
    how.add_argument("--max-fpr", type=float, default=None,
                     help="choose on --cube the smallest threshold passing at most this "
                          "fraction of the bogus candidates")
    parser.add_argument("--cube", default=None,
                        help="labelled datacube for --target-fnr / --max-fpr")
    parser.add_argument("--output", default=None,
                        help="write a copy with the new threshold here instead of editing MODEL "
                             "in place (which needs --overwrite)")
    add_scoring(parser)
    add_overwrite(parser, "edit MODEL in place (without --output), or replace --output")


def run(args: argparse.Namespace) -> int:
    """Choose (or take) the threshold, write it, print what was recorded."""
    if args.threshold is not None:
        if args.threshold == "model":
            raise OtrainError("--threshold model would record the threshold already there; "
                              "give a number")
        if args.cube is not None:
            raise OtrainError("--cube is for --target-fnr / --max-fpr")
        threshold, record = float(args.threshold), {"method": "manual"}
    else:
        if args.cube is None:
            raise OtrainError("--target-fnr and --max-fpr need --cube (a labelled datacube)")
        threshold, record = choose_threshold(args.model, args.cube, args.target_fnr,
                                             args.max_fpr, batch_size=args.batch_size,
                                             device=args.device, quiet=args.quiet)
    out = write_threshold(args.model, threshold, record, args.output, args.overwrite)
    if not args.quiet:
        extra = "".join(f", {k.upper()} {record[k]:.4f}" for k in ("fnr", "fpr") if k in record)
        print(f"threshold {threshold:.6g} ({record['method']}{extra}) written to {out}")
    return 0
