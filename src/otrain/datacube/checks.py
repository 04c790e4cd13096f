"""Checks of a datacube's labels that would otherwise train a silently wrong model: the same
candidate (CANDID) or the same pixels more than once, contradictory labels, one class only,
constant images. Used by ``otrain-convert`` (warnings in the report) and ``otrain-train``
(notes, or an error for data no model can be trained on)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from otrain.datacube.cube import Datacube

__all__ = ["constant_rows", "duplicate_warnings"]

_SHOW = 3


def _examples(values: list[str]) -> str:
    shown = ", ".join(values[:_SHOW])
    return shown + (", ..." if len(values) > _SHOW else "")


def duplicate_warnings(cube: Datacube, batch_size: int = 4096) -> list[str]:
    """Warnings about repeated CANDIDs, repeated images, and contradictory labels.

    Parameters
    ----------
    cube : Datacube
        A cube with ``candid`` and ``label`` columns.
    batch_size : int, default 4096
        Rows read at a time to hash the images.

    Returns
    -------
    list of str
        One line per kind of problem found, each with counts and a few examples (empty: none).
    """
    candid = np.asarray(cube.table["candid"]).astype(str)
    labels = cube.labels
    out: list[str] = []
    names, counts = np.unique(candid, return_counts=True)
    repeated = names[counts > 1].tolist()
    if repeated:
        out.append(f"warning: {len(repeated)} CANDID(s) appear more than once "
                   f"({int(counts[counts > 1].sum())} rows), e.g. {_examples(repeated)}")
    same = _same_images(cube, batch_size)
    if same:
        out.append(f"warning: {len(same)} image(s) appear more than once "
                   f"({sum(len(r) for r in same)} rows; duplicate alerts or copied files), "
                   f"e.g. CANDIDs {_examples([candid[r[0]] for r in same])}")
    contradictory = sorted(
        {candid[r[0]] for r in same if {0, 1} <= set(labels[r].tolist())}
        | set(candid[labels == 1]) & set(candid[labels == 0]))
    if contradictory:
        out.append(f"warning: {len(contradictory)} candidate(s) are labelled both real and "
                   f"bogus (in true/ and false/, or duplicate alerts), e.g. "
                   f"{_examples(contradictory)}")
    return out


def _fingerprints(images: np.ndarray) -> np.ndarray:
    """Two multiplicative hashes of each image's bytes, ``(N, 2)`` uint64.

    Each is the sum (mod 2**64) of the image's 32-bit words times fixed odd multipliers (mod
    2**32): exact integer arithmetic, so equal images always give equal fingerprints, whatever
    the batch. Different images rarely collide, and :func:`_same_images` compares the bytes of
    every colliding group anyway. Half the time of a cryptographic hash per image.
    """
    flat = np.ascontiguousarray(images).reshape(images.shape[0], -1).view(np.uint8)
    words = flat.view(np.uint32) if flat.shape[1] % 4 == 0 else flat.astype(np.uint32)
    rng = np.random.default_rng(20240601)  # fixed multipliers: the same hash every run
    out = np.empty((images.shape[0], 2), dtype=np.uint64)
    for k in range(2):
        mult = rng.integers(0, 2**32, words.shape[1], dtype=np.uint64).astype(np.uint32) | 1
        out[:, k] = np.multiply(words, mult).sum(axis=1, dtype=np.uint64)
    return out


def _same_images(cube: Datacube, batch_size: int) -> list[list[int]]:
    """Groups of rows (each > 1 row) whose images are byte for byte the same."""
    rows_all, prints = [], []
    for rows, images in cube.iter_batches(batch_size):
        rows_all.append(rows)
        prints.append(_fingerprints(images))
    if not rows_all:
        return []
    rows_all_arr = np.concatenate(rows_all)
    fp = np.concatenate(prints)
    _, inverse, counts = np.unique(fp, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    by_print: dict[int, list[int]] = defaultdict(list)
    for i in np.flatnonzero(counts[inverse] > 1).tolist():
        by_print[int(inverse[i])].append(int(rows_all_arr[i]))
    same = []
    for candidates in by_print.values():  # confirm byte for byte: a collision is no proof
        by_bytes: dict[bytes, list[int]] = defaultdict(list)
        for row, image in zip(candidates, cube.read(np.asarray(candidates)), strict=True):
            by_bytes[image.tobytes()].append(row)
        same += [sorted(r) for r in by_bytes.values() if len(r) > 1]
    return sorted(same)


def constant_rows(cube: Datacube, rows: np.ndarray, batch_size: int = 4096) -> int:
    """How many of ``rows`` hold an image with the same value in every pixel (no signal)."""
    n = 0
    for _, images in cube.iter_batches(batch_size, rows):
        flat = images.reshape(images.shape[0], -1)
        n += int(np.count_nonzero(flat.max(axis=1) == flat.min(axis=1)))
    return n
