"""``otrain-convert``: labelled cutouts (``true/``, ``false/``) or survey alerts -> datacube."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from otrain.cluster import add_dask_arguments
from otrain.convert.dask import dask_convert
from otrain.convert.folders import ConvertConfig, convert_cutouts, datacube_path
from otrain.cutouts.keywords import parse_keyword_map
from otrain.cutouts.reading import parse_channels
from otrain.errors import OtrainError

if TYPE_CHECKING:
    from otrain.alerts import LabelRule

#: ``--frac-true`` of cutout folders when not given (O'TRAIN's); alerts keep every labelled one.
CUTOUTS_FRAC_TRUE = 0.5
ALL = "all"
#: ``--cutout-size`` of alerts when not given: the central 41x41 of ZTF's 63x63 stamps (as the ZTF
#: benchmarks; 63x63 scored no better there and costs 2.4x the pixels). Cutout folders keep -1.
ALERTS_CUTOUT_SIZE = 41


def _frac_true(text: str) -> float | str:
    """``--frac-true`` value: a fraction, or ``all`` (keep every labelled alert)."""
    if text.strip().lower() == ALL:
        return ALL
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction or 'all', got {text!r}") from None


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the alert labelling flags (``--label-column``, ``--real-above``, ``--bogus-below``,
    ``--labels``), shared by ``otrain-convert --alerts`` and ``otrain alerts-to-fits``."""
    group = parser.add_argument_group("alert labels (alerts carry machine scores, not labels)")
    group.add_argument("--label-column", default=None,
                       help="label alerts from this score column, e.g. drb or rb (ZTF's own "
                            "machine scores: the network then learns to imitate them)")
    group.add_argument("--real-above", type=float, default=0.5,
                       help="score >= this is real (default: 0.5)")
    group.add_argument("--bogus-below", type=float, default=None,
                       help="score < this is bogus; alerts between --bogus-below and "
                            "--real-above are dropped (default: everything below --real-above "
                            "is bogus)")
    group.add_argument("--labels", default=None, metavar="CSV",
                       help="CSV file with the columns candid,label (1/0/-1 or real/bogus); "
                            "unlisted alerts are dropped")


def label_rule_from_args(args: argparse.Namespace) -> LabelRule | None:
    """The :class:`LabelRule` the flags ask for, None when no label flag was given."""
    from otrain.alerts import LabelRule  # here: converting cutout folders needs no alert reader

    if args.labels is not None and args.label_column is not None:
        raise OtrainError("give either --labels (a CSV) or --label-column (a score), not both")
    if args.labels is not None:
        return LabelRule(column=None, from_csv=args.labels)
    if args.label_column is not None:
        return LabelRule(args.label_column, args.real_above, args.bogus_below)
    if args.bogus_below is not None:
        raise OtrainError("--bogus-below needs --label-column")
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-convert`` (those of O'TRAIN plus alerts, reproducibility and
    speed)."""
    parser.add_argument("--path", "--path-datacube", dest="path_datacube", required=True,
                        help="folder where the datacube is stored (written to "
                             "<path>/datacube/<cube>.h5)")
    parser.add_argument("--cube", required=True, help="name of the datacube, without extension")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cutouts",
                        help="folder holding true/ (real) and false/ (bogus) cutouts")
    source.add_argument("--alerts", nargs="+", metavar="PATH",
                        help="alert files or folders (.avro, .parquet: ZTF, Fink, Rubin), "
                             "labelled with --label-column or --labels")
    parser.add_argument("--frac-true", type=_frac_true, default=None,
                        help="fraction of true candidates in the cube, e.g. 0.5 for half real, "
                             "half bogus; the surplus class is sub-sampled at random; 'all' "
                             "keeps every labelled alert (--alerts only; training balances the "
                             "classes by weighting the loss) (default: 0.5 for --cutouts, as "
                             "O'TRAIN; all for --alerts)")
    parser.add_argument("--cutout-size", type=int, default=None,
                        help="centre-crop cutouts to NxN pixels; -1 keeps the full size (63 "
                             f"for ZTF alerts) (default: -1 for --cutouts, {ALERTS_CUTOUT_SIZE} "
                             "for --alerts; otrain-infer crops to the model's size)")
    parser.add_argument("--channels", default="diff",
                        help="comma-separated channels from diff,sci,ref (default: diff)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random choice of cutouts (default: 0)")
    parser.add_argument("--keywords", default=None, metavar="OURS=YOURS,...|FILE",
                        help="your header names for ours: MAG=MAG_AUTO,FWHM=FWHM_IMAGE,... (also "
                             "DIFF/SCI/REF=EXTNAME for the channels' HDUs), or a .toml/.json "
                             "file of such pairs")
    parser.add_argument("--workers", type=int, default=0,
                        help="reading processes for --cutouts; 0 = one per core (default: 0)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unusable file (or alert) instead of skipping it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing cube")
    add_label_arguments(parser)
    add_dask_arguments(parser, "cutout files (--cutouts)")


def run(args: argparse.Namespace) -> int:
    """Run the conversion and print what the cube holds."""
    if args.frac_true == ALL and not args.alerts:
        raise OtrainError("--frac-true all is for --alerts; give a fraction for --cutouts")
    if args.frac_true is None:
        frac_true = None if args.alerts else CUTOUTS_FRAC_TRUE
    else:
        frac_true = None if args.frac_true == ALL else args.frac_true
    size = args.cutout_size
    if size is None:
        size = ALERTS_CUTOUT_SIZE if args.alerts else -1
    config = ConvertConfig(frac_true=frac_true, cutout_size=size,
                           channels=parse_channels(args.channels), seed=args.seed,
                           workers=args.workers, strict=args.strict,
                           keywords=parse_keyword_map(args.keywords))
    out = datacube_path(args.path_datacube, args.cube)
    convert = convert_cutouts if args.scheduler is None else dask_convert(args)  # on Dask
    if args.alerts:
        from otrain.convert.alerts import convert_alerts

        convert_alerts(args.alerts, out, config, label_rule_from_args(args),
                       overwrite=args.overwrite, quiet=args.quiet)
    else:
        if args.label_column is not None or args.labels is not None:
            raise OtrainError("--label-column and --labels are for --alerts; cutouts are "
                              "labelled by their true/ and false/ folders")
        convert(args.cutouts, out, config, overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        print(f"Saved to {out}")
    return 0
