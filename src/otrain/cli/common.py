"""Command-line flags shared by several ``otrain`` commands, with one wording each."""

from __future__ import annotations

import argparse

#: Choices of ``--device``: auto = a GPU if any, else the CPU.
DEVICES = ("auto", "cpu", "cuda")


def add_validation_inputs(parser: argparse.ArgumentParser) -> None:
    """``--path-cube-validation`` and ``--model-path`` (required) of the evaluation commands."""
    parser.add_argument("--path-cube-validation", required=True,
                        help="labelled datacube to evaluate on, including its extension (.h5, "
                             "or O'TRAIN .npz such as cube_validation.npz)")
    parser.add_argument("--model-path", required=True,
                        help="the trained model file, including its extension (.safetensors)")


def add_threshold(parser: argparse.ArgumentParser) -> None:
    """``--threshold`` (default 0.5) of the evaluation commands."""
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="P(real) above which a candidate is called real (default: 0.5)")


def add_device(parser: argparse.ArgumentParser, default: str, help: str) -> None:
    """``--device``, one of :data:`DEVICES`."""
    parser.add_argument("--device", choices=DEVICES, default=default, help=help)


def add_scoring(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` (default 512) and ``--device`` (default auto) of a model scoring a cube."""
    parser.add_argument("--batch-size", type=int, default=512,
                        help="cutouts scored at a time (default: 512)")
    add_device(parser, "auto", "where to run the model; auto = a GPU if any (default: auto)")


def add_overwrite(parser: argparse.ArgumentParser, help: str) -> None:
    """``--overwrite`` (a switch); ``help`` says what it replaces."""
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_precision(parser: argparse.ArgumentParser, what: str) -> None:
    """``--precision auto|fp32|bf16|fp16`` (default auto; :mod:`otrain.models.precision`)."""
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help=f"numeric precision of {what}: auto = bf16 where the hardware "
                             "computes it natively (CPUs with AMX or AVX512-BF16, Ampere+ GPUs; "
                             "fp16 on older GPUs with tensor cores), else fp32; fp16 is for "
                             "CUDA only. The first batch is checked against fp32 and falls back "
                             "to fp32 if they differ (default: auto)")
