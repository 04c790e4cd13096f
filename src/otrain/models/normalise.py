"""Per-cutout scaling of the images, applied identically in training and inference.

The method is recorded by name in the model file, so inference always repeats what training did.
Every statistic is computed per cutout and per channel, from its finite pixels only:

``"zscore"`` (default)
    ``(x - median) / s`` with ``s = 1.4826 * MAD`` (the robust standard deviation). ``s`` is
    floored at ``1e-3 * max|x - median|`` (so a flat background with a few hot pixels gives
    values of at most 1000 rather than infinity) and at ``1e-12``.
``"minmax"``
    ``(x - min) / (max - min)``, in ``[0, 1]``; a constant cutout becomes 0.
``"l2"``
    ``x / rms(x)`` with non-finite pixels set to 0 first: the stamp divided by its
    root-mean-square (braai's L2 normalisation, scaled so that a flat stamp is 1). Unlike
    ``zscore`` it keeps the sky level and does not blow bright stars in science/reference stamps
    up to huge values: on real ZTF triplets it is much better (``benchmarks/ztf.py``).
``"none"``
    raw pixel values, as the original O'TRAIN.

Training also accepts ``"auto"`` (its default), resolved by :func:`resolve_method` from the cube
before anything is trained: ``"l2"`` for cubes made from survey alerts or holding several channels
(science and reference stamps), ``"zscore"`` for single-channel cutout cubes. The model file records
the resolved method, never ``"auto"``.

After scaling, NaN and infinite pixels (masked or off-detector pixels, e.g. the NaN borders of
STDPipe cutouts) are set to 0 by every method, including ``"none"``; a cutout with no finite pixel
becomes all zeros. The median, MAD, minimum and maximum do not change under flips and 90-degree
rotations, so augmenting before or after scaling gives the same result.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from otrain.errors import OtrainError

#: Known methods, the default first.
METHODS: tuple[str, ...] = ("zscore", "minmax", "l2", "none")
DEFAULT_METHOD = "zscore"
#: Training's default: a method chosen from the cube (:func:`resolve_method`).
AUTO = "auto"
#: What training accepts.
TRAIN_METHODS: tuple[str, ...] = (AUTO, *METHODS)
#: MAD to standard deviation for Gaussian noise.
MAD_TO_STD = 1.4826
#: Relative floor of the robust scale, as a fraction of the largest deviation from the median.
RELATIVE_FLOOR = 1e-3
ABSOLUTE_FLOOR = 1e-12


def check_method(method: str) -> str:
    """Return ``method`` if it is known, else raise :class:`~otrain.errors.OtrainError`."""
    if method not in METHODS:
        raise OtrainError(f"unknown normalisation '{method}'; choose from {', '.join(METHODS)}")
    return method


def resolve_method(method: str, channels: Sequence[str], source: str | None = None) -> str:
    """The concrete method for a cube: ``method`` itself unless it is ``"auto"``.

    Parameters
    ----------
    method : str
        One of :data:`TRAIN_METHODS`.
    channels : sequence of str
        The cube's channel names (``diff``, ``sci``, ``ref``).
    source : str, optional
        Where the cube came from (its provenance ``source``; ``"alerts"`` for alert cubes).

    Returns
    -------
    str
        ``"l2"`` for alert cubes and multi-channel cubes, ``"zscore"`` otherwise (``"auto"``);
        else ``method``. With ``zscore`` the bright stars of science and reference stamps reach
        robust z-scores of ~1000, and on ZTF alerts ``l2`` scored higher for difference stamps
        alone too (``benchmarks/ztf.py``).

    Raises
    ------
    OtrainError
        Unknown method.
    """
    if method != AUTO:
        return check_method(method)
    return "l2" if source == "alerts" or len(channels) > 1 else DEFAULT_METHOD


def normalise(images: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """Scale each cutout and channel of ``images``.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, C, H, W)`` (any real dtype); not modified.
    method : {"zscore", "minmax", "l2", "none"}, default "zscore"
        Scaling, see the module documentation.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape, finite everywhere (non-finite pixels become 0).

    Raises
    ------
    OtrainError
        Unknown method or images that are not 4-D.
    """
    check_method(method)
    x = np.array(images, dtype=np.float32, copy=True)
    if x.ndim != 4:
        raise OtrainError(f"images must be 4-D (N, C, H, W), got shape {x.shape}")
    if x.size == 0 or method == "none":
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0, copy=False)
    if method == "l2":
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0, copy=False)
        rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=(2, 3), keepdims=True))
        x /= np.where(rms > 0, rms, 1.0).astype(np.float32)
        return x
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    finite = np.isfinite(flat)
    all_finite = bool(finite.all())
    if not all_finite:
        flat[~finite] = np.nan
    # An all-NaN cutout is handled (it becomes 0): silence numpy's "All-NaN slice" warnings.
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "zscore":
            med_fn = np.median if all_finite else np.nanmedian
            max_fn = np.max if all_finite else np.nanmax
            med = med_fn(flat, axis=2, keepdims=True)
            dev = np.abs(flat - med)
            scale = MAD_TO_STD * med_fn(dev, axis=2, keepdims=True)
            scale = np.maximum(scale, RELATIVE_FLOOR * max_fn(dev, axis=2, keepdims=True))
            scale = np.maximum(np.nan_to_num(scale, nan=1.0), ABSOLUTE_FLOOR)
            flat -= med
            flat /= scale
        else:  # minmax
            lo = (np.min if all_finite else np.nanmin)(flat, axis=2, keepdims=True)
            hi = (np.max if all_finite else np.nanmax)(flat, axis=2, keepdims=True)
            span = hi - lo
            flat -= lo
            flat /= np.where(span > 0, span, np.inf)  # constant cutout -> 0
    out = flat.reshape(n, c, h, w)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0, copy=False)

