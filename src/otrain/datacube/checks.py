"""Checks of a datacube's labels that would otherwise train a silently wrong model: the same
candidate (CANDID) or the same pixels more than once, contradictory labels, one class only,
constant images. Used by ``otrain-convert`` (warnings in the report) and ``otrain-train``
(notes, or an error for data no model can be trained on)."""

from __future__ import annotations

import hashlib
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
    by_image: dict[bytes, list[int]] = defaultdict(list)
    for rows, images in cube.iter_batches(batch_size):
        for row, image in zip(rows.tolist(), images, strict=True):
            by_image[hashlib.blake2b(image.tobytes(), digest_size=16).digest()].append(row)
    same = [rows for rows in by_image.values() if len(rows) > 1]
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


def constant_rows(cube: Datacube, rows: np.ndarray, batch_size: int = 4096) -> int:
    """How many of ``rows`` hold an image with the same value in every pixel (no signal)."""
    n = 0
    for _, images in cube.iter_batches(batch_size, rows):
        flat = images.reshape(images.shape[0], -1)
        n += int(np.count_nonzero(flat.max(axis=1) == flat.min(axis=1)))
    return n
