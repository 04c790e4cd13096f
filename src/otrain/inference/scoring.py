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

from otrain.cutouts.keywords import format_notes
from otrain.cutouts.reading import EXTENSION_NAMES, read_cutout
from otrain.errors import CutoutError, OtrainError
from otrain.models.ensemble import combine, normalised_member_probabilities
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

#: Output columns of the original ``otrain-infer``, in order; ``p_real_std`` (ensembles and
#: MC-dropout only), ``edge``, ``class``, ``label`` follow.
ORIGINAL_COLUMNS = ("filename", "RA", "Dec", "originalFile", "Xpos", "Ypos", "mag", "magerr",
                    "FWHM", "FWHMPSF", "cand_ID", "label0", "label1")
TABLE_COLUMNS = (*ORIGINAL_COLUMNS, "p_real_std", "edge", "class", "label")
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
    notes : dict of str to int
        Fallbacks taken (crop, keyword or EDGE absent), with the number of cutouts each.
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
    notes: dict[str, int] = field(default_factory=dict)
    n_nonfinite: int = 0
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
        lines += format_notes(self.notes, self.n_scored)
        if self.n_nonfinite:
            lines.append(f"note: {self.n_nonfinite} of {self.n_scored} scores are not finite "
                         "(written as nan): the model overflowed on those cutouts")
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
                shape: tuple[int, int, int], method: str,
                keywords: dict[str, str] | None = None) -> Chunk:
    images, ok, metas, errors = [], [], [], []
    for path in paths:
        try:
            cut = read_cutout(path, channels, cutout_size, keywords=keywords)
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


def _padded(x: torch.Tensor) -> torch.Tensor:
    """``x`` with zero rows appended up to :data:`FORWARD_CHUNK` (see :meth:`Scorer.__call__`)."""
    k = x.shape[0]
    return x if k >= FORWARD_CHUNK else torch.cat([x, x.new_zeros((FORWARD_CHUNK - k,
                                                                   *x.shape[1:]))])


class Scorer:
    """The model's networks in eval mode, as probabilities: P(bogus), P(real)[, p_real_std].

    On CPU each member's network is traced, frozen and optimised for inference (oneDNN
    convolutions with fused in-place ReLU, about 1.5x faster than eager channels-last) and
    checked against the eager network on a probe batch. TorchScript is deprecated in recent
    torch: on any failure or difference, or on GPU, the eager network is used (channels-last on
    CPU). With MC-dropout (``mc_samples > 0``) the eager networks run with dropout on.

    Scores follow :mod:`otrain.models.ensemble` (one prediction path): each member's logits are
    divided by the model's temperature (and offset by its logit bias), the members' (and MC
    passes') P(real) are averaged.
    :attr:`spread` is True for an ensemble or with MC-dropout: the output then has a third
    column, ``p_real_std``.

    ``precision`` (:mod:`otrain.models.precision`): bf16/fp16 run a low-precision copy of each
    member (channels-last, logits layer in fp32) instead; the first batch is scored in fp32 too
    (the frozen graph on CPU) and a difference above
    :data:`~otrain.models.precision.INFER_TOLERANCE` falls back to fp32, to the same graph, so
    a fallen-back run scores exactly as an fp32 one (``self.precision`` then carries the note).
    MC-dropout passes always run in fp32.
    """

    def __init__(self, loaded: LoadedModel, shape: tuple[int, int, int],
                 precision: str | Precision = "fp32", mc_samples: int = 0,
                 seed: int = 0) -> None:
        if mc_samples < 0:
            raise OtrainError(f"MC-dropout samples must be >= 0, got {mc_samples}")
        self.device = loaded.device
        self.temperature = loaded.temperature
        self.bias = loaded.logit_bias
        self.mc_samples, self.seed = int(mc_samples), int(seed)
        self.spread = len(loaded.members) > 1 or self.mc_samples > 0
        self.precision = (precision if isinstance(precision, Precision)
                          else resolve_precision(precision, self.device, inference=True))
        if self.mc_samples and self.precision.dtype is not None:
            self.precision.fall_back("MC-dropout passes run in fp32")
        self._batches = 0
        self.channels_last = self.device.type == "cpu"
        self.members: list[Any] = []
        self._guards: dict[int, GuardedForward] = {}
        for member in loaded.members:
            net = copy.deepcopy(member).eval()
            graph, last = self._build(net, shape)
            low = (low_precision_scorer(net, self.precision, self.device)
                   if self.precision.dtype is not None else None)
            self.members.append(graph)
            self._guards[id(graph)] = GuardedForward(self._fp32(graph, last), low,
                                                     self.precision)
        # kept for callers that used the single network (and its guard)
        self.model = self.members[0]
        self.forward = self._guards[id(self.model)]

    def _build(self, model: torch.nn.Module, shape: tuple[int, int, int]) -> tuple[Any, bool]:
        """The fastest exact fp32 form of one network and whether it wants channels-last."""
        eager = model.to(memory_format=torch.channels_last) if self.channels_last else model
        # also with a low-precision copy: the first batch is checked against this graph, and a
        # run that falls back to fp32 scores with it (the eager network is ~1.2x slower)
        if self.device.type != "cpu" or self.mc_samples:
            return eager, self.channels_last
        try:
            probe = torch.randn((4, *shape), generator=torch.Generator().manual_seed(0))
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                # check_trace=False: the check (torch.testing) imports torch.distributed.tensor,
                # seconds of start-up; the frozen graph is checked on the probe below instead
                traced = torch.jit.trace(model, probe[:1], check_trace=False)
                fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                if torch.allclose(fast(probe), model(probe), rtol=1e-4, atol=1e-5):
                    return fast, False
        except Exception:  # any TorchScript failure: keep the eager network
            pass
        return eager, self.channels_last

    def _check_members(self, images: np.ndarray) -> None:
        """Check every member of an ensemble on the first forward pass before any scores: one
        member that falls back puts them all in fp32, so no score mixes precisions."""
        x = torch.from_numpy(np.ascontiguousarray(images[:FORWARD_CHUNK])).to(self.device)
        k, x = x.shape[0], _padded(x)
        agree = [guard.check(x, k) for guard in self._guards.values()]
        if not all(agree):
            for guard in self._guards.values():
                guard.use_fp32()

    @staticmethod
    def _fp32(graph: Any, channels_last: bool) -> Any:
        def run(x: torch.Tensor) -> torch.Tensor:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return graph(x)
        return run

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """P(class) ``(N, 2)`` float64 for normalised images ``(N, C, H, W)``; ``(N, 3)`` with
        ``p_real_std`` as the third column when :attr:`spread`.

        Every forward pass has the same shape (a short last pass is padded with zeros to
        :data:`FORWARD_CHUNK` rows): oneDNN picks its kernels, and so its summation order, by
        batch size, so without the padding a cutout's score would depend in its last bits on
        how the inputs happened to be batched (worker count, chunk size, Dask partitions).
        With MC-dropout the masks are drawn per call in order (reproducible for the same
        inputs, batching and seed).
        """
        n = images.shape[0]

        def forward(model: Any, x: torch.Tensor) -> torch.Tensor:
            k = x.shape[0]
            return self._guards[id(model)](_padded(x), k)[:k].double()

        with torch.inference_mode():
            if self._batches == 0 and len(self._guards) > 1:
                self._check_members(images)
            p = normalised_member_probabilities(
                self.members, images, self.temperature, self.device, FORWARD_CHUNK,
                self.mc_samples, self.seed, forward=forward, first_batch=self._batches,
                bias=self.bias)
        self._batches += -(-n // FORWARD_CHUNK)
        mean, std = combine(p)
        out = np.empty((n, 3 if self.spread else 2), dtype=np.float64)
        out[:, 1] = mean
        out[:, 0] = 1.0 - mean
        if self.spread:
            out[:, 2] = std
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
    if probs.shape[1] > 2:  # an ensemble or MC-dropout: the spread of the members / passes
        cols["p_real_std"] = probs[:, 2]
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
    report.n_nonfinite += int(np.count_nonzero(~np.isfinite(np.asarray(table["label1"]))))


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
