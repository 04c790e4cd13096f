"""Scoring on a Dask cluster: cutout files, datacube rows or alert files in chunks, one table in
input order.

The inputs are split into chunks (``chunk_size`` files, or cube rows); each chunk is one Dask
task (:func:`otrain.cluster.dask_ordered_map`). A worker loads the model once, reads its
chunk batch by batch, normalises and scores it with one torch thread per task, and returns the
chunk's rows of the scores table (:mod:`otrain.inference.dask.worker`). The client
uses the chunks in input order and writes their rows to the output as they come (the
out-of-order ones wait, within a bounded window), so the table is the one the single-process
path (:func:`otrain.inference.infer`) writes, in the same row order, with the same skipped-file
rules (``strict``, "none of the first files could be read").

Scores equal the single-process ones to about 1e-7; the written file is byte-identical when
both runs use the same number of torch threads (one per task here). Across thread counts, and
for a forward pass of a single cutout, the last bits of a float can differ (the order of the
sums inside the oneDNN convolutions); a worker scores a lone cutout in a pair, so the chunking
never changes a score.

Alert files (``.avro``, ``.parquet``) are one task each, scored on the worker by the
single-process alert path (:func:`otrain.inference.alerts.iter_alert_scores`): the table has the
same rows in the same order, with scores equal to ~1e-7 (batches end at file boundaries here).

Every worker must see the inputs and the model under the same paths (a shared file system);
only the client writes the output.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from otrain.alerts.sources import find_alert_files
from otrain.cluster import check_chunk_size, dask_ordered_map, use_client
from otrain.cutouts.reading import CUTOUT_SUFFIXES, find_cutouts
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.inference.alerts import check_alert_model, is_alert_source
from otrain.inference.core import InferResult, default_output, is_datacube_path, output_format
from otrain.inference.dask.worker import Part, Spec, score_alert_files, score_files, score_rows

# The single-process path's own pieces, so that both paths give the same rows and messages.
from otrain.inference.scoring import (
    InferReport,
    account,
    all_failed,
    check_settings,
    model_channels,
    skip,
    stack_tables,
)
from otrain.models.modelfile import LoadedModel, load_model
from otrain.outputs import atomic_output, check_writable
from otrain.progress import Progress

__all__ = ["dask_infer", "infer_distributed", "iter_distributed_scores",
           "score_distributed"]


def _list_files(source: str | Path | Sequence[str | Path], report: InferReport) -> list[str]:
    if isinstance(source, str | Path) and Path(source).is_dir():
        files = [str(p) for p in find_cutouts(source)]
        report.source = str(source)
        if not files:
            raise OtrainError(f"no cutout files ({', '.join(CUTOUT_SUFFIXES)})", source)
        return files
    items = [source] if isinstance(source, str | Path) else source
    files = [str(p) for p in items]
    if not files:
        raise OtrainError("no cutout files given")
    report.source = files[0] if len(files) == 1 else f"{len(files)} files"
    return files


def _file_tasks(source: str | Path | Sequence[str | Path], loaded: LoadedModel, base: dict,
                channels: Sequence[str] | None, cutout_size: int | None, chunk_size: int,
                report: InferReport) -> tuple[Callable[..., Part], list[Any], Spec]:
    files = _list_files(source, report)
    chans = model_channels(loaded, channels)
    h, w = loaded.input_size
    if cutout_size is None:
        cutout_size = h if h == w else -1
    loaded.check_input(chans, (cutout_size, cutout_size) if cutout_size != -1 else (h, w))
    report.n_inputs = len(files)
    spec = Spec(**base, shape=(len(chans), h, w), channels=chans, cutout_size=cutout_size)
    return score_files, [files[i:i + chunk_size] for i in range(0, len(files), chunk_size)], spec


def _cube_tasks(path: Path, loaded: LoadedModel, base: dict, cutout_size: int | None,
                chunk_size: int, report: InferReport
                ) -> tuple[Callable[..., Part], list[Any], Spec]:
    with open_datacube(path) as cube:
        n, channels, (_, ch, cw) = len(cube), cube.channels, cube.image_shape
        labelled = bool(np.any(cube.labels >= 0))
    if n == 0:
        raise OtrainError("datacube holds no cutouts", path)
    report.source, report.n_inputs = str(path), n
    h, w = loaded.input_size
    size = (h if h == w else -1) if cutout_size is None else cutout_size
    crop = size if size != -1 and (size, size) != (ch, cw) else None
    if crop is not None and (size <= 0 or size > min(ch, cw)):
        raise OtrainError(f"cannot crop {ch}x{cw} cutouts to {size}x{size}", path)
    loaded.check_input(channels, (crop, crop) if crop else (ch, cw))
    spec = Spec(**base, shape=(len(channels), *((crop, crop) if crop else (ch, cw))),
                 cube_path=str(Path(path).resolve()), cube_mtime_ns=os.stat(path).st_mtime_ns,
                 crop=crop, labelled=labelled)
    return score_rows, [(a, min(n, a + chunk_size)) for a in range(0, n, chunk_size)], spec


def _alert_tasks(source: str | Path | Sequence[str | Path], loaded: LoadedModel, base: dict,
                 report: InferReport) -> tuple[Callable[..., Part], list[Any], Spec]:
    files = [str(p) for p in find_alert_files(source)]
    channels, side = check_alert_model(loaded)
    report.source = str(source) if isinstance(source, str | Path) else f"{len(files)} path(s)"
    spec = Spec(**base, shape=(len(channels), side, side), channels=channels)
    return score_alert_files, [[f] for f in files], spec


def iter_distributed_scores(
    client: Any,
    source: str | Path | Sequence[str | Path],
    loaded: LoadedModel,
    channels: Sequence[str] | None = None,
    cutout_size: int | None = None,
    batch_size: int = 512,
    threshold: float | None = None,
    strict: bool = False,
    device: str = "cpu",
    chunk_size: int = 2000,
    retries: int = 2,
    quiet: bool = False,
    report: InferReport | None = None,
) -> Iterator[Table]:
    """Score on Dask workers, yielding each chunk's rows of the scores table in input order.

    Parameters
    ----------
    client : distributed.Client
        The cluster (see :func:`otrain.cluster.dask_client`).
    source : str, Path or sequence of them
        A cutout folder, cutout files, a datacube file (``.h5``/``.npz``), or alert files /
        folders (``.avro``, ``.parquet``; one task per file).
    loaded : LoadedModel
        The model, loaded here (for its metadata); workers load ``loaded.path`` themselves.
    channels, cutout_size, batch_size, threshold, strict
        As :func:`otrain.inference.stream.iter_cutout_scores` (``batch_size``: cutouts read and
        scored at a time inside a chunk).
    device : str, default "cpu"
        Where the workers run the network (``"auto"``, ``"cpu"``, ``"cuda"``).
    chunk_size : int, default 2000
        Files or cube rows per Dask task (alert files: one per task).
    retries : int, default 2
        Re-runs of a chunk that raised (a chunk whose worker died is re-run anyway).
    quiet : bool, default False
        No progress bar (it counts completed chunks).
    report : InferReport, optional
        Filled in as chunks are used.

    Yields
    ------
    astropy.table.Table
        The rows of one chunk (chunks with no readable file yield nothing).
    """
    report = report if report is not None else InferReport()
    plan = _plan(source, loaded, channels, cutout_size, batch_size, threshold, device,
                 chunk_size, report)
    yield from _run(client, plan, strict, retries, quiet, report)


@dataclass
class _Plan:
    func: Callable[..., Part]
    chunks: list[Any]
    spec: Spec
    what: str


def _plan(source: str | Path | Sequence[str | Path], loaded: LoadedModel,
          channels: Sequence[str] | None, cutout_size: int | None, batch_size: int,
          threshold: float | None, device: str, chunk_size: int, report: InferReport) -> _Plan:
    """Check the settings and the inputs against the model; split the inputs into tasks."""
    check_settings(batch_size, threshold)
    chunk_size = check_chunk_size(chunk_size)
    if loaded.path is None:
        raise OtrainError("the model must come from a file (load_model) to run on Dask")
    model_path = Path(loaded.path).resolve()
    base = dict(model_path=str(model_path), model_mtime_ns=os.stat(model_path).st_mtime_ns,
                device=device, normalisation=loaded.normalisation, threshold=threshold,
                batch_size=batch_size)
    report.threshold = loaded.threshold if threshold is None else threshold
    if isinstance(source, str | Path) and is_datacube_path(source):
        return _Plan(*_cube_tasks(Path(source), loaded, base, cutout_size, chunk_size, report),
                     what="cube rows")
    if is_alert_source(source):
        return _Plan(*_alert_tasks(source, loaded, base, report), what="alert files")
    return _Plan(*_file_tasks(source, loaded, base, channels, cutout_size, chunk_size, report),
                 what="files")


def _run(client: Any, plan: _Plan, strict: bool, retries: int, quiet: bool,
         report: InferReport) -> Iterator[Table]:
    """Submit the plan's tasks; use their results in order (the report is filled in)."""
    start = time.monotonic()
    alerts = plan.func is score_alert_files  # alert counts are known once files are read
    total, unit = (None, "alert") if alerts else (report.n_inputs, "cutout")
    with Progress(total, "scoring on Dask", quiet, unit=unit) as bar, \
            contextlib.closing(dask_ordered_map(
                client, plan.func, plan.chunks, plan.spec, name="otrain-score",
                retries=retries, on_done=lambda _, p: bar.update(p.n_inputs))) as parts:
        for k, part in enumerate(parts):
            skip(report, part.errors, strict)
            if part.n_skipped is not None:  # alerts: counted by alert, not by problem line
                report.n_skipped += part.n_skipped - len(part.errors)
                report.n_inputs += part.n_inputs
            report.seconds = time.monotonic() - start
            if part.table is None:
                if k == 0 and len(plan.chunks) > 1 and not alerts:
                    raise all_failed(report, f"none of the first {part.n_inputs} {plan.what}")
                continue
            account(report, part.table, report.threshold)
            yield part.table
    report.seconds = time.monotonic() - start
    if report.n_scored == 0:
        if alerts and not report.skipped:
            raise OtrainError(f"no alert could be scored: {report.n_inputs} alerts read from "
                              f"{len(plan.chunks)} file(s), none with the stamps asked for")
        what = f"{len(plan.chunks)} alert" if alerts else str(report.n_inputs)
        raise all_failed(report, f"none of the {what} file(s)")


def score_distributed(source: str | Path | Sequence[str | Path], model_path: str | Path,
                      client: Any, **options: Any) -> InferResult:
    """Score on Dask and return the whole table in memory (small runs, tests).

    ``options`` are those of :func:`iter_distributed_scores`; the model is read here for its
    metadata and by every worker for the network.
    """
    report = InferReport()
    loaded = load_model(model_path, "cpu")
    tables = list(iter_distributed_scores(client, source, loaded, report=report, **options))
    return InferResult(stack_tables(tables), report)  # type: ignore[arg-type]


class _TableWriter:
    """Write scores tables chunk by chunk into one file, as astropy writes them whole."""

    def __init__(self, handle: io.TextIOBase, fmt: str) -> None:
        self.handle, self.fmt = handle, fmt
        self.header_lines: int | None = None

    def write(self, table: Table) -> None:
        text = io.StringIO()
        table.write(text, format=self.fmt)
        if self.header_lines is None:
            empty = io.StringIO()
            table[:0].write(empty, format=self.fmt)
            self.header_lines = len(empty.getvalue().splitlines(keepends=True))
            self.handle.write(text.getvalue())
        else:
            self.handle.write("".join(text.getvalue().splitlines(keepends=True)
                                      [self.header_lines:]))


def infer_distributed(
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
    *,
    scheduler: str = "local",
    chunk_size: int = 2000,
    retries: int = 2,
    client: Any = None,
    mc_samples: int = 0,
    seed: int = 0,
) -> InferResult:
    """:func:`otrain.inference.infer` on a Dask cluster; the rows are written as they come.

    Parameters
    ----------
    source, model_path, output, channels, cutout_size, batch_size, threshold, device, strict,
    overwrite, quiet
        As :func:`otrain.inference.infer` (``device``: the workers').
    workers : int, default 0
        Worker processes of a local cluster (``scheduler="local"``), 0 = one per core.
    scheduler : str, default "local"
        ``"local"``, a scheduler address or a scheduler file (:func:`~otrain.cluster.
        dask_client`); ignored when ``client`` is given.
    chunk_size, retries
        As :func:`iter_distributed_scores`.
    client : distributed.Client, optional
        An existing client to use (left open).
    mc_samples, seed : int, default 0
        MC-dropout is refused on Dask (``mc_samples > 0``): its masks are drawn in the order
        the batches are scored, which Dask does not fix. Ensembles score as in one process.

    Returns
    -------
    InferResult
        The report (``output`` set); ``table`` is empty (zero rows): the rows went to the file.
        :func:`score_distributed` keeps them in memory instead.
    """
    if mc_samples:
        raise OtrainError("--mc-samples is not available with --scheduler (Dask): the dropout "
                          "masks follow the order in which batches are scored, which Dask does "
                          "not fix; score in one process")
    out = Path(output) if output is not None else default_output(source)
    fmt = output_format(out)
    check_writable(out, overwrite)
    if isinstance(source, str | Path) and not Path(source).exists():
        raise OtrainError("no such folder or file", source)
    report = InferReport()
    plan = _plan(source, load_model(model_path, "cpu"), channels, cutout_size, batch_size,
                 threshold, device, chunk_size, report)
    columns: list[str] = []
    with use_client(client, scheduler, workers, quiet) as cl, \
            atomic_output(out, overwrite) as tmp, open(tmp, "w", newline="") as handle:
        writer = _TableWriter(handle, fmt)
        for table in _run(cl, plan, strict, retries, quiet, report):
            writer.write(table)
            columns = columns or table.colnames
    report.output = str(out)
    return InferResult(Table(names=columns), report)


def dask_infer(args: Any) -> Callable[..., InferResult]:
    """``otrain-infer --scheduler``: :func:`infer_distributed` bound to ``--scheduler`` and
    ``--chunk-size`` (the other flags are those of :func:`otrain.inference.infer`)."""
    return functools.partial(infer_distributed, scheduler=args.scheduler,
                             chunk_size=args.chunk_size)
