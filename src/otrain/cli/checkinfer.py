"""``otrain-checkinfer``: recovery of injected sources and score / FWHM plots."""

from __future__ import annotations

import argparse
from typing import Any

from otrain.cli.common import add_overwrite
from otrain.evaluation.checkinfer import CheckInferConfig, check_inference


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-checkinfer`` (those of O'TRAIN plus ``--overwrite``)."""
    d = CheckInferConfig()
    parser.add_argument("--plots", required=True,
                        help="folder for the outputs (written to <plots>/CheckInfer/)")
    parser.add_argument("--crossmatch", required=True,
                        help="crossmatch.dat of the injected sources, or the folder holding it")
    parser.add_argument("--infer", required=True,
                        help="infer_results.dat of otrain-infer, or the folder holding it")
    parser.add_argument("--maglim", "--mag-lim", dest="maglim", type=float, nargs="+",
                        default=list(d.maglim), metavar="MAG",
                        help="increasing magnitudes splitting the injected sources into bins "
                             "mag < m0, m0 <= mag < m1, ..., mag >= mk (default: 12 18 21)")
    parser.add_argument("--cnn-problim", type=float, nargs="+", default=list(d.cnn_problim),
                        metavar="P",
                        help="increasing P(real) cuts for the recovery and the FWHM plot "
                             "(default: 0.1 0.5 0.7)")
    parser.add_argument("--fwhm-ratio-lower", type=float, default=d.fwhm_ratio_lower,
                        help="lower bound of FWHM / FWHM_PSF drawn in the FWHM plots "
                             f"(default: {d.fwhm_ratio_lower})")
    parser.add_argument("--fwhm-ratio-upper", type=float, default=d.fwhm_ratio_upper,
                        help="upper bound of FWHM / FWHM_PSF drawn in the FWHM plots "
                             f"(default: {d.fwhm_ratio_upper})")
    parser.add_argument("--mag-step", type=float, default=d.mag_step,
                        help=f"bin width of the recovery curve, in magnitudes "
                             f"(default: {d.mag_step})")
    add_overwrite(parser, "replace existing outputs")


def format_recovery(summary: dict[str, Any]) -> str:
    """A text table of the recovery fractions per magnitude bin and P(real) cut."""
    c = summary["counts"]
    lines = [f"{c['injected']} injected sources: {c['scored']} scored, {c['no_candidate']} without "
             f"candidate, {c['candidate_not_scored']} with a candidate not in the inference "
             f"results; {c['infer_other']} other scored candidates"]
    cuts = [cut["p_cut"] for cut in summary["recovery"][0]["cuts"]]
    lines.append(f"{'magnitude bin':<22}{'n':>7}" + "".join(f"{'P>' + format(p, 'g'):>12}"
                                                           for p in cuts))
    for row in summary["recovery"]:
        vals = "".join(f"{'-' if x['fraction'] is None else format(x['fraction'], '.3f'):>12}"
                       for x in row["cuts"])
        lines.append(f"{row['bin']:<22}{row['n_injected']:>7}{vals}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Match, compute the recovery, write the plots and checkinfer.json."""
    config = CheckInferConfig(maglim=tuple(args.maglim), cnn_problim=tuple(args.cnn_problim),
                              fwhm_ratio_lower=args.fwhm_ratio_lower,
                              fwhm_ratio_upper=args.fwhm_ratio_upper, mag_step=args.mag_step)
    result = check_inference(args.crossmatch, args.infer, args.plots, config,
                             overwrite=args.overwrite, quiet=args.quiet)
    if not args.quiet:
        print(format_recovery(result.summary))
    return 0
