"""``otrain-convert``: labelled cutouts (``true/``, ``false/``) -> datacube."""

from __future__ import annotations

import argparse

from otrain.convert import ConvertConfig, convert_cutouts, datacube_path
from otrain.cutouts import parse_channels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-convert`` (those of O'TRAIN plus reproducibility and speed)."""
    parser.add_argument("--path", "--path-datacube", dest="path_datacube", required=True,
                        help="folder where the datacube is stored (written to "
                             "<path>/datacube/<cube>.h5)")
    parser.add_argument("--cube", required=True, help="name of the datacube, without extension")
    parser.add_argument("--cutouts", required=True,
                        help="folder holding true/ (real) and false/ (bogus) cutouts")
    parser.add_argument("--frac-true", type=float, default=0.5,
                        help="fraction of true candidates in the cube, e.g. 0.5 for half real, "
                             "half bogus; the surplus class is sub-sampled at random "
                             "(default: 0.5)")
    parser.add_argument("--cutout-size", type=int, default=-1,
                        help="centre-crop cutouts to NxN pixels; -1 keeps the full size "
                             "(default: -1)")
    parser.add_argument("--channels", default="diff",
                        help="comma-separated channels from diff,sci,ref (default: diff)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random choice of cutouts (default: 0)")
    parser.add_argument("--workers", type=int, default=0,
                        help="reading processes; 0 = one per core (default: 0)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unusable file instead of skipping it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cube")


def run(args: argparse.Namespace) -> int:
    """Run the conversion and print what the cube holds."""
    config = ConvertConfig(frac_true=args.frac_true, cutout_size=args.cutout_size,
                           channels=parse_channels(args.channels), seed=args.seed,
                           workers=args.workers, strict=args.strict)
    out = datacube_path(args.path_datacube, args.cube)
    convert_cutouts(args.cutouts, out, config, overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        print(f"Saved to {out}")
    return 0
