"""Streaming core of inference: read cutouts in parallel, normalise, score, batch by batch.

Reading: each file is read once, by worker processes (:func:`otrain.parallel.ordered_map`), in
chunks of files that are read *and normalised* in the worker; while the network scores batch ``k``
the workers read batch ``k + 1``. Images exist for at most two batches at a time; every batch
becomes a small scores table
(:data:`~otrain.inference.scoring.TABLE_COLUMNS`) that is yielded, so the
caller chooses what to keep (:mod:`otrain.inference` keeps only these rows, about 200 bytes
each).

Unreadable files are skipped and listed in the :class:`InferReport` (``strict`` makes the first
one fatal); if the whole first batch, or every file, fails, the run stops with the first reason
(typically wrong channels or cutout size). Edge cutouts are scored and flagged in ``edge``.

Threads: see :func:`plan_threads`. The network
(:class:`~otrain.inference.scoring.Scorer`) runs as a frozen
TorchScript graph with oneDNN convolutions (eager channels-last when that fails), in passes of
:data:`otrain.inference.scoring.FORWARD_CHUNK` cutouts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from otrain.cutouts.reading import CUTOUT_SUFFIXES, find_cutouts
from otrain.datacube.cube import Datacube
from otrain.errors import OtrainError
from otrain.inference.scoring import (
    SOURCE_COLUMNS,
    InferReport,
    Scorer,
    account,
    all_failed,
    check_settings,
    model_channels,
    read_chunk,
    skip,
    table_rows,
)
from otrain.models.modelfile import LoadedModel
from otrain.models.normalise import normalise
from otrain.parallel import ordered_map, resolve_workers
from otrain.progress import Progress

#: Files per reading task of a worker process.
_CHUNK = 32


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def plan_threads(workers: int, n_files: int) -> tuple[int, int]:
    """Reading processes and torch threads for scoring ``n_files`` files.

    By default half the cores read (at least 2 processes; fewer for few files, one meaning
    in-process reading between forward passes). Torch gets every core when its OpenMP threads
    sleep while waiting (``OMP_WAIT_POLICY=PASSIVE``, set by ``otrain-infer``); with the default
    spinning threads it gets only the cores no reader uses, since a spinning team slows down
    several-fold when a reader takes one of its cores.

    Returns
    -------
    tuple of int
        ``(reading processes, torch threads)``.
    """
    cores = _cpu_count()
    readers = workers if workers > 0 else resolve_workers(max(2, cores // 2), n_files)
    passive = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    return readers, (cores if readers <= 1 or passive else max(1, cores - readers))


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def iter_cutout_scores(
    paths_or_folder: str | Path | Sequence[str | Path],
    loaded: LoadedModel,
    channels: Sequence[str] | None = None,
    cutout_size: int | None = None,
    batch_size: int = 512,
    workers: int = 0,
    threshold: float | None = None,
    strict: bool = False,
    quiet: bool = False,
    report: InferReport | None = None,
    mc_samples: int = 0,
    seed: int = 0,
) -> Iterator[Table]:
    """Score cutout files batch by batch, yielding one scores table per batch (streaming).

    Parameters
    ----------
    paths_or_folder : str, Path or sequence of them
        A folder (its cutouts, sorted by name, as :func:`otrain.cutouts.find_cutouts`) or files.
    loaded : LoadedModel
        From :func:`otrain.models.modelfile.load_model`.
    channels : sequence of str, optional
        Channels to read (default: the model's).
    cutout_size : int, optional
        Centre-crop size; default the model's input size (-1 keeps the files' size).
    batch_size : int, default 512
        Cutouts read and scored per batch.
    workers : int, default 0
        Reading processes; 0 chooses with :func:`plan_threads` (half the cores, at least 2).
    threshold : float, optional
        Adds the ``class`` column (1 when P(real) > threshold).
    strict : bool, default False
        Stop at the first unusable file instead of skipping it.
    quiet : bool, default False
        No progress output.
    report : InferReport, optional
        Filled in as batches are scored.
    mc_samples, seed : int, default 0
        MC-dropout passes per member (0: none) and their seed; with them, or with an ensemble,
        the table has ``p_real_std`` (:class:`~otrain.inference.scoring.Scorer`).

    Yields
    ------
    astropy.table.Table
        The rows of one batch (skipped files have no row). Torch's thread count is set for the
        run (see :func:`plan_threads`) and restored when the generator finishes or is closed.
    """
    report = report if report is not None else InferReport()
    if isinstance(paths_or_folder, str | Path) and Path(paths_or_folder).is_dir():
        files = [str(p) for p in find_cutouts(paths_or_folder)]
        report.source = str(paths_or_folder)
        if not files:
            raise OtrainError(f"no cutout files ({', '.join(CUTOUT_SUFFIXES)})", paths_or_folder)
    else:
        items = [paths_or_folder] if isinstance(paths_or_folder, str | Path) else paths_or_folder
        files = [str(f) for p in items
                 for f in (find_cutouts(p) if Path(p).is_dir() else [p])]  # folders expanded
        if not files:
            raise OtrainError("no cutout files given")
        report.source = files[0] if len(files) == 1 else f"{len(files)} files"
    check_settings(batch_size, threshold)
    chans = model_channels(loaded, channels)
    h, w = loaded.input_size
    if cutout_size is None:
        cutout_size = h if h == w else -1
    if cutout_size != -1:
        loaded.check_input(chans, (cutout_size, cutout_size))
    else:
        loaded.check_input(chans, (h, w))
    report.n_inputs = len(files)
    thr = loaded.threshold if threshold is None else threshold
    report.threshold = thr
    n_workers, n_threads = plan_threads(workers, len(files))
    reader = functools.partial(read_chunk, channels=chans, cutout_size=cutout_size,
                               shape=(len(chans), h, w), method=loaded.normalisation)
    chunk = max(1, min(_CHUNK, batch_size // n_workers))
    tasks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    n_workers = min(n_workers, len(tasks))
    per_batch = max(1, batch_size // chunk)
    scorer = Scorer(loaded, (len(chans), h, w), mc_samples, seed)
    start = time.monotonic()
    with _torch_threads(n_threads), Progress(len(files), "scoring cutouts", quiet,
                                                 unit="cutout") as bar, \
            contextlib.closing(ordered_map(reader, tasks, n_workers, per_batch)) as results:
        for k in range(0, len(tasks), per_batch):
            parts = [next(results) for _ in tasks[k:k + per_batch]]
            errors = [e for p in parts for e in p.errors]
            skip(report, errors, strict)
            meta = [m for p in parts for m in p.meta]
            if not meta and k == 0 and len(files) > batch_size:
                raise all_failed(report, f"none of the first {len(errors)} files")
            if meta:
                probs = scorer(np.concatenate([p.images for p in parts]))
                table = table_rows(meta, [f for p in parts for f in p.paths], probs,
                              [m["edge"] for m in meta], threshold, None)
                account(report, table, thr)
                report.seconds = time.monotonic() - start
                yield table
            bar.update(sum(len(t) for t in tasks[k:k + per_batch]))
    report.seconds = time.monotonic() - start
    if report.n_scored == 0:
        raise all_failed(report, f"none of the {len(files)} file(s)")


def iter_datacube_scores(
    cube: Datacube,
    loaded: LoadedModel,
    cutout_size: int | None = None,
    batch_size: int = 512,
    threshold: float | None = None,
    quiet: bool = False,
    report: InferReport | None = None,
    mc_samples: int = 0,
    seed: int = 0,
) -> Iterator[Table]:
    """Score the rows of a datacube batch by batch (streaming); see :func:`score_datacube`
    (``mc_samples``, ``seed``: as :func:`iter_cutout_scores`)."""
    report = report if report is not None else InferReport()
    check_settings(batch_size, threshold)
    report.source = str(cube.path) if cube.path else "datacube"
    report.n_inputs = len(cube)
    _, ch, cw = cube.image_shape
    h, w = loaded.input_size
    size = (h if h == w else -1) if cutout_size is None else cutout_size
    crop = (size, size) if size != -1 and (size, size) != (ch, cw) else None
    if crop is not None and (size <= 0 or size > min(ch, cw)):
        raise OtrainError(f"cannot crop {ch}x{cw} cutouts to {size}x{size}", cube.path)
    loaded.check_input(cube.channels, crop or (ch, cw))
    thr = loaded.threshold if threshold is None else threshold
    report.threshold = thr
    tab = cube.table
    labels = cube.labels
    labelled = bool(np.any(labels >= 0))
    names = [n for n in (*SOURCE_COLUMNS.values(), "source_file") if n in tab.colnames]
    scorer = Scorer(loaded, (len(cube.channels), *(crop or (ch, cw))), mc_samples, seed)
    start = time.monotonic()
    with _torch_threads(_cpu_count()), Progress(len(cube), "scoring datacube", quiet,
                                                 unit="cutout") as bar:
        for rows, images in cube.iter_batches(batch_size):
            if crop is not None:
                y0, x0 = ch // 2 - size // 2, cw // 2 - size // 2
                images = images[:, :, y0:y0 + size, x0:x0 + size]
            probs = scorer(normalise(images, loaded.normalisation))
            sub = tab[rows]
            meta = [dict(zip(names, vals, strict=True))
                    for vals in zip(*(np.asarray(sub[n]).tolist() for n in names), strict=True)]
            filenames = [str(m.get("source_file") or m.get("candid", "")) for m in meta]
            edge = (np.asarray(sub["edge"], dtype=bool) if "edge" in sub.colnames
                    else np.zeros(len(rows), dtype=bool))
            table = table_rows(meta, filenames, probs, edge, threshold,
                          labels[rows] if labelled else None)
            account(report, table, thr)
            report.seconds = time.monotonic() - start
            bar.update(len(rows))
            yield table
    report.seconds = time.monotonic() - start


