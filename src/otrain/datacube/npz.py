"""Reading the original O'TRAIN ``.npz`` datacubes (what :func:`otrain.datacube.open_datacube`
does with a ``.npz`` path).

Keys: ``cube`` (N, H, W, C), ``labels`` (integers, or one-hot in ``cube_validation.npz``),
``mags``, ``errmags``, ``filters``, ``fwhms``, ``candids``. The magnitude sentinels ``99`` /
``-99`` become NaN, as in FITS headers; a ``candids`` array of the wrong length (the original
MEF fallback could make it longer than the cube) is replaced by ``<stem>_<i>`` names.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from otrain.cutouts.reading import header_float
from otrain.datacube.cube import Datacube
from otrain.errors import OtrainError


def load_npz(path: str | Path) -> Datacube:
    """Read a datacube in the original O'TRAIN ``.npz`` layout.

    Accepts the training cube of ``otrain-convert`` (integer labels) and the validation cube of
    ``otrain-train`` (one-hot labels, no ``filters``/``fwhms``). Images move from ``(N, H, W, C)``
    to ``(N, C, H, W)``.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.

    Returns
    -------
    Datacube
        In memory.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise OtrainError(f"not a readable .npz file ({exc.__class__.__name__})", path) from None
    try:
        with data:
            images, cols = _read_npz(data, path)
    except OtrainError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
            TypeError, NotImplementedError) as exc:  # damaged, object arrays, unknown zip method
        raise OtrainError(f"damaged or unsupported .npz ({exc.__class__.__name__}: "
                          f"{str(exc)[:80]})", path) from None
    channels = ["diff"] if images.shape[1] == 1 else [f"ch{i}" for i in range(images.shape[1])]
    return Datacube(images, Table(cols), channels, {"source": str(path), "format": "otrain-npz"},
                    path=path)


def _read_npz(data: Any, path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images ``(N, C, H, W)`` and table columns of an open ``.npz``."""
    if "cube" not in data or "labels" not in data:
        raise OtrainError("not an O'TRAIN datacube: needs the keys 'cube' and 'labels'", path)
    cube = np.asarray(data["cube"], dtype=np.float32)
    if cube.ndim == 3:
        cube = cube[..., None]
    if cube.ndim != 4:
        raise OtrainError(f"'cube' must be (N, H, W, C), got shape {cube.shape}", path)
    images = np.ascontiguousarray(np.moveaxis(cube, -1, 1))
    n = images.shape[0]
    labels = np.asarray(data["labels"])
    if labels.dtype.kind not in "biuf":
        raise OtrainError(f"'labels' must be numbers (0 bogus, 1 real), not {labels.dtype}", path)
    if labels.ndim == 2:  # one-hot, as in cube_validation.npz
        if labels.shape[1] != 2:
            raise OtrainError(f"one-hot 'labels' must have 2 columns (bogus, real), got "
                              f"{labels.shape[1]}", path)
        labels = np.argmax(labels, axis=1)
    if labels.shape != (n,):
        raise OtrainError(f"'labels' has {labels.shape[0]} entries for {n} cutouts", path)
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        raise OtrainError(f"{int(bad.sum())} label(s) are not 0 (bogus), 1 (real) or -1 "
                          f"(unknown), e.g. {labels[bad][:3].tolist()}", path)
    labels = labels.astype(np.int64)
    cols: dict[str, np.ndarray] = {}
    cands = data["candids"] if "candids" in data else None
    if cands is None or len(cands) != n:
        # The original MEF fallback could make candids longer than the cube: unusable.
        cols["candid"] = np.array([f"{path.stem}_{i}" for i in range(n)])
    else:
        cols["candid"] = np.asarray(cands).astype(str)
    cols["label"] = labels
    for key, col in (("mags", "mag"), ("errmags", "magerr"), ("fwhms", "fwhm")):
        if key in data and len(data[key]) == n:
            cols[col] = _as_float(data[key], sentinel=col != "fwhm")
    if "filters" in data and len(data["filters"]) == n:
        cols["filter"] = np.asarray(data["filters"]).astype(str)
    return images, cols


def _as_float(values: np.ndarray, sentinel: bool) -> np.ndarray:
    """Numbers of an ``.npz`` column; unparsable values (and 99/-99 magnitudes) become NaN."""
    return np.array([header_float(v, sentinel) for v in np.asarray(values).astype(str)],
                    dtype=np.float64)
