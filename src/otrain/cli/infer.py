"""``otrain-infer``: score cutouts (a folder, files or a datacube) with a trained model.

Reading processes and the network share the cores: the OpenMP threads of torch are asked to sleep
rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``, unless the variable is already set),
which must happen before torch is first imported, hence here. On a shared or busy machine spinning
threads otherwise lose several-fold (see :func:`otrain.inference.stream.plan_threads`).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from otrain.cluster import add_dask_arguments
from otrain.cutouts.reading import parse_channels
from otrain.errors import OtrainError
from otrain.inference.core import DEFAULT_OUTPUT_NAME, FORMATS, infer, is_datacube_path
from otrain.inference.dask.client import dask_infer
from otrain.models.modelfile import read_metadata


def _threshold(text: str) -> float | str:
    if text.strip().lower() == "model":
        return "model"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'model', got {text!r}"
                                         ) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1], got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-infer`` (those of O'TRAIN plus output, speed and checks)."""
    parser.add_argument("--cutouts", required=True, nargs="+", metavar="PATH",
                        help="folder of FITS cutouts, a datacube (.h5 or O'TRAIN .npz), "
                             "cutout files, or alert packets (.avro/.parquet files or folders)")
    parser.add_argument("--model", required=True,
                        help="the trained model file, including its extension (.safetensors)")
    parser.add_argument("--prob-ratio", type=float, default=0.001,
                        help="kept for compatibility with O'TRAIN; has no effect")
    parser.add_argument("--output", default=None,
                        help=f"scores table, format by extension ({', '.join(FORMATS)}); default "
                             f"<cutouts>/{DEFAULT_OUTPUT_NAME} as O'TRAIN, or "
                             f"<cube>_{DEFAULT_OUTPUT_NAME} beside a datacube")
    parser.add_argument("--threshold", type=_threshold, default=None,
                        help="add a 'class' column: 1 (real) when P(real) > threshold, else 0; "
                             "'model' uses the threshold recorded in the model file. Default: "
                             "no class column (the original layout); the summary then counts "
                             "real candidates at the model's threshold")
    parser.add_argument("--channels", default=None,
                        help="comma-separated channels from diff,sci,ref (default: the model's)")
    parser.add_argument("--cutout-size", type=int, default=None,
                        help="centre-crop cutouts to NxN; -1 keeps the full size (default: the "
                             "model's input size)")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="cutouts read and scored per batch (default: 512)")
    parser.add_argument("--workers", type=int, default=0,
                        help="reading processes; 0 = one per core (default: 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                        help="where to run the network (default: cpu)")
    parser.add_argument("--mc-samples", type=int, default=0, metavar="K",
                        help="MC-dropout: K passes per network with dropout on, adding "
                             "p_real_std (their spread) after label1 and scoring their mean; "
                             "with an ensemble file the members x K passes are pooled. A crude "
                             "uncertainty proxy (see README). Not with --scheduler. Default: 0 "
                             "(ensemble files still get p_real_std: the members' spread)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the MC-dropout masks (default: 0)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unusable file instead of skipping it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_dask_arguments(parser, "cutout files or datacube rows")


def run(args: argparse.Namespace) -> int:
    """Score, write the table and print a short summary."""
    if args.mc_samples < 0:
        raise OtrainError(f"--mc-samples must be >= 0, got {args.mc_samples}")
    threshold = args.threshold
    if threshold == "model":
        threshold = float(read_metadata(args.model).get("threshold", 0.5))
    source = args.cutouts[0] if len(args.cutouts) == 1 else args.cutouts
    if len(args.cutouts) > 1 and any(is_datacube_path(p) for p in args.cutouts):
        raise OtrainError("give --cutouts one datacube, or cutout files, not both")
    channels = parse_channels(args.channels) if args.channels is not None else None
    score = infer if args.scheduler is None else dask_infer(args)  # --scheduler: on Dask
    result = score(source, args.model, args.output, channels=channels,
                   cutout_size=args.cutout_size, batch_size=args.batch_size,
                   workers=args.workers, threshold=threshold, device=args.device,
                   strict=args.strict, overwrite=args.overwrite, quiet=args.quiet,
                   mc_samples=args.mc_samples, seed=args.seed)
    if not args.quiet:
        print(result.report.summary())
    return 0
