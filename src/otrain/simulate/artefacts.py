"""What the simulator puts in a cutout: real transients and the catalogue of bogus artefacts.

Each kind is a function ``(rng, ctx) -> Scene``. A :class:`Scene` holds *noiseless* additions to
the science and reference images; :mod:`otrain.simulate` adds the sky/background, the noise, the
saturation, and forms the difference ``diff = sci - ref``.

* ``real`` -- a PSF point source in the science image only (optionally on a host galaxy present
  in both images, which cancels in the difference).
* ``cosmic_ray`` -- a 1-3 pixel hit or a thin elongated track, sharper than the PSF.
* ``hot_pixel`` -- one bright pixel.
* ``bad_line`` -- a hot (or dead) column or row crossing the cutout.
* ``dipole`` -- a star in both images, misaligned by 0.5-1.5 pixel: a positive+negative pair.
* ``star_residual`` -- a bright, often saturated star with a PSF / flux mismatch between the two
  epochs: ring, cross (diffraction spikes) or clipped-core residual, with bleed trails.
* ``noise`` -- nothing but a noise fluctuation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from otrain.simulate.config import DEFAULT_MIX, SimulationConfig
from otrain.simulate.psf import PSF, render_psf, render_segment, render_sersic, render_spikes


@dataclass
class Context:
    """What a kind needs to know about the cutout it is drawn into.

    Parameters
    ----------
    config : SimulationConfig
        The run's parameters.
    psf : PSF
        The PSF of the (science) image.
    noise : float
        Per-pixel noise of one image (sky + read noise, or the real background's), ADU.
    diff_noise : float
        Per-pixel noise of the difference image, ADU.
    """

    config: SimulationConfig
    psf: PSF
    noise: float
    diff_noise: float

    @property
    def size(self) -> int:
        """Cutout side in pixels."""
        return self.config.size

    @property
    def centre(self) -> float:
        """Pixel coordinate of the cutout centre (``size // 2``, as centre-cropping assumes)."""
        return float(self.config.size // 2)

    def flux(self, mag: float) -> float:
        """Total flux in ADU of a source of magnitude ``mag``."""
        return 10.0 ** (-0.4 * (mag - self.config.zero_point))


@dataclass
class Scene:
    """Noiseless content of one candidate, before noise and subtraction.

    Attributes
    ----------
    sci, ref : numpy.ndarray
        Astrophysical flux added to the science / reference image (gets Poisson noise).
    sci_detector, ref_detector : numpy.ndarray or None
        Detector effects added after the noise (cosmic rays, hot pixels, bad lines).
    saturate : bool
        Whether to apply bleed trails and clip at the saturation level.
    ref_saturation_scale : float
        The reference saturates at ``saturation * ref_saturation_scale`` (it was flux-scaled).
    truth : dict
        Kind-specific facts (``mag``, ``snr``, ``fwhm``, ``x``, ``y``, ``host``) for the headers.
    """

    sci: np.ndarray
    ref: np.ndarray
    sci_detector: np.ndarray | None = None
    ref_detector: np.ndarray | None = None
    saturate: bool = False
    ref_saturation_scale: float = 1.0
    truth: dict = field(default_factory=dict)


def _empty(ctx: Context) -> np.ndarray:
    return np.zeros((ctx.size, ctx.size))


def _offset(rng: np.random.Generator, radius: float) -> tuple[float, float]:
    """A point uniformly distributed in a disc of ``radius``."""
    r = radius * math.sqrt(rng.uniform())
    a = rng.uniform(0.0, 2.0 * math.pi)
    return r * math.cos(a), r * math.sin(a)


def flux_at_snr(snr: float, neff: float, diff_noise: float, gain: float) -> float:
    """Flux whose PSF-fit S/N is ``snr``: solves ``F = snr * sqrt(neff * sd**2 + F / gain)``."""
    a = snr * snr / gain
    return 0.5 * (a + math.sqrt(a * a + 4.0 * snr * snr * neff * diff_noise**2))


def real(rng: np.random.Generator, ctx: Context) -> Scene:
    """A real transient: PSF point source near the centre, sometimes on a host galaxy."""
    cfg = ctx.config
    dx, dy = _offset(rng, cfg.offset_max)
    x, y = ctx.centre + dx, ctx.centre + dy
    unit = render_psf(ctx.psf, ctx.size, x, y)
    neff = 1.0 / float(np.sum(unit * unit))
    min_snr = rng.uniform(*cfg.min_snr_range)
    faint = cfg.zero_point - 2.5 * math.log10(flux_at_snr(min_snr, neff, ctx.diff_noise, cfg.gain))
    faint = min(cfg.mag_range[1], faint)
    mag = rng.uniform(cfg.mag_range[0], faint) if faint > cfg.mag_range[0] else faint
    flux = ctx.flux(mag)
    snr = flux / math.sqrt(neff * ctx.diff_noise**2 + flux / cfg.gain)
    sci = flux * unit
    host = _empty(ctx)
    on_host = bool(rng.uniform() < cfg.host_fraction)
    if on_host:
        hx, hy = _offset(rng, 4.0)
        host = render_sersic(ctx.size, x + hx, y + hy, ctx.flux(rng.uniform(*cfg.host_mag_range)),
                             r_eff=rng.uniform(1.5, 6.0), n=rng.uniform(0.7, 2.5),
                             ellipticity=rng.uniform(0.0, 0.6), angle=rng.uniform(0, math.pi))
    return Scene(sci + host, host, truth={"mag": mag, "snr": snr, "fwhm": ctx.psf.fwhm,
                                          "x": x, "y": y, "host": on_host})


def cosmic_ray(rng: np.random.Generator, ctx: Context) -> Scene:
    """A cosmic-ray hit: 1-3 sharp pixels or a thin track; in the reference 15% of the time."""
    amp = ctx.noise * 10.0 ** rng.uniform(math.log10(8.0), math.log10(500.0))
    hit = _empty(ctx)
    c = int(ctx.centre)
    if rng.uniform() < 0.4:
        length, angle = rng.uniform(3.0, 12.0), rng.uniform(0.0, math.pi)
        ox, oy = _offset(rng, 0.5)
        hx, hy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
        hit += render_segment(ctx.size, c + ox - hx, c + oy - hy, c + ox + hx, c + oy + hy,
                              width=rng.uniform(0.3, 0.6), amplitude=amp)
    else:
        hit[c, c] = amp
        for _ in range(rng.integers(0, 3)):
            i, j = c + rng.integers(-1, 2), c + rng.integers(-1, 2)
            hit[i, j] = max(hit[i, j], amp * rng.uniform(0.1, 0.6))
    if rng.uniform() < 0.15:
        return Scene(_empty(ctx), _empty(ctx), ref_detector=hit)
    return Scene(_empty(ctx), _empty(ctx), sci_detector=hit)


def hot_pixel(rng: np.random.Generator, ctx: Context) -> Scene:
    """A single hot pixel (10-1000 sigma) at or next to the centre, in the science image."""
    hit = _empty(ctx)
    c = int(ctx.centre)
    i, j = (c, c) if rng.uniform() < 0.7 else (c + rng.integers(-1, 2), c + rng.integers(-1, 2))
    hit[i, j] = ctx.noise * 10.0 ** rng.uniform(1.0, 3.0)
    return Scene(_empty(ctx), _empty(ctx), sci_detector=hit)


def bad_line(rng: np.random.Generator, ctx: Context) -> Scene:
    """A hot (85%) or dead column (70%) or row through the centre, sometimes starting mid-way."""
    line = _empty(ctx)
    k = int(ctx.centre) + int(rng.integers(-1, 2))
    start = int(rng.integers(0, ctx.size // 2)) if rng.uniform() < 0.3 else 0
    sign = 1.0 if rng.uniform() < 0.85 else -1.0
    values = sign * ctx.noise * rng.uniform(3.0, 50.0) * rng.uniform(0.7, 1.3, ctx.size - start)
    if rng.uniform() < 0.7:
        line[start:, k] = values
    else:
        line[k, start:] = values
    return Scene(_empty(ctx), _empty(ctx), sci_detector=line)


def dipole(rng: np.random.Generator, ctx: Context) -> Scene:
    """A star subtracted with a 0.5-1.5 pixel misalignment and a few % flux mismatch."""
    cfg = ctx.config
    flux = ctx.flux(rng.uniform(cfg.mag_range[0] - 2.0, cfg.mag_range[1] - 1.5))
    dx, dy = _offset(rng, 0.5)
    x, y = ctx.centre + dx, ctx.centre + dy
    shift, angle = rng.uniform(0.5, 1.5), rng.uniform(0.0, 2.0 * math.pi)
    sci = render_psf(ctx.psf, ctx.size, x, y, flux)
    ref_psf = ctx.psf.scaled(rng.uniform(0.95, 1.05))
    ref = render_psf(ref_psf, ctx.size, x - shift * math.cos(angle), y - shift * math.sin(angle),
                     flux * rng.uniform(0.85, 1.15))
    return Scene(sci, ref)


def star_residual(rng: np.random.Generator, ctx: Context) -> Scene:
    """A bright (often saturated) star badly subtracted: PSF-width / flux / rotation mismatch."""
    flux = ctx.flux(rng.uniform(9.5, 14.5))
    dx, dy = _offset(rng, 0.3)
    x, y = ctx.centre + dx, ctx.centre + dy
    sx, sy = _offset(rng, 0.2)
    sci = render_psf(ctx.psf, ctx.size, x, y, flux)
    ref = render_psf(ctx.psf.scaled(rng.uniform(0.8, 1.25)), ctx.size, x + sx, y + sy,
                     flux * rng.uniform(0.95, 1.05))
    if rng.uniform() < 0.4:
        amp = 0.02 * flux / (ctx.psf.fwhm**2)
        angle = rng.uniform(0.0, 0.5 * math.pi)
        sci += render_spikes(ctx.size, x, y, amp, angle)
        ref += render_spikes(ctx.size, x + sx, y + sy, amp, angle + math.radians(rng.uniform(1, 4)))
    return Scene(sci, ref, saturate=True, ref_saturation_scale=float(rng.uniform(0.5, 1.5)))


def noise(rng: np.random.Generator, ctx: Context) -> Scene:
    """Nothing: a pure noise fluctuation picked up by the detection."""
    return Scene(_empty(ctx), _empty(ctx))


#: Bogus kinds by name, in the order of :data:`DEFAULT_MIX`.
BOGUS_KINDS: dict[str, Callable[[np.random.Generator, Context], Scene]] = {
    "cosmic_ray": cosmic_ray,
    "hot_pixel": hot_pixel,
    "bad_line": bad_line,
    "dipole": dipole,
    "star_residual": star_residual,
    "noise": noise,
}
if tuple(BOGUS_KINDS) != tuple(DEFAULT_MIX):  # pragma: no cover - a developer's slip
    raise RuntimeError("BOGUS_KINDS and DEFAULT_MIX must list the same kinds in the same order")

#: Every kind :func:`otrain.simulate.render_candidate` accepts.
KINDS: dict[str, Callable[[np.random.Generator, Context], Scene]] = {"real": real, **BOGUS_KINDS}


def measure(diff: np.ndarray, ctx: Context) -> tuple[float, float, float]:
    """Rough photometry of a candidate, as a detection pipeline would report it.

    Aperture flux of radius ``max(1.5, FWHM_psf)`` at the centre, and an FWHM from the second
    moments of the pixels above 2 sigma in the 7x7 box around the brightest central pixel (plus the
    pixel's own 1/12 variance, so a single pixel gives about 0.7).

    Parameters
    ----------
    diff : numpy.ndarray
        Difference image (NaN allowed).
    ctx : Context
        The cutout's context.

    Returns
    -------
    flux, flux_err, fwhm : float
        Aperture flux and its noise (ADU) and the FWHM (pixels).
    """
    img = np.nan_to_num(diff, nan=0.0)
    size, c = ctx.size, int(ctx.centre)
    yy, xx = np.mgrid[:size, :size]
    r_ap = max(1.5, ctx.psf.fwhm)
    inside = (xx - c) ** 2 + (yy - c) ** 2 <= r_ap**2
    flux = float(img[inside].sum())
    flux_err = ctx.diff_noise * math.sqrt(float(inside.sum()))
    core = np.abs(img[c - 1:c + 2, c - 1:c + 2])
    pi, pj = np.unravel_index(int(np.argmax(core)), core.shape)
    pi, pj = c - 1 + pi, c - 1 + pj
    box = img[max(pi - 3, 0):pi + 4, max(pj - 3, 0):pj + 4]
    box = box * np.sign(img[pi, pj] or 1.0)
    w = np.where(box > 2.0 * ctx.diff_noise, box, 0.0)
    if w.sum() <= 0:
        return flux, flux_err, float(ctx.psf.fwhm)
    by, bx = np.mgrid[:box.shape[0], :box.shape[1]]
    mx, my = (w * bx).sum() / w.sum(), (w * by).sum() / w.sum()
    var = (w * ((bx - mx) ** 2 + (by - my) ** 2)).sum() / (2.0 * w.sum()) + 1.0 / 12.0
    return flux, flux_err, float(2.3548200450309493 * math.sqrt(var))
