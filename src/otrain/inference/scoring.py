"""The pieces every scoring path shares (one process, Dask workers): the scores table's columns,
the run report, reading a chunk of cutout files, the network as a scorer, the table rows and the
bookkeeping of scored and skipped inputs. :mod:`otrain.inference.stream` streams them in one
process, :mod:`otrain.inference.dask.worker` on Dask.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from astropy.table import Table

from otrain.cutouts.reading import EXTENSION_NAMES, read_cutout
from otrain.errors import CutoutError, OtrainError
from otrain.models.modelfile import LoadedModel
from otrain.models.normalise import normalise
from otrain.models.precision import (
    GuardedForward,
    Precision,
    low_precision_scorer,
    resolve_precision,
)

__all__ = ["FORWARD_CHUNK", "ORIGINAL_COLUMNS", "SOURCE_COLUMNS", "TABLE_COLUMNS", "Chunk",
           "InferReport", "Scorer", "account", "all_failed", "check_settings", "model_channels",
           "read_chunk", "skip", "stack_tables", "table_rows"]

#: Output columns of the original ``otrain-infer``, in order; ``edge``/``class``/``label`` follow.
ORIGINAL_COLUMNS = ("filename", "RA", "Dec", "originalFile", "Xpos", "Ypos", "mag", "magerr",
                    "FWHM", "FWHMPSF", "cand_ID", "label0", "label1")
TABLE_COLUMNS = (*ORIGINAL_COLUMNS, "edge", "class", "label")
#: Output column -> cutout metadata / datacube table column.
SOURCE_COLUMNS = {"RA": "ra", "Dec": "dec", "originalFile": "file", "Xpos": "xpos", "Ypos": "ypos",
           "mag": "mag", "magerr": "magerr", "FWHM": "fwhm", "FWHMPSF": "fwhmpsf",
           "cand_ID": "candid"}
STRING_COLUMNS = ("filename", "originalFile", "cand_ID")
#: Cutouts per forward pass (smaller passes keep the activations in cache).
FORWARD_CHUNK = 128
#: Skipped files kept (with reasons) in the report; all are counted.
KEEP_SKIPPED = 1000


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
    precision : dict or None
        What the network ran in (:meth:`otrain.models.precision.Precision.record`; with Dask,
        ``precision`` lists every worker's choice, comma-separated, and ``note`` any fallback).
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
    precision: dict[str, str] | None = None

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
        if self.precision:
            p = self.precision
            lines.append(f"precision {p['precision']} ({p['requested']}: {p['reason']})"
                         + (f"; {p['note']}" if p.get("note") else ""))
        if self.output:
            lines.append(f"Saved to {self.output}")
        return "\n".join(lines)


@dataclass
class Chunk:
    """What a worker returns for one chunk of files: normalised images and metadata."""

    images: np.ndarray
    paths: list[str]
    meta: list[dict[str, Any]]
    errors: list[tuple[str, str]]


def read_chunk(paths: Sequence[str], channels: tuple[str, ...], cutout_size: int,
                shape: tuple[int, int, int], method: str) -> Chunk:
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
    return Chunk(normalise(stack, method), ok, metas, errors)


class Scorer:
    """The model's network in eval mode, as probabilities ``(N, 2)``: P(bogus), P(real).

    On CPU the network is traced, frozen and optimised for inference (oneDNN convolutions with
    fused in-place ReLU, about 1.5x faster than eager channels-last) and checked against the eager
    network on a probe batch. TorchScript is deprecated in recent torch: on any failure or
    difference, or on GPU, the eager network is used (channels-last on CPU).

    ``precision`` (:mod:`otrain.models.precision`): bf16/fp16 run a low-precision copy
    (channels-last, logits layer in fp32) instead; the first batch is scored in fp32 too and a
    difference above :data:`~otrain.models.precision.INFER_TOLERANCE` falls back to fp32
    (``self.precision`` then carries the note).
    """

    def __init__(self, loaded: LoadedModel, shape: tuple[int, int, int],
                 precision: str | Precision = "fp32") -> None:
        self.device = loaded.device
        model = copy.deepcopy(loaded.model).eval()
        self.precision = (precision if isinstance(precision, Precision)
                          else resolve_precision(precision, self.device, inference=True))
        self.channels_last = self.device.type == "cpu"
        self.model: Any = model.to(memory_format=torch.channels_last) if self.channels_last \
            else model
        low = None
        if self.precision.dtype is not None:  # fp32 (eager) only for the first-batch guard
            low = low_precision_scorer(model, self.precision, self.device)
        elif self.device.type == "cpu":
            self._freeze(model, shape)
        self.forward = GuardedForward(self._fp32, low, self.precision)

    def _freeze(self, model: torch.nn.Module, shape: tuple[int, int, int]) -> None:
        try:
            probe = torch.randn((4, *shape), generator=torch.Generator().manual_seed(0))
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                # check_trace=False: the check (torch.testing) imports torch.distributed.tensor,
                # seconds of start-up; the frozen graph is checked on the probe below instead
                traced = torch.jit.trace(model, probe[:1], check_trace=False)
                fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                if torch.allclose(fast(probe), model(probe), rtol=1e-4, atol=1e-5):
                    self.model, self.channels_last = fast, False
        except Exception:  # any TorchScript failure: keep the eager network
            pass

    def _fp32(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """P(class) ``(N, 2)`` float64 for normalised images ``(N, C, H, W)``.

        Every forward pass has the same shape (a short last pass is padded with zeros to
        :data:`FORWARD_CHUNK` rows): oneDNN picks its kernels, and so its summation order, by
        batch size, so without the padding a cutout's score would depend in its last bits on
        how the inputs happened to be batched (worker count, chunk size, Dask partitions).
        """
        n = images.shape[0]
        out = np.empty((n, 2), dtype=np.float64)
        with torch.inference_mode():
            for s in range(0, n, FORWARD_CHUNK):
                batch = np.ascontiguousarray(images[s:s + FORWARD_CHUNK])
                k = batch.shape[0]
                if k < FORWARD_CHUNK:
                    batch = np.concatenate([batch, np.zeros((FORWARD_CHUNK - k, *batch.shape[1:]),
                                                            dtype=batch.dtype)])
                x = torch.from_numpy(batch)
                if self.device.type == "cuda":  # pinned: the copy overlaps the last pass
                    x = x.pin_memory().to(self.device, non_blocking=True)
                logits = self.forward(x, k)[:k].double()
                out[s:s + k] = torch.softmax(logits, dim=1).cpu().numpy()
        return out


def model_channels(loaded: LoadedModel, channels: Sequence[str] | None) -> tuple[str, ...]:
    """Channels to read: those given, else the model's (generic ``chN`` -> diff, sci, ref)."""
    if channels is not None:
        return tuple(channels)
    names = loaded.channels
    if all(n in EXTENSION_NAMES for n in names):
        return tuple(names)
    if len(names) <= len(EXTENSION_NAMES):
        return tuple(list(EXTENSION_NAMES)[:len(names)])
    raise OtrainError(f"model has {len(names)} channels [{', '.join(names)}]; pass --channels")


def table_rows(meta: Sequence[dict[str, Any]], filenames: Sequence[str], probs: np.ndarray,
          edge: np.ndarray, threshold: float | None, labels: np.ndarray | None) -> Table:
    """One batch of the scores table."""
    cols: dict[str, Any] = {"filename": np.asarray(filenames, dtype=str)}
    for out, src in SOURCE_COLUMNS.items():
        if out in STRING_COLUMNS:
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


def account(report: InferReport, table: Table, threshold: float) -> None:
    report.n_scored += len(table)
    report.n_edge += int(np.count_nonzero(table["edge"]))
    report.n_real += int(np.count_nonzero(np.asarray(table["label1"]) > threshold))


def skip(report: InferReport, errors: Sequence[tuple[str, str]], strict: bool) -> None:
    if errors and strict:
        raise CutoutError(f"{errors[0][1]} (--strict stops at the first unusable file)",
                          errors[0][0])
    report.n_skipped += len(errors)
    report.skipped.extend(errors[:max(0, KEEP_SKIPPED - len(report.skipped))])


def check_settings(batch_size: int, threshold: float | None) -> None:
    if batch_size < 1:
        raise OtrainError(f"batch size must be at least 1, got {batch_size}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise OtrainError(f"threshold must be in [0, 1], got {threshold}")


def all_failed(report: InferReport, what: str) -> OtrainError:
    path, reason = report.skipped[0]
    return OtrainError(f"{what} could be read; the first, {path}: {reason}")


def stack_tables(tables: Sequence[Table]) -> Table | None:
    """The batches of a scores table as one table (None when there is none)."""
    if not tables:
        return None
    if len(tables) == 1:
        return tables[0]
    names = tables[0].colnames
    return Table({n: np.concatenate([np.asarray(t[n]) for t in tables]) for n in names},
                 names=names)
