"""Light profiles of the simulator: PSFs, host galaxies, tracks, diffraction spikes, bleeding.

All profiles are rendered on a ``size x size`` pixel grid whose pixel ``(i, j)`` (row, column) has
its centre at ``y = i, x = j``. Smooth profiles are sampled on a sub-pixel grid (``oversample``
points per axis and pixel) and averaged, so a value is the flux falling into the pixel and a
profile of total flux ``F`` well inside the cutout sums to ``F``. Used by :mod:`otrain.simulate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: FWHM / sigma of a Gaussian.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class PSF:
    """A point-spread function: Moffat (``beta`` set) or Gaussian (``beta`` None).

    Parameters
    ----------
    fwhm : float
        Full width at half maximum in pixels (geometric mean of the two axes).
    beta : float or None
        Moffat index (2.5-4.5 for ground-based seeing); None for a Gaussian.
    ellipticity : float, default 0
        ``1 - b/a``; the profile is stretched along ``angle`` keeping its area.
    angle : float, default 0
        Position angle of the major axis, radians from the x axis.
    """

    fwhm: float
    beta: float | None = None
    ellipticity: float = 0.0
    angle: float = 0.0

    def density(self, r2: np.ndarray) -> np.ndarray:
        """Unit-integral surface density at squared (area-preserving) radius ``r2``."""
        if self.beta is None:
            s2 = (self.fwhm / FWHM_PER_SIGMA) ** 2
            return np.exp(-0.5 * r2 / s2) / (2.0 * math.pi * s2)
        beta = self.beta
        a2 = (self.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))) ** 2
        return (beta - 1.0) / (math.pi * a2) * (1.0 + r2 / a2) ** (-beta)

    def scaled(self, factor: float) -> PSF:
        """The same PSF with its FWHM multiplied by ``factor``."""
        return PSF(self.fwhm * factor, self.beta, self.ellipticity, self.angle)


def _offsets(size: int, x: float, y: float, oversample: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel coordinates relative to ``(x, y)``: 2-D arrays ``dx``, ``dy``."""
    c = (np.arange(size * oversample) + 0.5) / oversample - 0.5
    return (c - x)[None, :], (c - y)[:, None]


def _radius2(dx: np.ndarray, dy: np.ndarray, ellipticity: float, angle: float) -> np.ndarray:
    """Squared area-preserving elliptical radius (axis ratio ``q = 1 - ellipticity``)."""
    if ellipticity <= 0.0:
        return dx * dx + dy * dy
    q = 1.0 - ellipticity
    cos, sin = math.cos(angle), math.sin(angle)
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    return u * u * q + v * v / q


def _bin(img: np.ndarray, size: int, oversample: int) -> np.ndarray:
    """Average ``oversample x oversample`` sub-pixel samples into pixels."""
    if oversample == 1:
        return img
    return img.reshape(size, oversample, size, oversample).mean(axis=(1, 3))


def render_psf(psf: PSF, size: int, x: float, y: float, flux: float = 1.0,
               oversample: int = 3) -> np.ndarray:
    """Render a point source of total ``flux`` centred at pixel coordinates ``(x, y)``.

    Parameters
    ----------
    psf : PSF
        The profile.
    size : int
        Cutout side in pixels.
    x, y : float
        Centre (column, row), 0-based pixel-centre coordinates; may lie off the cutout.
    flux : float, default 1
        Total flux (ADU); flux falling outside the cutout is lost.
    oversample : int, default 3
        Sub-pixel samples per axis.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64 image.
    """
    dx, dy = _offsets(size, x, y, oversample)
    r2 = _radius2(dx, dy, psf.ellipticity, psf.angle)
    return flux * _bin(psf.density(r2), size, oversample)


def render_sersic(size: int, x: float, y: float, flux: float, r_eff: float, n: float,
                  ellipticity: float = 0.0, angle: float = 0.0, oversample: int = 3) -> np.ndarray:
    """Render a Sersic galaxy (``n = 1`` exponential disc) of total ``flux``.

    Parameters
    ----------
    size : int
        Cutout side in pixels.
    x, y : float
        Centre, 0-based pixel coordinates.
    flux : float
        Total flux over the whole plane (ADU).
    r_eff : float
        Half-light radius in pixels (circularised).
    n : float
        Sersic index.
    ellipticity, angle : float
        Shape, as for :class:`PSF`.
    oversample : int, default 3
        Sub-pixel samples per axis.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64 image.
    """
    b = 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)
    dx, dy = _offsets(size, x, y, oversample)
    r = np.sqrt(_radius2(dx, dy, ellipticity, angle))
    profile = np.exp(-b * ((r / r_eff) ** (1.0 / n) - 1.0))
    total = 2.0 * math.pi * n * r_eff**2 * math.exp(b) * b ** (-2.0 * n) * math.gamma(2.0 * n)
    return flux / total * _bin(profile, size, oversample)


def render_segment(size: int, x0: float, y0: float, x1: float, y1: float, width: float,
                   amplitude: float) -> np.ndarray:
    """Render a sharp straight track (a cosmic-ray hit crossing the detector at an angle).

    Parameters
    ----------
    size : int
        Cutout side in pixels.
    x0, y0, x1, y1 : float
        End points, 0-based pixel coordinates.
    width : float
        Gaussian sigma across the track in pixels (well below the PSF's).
    amplitude : float
        Value on the track axis (ADU).

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64 image (no sub-pixel averaging: a detector effect, not optics).
    """
    px, py = np.meshgrid(np.arange(size, dtype=float), np.arange(size, dtype=float))
    vx, vy = x1 - x0, y1 - y0
    length2 = vx * vx + vy * vy
    t = np.clip(((px - x0) * vx + (py - y0) * vy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    d2 = (px - x0 - t * vx) ** 2 + (py - y0 - t * vy) ** 2
    return amplitude * np.exp(-0.5 * d2 / width**2)


def render_spikes(size: int, x: float, y: float, amplitude: float, angle: float,
                  scale: float = 3.0, width: float = 0.6) -> np.ndarray:
    """Render the cross of diffraction spikes of a bright star (two perpendicular lines).

    Parameters
    ----------
    size : int
        Cutout side in pixels.
    x, y : float
        Star centre.
    amplitude : float
        Spike value near the centre (ADU); it falls as ``1 / (1 + distance / scale)``.
    angle : float
        Orientation of the first spike, radians (the field rotation between two epochs turns it).
    scale, width : float
        Fall-off length and Gaussian half-width of the spikes, pixels.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float64 image.
    """
    dx, dy = _offsets(size, x, y, 1)
    out = np.zeros((size, size))
    for a in (angle, angle + 0.5 * math.pi):
        u = dx * math.cos(a) + dy * math.sin(a)
        v = dy * math.cos(a) - dx * math.sin(a)
        out += amplitude * np.exp(-0.5 * (v / width) ** 2) / (1.0 + np.abs(u) / scale)
    return out


def bleed(model: np.ndarray, level: float) -> np.ndarray:
    """Add the charge-bleed trails of saturated pixels along the columns (CCD read-out axis).

    The charge above ``level`` in a column is spread over pixels above and below the saturated run,
    each filled up to ``level``.

    Parameters
    ----------
    model : numpy.ndarray
        Noiseless image (ADU above the background).
    level : float
        Full-well level in the same units.

    Returns
    -------
    numpy.ndarray
        The image with trails (values above ``level`` are clipped later, after the noise).
    """
    over = model > level
    if level <= 0 or not over.any():
        return model
    out = model.copy()
    size = model.shape[0]
    for j in np.flatnonzero(over.any(axis=0)):
        rows = np.flatnonzero(over[:, j])
        excess = float((model[rows, j] - level).sum())
        k = int(excess / level / 2.0)
        lo, hi = max(rows[0] - k, 0), min(rows[-1] + k + 1, size)
        out[lo:hi, j] = np.maximum(out[lo:hi, j], level)
    return out
