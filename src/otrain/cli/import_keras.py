"""``otrain-import-keras``: turn an original O'TRAIN Keras ``.h5`` into an otrain model file."""

from __future__ import annotations

import argparse

from otrain.broker.stream import canonical_channels
from otrain.cli.common import add_overwrite
from otrain.models.keras_convert import import_keras
from otrain.models.modelfile import read_metadata


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``otrain-import-keras``."""
    parser.add_argument("keras_model", metavar="MODEL.h5",
                        help="the Keras model saved by the original otrain-train (model.save: "
                             "Keras 2 or Keras 3 .h5, or a Keras 3 .keras archive); TensorFlow "
                             "is not needed")
    parser.add_argument("--output", required=True,
                        help="the otrain model file to write (.safetensors)")
    parser.add_argument("--channels", default=None,
                        help="comma-separated names of the input channels, e.g. diff,sci,ref "
                             "(Rubin's diff,sci,template accepted); default diff for one "
                             "channel, else ch0,ch1,...")
    add_overwrite(parser, "replace an existing output file")


def run(args: argparse.Namespace) -> int:
    """Import, write and print what the model takes."""
    channels = canonical_channels(args.channels) if args.channels else None
    out = import_keras(args.keras_model, args.output, channels=channels,
                       overwrite=args.overwrite)
    if not args.quiet:
        meta = read_metadata(out)
        h, w = meta["input_size"]
        print(f"imported O'TRAIN Keras model {args.keras_model} (Keras "
              f"{meta['training']['keras_version']}): {h}x{w} pixels, channels "
              f"{', '.join(meta['channels'])}, normalisation none, threshold "
              f"{meta['threshold']:g}\nSaved to {out}")
    return 0
