"""``otrain-export``: write a model as ONNX (raw stamps in, ``p_real`` out), checked on export."""

from __future__ import annotations

import argparse

from otrain.cli.common import add_overwrite
from otrain.models.modelfile import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-export``."""
    parser.add_argument("--model", required=True,
                        help="the model file (.safetensors, or an original O'TRAIN Keras .h5)")
    parser.add_argument("--output", required=True, help="the ONNX file to write (.onnx)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the batch of stamps the export is checked on (default: 0)")
    add_overwrite(parser, "replace an existing output file")


def run(args: argparse.Namespace) -> int:
    """Export, check with onnxruntime and say how close it came."""
    from otrain.broker.onnx_export import TOLERANCE, export_onnx, output_names, require_onnx

    require_onnx()
    loaded = load_model(args.model, "cpu")
    out, diff = export_onnx(loaded, args.output, overwrite=args.overwrite, seed=args.seed)
    if not args.quiet:
        c = len(loaded.channels)
        h, w = loaded.input_size
        outs = ", ".join(f"'{n}' (N,)" for n in output_names(loaded))
        m = len(loaded.members)
        print(f"exported {args.model}: input 'stamps' float32 (N, {c}, {h}, {w}) raw pixels, "
              f"output {outs}; normalisation '{loaded.normalisation}' and NaN fill, "
              f"{m} network{'s' if m > 1 else ''} and temperature {loaded.temperature:.4g} in "
              f"the graph\nonnxruntime matches otrain to {diff:.1g} (limit {TOLERANCE:g})\n"
              f"Saved to {out}")
    return 0
