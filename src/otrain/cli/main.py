"""The ``otrain`` umbrella command and the O'TRAIN-named entry points (``otrain-convert``, ...).

Each command lives in ``otrain.cli.<module>`` and provides two functions:

``add_arguments(parser)``
    adds its flags to an :class:`argparse.ArgumentParser`;
``run(args) -> int``
    calls the Python API and returns the exit status.

Errors the user can act on are raised as :class:`otrain.errors.OtrainError` and printed here as
one line (``otrain-convert: error: <file>: <problem>``) with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from otrain._version import __version__
from otrain.cli.common import require_parent
from otrain.errors import OtrainError

#: command name -> (module under otrain.cli, one-line help). Only commands that work are listed.
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("convert", "convert labelled cutouts (true/ and false/ folders) or survey alerts "
                "into a datacube"),
    "simulate": ("simulate", "write a folder of simulated true/false cutouts for tests and demos"),
    "train": ("train", "train the CNN on a datacube"),
    "infer": ("infer", "score cutouts or a datacube with a trained model"),
    "diagnostics": ("diagnostics", "metrics, optimal thresholds and misclassified cutouts of "
                    "a model on a labelled cube"),
    "plot-results": ("plot_results", "ROC, precision-recall, threshold, per-magnitude and "
                     "calibration plots of a model on a labelled cube"),
    "report": ("report", "one self-contained HTML report of a trained model"),
    "checkinfer": ("checkinfer", "recovery of injected sources and score / FWHM plots from "
                   "crossmatch.dat and infer_results.dat"),
    "grad-cam": ("grad_cam", "Grad-CAM overlays: where the CNN looks in well and wrongly "
                 "classified cutouts"),
    "optimise-dataset-size": ("optimise_dataset_size", "learning curve: test scores of models "
                              "trained on growing subsets of a cube"),
    "alerts-to-fits": ("alerts_to_fits", "write survey alerts as O'TRAIN-style FITS cutouts "
                       "(true/ and false/ folders with a label rule)"),
    "import-keras": ("import_keras", "convert an original O'TRAIN Keras .h5 model into an "
                     "otrain model file (no TensorFlow needed)"),
    "export": ("export", "write a model as ONNX for alert brokers (raw stamps in, p_real out)"),
    "label": ("label", "label and vet candidates in the browser, with active learning"),
    "set-threshold": ("set_threshold", "write an operating point (threshold) into a model file, "
                      "recorded with how it was chosen"),
}

#: command name -> (argparse dest, flag) of the outputs it owns: the command creates that file
#: or folder (and what is inside), never a missing folder above it.
OUTPUT_FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    "convert": (("path_datacube", "--path"),),
    "simulate": (("outdir", "--outdir"),),
    "train": (("model_path", "--model-path"),),
    "infer": (("output", "--output"),),
    "diagnostics": (("path_diagnostics", "--path-diagnostics"),),
    "plot-results": (("path_plots", "--path-plots"),),
    "report": (("output", "--output"),),
    "checkinfer": (("plots", "--plots"),),
    "grad-cam": (("cam_path", "--cam-path"),),
    "optimise-dataset-size": (("model_path", "--model-path"), ("outdir", "--outdir")),
    "alerts-to-fits": (("outdir", "--outdir"),),
    "set-threshold": (("output", "--output"),),
    "import-keras": (("output", "--output"),),
    "export": (("output", "--output"),),
    "label": (("db", "--db"), ("export", "--export"), ("export_folders", "--export-folders")),
}


def _build_command_parser(name: str, prog: str, parser: argparse.ArgumentParser | None = None
                          ) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(f"otrain.cli.{module_name}")
    if parser is None:
        parser = argparse.ArgumentParser(prog=prog, description=help_text, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"otrain {__version__}")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser, module


def _one_line_warning(prog: str, message: Warning | str, category: type[Warning],
                      filename: str, lineno: int, file: TextIO | None = None,
                      line: str | None = None) -> None:
    """A library warning as one line (no source line, no file position)."""
    text = " ".join(str(message).split())
    print(f"{prog}: warning: {text} ({category.__name__})", file=file or sys.stderr)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so clean-up (temporary files, pools) runs."""


_MAIN_PID = os.getpid()


def _on_sigterm(signum: int, frame: object) -> None:
    if os.getpid() != _MAIN_PID:  # a forked worker that kept the handler: end quietly
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def _check_outputs(name: str, args: argparse.Namespace) -> None:
    for dest, flag in OUTPUT_FLAGS.get(name, ()):
        require_parent(getattr(args, dest, None), flag)


def _execute(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
             name: str | None = None) -> int:
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if name is not None:
            _check_outputs(name, args)
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_one_line_warning, prog)
            return int(run(args) or 0)
    except OtrainError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{prog}: terminated", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` for command ``name`` and run it.

    Parameters
    ----------
    name : str
        Command name, a key of :data:`COMMANDS`.
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).
    prog : str, optional
        Program name shown in messages (default ``otrain-<name>``).

    Returns
    -------
    int
        Exit status.
    """
    prog = prog or f"otrain-{name}"
    parser, module = _build_command_parser(name, prog)
    args = parser.parse_args(argv)
    return _execute(prog, module.run, args, name)  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``otrain <command> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="otrain", description="Real/bogus classification of transient candidate cutouts.",
        allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"otrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    return run_command(argv[0], argv[1:], prog=f"otrain {argv[0]}")


def _entry(name: str) -> Callable[[], None]:
    def entry() -> None:
        sys.exit(run_command(name))

    entry.__name__ = name.replace("-", "_")
    entry.__doc__ = f"Entry point of ``otrain-{name}``."
    return entry


convert = _entry("convert")
simulate = _entry("simulate")
train = _entry("train")
infer = _entry("infer")
diagnostics = _entry("diagnostics")
plot_results = _entry("plot-results")
checkinfer = _entry("checkinfer")
grad_cam = _entry("grad-cam")
optimise_dataset_size = _entry("optimise-dataset-size")
alerts_to_fits = _entry("alerts-to-fits")
import_keras = _entry("import-keras")
export = _entry("export")
label = _entry("label")
report = _entry("report")
set_threshold = _entry("set-threshold")

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
