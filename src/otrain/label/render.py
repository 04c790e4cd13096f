"""One channel of a cutout as a PNG: zscale, asinh or min-max stretch, optionally inverted.

The PNG has the cutout's own pixel size (the page enlarges it without smoothing); FITS row 0 is
at the bottom, as ds9 shows it. Non-finite pixels (beyond a CCD edge) are dark blue.
"""

from __future__ import annotations

import io

import numpy as np

STRETCHES = ("zscale", "asinh", "minmax")
_NAN_RGB = (30, 40, 110)


def stretch(image: np.ndarray, method: str = "zscale", invert: bool = False) -> np.ndarray:
    """Map a 2-D image to [0, 1] (NaN where the input is not finite).

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` pixels.
    method : {"zscale", "asinh", "minmax"}
        ``zscale``: IRAF's zscale limits, linear; ``asinh``: 0.5-99.5 percentile limits and an
        asinh stretch (faint structure and bright cores together); ``minmax``: full range,
        linear.
    invert : bool, default False
        Black on white.
    """
    from astropy.visualization import (
        AsinhStretch,
        MinMaxInterval,
        PercentileInterval,
        ZScaleInterval,
    )

    if method not in STRETCHES:
        raise ValueError(f"unknown stretch {method!r}")
    img = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(img)
    out = np.full(img.shape, np.nan)
    if not finite.any():
        return out
    values = img[finite]
    if method == "zscale":
        lo, hi = ZScaleInterval().get_limits(values)
    elif method == "asinh":
        lo, hi = PercentileInterval(99.0).get_limits(values)
    else:
        lo, hi = MinMaxInterval().get_limits(values)
    span = hi - lo if hi > lo else 1.0
    scaled = np.clip((values - lo) / span, 0.0, 1.0)
    if method == "asinh":
        scaled = AsinhStretch(0.1)(scaled, clip=True)
    out[finite] = 1.0 - scaled if invert else scaled
    return out


def stamp_png(image: np.ndarray, method: str = "zscale", invert: bool = False) -> bytes:
    """PNG bytes of one channel (see :func:`stretch`)."""
    from matplotlib.image import imsave

    v = stretch(image, method, invert)[::-1]  # FITS row 0 at the bottom
    grey = np.nan_to_num(v, nan=0.0)
    rgb = np.repeat((grey * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    rgb[~np.isfinite(v)] = _NAN_RGB
    buf = io.BytesIO()
    imsave(buf, rgb, format="png")
    return buf.getvalue()
