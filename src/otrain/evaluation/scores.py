"""Scoring a labelled datacube with a model: the one model pass every evaluation command shares.

The original O'TRAIN re-loaded the model and re-predicted the validation cube up to six times
(once per metric and plot function). Here the model is loaded once, the cube's labelled rows go
through the network once, in batches (a cube larger than memory is fine), and every metric, plot,
export and report works from the resulting :class:`Scores`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from otrain.datacube.cube import BOGUS, REAL, Datacube
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.models.ensemble import combine, logits_probabilities, member_logits
from otrain.models.modelfile import LoadedModel, load_model
from otrain.progress import Progress

#: Table columns carried along with the scores (those present in the cube).
KEEP_COLUMNS: tuple[str, ...] = ("candid", "label", "mag", "magerr", "filter", "fwhm", "objectId")
#: Magnitude placeholders of old catalogues (gmadet / O'TRAIN), read as missing.
MAG_SENTINELS = (99.0, -99.0)


@dataclass
class Scores:
    """P(real) of the labelled cutouts of a cube, with their labels and table rows.

    Attributes
    ----------
    y_true : numpy.ndarray
        int64 ``(n,)``: 1 real, 0 bogus.
    p_real : numpy.ndarray
        float64 ``(n,)``: the model's P(real).
    table : astropy.table.Table
        The scored rows of the cube's table (``candid``, ``label``, ``mag``, ``magerr``, ...),
        in the same order as the scores.
    rows : numpy.ndarray
        Row index of each score in the cube (to read its image back).
    cube_path : Path or None
        The cube that was scored.
    model_path : Path or None
        The model file.
    meta : dict
        The model file metadata.
    channels : list of str
        The cube's channel names.
    n_unlabelled : int
        Rows of the cube with label -1, not scored.
    p_real_std : numpy.ndarray or None
        Spread of the ensemble members' P(real) (None for a single model).
    p_uncalibrated : numpy.ndarray or None
        P(real) without the model's temperature (None when the temperature is 1).
    """

    y_true: np.ndarray
    p_real: np.ndarray
    table: Table
    rows: np.ndarray
    cube_path: Path | None = None
    model_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)
    n_unlabelled: int = 0
    p_real_std: np.ndarray | None = None
    p_uncalibrated: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y_true.size)

    @property
    def candids(self) -> np.ndarray:
        """Candidate ids as strings."""
        return np.asarray(self.table["candid"]).astype(str)

    def column(self, name: str) -> np.ndarray | None:
        """A numeric table column as float64 (``None`` if the cube has no such column).

        For ``mag`` and ``magerr`` the old placeholders 99 / -99 are returned as NaN.
        """
        if name not in self.table.colnames:
            return None
        try:
            values = np.array(self.table[name], dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if name in ("mag", "magerr"):
            values[np.isin(values, MAG_SENTINELS)] = np.nan
        return values


def score_datacube(loaded: LoadedModel, cube: Datacube, batch_size: int = 512,
                   quiet: bool = False) -> Scores:
    """Score the labelled rows of an open cube in one pass.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`otrain.models.modelfile.load_model`.
    cube : Datacube
        An open cube; rows labelled -1 (unknown) are skipped.
    batch_size : int, default 512
        Cutouts read and scored at a time.
    quiet : bool, default False
        No progress output.

    Returns
    -------
    Scores
        Labels, P(real) and table rows of the labelled cutouts.

    Raises
    ------
    OtrainError
        If the cube's channels or cutout size do not fit the model, the cube holds no labelled
        cutout, or the network returns non-finite scores.
    """
    if batch_size < 1:
        raise OtrainError(f"batch size must be at least 1, got {batch_size}")
    _, h, w = cube.image_shape
    loaded.check_input(cube.channels, (h, w))
    labels = cube.labels
    known = np.isin(labels, (REAL, BOGUS))
    rows = np.flatnonzero(known)
    if rows.size == 0:
        raise OtrainError("the datacube holds no labelled cutout (label 1 real or 0 bogus) to "
                          "evaluate on", cube.path)
    p = np.empty(rows.size, dtype=np.float64)
    std, raw = np.zeros_like(p), np.empty_like(p)
    done = 0
    n_batches = -(-rows.size // batch_size)
    with Progress(n_batches, "scoring cutouts", quiet, unit="batch") as bar:
        for _, images in cube.iter_batches(batch_size, rows):
            # one pass; the same formula as predict_proba (otrain.models.ensemble)
            logits = member_logits(loaded, images, batch_size)
            part = slice(done, done + images.shape[0])
            p[part], std[part] = combine(logits_probabilities(logits, loaded.temperature,
                                                              loaded.logit_bias))
            raw[part] = combine(logits_probabilities(logits))[0]
            done += images.shape[0]
            bar.update()
    bad = int(np.sum(~np.isfinite(p)))
    if bad:
        raise OtrainError(f"the model gave {bad} non-finite score(s); the model file may be "
                          "corrupt", loaded.path)
    keep = [name for name in KEEP_COLUMNS if name in cube.table.colnames]
    table = cube.table[keep][rows]
    return Scores(y_true=labels[rows].astype(np.int64), p_real=p, table=table, rows=rows,
                  cube_path=cube.path, model_path=loaded.path, meta=dict(loaded.meta),
                  channels=list(cube.channels), n_unlabelled=int(labels.size - rows.size),
                  p_real_std=std if loaded.is_ensemble else None,
                  p_uncalibrated=raw if (loaded.temperature != 1.0 or loaded.logit_bias)
                  else None)


def score(model_path: str | Path, cube_path: str | Path, batch_size: int = 512,
          device: str = "cpu", quiet: bool = False) -> Scores:
    """Load a model and a cube, score the cube's labelled cutouts once, close the cube.

    Parameters
    ----------
    model_path : str or Path
        Model file (``.safetensors``).
    cube_path : str or Path
        Labelled datacube (``.h5``, or an original O'TRAIN ``.npz`` with integer or one-hot
        labels).
    batch_size : int, default 512
        Cutouts scored at a time.
    device : str, default "cpu"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    quiet : bool, default False
        No progress output.

    Returns
    -------
    Scores
        See :func:`score_datacube`.
    """
    with open_datacube(cube_path) as cube:  # the cheaper check first: a missing cube
        loaded = load_model(model_path, device)
        return score_datacube(loaded, cube, batch_size, quiet)
