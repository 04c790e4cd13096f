"""Streaming core of inference: read cutouts in parallel, normalise, score, batch by batch.

Reading: each file is read once, by worker processes (:func:`otrain.parallel.ordered_map`), in
chunks of files that are read *and normalised* in the worker; while the network scores batch ``k``
the workers read batch ``k + 1``. Images exist for at most two batches at a time; every batch
becomes a small scores table (:data:`TABLE_COLUMNS`) that is yielded, so the caller chooses what
to keep (:mod:`otrain.inference` keeps only these rows, about 200 bytes each).

Unreadable files are skipped and listed in the :class:`InferReport` (``strict`` makes the first
one fatal); if the whole first batch, or every file, fails, the run stops with the first reason
(typically wrong channels or cutout size). Edge cutouts are scored and flagged in ``edge``.

Threads: see :func:`plan_threads`. The network runs as a frozen TorchScript graph with oneDNN
convolutions (eager channels-last when that fails), in passes of :data:`FORWARD_CHUNK` cutouts.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from astropy.table import Table

from otrain.cutouts import CUTOUT_SUFFIXES, EXTENSION_NAMES, find_cutouts, read_cutout
from otrain.datacube import Datacube
from otrain.errors import CutoutError, OtrainError
from otrain.modelfile import LoadedModel
from otrain.normalise import normalise
from otrain.parallel import ordered_map, resolve_workers
from otrain.progress import Progress

#: Output columns of the original ``otrain-infer``, in order; ``edge``/``class``/``label`` follow.
ORIGINAL_COLUMNS = ("filename", "RA", "Dec", "originalFile", "Xpos", "Ypos", "mag", "magerr",
                    "FWHM", "FWHMPSF", "cand_ID", "label0", "label1")
TABLE_COLUMNS = (*ORIGINAL_COLUMNS, "edge", "class", "label")
#: Output column -> cutout metadata / datacube table column.
_SOURCE = {"RA": "ra", "Dec": "dec", "originalFile": "file", "Xpos": "xpos", "Ypos": "ypos",
           "mag": "mag", "magerr": "magerr", "FWHM": "fwhm", "FWHMPSF": "fwhmpsf",
           "cand_ID": "candid"}
_STRING_COLUMNS = ("filename", "originalFile", "cand_ID")
#: Files per reading task of a worker process.
_CHUNK = 32
#: Cutouts per forward pass (smaller passes keep the activations in cache).
FORWARD_CHUNK = 128
#: Skipped files kept (with reasons) in the report; all are counted.
_KEEP_SKIPPED = 1000


@dataclass
class InferReport:
    """What a scoring run did.

    Attributes
    ----------
    source : str
        The folder, cube or first file scored.
    n_inputs, n_scored, n_edge, n_skipped : int
        Files (or cube rows) given, scored, scored with ``edge`` true, skipped as unreadable.
    n_real : int
        Scored rows with P(real) above ``threshold``.
    threshold : float
        The threshold given, else the model's recorded one (used for ``n_real`` only).
    skipped : list of (str, str)
        File and reason of the first skipped files.
    seconds : float
        Wall time of reading and scoring.
    output : str or None
        File written by :func:`infer`.
    """

    source: str = ""
    n_inputs: int = 0
    n_scored: int = 0
    n_edge: int = 0
    n_skipped: int = 0
    n_real: int = 0
    threshold: float = 0.5
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    output: str | None = None

    def summary(self, first: int = 5) -> str:
        """A few lines for the terminal: counts, the first skipped files, the output."""
        rate = self.n_scored / self.seconds if self.seconds > 0 else 0.0
        lines = [f"scored {self.n_scored} of {self.n_inputs} cutouts from {self.source} "
                 f"({rate:.0f}/s)",
                 f"real (P(real) > {self.threshold:g}): {self.n_real}; edge: {self.n_edge}; "
                 f"skipped: {self.n_skipped}"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped[:first]]
        if self.n_skipped > first:
            lines.append(f"  ... and {self.n_skipped - first} more")
        if self.output:
            lines.append(f"Saved to {self.output}")
        return "\n".join(lines)


@dataclass
class _Chunk:
    """What a worker returns for one chunk of files: normalised images and metadata."""

    images: np.ndarray
    paths: list[str]
    meta: list[dict[str, Any]]
    errors: list[tuple[str, str]]


# ------------------------------------------------------------------------------------------
# Reading (worker side) and scoring
# ------------------------------------------------------------------------------------------
def _read_chunk(paths: Sequence[str], channels: tuple[str, ...], cutout_size: int,
                shape: tuple[int, int, int], method: str) -> _Chunk:
    images, ok, metas, errors = [], [], [], []
    for path in paths:
        try:
            cut = read_cutout(path, channels, cutout_size)
            if cut.image.shape != shape:
                c, h, w = cut.image.shape
                raise CutoutError(f"cutout is {h}x{w} with {c} channel(s), the model expects "
                                  f"{shape[1]}x{shape[2]} with {shape[0]} (see --cutout-size)")
        except CutoutError as exc:
            errors.append((path, exc.reason))
            continue
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
            errors.append((path, f"unreadable ({exc.__class__.__name__}: {exc})"))
            continue
        images.append(cut.image)
        ok.append(path)
        metas.append(cut.meta)
    stack = np.stack(images) if images else np.empty((0, *shape), np.float32)
    return _Chunk(normalise(stack, method), ok, metas, errors)


class _Scorer:
    """The model's network in eval mode, as probabilities ``(N, 2)``: P(bogus), P(real).

    On CPU the network is traced, frozen and optimised for inference (oneDNN convolutions with
    fused in-place ReLU, about 1.5x faster than eager channels-last) and checked against the eager
    network on a probe batch. TorchScript is deprecated in recent torch: on any failure or
    difference, or on GPU, the eager network is used (channels-last on CPU).
    """

    def __init__(self, loaded: LoadedModel, shape: tuple[int, int, int]) -> None:
        self.device = loaded.device
        model = copy.deepcopy(loaded.model).eval()
        self.channels_last = self.device.type == "cpu"
        self.model: Any = model.to(memory_format=torch.channels_last) if self.channels_last \
            else model
        if self.device.type == "cpu":
            try:
                probe = torch.randn((4, *shape), generator=torch.Generator().manual_seed(0))
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(model, probe[:1])
                    fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                    if torch.allclose(fast(probe), model(probe), rtol=1e-4, atol=1e-5):
                        self.model, self.channels_last = fast, False
            except Exception:  # any TorchScript failure: keep the eager network
                pass

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """P(class) ``(N, 2)`` float64 for normalised images ``(N, C, H, W)``."""
        out = np.empty((images.shape[0], 2), dtype=np.float64)
        with torch.inference_mode():
            for s in range(0, images.shape[0], FORWARD_CHUNK):
                x = torch.from_numpy(np.ascontiguousarray(images[s:s + FORWARD_CHUNK]))
                x = x.to(self.device)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = self.model(x).double()
                out[s:s + x.shape[0]] = torch.softmax(logits, dim=1).cpu().numpy()
        return out


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


def _model_channels(loaded: LoadedModel, channels: Sequence[str] | None) -> tuple[str, ...]:
    """Channels to read: those given, else the model's (generic ``chN`` -> diff, sci, ref)."""
    if channels is not None:
        return tuple(channels)
    names = loaded.channels
    if all(n in EXTENSION_NAMES for n in names):
        return tuple(names)
    if len(names) <= len(EXTENSION_NAMES):
        return tuple(list(EXTENSION_NAMES)[:len(names)])
    raise OtrainError(f"model has {len(names)} channels [{', '.join(names)}]; pass --channels")


def _rows(meta: Sequence[dict[str, Any]], filenames: Sequence[str], probs: np.ndarray,
          edge: np.ndarray, threshold: float | None, labels: np.ndarray | None) -> Table:
    """One batch of the scores table."""
    cols: dict[str, Any] = {"filename": np.asarray(filenames, dtype=str)}
    for out, src in _SOURCE.items():
        if out in _STRING_COLUMNS:
            cols[out] = np.asarray([m.get(src, "") for m in meta], dtype=str)
        else:
            cols[out] = np.asarray([m.get(src, np.nan) for m in meta], dtype=np.float64)
    cols["label0"], cols["label1"] = probs[:, 0], probs[:, 1]
    cols["edge"] = np.asarray(edge, dtype=bool)
    if threshold is not None:
        cols["class"] = (probs[:, 1] > threshold).astype(np.int8)
    if labels is not None:
        cols["label"] = np.asarray(labels, dtype=np.int8)
    return Table(cols, names=list(cols))


def _account(report: InferReport, table: Table, threshold: float) -> None:
    report.n_scored += len(table)
    report.n_edge += int(np.count_nonzero(table["edge"]))
    report.n_real += int(np.count_nonzero(np.asarray(table["label1"]) > threshold))


def _skip(report: InferReport, errors: Sequence[tuple[str, str]], strict: bool) -> None:
    if errors and strict:
        raise CutoutError(f"{errors[0][1]} (--strict stops at the first unusable file)",
                          errors[0][0])
    report.n_skipped += len(errors)
    report.skipped.extend(errors[:max(0, _KEEP_SKIPPED - len(report.skipped))])


def _check_settings(batch_size: int, threshold: float | None) -> None:
    if batch_size < 1:
        raise OtrainError(f"batch size must be at least 1, got {batch_size}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise OtrainError(f"threshold must be in [0, 1], got {threshold}")


def _all_failed(report: InferReport, what: str) -> OtrainError:
    path, reason = report.skipped[0]
    return OtrainError(f"{what} could be read; the first, {path}: {reason}")


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
) -> Iterator[Table]:
    """Score cutout files batch by batch, yielding one scores table per batch (streaming).

    Parameters
    ----------
    paths_or_folder : str, Path or sequence of them
        A folder (its cutouts, sorted by name, as :func:`otrain.cutouts.find_cutouts`) or files.
    loaded : LoadedModel
        From :func:`otrain.modelfile.load_model`.
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
    _check_settings(batch_size, threshold)
    chans = _model_channels(loaded, channels)
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
    reader = functools.partial(_read_chunk, channels=chans, cutout_size=cutout_size,
                               shape=(len(chans), h, w), method=loaded.normalisation)
    chunk = max(1, min(_CHUNK, batch_size // n_workers))
    tasks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    n_workers = min(n_workers, len(tasks))
    per_batch = max(1, batch_size // chunk)
    scorer = _Scorer(loaded, (len(chans), h, w))
    start = time.monotonic()
    with _torch_threads(n_threads), Progress(len(files), "scoring cutouts", quiet,
                                                 unit="cutout") as bar, \
            contextlib.closing(ordered_map(reader, tasks, n_workers, per_batch)) as results:
        for k in range(0, len(tasks), per_batch):
            parts = [next(results) for _ in tasks[k:k + per_batch]]
            errors = [e for p in parts for e in p.errors]
            _skip(report, errors, strict)
            meta = [m for p in parts for m in p.meta]
            if not meta and k == 0 and len(files) > batch_size:
                raise _all_failed(report, f"none of the first {len(errors)} files")
            if meta:
                probs = scorer(np.concatenate([p.images for p in parts]))
                table = _rows(meta, [f for p in parts for f in p.paths], probs,
                              [m["edge"] for m in meta], threshold, None)
                _account(report, table, thr)
                report.seconds = time.monotonic() - start
                yield table
            bar.update(sum(len(t) for t in tasks[k:k + per_batch]))
    report.seconds = time.monotonic() - start
    if report.n_scored == 0:
        raise _all_failed(report, f"none of the {len(files)} file(s)")


def iter_datacube_scores(
    cube: Datacube,
    loaded: LoadedModel,
    cutout_size: int | None = None,
    batch_size: int = 512,
    threshold: float | None = None,
    quiet: bool = False,
    report: InferReport | None = None,
) -> Iterator[Table]:
    """Score the rows of a datacube batch by batch (streaming); see :func:`score_datacube`."""
    report = report if report is not None else InferReport()
    _check_settings(batch_size, threshold)
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
    names = [n for n in (*_SOURCE.values(), "source_file") if n in tab.colnames]
    scorer = _Scorer(loaded, (len(cube.channels), *(crop or (ch, cw))))
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
            table = _rows(meta, filenames, probs, edge, threshold,
                          labels[rows] if labelled else None)
            _account(report, table, thr)
            report.seconds = time.monotonic() - start
            bar.update(len(rows))
            yield table
    report.seconds = time.monotonic() - start


