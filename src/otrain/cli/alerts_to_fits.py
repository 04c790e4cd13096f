"""``otrain alerts-to-fits``: survey alerts -> O'TRAIN-style FITS cutouts (true/, false/)."""

from __future__ import annotations

import argparse

from otrain.cli.convert import add_label_arguments, label_rule_from_args
from otrain.convert.fits_export import LAYOUTS, alerts_to_fits
from otrain.cutouts.reading import parse_channels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain alerts-to-fits``."""
    parser.add_argument("--alerts", nargs="+", required=True, metavar="PATH",
                        help="alert files or folders (.avro, .parquet: ZTF, Fink, Rubin)")
    parser.add_argument("--outdir", required=True,
                        help="output folder; with a label rule the cutouts go into its true/ "
                             "and false/ folders, ready for otrain-convert --cutouts")
    parser.add_argument("--channels", default=None,
                        help="comma-separated channels from diff,sci,ref (default: diff for "
                             "--layout single, diff,sci,ref otherwise)")
    parser.add_argument("--layout", choices=LAYOUTS, default=None,
                        help="single: the image and keywords in the primary HDU (O'TRAIN); "
                             "mef: keywords in the primary, DIFF/SCI/REF extensions (default: "
                             "single for one channel, mef for several)")
    parser.add_argument("--cutout-size", type=int, default=63,
                        help="side of the window centred on the candidate (default: 63)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable alert file or record")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace cutout files of the same name")
    add_label_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Write the cutouts and print what went where."""
    channels = None if args.channels is None else parse_channels(args.channels)
    alerts_to_fits(args.alerts, args.outdir, channels, label_rule_from_args(args), args.layout,
                   args.cutout_size, overwrite=args.overwrite, quiet=args.quiet,
                   strict=args.strict)
    return 0
