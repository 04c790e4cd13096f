"""Seeded, stratified train / validation / test splits, and feeding them to the network.

Only labelled rows (label 0 or 1) are split; unlabelled rows (-1) are left out.

Without groups, each class is shuffled with ``numpy.random.default_rng(seed)`` and cut into
``round(n_class * test_frac)`` test rows, ``round(n_class * val_frac)`` validation rows and the
rest for training, so every split keeps the class ratio.

With groups (e.g. an ``objectId`` column: several alerts of one object), a group is never on two
sides of a split. Groups are shuffled (seeded), then taken largest first and each is given to the
split whose per-class counts are furthest below their targets, which keeps both the fractions
and the class ratio close to the requested ones. Rows whose group value is empty or NaN are each
their own group.

Feeding: :class:`SplitImages` serves normalised images of the split rows, from memory when they
fit under a byte limit, else read from the cube batch by batch (an HDF5 cube is never read whole);
:func:`epoch_plan` draws an epoch's shuffled batches and augmentation codes from
``default_rng([seed, epoch])``; :class:`EpochBatches` is the torch dataset of one epoch's batches.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from otrain.datacube.cube import Datacube
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.models.normalise import normalise

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Row indices of the three parts, each sorted ascending."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """Number of rows per part."""
        return {name: int(getattr(self, name).size) for name in SPLIT_NAMES}


def group_values(cube: Datacube, column: str | None) -> np.ndarray | None:
    """The table column ``column`` of ``cube`` (None when not grouping), for ``groups``.

    Raises
    ------
    OtrainError
        If the table has no such column.
    """
    if not column:
        return None
    if column not in cube.table.colnames:
        raise OtrainError(f"no column '{column}' to group by; the table has "
                          f"{', '.join(cube.table.colnames)}", cube.path)
    return np.asarray(cube.table[column])


def _check_fracs(val_frac: float, test_frac: float) -> None:
    if not 0.0 < val_frac < 1.0:
        raise OtrainError(f"validation fraction must be in (0, 1), got {val_frac}")
    if not 0.0 <= test_frac < 1.0:
        raise OtrainError(f"test fraction must be in [0, 1), got {test_frac}")
    if val_frac + test_frac >= 1.0:
        raise OtrainError(f"validation + test fractions ({val_frac} + {test_frac}) leave no "
                          "training data")


def split_indices(
    labels: Sequence[int] | np.ndarray,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    seed: int = 0,
    groups: Sequence[object] | np.ndarray | None = None,
) -> Split:
    """Split labelled rows into train, validation and test sets.

    Parameters
    ----------
    labels : sequence of int
        1 real, 0 bogus, -1 unknown (left out).
    val_frac, test_frac : float, default 0.15
        Fractions of the labelled rows for validation (> 0) and test (>= 0).
    seed : int, default 0
        Seed of the shuffles.
    groups : sequence, optional
        One group key per row; a group never spans two parts.

    Returns
    -------
    Split
        Sorted, disjoint row indices.

    Raises
    ------
    OtrainError
        Bad fractions, fewer than two labelled classes, or too few rows for a training set.
    """
    _check_fracs(val_frac, test_frac)
    y = np.asarray(labels, dtype=np.int64)
    labelled = np.flatnonzero(np.isin(y, (0, 1)))
    counts = [int(np.sum(y[labelled] == c)) for c in (0, 1)]
    if min(counts) == 0:
        raise OtrainError(f"training needs both classes; the cube has {counts[1]} real and "
                          f"{counts[0]} bogus labelled cutouts")
    rng = np.random.default_rng(seed)
    if groups is None:
        parts = _stratified(y, labelled, val_frac, test_frac, rng)
    else:
        keys = _group_keys(groups, y.size)
        parts = _grouped(y, labelled, keys, val_frac, test_frac, rng)
    split = Split(*(np.sort(np.asarray(p, dtype=np.int64)) for p in parts))
    if split.train.size == 0 or split.val.size == 0:
        raise OtrainError(f"too few labelled cutouts ({labelled.size}) to split into training and "
                          "validation sets")
    check_disjoint(split, None if groups is None else _group_keys(groups, y.size))
    return split


def _stratified(y: np.ndarray, rows: np.ndarray, val_frac: float, test_frac: float,
                rng: np.random.Generator) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in (0, 1):
        idx = rng.permutation(rows[y[rows] == cls])
        n_test = round(idx.size * test_frac)
        n_val = round(idx.size * val_frac)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    return [np.concatenate(p) for p in parts]


def _group_keys(groups: Sequence[object] | np.ndarray, n: int) -> np.ndarray:
    values = np.asarray(groups)
    if values.shape != (n,):
        raise OtrainError(f"{values.shape[0]} group values for {n} rows")
    keys = values.astype(str)
    missing = np.isin(keys, ("", "nan", "NaN", "--", "None"))
    if missing.any():  # each row without a group is its own group
        keys = keys.astype(object)
        keys[missing] = [f"\0row{i}" for i in np.flatnonzero(missing)]
        keys = keys.astype(str)
    return keys


def _grouped(y: np.ndarray, rows: np.ndarray, keys: np.ndarray, val_frac: float,
             test_frac: float, rng: np.random.Generator) -> list[np.ndarray]:
    uniq, inverse = np.unique(keys[rows], return_inverse=True)
    n_groups = uniq.size
    # per-group class counts, shape (G, 2)
    gcounts = np.zeros((n_groups, 2), dtype=np.int64)
    np.add.at(gcounts, (inverse, y[rows]), 1)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-gcounts[order].sum(axis=1), kind="stable")]  # largest first
    totals = gcounts.sum(axis=0).astype(np.float64)
    fracs = np.array([1.0 - val_frac - test_frac, val_frac, test_frac])
    targets = fracs[:, None] * totals[None, :]  # (3 parts, 2 classes)
    filled = np.zeros_like(targets)
    assign = np.empty(n_groups, dtype=np.int64)
    for g in order:
        share = gcounts[g] / gcounts[g].sum()
        # relative deficit of each part for this group's classes; empty parts are skipped
        deficit = ((targets - filled) / np.maximum(targets, 1e-9)) @ share
        deficit[fracs == 0] = -np.inf
        part = int(np.argmax(deficit))
        assign[g] = part
        filled[part] += gcounts[g]
    row_part = assign[inverse]
    return [rows[row_part == p] for p in range(3)]


def check_disjoint(split: Split, groups: np.ndarray | None = None) -> None:
    """Raise if a row, or a group when ``groups`` is given, is in two parts.

    Raises
    ------
    OtrainError
        On overlap (a bug, never expected).
    """
    parts = [split.train, split.val, split.test]
    for i in range(3):
        for j in range(i + 1, 3):
            if np.intersect1d(parts[i], parts[j]).size:
                raise OtrainError(f"internal error: rows in both {SPLIT_NAMES[i]} and "
                                  f"{SPLIT_NAMES[j]} sets")
            if groups is not None and np.intersect1d(groups[parts[i]], groups[parts[j]]).size:
                raise OtrainError(f"internal error: groups in both {SPLIT_NAMES[i]} and "
                                  f"{SPLIT_NAMES[j]} sets")


# ------------------------------------------------------------------------------------------
# Feeding the network
# ------------------------------------------------------------------------------------------
class SplitImages:
    """Normalised images of chosen cube rows, held in memory or read lazily per batch.

    Parameters
    ----------
    cube : Datacube
        Source cube (kept open by the caller while this object is used).
    rows : numpy.ndarray
        Rows that will be asked for.
    method : str
        Normalisation (:func:`otrain.models.normalise.normalise`).
    limit_bytes : float
        Rows whose float32 images take at most this many bytes are read (in batches) and
        normalised once into memory; otherwise every :meth:`get` reads from the cube.
    """

    def __init__(self, cube: Datacube, rows: np.ndarray, method: str, limit_bytes: float) -> None:
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        self.method = method
        self.cube: Datacube | None = cube
        self.path = cube.path
        self._pid = os.getpid()
        self.data: np.ndarray | None = None
        if 4 * self.rows.size * int(np.prod(cube.image_shape)) <= limit_bytes:
            self.data = np.empty((self.rows.size, *cube.image_shape), dtype=np.float32)
            for start in range(0, self.rows.size, 4096):
                chunk = self.rows[start : start + 4096]
                self.data[start : start + chunk.size] = normalise(cube.read(chunk), method)

    def get(self, rows: np.ndarray) -> np.ndarray:
        """Normalised images of ``rows`` (sorted, a subset of :attr:`rows`)."""
        if self.data is not None:
            return self.data[np.searchsorted(self.rows, rows)]
        if self._pid != os.getpid() or self.cube is None:  # a DataLoader worker: own handle
            self.cube, self._pid = open_datacube(self.path), os.getpid()
        return normalise(self.cube.read(rows), self.method)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.data is None:
            state["cube"] = None  # h5py handles do not travel to worker processes
        return state


def augment(images: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Apply one of the 8 flips/rotations per cutout (4 flips for non-square cutouts).

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, C, H, W)``.
    codes : numpy.ndarray
        ``(n,)`` ints: square cutouts use ``code % 4`` quarter turns then a left-right flip when
        ``code >= 4``; non-square ones flip left-right (bit 0) and up-down (bit 1).

    Returns
    -------
    numpy.ndarray
        The transformed images (a new array).
    """
    out = np.empty_like(images)
    square = images.shape[2] == images.shape[3]
    for code in np.unique(codes):
        sel = codes == code
        block = images[sel]
        if square:
            block = np.rot90(block, int(code) % 4, axes=(2, 3))
            if code >= 4:
                block = block[..., ::-1]
        else:
            if code & 1:
                block = block[..., ::-1]
            if code & 2:
                block = block[..., ::-1, :]
        out[sel] = block
    return out


class EpochBatches(Dataset):
    """Map-style dataset whose item ``i`` is training batch ``i`` of one epoch."""

    def __init__(self, source: SplitImages, labels: np.ndarray, batches: list[np.ndarray],
                 codes: list[np.ndarray] | None) -> None:
        self.source, self.labels, self.batches, self.codes = source, labels, batches, codes

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.batches[i]
        x = self.source.get(rows)
        if self.codes is not None:
            x = augment(x, self.codes[i])
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(self.labels[rows])


def _quiet_worker(worker_id: int) -> None:
    """A DataLoader worker leaves SIGINT / SIGTERM to the training process.

    A terminal's Ctrl-C or a batch system's SIGTERM reaches the whole process group: workers
    killed by it make torch's SIGCHLD handler raise inside the loader's clean-up ("Exception
    ignored ... DataLoader worker is killed by signal"). Ignoring the signal here lets the
    training process stop and shut its workers down in order (they still end when it dies).

    A batch travels to the training process as a file descriptor, handed over by a thread of
    the worker (``multiprocessing.resource_sharer``). When the training process stops in the
    middle of a hand-over, that thread prints the broken connection's traceback through
    ``sys.excepthook``; the worker's hook keeps quiet about lost connections (``EOFError``,
    ``OSError``), the expected end of an interrupted run, and prints anything else as before.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = _quiet_about_lost_connections


def _quiet_about_lost_connections(kind: type[BaseException], exc: BaseException,
                                  tb: TracebackType | None) -> None:
    if not issubclass(kind, EOFError | OSError):  # the socket of the hand-over
        sys.__excepthook__(kind, exc, tb)


def epoch_loader(batches: EpochBatches, workers: int, generator: torch.Generator,
                 pin_memory: bool) -> DataLoader:
    """The DataLoader of one epoch's batches (``workers`` processes, 0: in this process)."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=workers,
                      generator=generator, pin_memory=pin_memory,
                      worker_init_fn=_quiet_worker if workers else None)


def epoch_plan(rows: np.ndarray, seed: int, epoch: int, batch_size: int, n_codes: int,
               augmenting: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Shuffled batches (each sorted, for cheap reads) and augmentation codes of one epoch.

    Both come from ``numpy.random.default_rng([seed, epoch])``, so an epoch is the same whether
    the run was resumed or not.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(rows)
    batches = [np.sort(perm[i : i + batch_size]) for i in range(0, perm.size, batch_size)]
    codes = [rng.integers(0, n_codes, b.size) for b in batches] if augmenting else None
    return batches, codes


def epoch_torch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of the torch generator (dropout) for one epoch, independent of earlier epochs.

    Process ``rank`` of a multi-process run gets its own seed (rank 0 the one-process seed), so
    the ranks draw different dropout masks for their parts of a batch.
    """
    entropy = [seed, epoch, 1] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])
