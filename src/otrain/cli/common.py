"""Command-line flags shared by several ``otrain`` commands, with one wording each."""

from __future__ import annotations

import argparse
from pathlib import Path

from otrain.errors import OtrainError

#: Choices of ``--device``: auto = a GPU if any, else the CPU.
DEVICES = ("auto", "cpu", "cuda")

#: Help of ``--threshold`` wherever a model file is scored.
THRESHOLD_HELP = ("P(real) above which a candidate is called real: a number in [0, 1], or "
                  "'model' for the threshold recorded in the model file (default: model)")


def add_model_file(parser: argparse.ArgumentParser, legacy: bool = False) -> None:
    """``--model`` (required): the trained model file.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Parser to add the flag to.
    legacy : bool, default False
        Also accept ``--model-path``, the O'TRAIN spelling of this flag in diagnostics,
        plot-results and grad-cam (where it names the model file, not an output folder).
    """
    names = ("--model", "--model-path") if legacy else ("--model",)
    parser.add_argument(*names, dest="model", required=True,
                        help="the trained model file, including its extension (.safetensors)"
                             + ("; --model-path is the O'TRAIN spelling" if legacy else ""))


def add_validation_inputs(parser: argparse.ArgumentParser) -> None:
    """``--path-cube-validation`` and ``--model`` (alias ``--model-path``) of the evaluation
    commands."""
    parser.add_argument("--path-cube-validation", required=True,
                        help="labelled datacube to evaluate on, including its extension (.h5, "
                             "or O'TRAIN .npz such as cube_validation.npz)")
    add_model_file(parser, legacy=True)


def parse_threshold(text: str) -> float | str:
    """``--threshold`` value: a float in [0, 1] or the word ``model``."""
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


def add_threshold(parser: argparse.ArgumentParser, default: str | None = "model",
                  help: str = THRESHOLD_HELP) -> None:
    """``--threshold model|X`` (default: the model's threshold)."""
    parser.add_argument("--threshold", type=parse_threshold, default=default, help=help)


def resolve_threshold(value: float | str | None, model: str | Path) -> float | None:
    """The threshold a ``--threshold`` value stands for (``model``: the one in the model file).

    ``None`` stays ``None`` (the command's own default applies).
    """
    if value != "model":
        return None if value is None else float(value)
    from otrain.models.modelfile import read_metadata

    return float(read_metadata(model).get("threshold", 0.5))


def add_prevalence(parser: argparse.ArgumentParser) -> None:
    """``--prevalence P``: the share of real candidates the metrics are also given at."""
    parser.add_argument("--prevalence", type=float, default=None, metavar="P",
                        help="share of real candidates in your stream, in (0, 1), e.g. 0.01: "
                             "precision, F1, MCC and the reliability diagram are also given at "
                             "that share (default: the labelled cube's own, stated)")


def add_device(parser: argparse.ArgumentParser, help: str) -> None:
    """``--device``, one of :data:`DEVICES` (default: auto, as in every command)."""
    parser.add_argument("--device", choices=DEVICES, default="auto", help=help)


def add_scoring(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` (default 512) and ``--device`` (default auto) of a model scoring a cube."""
    parser.add_argument("--batch-size", type=int, default=512,
                        help="cutouts scored at a time (default: 512)")
    add_device(parser, "where to run the model; auto = a GPU if any (default: auto)")


def add_overwrite(parser: argparse.ArgumentParser, help: str) -> None:
    """``--overwrite`` (a switch); ``help`` says what it replaces."""
    parser.add_argument("--overwrite", action="store_true", help=help)


def require_parent(path: str | Path | None, flag: str) -> None:
    """Refuse an output whose parent folder is missing: a command creates the file or folder it
    owns (``path``), never the folders above it, so a typo does not make a new tree.

    Raises
    ------
    OtrainError
        Naming the missing folder and the flag.
    """
    if path is None:
        return
    parent = Path(path).expanduser().absolute().parent
    if not parent.is_dir():
        raise OtrainError(f"folder does not exist (create it first: {flag} creates only "
                          f"{Path(path).name!r} inside an existing folder)", parent)


def add_precision(parser: argparse.ArgumentParser, what: str) -> None:
    """``--precision auto|fp32|bf16|fp16`` (default auto; :mod:`otrain.models.precision`)."""
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help=f"numeric precision of {what}: auto = bf16 where the hardware "
                             "computes it natively (CPUs with AMX or AVX512-BF16, Ampere+ GPUs; "
                             "fp16 on older GPUs with tensor cores), else fp32; fp16 is for "
                             "CUDA only. The first batch is checked against fp32 and falls back "
                             "to fp32 if they differ (default: auto)")
