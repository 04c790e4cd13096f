"""Parameters of the simulator (:class:`SimulationConfig`) and the simulated original images.

See :mod:`otrain.simulate` for the physics and the files written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from otrain.errors import OtrainError
from otrain.simulate.psf import PSF

if TYPE_CHECKING:
    from otrain.simulate.files import Background

#: Default proportions of the bogus kinds (the kinds are drawn by :mod:`otrain.simulate.artefacts`).
DEFAULT_MIX: dict[str, float] = {
    "cosmic_ray": 0.25, "hot_pixel": 0.10, "bad_line": 0.10,
    "dipole": 0.25, "star_residual": 0.15, "noise": 0.15,
}


@dataclass
class SimulationConfig:
    """Parameters of a simulation (all lengths in pixels, fluxes in ADU).

    Parameters
    ----------
    n_true, n_false : int
        Number of real and bogus cutouts.
    size : int
        Cutout side (at least 8).
    seed : int
        Seed of every random draw.
    triplets : bool
        Write DIFF/SCI/REF multi-extension files instead of single-HDU difference images.
    edge_fraction : float
        Fraction of each class flagged EDGE, with a NaN band.
    fwhm_range, beta_range : tuple of float
        PSF FWHM and Moffat index ranges; ``moffat_fraction`` of the images are Moffat.
    ellipticity_max : float
        Largest PSF ellipticity.
    mag_range : tuple of float
        Magnitudes of real sources (bright, faint).
    min_snr_range : tuple of float
        Faintest real sources have a S/N drawn in this range.
    zero_point, sky, gain, read_noise, saturation : float
        Photometric zero point, sky level (ADU), gain (e-/ADU), read noise (e-), saturation (ADU).
    host_fraction : float
        Fraction of real sources on a host galaxy; host magnitudes in ``host_mag_range``.
    offset_max : float
        Largest distance of a real source from the cutout centre.
    artefact_mix : dict of str to float
        Relative proportions of the bogus kinds (see :data:`otrain.simulate.artefacts.DEFAULT_MIX`).
    filters : tuple of str
        Filters of the simulated images.
    n_images, image_shape, pixel_scale : int, tuple of int, float
        Number, size (ny, nx) and pixel scale (arcsec) of the simulated original images.
    background : str or None
        Real FITS image to take backgrounds from (see the module docstring).
    logical_edge : bool
        Write EDGE as a FITS logical instead of the string 'True'/'False'.
    candid_prefix : str
        Candidate ids and file names are ``<prefix><number:06d>``.
    """

    n_true: int = 500
    n_false: int = 500
    size: int = 32
    seed: int = 0
    triplets: bool = False
    edge_fraction: float = 0.03
    fwhm_range: tuple[float, float] = (1.5, 4.0)
    moffat_fraction: float = 0.7
    beta_range: tuple[float, float] = (2.5, 4.5)
    ellipticity_max: float = 0.1
    mag_range: tuple[float, float] = (16.0, 21.5)
    min_snr_range: tuple[float, float] = (3.0, 5.0)
    zero_point: float = 25.0
    sky: float = 5.0
    gain: float = 10.0
    read_noise: float = 5.0
    saturation: float = 30000.0
    host_fraction: float = 0.3
    host_mag_range: tuple[float, float] = (16.0, 21.0)
    offset_max: float = 1.0
    artefact_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    filters: tuple[str, ...] = ("g", "r", "i")
    n_images: int = 20
    image_shape: tuple[int, int] = (4096, 4096)
    pixel_scale: float = 1.0
    background: str | None = None
    logical_edge: bool = False
    candid_prefix: str = "cand_"

    @property
    def sky_noise(self) -> float:
        """Per-pixel noise of one flat-sky image, ADU."""
        return math.sqrt(self.sky * self.gain + self.read_noise**2) / self.gain

    def validate(self) -> None:
        """Raise :class:`~otrain.errors.OtrainError` if a parameter is out of range."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise OtrainError(f"simulation: {message}")

        need(self.n_true >= 0 and self.n_false >= 0 and self.n_true + self.n_false > 0,
             f"need at least one cutout (n_true={self.n_true}, n_false={self.n_false})")
        need(8 <= self.size <= 1024, f"size must be between 8 and 1024 pixels, got {self.size}")
        need(0.0 <= self.edge_fraction <= 1.0, f"edge_fraction must be in [0, 1], got "
                                                f"{self.edge_fraction}")
        for name in ("fwhm_range", "beta_range", "mag_range", "min_snr_range", "host_mag_range"):
            lo, hi = getattr(self, name)
            need(lo <= hi, f"{name} must be (low, high), got ({lo}, {hi})")
        need(0.5 <= self.fwhm_range[0] and self.fwhm_range[1] <= self.size / 2,
             f"fwhm_range must lie within [0.5, size/2], got {self.fwhm_range}")
        need(self.beta_range[0] > 1.0, "Moffat beta must be > 1")
        need(self.min_snr_range[0] > 0, "min_snr_range must be positive")
        need(self.gain > 0 and self.sky >= 0 and self.read_noise >= 0 and self.sky_noise > 0,
             "need gain > 0, sky >= 0, read_noise >= 0 and some noise")
        need(self.saturation > self.sky, "saturation must be above the sky level")
        for name in ("host_fraction", "moffat_fraction"):
            need(0.0 <= getattr(self, name) <= 1.0, f"{name} must be in [0, 1]")
        need(0.0 <= self.ellipticity_max <= 0.9, "ellipticity_max must be in [0, 0.9]")
        need(0.0 <= self.offset_max <= self.size / 4, "offset_max must be in [0, size/4]")
        unknown = sorted(set(self.artefact_mix) - set(DEFAULT_MIX))
        need(not unknown, f"unknown artefact kind(s) {unknown}; known: {sorted(DEFAULT_MIX)}")
        need(all(v >= 0 for v in self.artefact_mix.values()), "artefact_mix weights must be >= 0")
        need(self.n_false == 0 or sum(self.artefact_mix.values()) > 0,
             "artefact_mix needs a positive weight")
        need(len(self.filters) > 0 and self.n_images > 0, "need filters and n_images > 0")
        need(min(self.image_shape) >= self.size, "image_shape must be at least the cutout size")


@dataclass(frozen=True)
class SimImage:
    """A simulated original image a candidate was found on.

    Attributes
    ----------
    name : str
        Its file name (the cutouts' FILE keyword).
    psf : PSF
        Its PSF (FWHMPSF); real sources are drawn with it.
    filter : str
        Its filter (FILTER).
    ra0, dec0 : float
        Sky position of its centre, degrees.
    shape : tuple of int
        ``(ny, nx)`` in pixels.
    pixel_scale : float
        Arcsec per pixel.
    """

    name: str
    psf: PSF
    filter: str
    ra0: float
    dec0: float
    shape: tuple[int, int]
    pixel_scale: float


def draw_image(rng: np.random.Generator, config: SimulationConfig, index: int = 0,
               background: Background | None = None) -> SimImage:
    """Draw the properties of one original image (PSF, filter, pointing).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the random draws.
    config : SimulationConfig
        Ranges to draw from.
    index : int, default 0
        Number used in the image name ``sim_image_<index:03d>.fits``.
    background : Background, optional
        With a real background image, its name and shape are used instead.

    Returns
    -------
    SimImage
    """
    lo, hi = config.fwhm_range
    fwhm = float(rng.uniform(lo, hi))
    moffat = rng.uniform() < config.moffat_fraction
    beta = float(rng.uniform(*config.beta_range)) if moffat else None
    psf = PSF(fwhm, beta, float(rng.uniform(0.0, config.ellipticity_max)),
              float(rng.uniform(0.0, math.pi)))
    band = str(config.filters[int(rng.integers(len(config.filters)))])
    ra0 = float(rng.uniform(0.0, 360.0))
    dec0 = float(np.degrees(np.arcsin(rng.uniform(-0.5, 0.95))))
    if background is not None:
        return SimImage(background.path.name, psf, band, ra0, dec0,
                        tuple(background.data.shape), config.pixel_scale)
    return SimImage(f"sim_image_{index:03d}.fits", psf, band, ra0, dec0,
                    tuple(config.image_shape), config.pixel_scale)
