"""Score new candidates with a trained model: cutout folders, file lists or datacubes -> table.

Inputs: a folder of FITS cutouts (single-HDU or multi-extension, read with
:func:`otrain.cutouts.read_cutout` using the model's channels and, by default, centre-cropped to
the model's input size), an explicit list of files, or a datacube (otrain ``.h5``, O'TRAIN
``.npz``). Reading and scoring stream batch by batch (:mod:`otrain.inference.stream`): images are
never all in memory; only the small per-row results are kept (about 200 bytes a row, 200 MB for a
million cutouts) and the table is written at the end, atomically.

Unreadable files are skipped and listed (``strict`` makes them fatal). Edge cutouts (``EDGE``
true) are scored and flagged in ``edge``; the original O'TRAIN dropped them silently.

Scores table (:data:`TABLE_COLUMNS`, the original ``infer_results.dat`` layout first)::

    filename RA Dec originalFile Xpos Ypos mag magerr FWHM FWHMPSF cand_ID label0 label1
    [p_real_std]  (spread of the members' / MC-dropout passes' P(real): ensembles, --mc-samples)
    edge
    [class]  (1 real / 0 bogus: label1 > threshold, only when a threshold is given)
    [label]  (the true label, for a labelled datacube)

``label0`` = P(bogus), ``label1`` = P(real); ``filename`` is the cutout path (for a datacube, the
row's ``source_file``, or its ``candid`` when that is empty); ``originalFile`` the FILE keyword.
Missing header values are NaN or an empty string (written as ``""`` in ``.dat``, so astropy reads
every row back with all its columns). Output formats by suffix: :data:`FORMATS`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from astropy.table import Table

from otrain.datacube.cube import Datacube
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.inference.alerts import is_alert_source, iter_alert_scores
from otrain.inference.scoring import ORIGINAL_COLUMNS, TABLE_COLUMNS, InferReport, stack_tables
from otrain.inference.stream import iter_cutout_scores, iter_datacube_scores
from otrain.models.modelfile import LoadedModel, load_model
from otrain.outputs import atomic_output, check_writable

__all__ = ["DEFAULT_OUTPUT_NAME", "FORMATS", "ORIGINAL_COLUMNS", "TABLE_COLUMNS", "InferReport",
           "InferResult", "default_output", "infer", "iter_cutout_scores",
           "iter_datacube_scores", "score_alerts", "score_cutouts", "score_datacube",
           "write_scores"]

#: Output suffix -> astropy format.
FORMATS = {".dat": "ascii.commented_header", ".csv": "ascii.csv", ".ecsv": "ascii.ecsv"}
DEFAULT_OUTPUT_NAME = "infer_results.dat"
CUBE_SUFFIXES = (".h5", ".hdf5", ".npz")


@dataclass
class InferResult:
    """The scores table (:data:`TABLE_COLUMNS`) and the run's report."""

    table: Table
    report: InferReport


def _collect(tables: Iterator[Table]) -> Table:
    """The batches as one table (the iterators raise rather than yield nothing)."""
    table = stack_tables(list(tables))
    assert table is not None
    return table


def score_cutouts(
    paths_or_folder: str | Path | Sequence[str | Path],
    loaded: LoadedModel,
    channels: Sequence[str] | None = None,
    cutout_size: int | None = None,
    batch_size: int = 512,
    workers: int = 0,
    threshold: float | None = None,
    strict: bool = False,
    quiet: bool = False,
    mc_samples: int = 0,
    seed: int = 0,
) -> InferResult:
    """Score cutout files; the parameters are those of :func:`iter_cutout_scores`.

    Returns
    -------
    InferResult
        The scores table (one row per scored file, in file order) and the report.
    """
    report = InferReport()
    table = _collect(iter_cutout_scores(paths_or_folder, loaded, channels, cutout_size,
                                        batch_size, workers, threshold, strict, quiet, report,
                                        mc_samples, seed))
    return InferResult(table, report)


def score_alerts(
    paths: str | Path | Sequence[str | Path],
    loaded: LoadedModel,
    batch_size: int = 1024,
    threshold: float | None = None,
    strict: bool = False,
    quiet: bool = False,
    mc_samples: int = 0,
    seed: int = 0,
) -> InferResult:
    """Score alert packets; the parameters are those of
    :func:`otrain.inference.alerts.iter_alert_scores`.

    Returns
    -------
    InferResult
        One row per scored alert, keyed by ``candid`` and ``objectId``.
    """
    report = InferReport()
    table = _collect(iter_alert_scores(paths, loaded, batch_size, threshold, strict, quiet,
                                       report, mc_samples=mc_samples, seed=seed))
    return InferResult(table, report)


def score_datacube(
    cube: Datacube | str | Path,
    loaded: LoadedModel,
    cutout_size: int | None = None,
    batch_size: int = 512,
    threshold: float | None = None,
    quiet: bool = False,
    mc_samples: int = 0,
    seed: int = 0,
) -> InferResult:
    """Score every row of a datacube.

    Parameters
    ----------
    cube : Datacube, str or Path
        An open cube, or its file (``.h5`` / ``.npz``).
    loaded : LoadedModel
        From :func:`otrain.models.modelfile.load_model`.
    cutout_size : int, optional
        Centre-crop size; default the model's input size (-1 keeps the cube's size).
    batch_size : int, default 512
        Rows read and scored per batch.
    threshold : float, optional
        Adds the ``class`` column.
    quiet : bool, default False
        No progress output.
    mc_samples, seed : int, default 0
        MC-dropout passes per member and their seed (adds ``p_real_std``).

    Returns
    -------
    InferResult
        One row per cube row; a ``label`` column when the cube is labelled.
    """
    if not isinstance(cube, Datacube):
        with open_datacube(cube) as opened:
            return score_datacube(opened, loaded, cutout_size, batch_size, threshold, quiet,
                                  mc_samples, seed)
    if len(cube) == 0:
        raise OtrainError("datacube holds no cutouts", cube.path)
    report = InferReport()
    table = _collect(iter_datacube_scores(cube, loaded, cutout_size, batch_size, threshold,
                                          quiet, report, mc_samples, seed))
    return InferResult(table, report)


def output_format(path: str | Path) -> str:
    """The astropy format for an output file name (:data:`FORMATS`), or an OtrainError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise OtrainError(f"unknown output format '{suffix}'; use {', '.join(FORMATS)}", path)
    return FORMATS[suffix]


def write_scores(table: Table, path: str | Path, overwrite: bool = False) -> Path:
    """Write a scores table atomically, in the format given by the suffix (:data:`FORMATS`).

    ``.dat`` is the original's ``ascii.commented_header`` (empty strings and names with spaces
    are quoted, so astropy reads every row back with all its columns).

    Returns
    -------
    Path
        The file written.
    """
    fmt = output_format(path)
    with atomic_output(path, overwrite) as tmp:
        table.write(tmp, format=fmt, overwrite=True)
    return Path(path)


def is_datacube_path(path: str | Path) -> bool:
    """True for a datacube file name (``.h5``, ``.hdf5``, ``.npz``)."""
    return Path(path).suffix.lower() in CUBE_SUFFIXES


def default_output(source: str | Path | Sequence[str | Path]) -> Path:
    """``<folder>/infer_results.dat`` for a folder or files, ``<stem>_infer_results.dat`` beside a
    cube."""
    if isinstance(source, str | Path):
        src = Path(source)
        if src.is_dir():
            return src / DEFAULT_OUTPUT_NAME
        if is_datacube_path(src):
            return src.with_name(f"{src.stem}_{DEFAULT_OUTPUT_NAME}")
        return src.parent / DEFAULT_OUTPUT_NAME
    parents = {Path(p).parent for p in source}
    if len(parents) != 1:
        raise OtrainError("cutout files are in several folders; give an output file (--output)")
    return parents.pop() / DEFAULT_OUTPUT_NAME


def infer(
    source: str | Path | Sequence[str | Path],
    model_path: str | Path,
    output: str | Path | None = None,
    channels: Sequence[str] | None = None,
    cutout_size: int | None = None,
    batch_size: int = 512,
    workers: int = 0,
    threshold: float | None = None,
    device: str = "cpu",
    strict: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    mc_samples: int = 0,
    seed: int = 0,
) -> InferResult:
    """Load a model, score a folder / files / datacube and write the scores table.

    Parameters
    ----------
    source : str, Path or sequence of them
        A cutout folder, a datacube file (``.h5``/``.npz``), cutout files, or alert packet files
        / folders (``.avro``, ``.parquet``: see :mod:`otrain.inference.alerts`).
    model_path : str or Path
        The model file (``.safetensors``).
    output : str or Path, optional
        ``.dat``, ``.csv`` or ``.ecsv``; default :func:`default_output`.
    channels, cutout_size, batch_size, workers, threshold, strict, quiet
        As :func:`iter_cutout_scores` (``channels``/``workers``/``strict`` unused for a cube).
    device : str, default "cpu"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    overwrite : bool, default False
        Replace an existing output file.
    mc_samples : int, default 0
        MC-dropout passes per ensemble member (0: none); adds ``p_real_std`` (an ensemble file
        has it anyway: the members' spread, or with MC-dropout the spread of all
        members x passes).
    seed : int, default 0
        Seed of the MC-dropout masks.

    Returns
    -------
    InferResult
        Table, and report with ``output`` set.
    """
    out = Path(output) if output is not None else default_output(source)
    output_format(out)
    check_writable(out, overwrite)
    loaded = load_model(model_path, device)
    if isinstance(source, str | Path) and not Path(source).exists():
        raise OtrainError("no such folder or file", source)
    if isinstance(source, str | Path) and is_datacube_path(source):
        result = score_datacube(source, loaded, cutout_size, batch_size, threshold, quiet,
                                mc_samples, seed)
    elif is_alert_source(source):
        result = score_alerts(source, loaded, batch_size, threshold, strict, quiet, mc_samples,
                              seed)
    else:
        result = score_cutouts(source, loaded, channels, cutout_size, batch_size, workers,
                               threshold, strict, quiet, mc_samples, seed)
    write_scores(result.table, out, overwrite)
    result.report.output = str(out)
    return result
