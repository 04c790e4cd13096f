"""The worker side of scoring on Dask (:mod:`otrain.inference.dask.client`): one task per chunk.

A worker process loads the model once (a cache keyed by the model path, its modification time,
the device and the input shape; the TorchScript graph of
:class:`otrain.inference.scoring.Scorer` is built once too) and opens a datacube once (its
table is read whole, once). Each task reads its files or cube rows ``batch_size`` at a time,
normalises and scores them with one torch thread (Dask runs one task per worker thread; the
parallelism is in the worker processes), and returns the chunk's rows of the scores table
(:data:`otrain.inference.scoring.TABLE_COLUMNS`) and its skipped files. The rows are built by
the single-process path's own functions, so both paths give the same table.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from astropy.table import Table

from otrain.alerts import AlertReport
from otrain.datacube.cube import Datacube
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.inference.alerts import iter_alert_scores, skipped_alerts
from otrain.inference.scoring import (
    SOURCE_COLUMNS,
    InferReport,
    Scorer,
    read_chunk,
    stack_tables,
    table_rows,
)
from otrain.models.modelfile import LoadedModel, load_model
from otrain.models.normalise import normalise


@dataclass(frozen=True)
class Spec:
    """What a worker needs to score a chunk (small: sent with every task)."""

    model_path: str
    model_mtime_ns: int
    device: str
    shape: tuple[int, int, int]
    normalisation: str
    threshold: float | None
    batch_size: int
    channels: tuple[str, ...] = ()
    cutout_size: int = -1
    cube_path: str = ""
    cube_mtime_ns: int = 0
    crop: int | None = None
    labelled: bool = False
    #: Requested precision; each worker resolves it for its own hardware.
    precision: str = "fp32"


@dataclass
class Part:
    """A worker's answer for one chunk: its rows (None when none scored) and skipped files.

    For alert files, ``n_inputs`` counts the alerts decoded, ``errors`` the first problems met
    and ``n_skipped`` the alerts left out (a corrupt file is one problem, however many alerts).
    """

    n_inputs: int
    table: Table | None
    errors: list[tuple[str, str]] = field(default_factory=list)
    n_skipped: int | None = None
    #: What the worker's network ran in (:meth:`otrain.models.precision.Precision.record`).
    precision: dict[str, str] | None = None


_LOCK = threading.Lock()
#: Models and open cubes a worker process keeps (the oldest goes first).
_KEEP = 4
_MODELS: dict[tuple[Any, ...], Any] = {}
_CUBES: dict[tuple[str, int], Datacube] = {}


def _cached_model(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """The model of this worker process under ``key``, built by ``build()`` on first use (one
    torch thread per task)."""
    with _LOCK:
        if key not in _MODELS:
            if len(_MODELS) >= _KEEP:
                _MODELS.pop(next(iter(_MODELS)))
            torch.set_num_threads(1)
            _MODELS[key] = build()
        return _MODELS[key]


def _worker_scorer(spec: Spec) -> Any:
    """The scorer (TorchScript graph) of this worker process."""
    return _cached_model((spec.model_path, spec.model_mtime_ns, spec.device, spec.shape,
                          spec.precision),
                         lambda: Scorer(load_model(spec.model_path, spec.device), spec.shape,
                                        spec.precision))


def _worker_model(spec: Spec) -> LoadedModel:
    """The loaded model of this worker process (alert scoring uses the eager network, as the
    single-process alert path does)."""
    return _cached_model((spec.model_path, spec.model_mtime_ns, spec.device, "eager"),
                         lambda: load_model(spec.model_path, spec.device))


def _worker_cube(spec: Spec) -> Datacube:
    """The cube, opened once per worker process (its table is read whole, once)."""
    key = (spec.cube_path, spec.cube_mtime_ns)
    with _LOCK:
        if key not in _CUBES:
            if len(_CUBES) >= _KEEP:
                _CUBES.pop(next(iter(_CUBES))).close()
            _CUBES[key] = open_datacube(spec.cube_path)
        return _CUBES[key]


def _score(scorer: Any, images: np.ndarray) -> np.ndarray:
    """P(class) of normalised images; a lone cutout is scored in a pair, since a forward pass
    of one cutout can differ from the same cutout in a batch in the last bits (oneDNN), and a
    chunk's last batch must not change the scores."""
    if images.shape[0] == 1:
        return scorer(np.concatenate([images, images]))[:1]
    return scorer(images)


def score_files(files: Sequence[str], spec: Spec) -> Part:
    """Worker task: read, normalise and score cutout files, ``batch_size`` at a time."""
    scorer = _worker_scorer(spec)
    tables, errors = [], []
    for s in range(0, len(files), spec.batch_size):
        chunk = read_chunk(files[s:s + spec.batch_size], spec.channels, spec.cutout_size,
                            spec.shape, spec.normalisation)
        errors.extend(chunk.errors)
        if chunk.meta:
            tables.append(table_rows(chunk.meta, chunk.paths, _score(scorer, chunk.images),
                                [m["edge"] for m in chunk.meta], spec.threshold, None))
    return Part(len(files), stack_tables(tables), errors, precision=scorer.precision.record())


def score_rows(bounds: tuple[int, int], spec: Spec) -> Part:
    """Worker task: score the datacube rows ``bounds[0]`` to ``bounds[1] - 1``."""
    scorer = _worker_scorer(spec)
    cube = _worker_cube(spec)
    tab = cube.table
    names = [n for n in (*SOURCE_COLUMNS.values(), "source_file") if n in tab.colnames]
    _, ch, cw = cube.image_shape
    tables = []
    for rows, images in cube.iter_batches(spec.batch_size, np.arange(*bounds)):
        if spec.crop is not None:
            size = spec.crop
            y0, x0 = ch // 2 - size // 2, cw // 2 - size // 2
            images = images[:, :, y0:y0 + size, x0:x0 + size]
        probs = _score(scorer, normalise(images, spec.normalisation))
        sub = tab[rows]
        meta = [dict(zip(names, vals, strict=True))
                for vals in zip(*(np.asarray(sub[n]).tolist() for n in names), strict=True)]
        filenames = [str(m.get("source_file") or m.get("candid", "")) for m in meta]
        edge = (np.asarray(sub["edge"], dtype=bool) if "edge" in sub.colnames
                else np.zeros(len(rows), dtype=bool))
        labels = np.asarray(sub["label"], dtype=np.int64) if spec.labelled else None
        tables.append(table_rows(meta, filenames, probs, edge, spec.threshold, labels))
    return Part(bounds[1] - bounds[0], stack_tables(tables), precision=scorer.precision.record())


def score_alert_files(files: Sequence[str], spec: Spec) -> Part:
    """Worker task: decode and score alert files with the single-process alert path
    (:func:`otrain.inference.alerts.iter_alert_scores`), ``batch_size`` alerts at a time."""
    loaded = _worker_model(spec)
    alerts, report = AlertReport(), InferReport()
    tables: list[Table] = []
    with contextlib.suppress(OtrainError):  # raised when nothing scored: the problems say why
        tables.extend(iter_alert_scores(list(files), loaded, spec.batch_size, spec.threshold,
                                        quiet=True, report=report, alert_report=alerts,
                                        precision=spec.precision))
    return Part(alerts.n_alerts, stack_tables(tables), skipped_alerts(alerts),
                n_skipped=alerts.n_alerts - alerts.n_kept, precision=report.precision)
