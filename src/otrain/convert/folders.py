"""Labelled cutout folders -> datacube (what ``otrain-convert`` does).

``<cutouts>/true/`` holds real candidates (label 1), ``<cutouts>/false/`` bogus ones (label 0).
The conversion:

1. lists both folders (sorted; ``.fits``, ``.fit``, ``.fts``, optionally ``.gz``);
2. reads every file once, in parallel worker processes, and writes the usable cutouts to a
   temporary cube in bounded batches; edge cutouts (``EDGE`` true) are excluded, unreadable or
   incomplete files are skipped and listed (``strict`` makes them fatal);
3. balances the classes: with ``frac_true`` = f it keeps the largest numbers ``n_true``,
   ``n_false`` with ``n_true / (n_true + n_false)`` = f that the usable cutouts allow, chosen at
   random with ``seed`` (the original took the first files in directory order and counted
   skipped edge files as kept);
4. copies the chosen rows (true first, then false, each in file-name order) into the final
   cube and writes a JSON report beside it.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from otrain._version import __version__
from otrain.convert.files import map_packed, read_one
from otrain.cutouts.keywords import format_notes
from otrain.cutouts.reading import (
    META_COLUMNS,
    Cutout,
    find_cutouts,
)
from otrain.datacube.checks import duplicate_warnings
from otrain.datacube.cube import BOGUS, REAL
from otrain.datacube.hdf5 import DatacubeWriter, open_datacube, write_subset
from otrain.errors import OtrainError
from otrain.outputs import TMP_TAG, check_writable, write_text_atomic
from otrain.parallel import resolve_workers
from otrain.progress import Progress, info

MAX_PROBLEMS_SHOWN = 10


@dataclass
class ConvertConfig:
    """Options of a conversion.

    Attributes
    ----------
    frac_true : float
        Wanted fraction of real cutouts in the cube, in [0, 1].
    cutout_size : int
        Centre-crop size in pixels; -1 keeps the full size.
    channels : tuple of str
        Channels to stack (``diff``, ``sci``, ``ref``).
    seed : int
        Seed of the random choice of cutouts.
    workers : int
        Reading processes; 0 means one per core.
    strict : bool
        Stop at the first unusable file instead of skipping it.
    batch_size : int
        Cutouts read and written per batch.
    keywords : dict of str to str
        The user's header names (:func:`otrain.cutouts.keywords.parse_keyword_map`).
    """

    frac_true: float = 0.5
    cutout_size: int = -1
    channels: tuple[str, ...] = ("diff",)
    seed: int = 0
    workers: int = 0
    strict: bool = False
    batch_size: int = 2048
    keywords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse impossible settings before any file is read (one line each)."""
        if self.cutout_size != -1 and not self.cutout_size >= 1:
            raise OtrainError(f"--cutout-size must be a positive number of pixels or -1 (the "
                              f"full size), got {self.cutout_size}")
        if self.batch_size < 1 or self.workers < 0:
            raise OtrainError(f"batch size must be >= 1 and --workers >= 0 (0: one per core), "
                              f"got {self.batch_size} and {self.workers}")


@dataclass
class ConvertReport:
    """What a conversion read, skipped and kept."""

    cube: str = ""
    cutouts: str = ""
    n_true_files: int = 0
    n_false_files: int = 0
    n_true_edge: int = 0
    n_false_edge: int = 0
    n_true_usable: int = 0
    n_false_usable: int = 0
    n_true_kept: int = 0
    n_false_kept: int = 0
    n_with_nonfinite: int = 0
    bad_keywords: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    note_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """Lines describing the result, as printed by ``otrain-convert``."""
        n = self.n_true_kept + self.n_false_kept
        lines = [
            f"The datacube contains {n} candidates with Ntrue = {self.n_true_kept} and "
            f"Nfalse = {self.n_false_kept}",
            f"read: true/ {self.n_true_files} files, false/ {self.n_false_files} files; "
            f"edge cutouts excluded: {self.n_true_edge + self.n_false_edge}; "
            f"unusable files skipped: {len(self.problems)}; "
            f"cutouts with NaN/inf pixels (filled): {self.n_with_nonfinite}",
        ]
        lines += self.notes
        lines += format_notes(self.note_counts, self.n_true_files + self.n_false_files)
        if self.bad_keywords:
            lines.append(f"warning: {len(self.bad_keywords)} file(s) have header values that "
                         "are not numbers (stored as NaN):")
            lines += [f"  {bad}" for bad in self.bad_keywords[:MAX_PROBLEMS_SHOWN]]
        for problem in self.problems[:MAX_PROBLEMS_SHOWN]:
            lines.append(f"  skipped {problem}")
        if len(self.problems) > MAX_PROBLEMS_SHOWN:
            more = len(self.problems) - MAX_PROBLEMS_SHOWN
            lines.append(f"  ... and {more} more (see the report)")
        return "\n".join(lines)


def datacube_path(path_datacube: str | Path, cube: str) -> Path:
    """Where ``otrain-convert --path P --cube NAME`` writes: ``P/datacube/NAME.h5``."""
    name = cube[:-3] if cube.endswith(".h5") else cube
    if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise OtrainError(f"--cube {cube!r} is not a plain file name (no folder, not empty, "
                          "not starting with a dot); the cube goes to <path>/datacube/")
    return Path(path_datacube) / "datacube" / f"{name}.h5"


def class_counts(n_true: int, n_false: int, frac_true: float) -> tuple[int, int]:
    """Largest class sizes with the wanted fraction of real cutouts that the data allow.

    Parameters
    ----------
    n_true, n_false : int
        Usable cutouts of each class.
    frac_true : float
        Wanted fraction of real cutouts, in [0, 1].

    Returns
    -------
    tuple of int
        ``(n_true_kept, n_false_kept)``.
    """
    if not 0.0 <= frac_true <= 1.0:
        raise OtrainError(f"--frac-true must be between 0 and 1, got {frac_true}")
    if frac_true == 1.0:
        return n_true, 0
    if frac_true == 0.0:
        return 0, n_false
    total = math.floor(min(n_true / frac_true, n_false / (1.0 - frac_true)) + 1e-9)
    keep_true = min(n_true, round(total * frac_true))
    return keep_true, min(n_false, total - keep_true)


def balanced_choice(rows_true: Sequence[int] | np.ndarray, rows_false: Sequence[int] | np.ndarray,
                    frac_true: float, seed: int) -> tuple[np.ndarray, int, int]:
    """Rows to keep for the wanted fraction of real cutouts, chosen at random with ``seed``.

    Parameters
    ----------
    rows_true, rows_false : sequence of int
        Row numbers of the usable real and bogus cutouts.
    frac_true : float
        Wanted fraction of real cutouts, in [0, 1] (see :func:`class_counts`).
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    chosen : numpy.ndarray
        The kept rows, int64, sorted.
    n_true, n_false : int
        How many of each class were kept.
    """
    keep_true, keep_false = class_counts(len(rows_true), len(rows_false), frac_true)
    rng = np.random.default_rng(seed)
    chosen = np.sort(np.concatenate([
        rng.choice(np.asarray(rows_true, dtype=np.int64), keep_true, replace=False),
        rng.choice(np.asarray(rows_false, dtype=np.int64), keep_false, replace=False),
    ])).astype(np.int64)
    return chosen, keep_true, keep_false


def convert_cutouts(
    cutouts_dir: str | Path,
    out_path: str | Path,
    config: ConvertConfig | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    map_files: Callable[..., Iterable[Cutout | str]] | None = None,
) -> ConvertReport:
    """Convert ``true/`` and ``false/`` cutout folders into a datacube file.

    Parameters
    ----------
    cutouts_dir : str or Path
        Folder holding ``true/`` and ``false/``.
    out_path : str or Path
        The datacube file to write (``.h5``); a ``.report.json`` is written beside it.
    config : ConvertConfig, optional
        Options (defaults as O'TRAIN: frac_true 0.5, full size, difference channel).
    overwrite : bool, default False
        Replace an existing cube.
    quiet : bool, default False
        Print nothing.
    map_files : callable, optional
        ``map_files(read, paths)`` yields ``read(path)`` for every path, in order (a Cutout or
        the reason it is unusable); default: ``config.workers`` local processes
        (:func:`otrain.parallel.ordered_map`); :mod:`otrain.convert.dask` reads on Dask.

    Returns
    -------
    ConvertReport
        Counts of files read, excluded, skipped and kept.
    """
    config = config or ConvertConfig()
    cutouts_dir, out_path = Path(cutouts_dir), Path(out_path)
    check_writable(out_path, overwrite)
    report_path = out_path.with_suffix(".report.json")
    check_writable(report_path, overwrite)
    class_counts(1, 1, config.frac_true)  # validate the fraction before any work
    files = {label: _class_files(cutouts_dir, folder) for label, folder in
             ((REAL, "true"), (BOGUS, "false"))}
    report = ConvertReport(cube=str(out_path), cutouts=str(cutouts_dir),
                           n_true_files=len(files[REAL]), n_false_files=len(files[BOGUS]))
    tmp_path = out_path.with_name(f".{out_path.name}{TMP_TAG}all.h5")
    try:
        rows = _read_all(files, tmp_path, config, report, quiet, map_files)
        _select_and_write(tmp_path, rows, out_path, config, report, overwrite)
    except OtrainError as exc:
        if exc.path == str(tmp_path):  # the intermediate file is ours: name the cube asked for
            raise OtrainError(exc.reason, out_path) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    write_text_atomic(report_path, json.dumps(asdict(report), indent=2), overwrite=True)
    info(report.summary(), quiet)
    return report


def _class_files(cutouts_dir: Path, folder: str) -> list[Path]:
    path = cutouts_dir / folder
    if not path.is_dir():
        raise OtrainError(f"no '{folder}/' folder (expected true/ and false/ inside)", cutouts_dir)
    return find_cutouts(path)


def _read_all(files: dict[int, list[Path]], tmp_path: Path, config: ConvertConfig,
              report: ConvertReport, quiet: bool,
              map_files: Callable[..., Iterable[Cutout | str]] | None = None
              ) -> dict[int, list[int]]:
    """Read every file, write the usable ones to ``tmp_path``; return row numbers per class."""
    ordered = [(label, p) for label in (REAL, BOGUS) for p in files[label]]
    if not ordered:
        raise OtrainError("no cutout files in true/ or false/")
    workers = resolve_workers(config.workers, len(ordered))
    reader = functools.partial(read_one, channels=tuple(config.channels),
                               cutout_size=config.cutout_size, keywords=config.keywords)
    rows: dict[int, list[int]] = {REAL: [], BOGUS: []}
    notes: Counter = Counter()
    writer: DatacubeWriter | None = None
    first_of_shape: tuple[Path, tuple[int, ...]] | None = None
    batch: list[tuple[int, Path, Cutout]] = []

    def flush() -> None:
        if batch and writer is not None:
            writer.append(np.stack([c.image for _, _, c in batch]), _columns(batch))
            batch.clear()

    try:
        with Progress(len(ordered), "reading cutouts", quiet=quiet, unit="file") as bar:
            paths = [p for _, p in ordered]
            results = (map_files(reader, paths) if map_files is not None
                       else map_packed(paths, tuple(config.channels), config.cutout_size,
                                       config.keywords, workers, config.batch_size))
            for (label, path), result in zip(ordered, results, strict=True):
                bar.update()
                if isinstance(result, str):
                    if config.strict:
                        raise OtrainError(result)
                    report.problems.append(result)
                    continue
                notes.update(result.meta.get("notes", ()))
                if result.meta["edge"]:
                    if label == REAL:
                        report.n_true_edge += 1
                    else:
                        report.n_false_edge += 1
                    continue
                shape = result.image.shape
                if first_of_shape is None:
                    first_of_shape = (path, shape)
                    writer = DatacubeWriter(tmp_path, shape, config.channels, overwrite=True)
                elif shape != first_of_shape[1]:
                    raise OtrainError(_size_message(first_of_shape, path, shape))
                report.n_with_nonfinite += result.meta["n_nonfinite"] > 0
                if result.meta.get("bad_keywords"):
                    report.bad_keywords.append(f"{path}: {', '.join(result.meta['bad_keywords'])}")
                rows[label].append(len(writer) + len(batch))  # type: ignore[arg-type]
                batch.append((label, path, result))
                if len(batch) >= config.batch_size:
                    flush()
            flush()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    report.note_counts = dict(notes)
    if writer is None:
        raise OtrainError(no_usable_message(report))
    writer.close()
    report.n_true_usable, report.n_false_usable = len(rows[REAL]), len(rows[BOGUS])
    return rows


def no_usable_message(report: ConvertReport, first: int = 3) -> str:
    """One line for a conversion where no file was usable: the first problems and a count."""
    if not report.problems:
        return "no usable cutout in true/ or false/ (every cutout is flagged EDGE)"
    shown = "; ".join(report.problems[:first])
    more = len(report.problems) - first
    return (f"no usable cutout in true/ or false/: {len(report.problems)} unusable file(s); "
            f"{shown}" + (f"; ... and {more} more" if more > 0 else ""))


def _size_message(first: tuple[Path, tuple[int, ...]], path: Path, shape: tuple[int, ...]) -> str:
    (p0, s0) = first
    return (f"cutouts differ in size: {p0} is {s0[1]}x{s0[2]}, {path} is {shape[1]}x{shape[2]}; "
            "pass --cutout-size N to crop them all to NxN")


def _columns(batch: Sequence[tuple[int, Path, Cutout]]) -> dict[str, np.ndarray]:
    out = {"candid": np.asarray([c.meta["candid"] for _, _, c in batch]),
           "label": np.asarray([label for label, _, _ in batch])}
    for key in META_COLUMNS[1:]:
        out[key] = np.asarray([c.meta[key] for _, _, c in batch])
    out["label"] = out["label"].astype(np.int8)
    out["edge"] = out["edge"].astype(bool)
    return out


def _select_and_write(tmp_path: Path, rows: dict[int, list[int]], out_path: Path,
                      config: ConvertConfig, report: ConvertReport, overwrite: bool) -> None:
    n_true, n_false = len(rows[REAL]), len(rows[BOGUS])
    if 0.0 < config.frac_true < 1.0:
        for n, folder in ((n_true, "true"), (n_false, "false")):
            if n == 0:
                raise OtrainError(f"{folder}/ holds no usable cutout: cannot make a cube with "
                                  f"{config.frac_true:.0%} real candidates")
    chosen, keep_true, keep_false = balanced_choice(rows[REAL], rows[BOGUS], config.frac_true,
                                                    config.seed)
    report.n_true_kept, report.n_false_kept = keep_true, keep_false
    achieved = keep_true / max(1, keep_true + keep_false)
    if abs(achieved - config.frac_true) > 0.01:
        report.notes.append(f"note: asked for {config.frac_true:.0%} real cutouts, the usable "
                            f"cutouts allow {achieved:.1%}")
    dropped = (n_true - keep_true, n_false - keep_false)
    if any(dropped):
        report.notes.append(f"balancing left out {dropped[0]} true and {dropped[1]} false cutouts "
                            f"(chosen at random, seed {config.seed})")
    provenance = {
        "created_by": f"otrain {__version__} convert",
        "cutouts": report.cutouts,
        "frac_true": config.frac_true, "cutout_size": config.cutout_size, "seed": config.seed,
        "channels": list(config.channels),
        "counts": {"true_files": report.n_true_files, "false_files": report.n_false_files,
                   "true_kept": keep_true, "false_kept": keep_false,
                   "edge_excluded": report.n_true_edge + report.n_false_edge,
                   "skipped": len(report.problems)},
    }
    with open_datacube(tmp_path) as tmp_cube:
        report.notes += duplicate_warnings(tmp_cube)
        write_subset(tmp_cube, chosen, out_path, overwrite=overwrite, provenance=provenance)
