"""``otrain-simulate``: write a folder of simulated real/bogus cutouts (``true/``, ``false/``)."""

from __future__ import annotations

import argparse

from otrain.errors import OtrainError
from otrain.simulate.config import DEFAULT_MIX


def _mix(text: str) -> dict[str, float]:
    """Parse ``kind=weight,kind=weight`` into a dict (kinds not named get weight 0)."""
    mix = dict.fromkeys(DEFAULT_MIX, 0.0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, weight = item.partition("=")
        try:
            if not sep:
                raise ValueError
            mix[kind.strip()] = float(weight)
        except ValueError:
            raise OtrainError(f"--artefact-mix: expected kind=weight, got {item!r} "
                              f"(kinds: {', '.join(DEFAULT_MIX)})") from None
    return mix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-simulate`` to ``parser``."""
    parser.add_argument("--outdir", required=True,
                        help="folder to write true/, false/, crossmatch.dat, simulation.json into")
    parser.add_argument("--n-true", type=int, default=500, help="number of real cutouts (500)")
    parser.add_argument("--n-false", type=int, default=500, help="number of bogus cutouts (500)")
    parser.add_argument("--size", type=int, default=32, help="cutout side in pixels (32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--triplets", action="store_true",
                        help="write DIFF/SCI/REF multi-extension files instead of single-HDU "
                             "difference images")
    parser.add_argument("--edge-fraction", type=float, default=0.03,
                        help="fraction of cutouts flagged EDGE with a NaN band (0.03)")
    parser.add_argument("--background", metavar="FITS", default=None,
                        help="real 2-D FITS image to take backgrounds from and inject sources into")
    parser.add_argument("--fwhm-range", type=float, nargs=2, metavar=("LO", "HI"),
                        default=(1.5, 4.0), help="PSF FWHM range in pixels (1.5 4.0)")
    parser.add_argument("--artefact-mix", metavar="KIND=W,...", default=None,
                        help="proportions of the bogus kinds, e.g. cosmic_ray=1,dipole=1 "
                             f"(default {','.join(f'{k}={v:g}' for k, v in DEFAULT_MIX.items())})")
    parser.add_argument("--logical-edge", action="store_true",
                        help="write EDGE as a FITS logical instead of the string 'True'/'False'")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous simulation in --outdir")


def run(args: argparse.Namespace) -> int:
    """Run ``otrain-simulate``; returns the exit status."""
    from otrain.simulate.core import SimulationConfig, simulate_cutouts

    config = SimulationConfig(
        n_true=args.n_true, n_false=args.n_false, size=args.size, seed=args.seed,
        triplets=args.triplets, edge_fraction=args.edge_fraction, background=args.background,
        fwhm_range=tuple(args.fwhm_range), logical_edge=args.logical_edge,
        artefact_mix=_mix(args.artefact_mix) if args.artefact_mix else dict(DEFAULT_MIX))
    simulate_cutouts(args.outdir, config, overwrite=args.overwrite, quiet=args.quiet)
    return 0
