"""Simulated cutouts: PSF point sources (real) and the artefacts pipelines produce (bogus),
single-HDU or triplets, optionally injected into a real background image. The built-in data of
``make demo`` and of the tests.

Modules: :mod:`~otrain.simulate.core` (the run, :func:`simulate_cutouts`),
:mod:`~otrain.simulate.config` (:class:`SimulationConfig`, the simulated original images),
:mod:`~otrain.simulate.artefacts` (one function per kind), :mod:`~otrain.simulate.psf` (profiles),
:mod:`~otrain.simulate.files` (FITS bytes, ``crossmatch.dat``, backgrounds).
"""

from otrain.simulate.artefacts import BOGUS_KINDS, KINDS
from otrain.simulate.config import DEFAULT_MIX, SimulationConfig
from otrain.simulate.core import SimulationSummary, render_candidate, simulate_cutouts
from otrain.simulate.files import Background, load_background

__all__ = [
    "BOGUS_KINDS",
    "DEFAULT_MIX",
    "KINDS",
    "Background",
    "SimulationConfig",
    "SimulationSummary",
    "load_background",
    "render_candidate",
    "simulate_cutouts",
]
