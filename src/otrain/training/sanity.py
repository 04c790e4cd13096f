"""Loud notes before training on data that would give a silently poor model: duplicate or
contradictory candidates, fewer rows than a batch, constant images, a validation part without
one of the classes. (One class only is refused by :func:`otrain.training.splits.split_indices`.)
"""

from __future__ import annotations

import numpy as np

from otrain.datacube.checks import constant_rows, duplicate_warnings
from otrain.datacube.cube import Datacube
from otrain.errors import OtrainError
from otrain.training.splits import Split

__all__ = ["training_data_notes"]

#: Cubes up to this many rows also have their images hashed to find repeated cutouts.
HASH_ROWS_MAX = 200_000


def training_data_notes(cube: Datacube, y_all: np.ndarray, split: Split,
                        batch_size: int) -> list[str]:
    """Notes (and errors) about the data of a training run.

    Parameters
    ----------
    cube : Datacube
        The training cube.
    y_all : numpy.ndarray
        Its labels.
    split : Split
        Train / validation / test rows.
    batch_size : int
        Training batch size.

    Returns
    -------
    list of str
        Lines to print (warnings and notes).

    Raises
    ------
    OtrainError
        When every training image is constant: there is nothing to learn from.
    """
    notes: list[str] = []
    if len(cube) <= HASH_ROWS_MAX:
        notes += duplicate_warnings(cube)
    if split.train.size < batch_size:
        notes.append(f"note: {split.train.size} training rows, fewer than one batch "
                     f"({batch_size}): each epoch is a single step")
    n_const = constant_rows(cube, np.sort(split.train))
    if n_const and n_const == split.train.size:
        raise OtrainError(f"all {n_const} training cutouts are constant images (one value in "
                          "every pixel): nothing to learn from", cube.path)
    if n_const:
        notes.append(f"warning: {n_const} of {split.train.size} training cutouts are constant "
                     "images (no signal)")
    for part in ("val", "test"):
        rows = getattr(split, part)
        if rows.size:
            counts = np.bincount(y_all[rows], minlength=2)
            for label, name in ((0, "bogus"), (1, "real")):
                if counts[label] == 0:
                    notes.append(f"warning: the {'validation' if part == 'val' else 'test'} "
                                 f"part has no {name} row ({rows.size} rows): its AUC is "
                                 "undefined and its other metrics mislead; use a larger cube "
                                 "or a larger --frac / --test-frac")
    return notes
