"""Simulated real/bogus cutouts: the built-in data of ``make demo`` and of the test-suite.

:func:`simulate_cutouts` writes ``<outdir>/true/*.fits`` (real, label 1), ``<outdir>/false/*.fits``
(bogus, label 0), ``<outdir>/crossmatch.dat`` (one row per injected real source, joined later with
inference results on ``closest_candID``) and ``<outdir>/simulation.json`` (the parameters), in the
conventions :mod:`otrain.cutouts` reads: single-HDU difference images with the keywords
``CANDID MAG MAGERR FILTER FWHM EDGE RA DEC FILE XPOS YPOS FWHMPSF`` (EDGE the *string*
``'True'``/``'False'`` as gmadet wrote it, or a FITS logical with ``logical_edge``), or with
``triplets`` an empty primary HDU with the keywords followed by the ``DIFF``, ``SCI``, ``REF``
image extensions.

Physics
-------
* Images are in ADU with zero point ``zero_point``: a source of magnitude ``m`` has a total flux
  ``10**(-0.4 * (m - zero_point))`` ADU.
* Science and reference images have a flat sky of ``sky`` ADU with Poisson noise (in electrons,
  ``gain`` e-/ADU) plus Gaussian read noise (``read_noise`` e-); sources get their own Poisson
  noise.
  The reference is as deep as the science image, so the difference ``diff = sci - ref`` has
  ``sqrt(2)`` times the sky noise. With the defaults (``sky=5`` ADU, ``gain=10``, ``read_noise=5``)
  the sky noise is 0.87 ADU and the 5-sigma limit is about magnitude 21.5 for a 2.5-pixel
  Gaussian PSF (22.0 at 1.5 pixels, 20.8 for a 4-pixel Moffat).
* Each candidate belongs to one of ``n_images`` simulated images, each with its own filter, pointing
  and PSF: Moffat (``beta`` in ``beta_range``) or Gaussian, FWHM in ``fwhm_range``, slightly
  elliptical. Profiles are integrated over the pixels (3x3 sub-sampling).
* Real: a PSF point source within ``offset_max`` pixel of the centre, in the science image only;
  magnitude uniform from ``mag_range[0]`` to the fainter of ``mag_range[1]`` and the magnitude of
  S/N ``min_snr_range`` (3-5); a fraction ``host_fraction`` sits on a Sersic host galaxy present in
  both images (it cancels in the difference, except for its noise). Headers record a measured-like
  MAG (true magnitude + its error) and FWHM; ``SIMMAG`` keeps the true magnitude.
* Bogus: the artefacts of :mod:`otrain.simulate.artefacts` (cosmic rays, hot pixels, bad columns,
  misalignment dipoles, bright/saturated star residuals with bleed trails, noise), in proportions
  ``artefact_mix``; MAG and FWHM are measured on the difference image (aperture flux, moments).
* A fraction ``edge_fraction`` of each class is flagged ``EDGE`` and has a NaN (off-CCD) band on
  one side; ``XPOS``/``YPOS`` place the cutout at the matching image border.
* ``background``: a real FITS image instead of the flat sky, the injection method of the O'TRAIN
  paper: ``sci`` = a random cutout of the image + the injected source (with its Poisson noise),
  ``ref`` = the same cutout + a Gaussian noise realisation of ``sqrt(2)`` times the image noise, so
  that ``diff`` has the noise of a difference of two exposures. Injected PSFs still follow
  ``fwhm_range`` (set it to the image's seeing).

Everything is driven by ``seed`` (one :func:`numpy.random.default_rng` stream per candidate,
spawned from ``seed``): the same seed and parameters give byte-identical files.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from otrain._version import __version__
from otrain.errors import OtrainError
from otrain.outputs import write_text_atomic
from otrain.progress import Progress, info
from otrain.simulate.artefacts import BOGUS_KINDS, KINDS, Context, Scene, measure
from otrain.simulate.config import SimImage, SimulationConfig, draw_image
from otrain.simulate.files import (
    Background,
    cutout_bytes,
    load_background,
    prepare_outdir,
    write_crossmatch,
)
from otrain.simulate.psf import bleed

__all__ = ["KINDS", "SimImage", "SimulationConfig", "SimulationSummary", "draw_image",
           "render_candidate", "simulate_cutouts"]


@dataclass
class SimulationSummary:
    """What :func:`simulate_cutouts` wrote.

    Attributes
    ----------
    outdir : Path
        The simulation folder.
    n_true, n_false : int
        Cutouts written in ``true/`` and ``false/``.
    n_edge : int
        How many of them are flagged EDGE (both classes).
    kinds : dict of str to int
        Cutouts per kind (``real`` and the bogus kinds).
    crossmatch : Path
        The ``crossmatch.dat`` file.
    seconds : float
        Wall-clock time taken.
    """

    outdir: Path
    n_true: int
    n_false: int
    n_edge: int
    kinds: dict[str, int]
    crossmatch: Path
    seconds: float


def _expose(rng: np.random.Generator, scene: Scene, ctx: Context, base: np.ndarray | None,
            level: float) -> tuple[np.ndarray, np.ndarray]:
    """Add background, noise, detector effects and saturation: the science and reference images."""
    cfg, shape = ctx.config, (ctx.size, ctx.size)
    g = cfg.gain
    sat_sci, sat_ref = cfg.saturation, cfg.saturation * scene.ref_saturation_scale
    sci_model, ref_model = scene.sci, scene.ref
    if scene.saturate:
        sci_model, ref_model = bleed(sci_model, sat_sci - level), bleed(ref_model, sat_ref - level)
    if base is None:
        sci = rng.poisson(g * (cfg.sky + sci_model)) / g + rng.normal(0, cfg.read_noise / g, shape)
        ref = rng.poisson(g * (cfg.sky + ref_model)) / g + rng.normal(0, cfg.read_noise / g, shape)
    else:
        sci = base + rng.poisson(g * sci_model) / g
        fresh = rng.normal(0.0, math.sqrt(2.0) * ctx.noise, shape)
        ref = base + fresh + rng.poisson(g * ref_model) / g
    if scene.sci_detector is not None:
        sci += scene.sci_detector
    if scene.ref_detector is not None:
        ref += scene.ref_detector
    if scene.saturate:
        sci, ref = np.minimum(sci, sat_sci), np.minimum(ref, sat_ref)
    return sci, ref


def render_candidate(rng: np.random.Generator, kind: str, config: SimulationConfig, *,
                     image: SimImage | None = None, background: Background | None = None,
                     edge: bool = False, candid: str = "cand_000000"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Simulate one candidate in memory.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every random draw.
    kind : str
        ``"real"`` or a bogus kind (:data:`otrain.simulate.artefacts.BOGUS_KINDS`).
    config : SimulationConfig
        Parameters.
    image : SimImage, optional
        The original image the candidate is on; drawn from ``rng`` if not given.
    background : Background, optional
        Real background image; loaded from ``config.background`` if that is set and this is not.
    edge : bool, default False
        Flag the candidate EDGE and blank (NaN) a band on one side.
    candid : str
        Candidate id written in CANDID.

    Returns
    -------
    sci, ref, diff : numpy.ndarray
        ``(size, size)`` float32 images, ``diff == sci - ref`` (NaN in the EDGE band).
    meta : dict
        Header keywords: CANDID MAG MAGERR FILTER FWHM EDGE RA DEC FILE XPOS YPOS FWHMPSF, plus
        SIMKIND (the kind) and, for real sources, SIMMAG (true magnitude).
    """
    if kind not in KINDS:
        raise OtrainError(f"unknown candidate kind {kind!r}; known: {', '.join(KINDS)}")
    if background is None and config.background:
        background = load_background(config.background, config.size)
    if image is None:
        image = draw_image(rng, config, 0, background)
    size = config.size
    if background is not None:
        x0, y0, base = background.pick(rng, size)
        noise, level = background.noise, background.level
    else:
        x0 = int(rng.integers(0, image.shape[1] - size + 1))
        y0 = int(rng.integers(0, image.shape[0] - size + 1))
        base, noise, level = None, config.sky_noise, config.sky
    ctx = Context(config, image.psf, noise, math.sqrt(2.0) * noise)
    scene = KINDS[kind](rng, ctx)
    sci64, ref64 = _expose(rng, scene, ctx, base, level)
    sci, ref = sci64.astype(np.float32), ref64.astype(np.float32)
    diff = sci - ref
    if edge:
        side, width = int(rng.integers(4)), int(rng.integers(2, max(3, size // 2 - 1)))
        band = [(slice(None), slice(0, width)), (slice(None), slice(size - width, size)),
                (slice(0, width), slice(None)), (slice(size - width, size), slice(None))][side]
        for img in (sci, ref, diff):
            img[band] = np.nan
        if background is None:  # put the cutout across the matching border of the image
            x0 = [-width, image.shape[1] - size + width, x0, x0][side]
            y0 = [y0, y0, -width, image.shape[0] - size + width][side]
    truth = scene.truth
    xpos = x0 + truth.get("x", ctx.centre) + 1.0
    ypos = y0 + truth.get("y", ctx.centre) + 1.0
    if kind == "real":
        magerr = 1.0857362 / truth["snr"]
        mag = truth["mag"] + float(rng.normal(0.0, magerr))
        fwhm = max(0.5, image.psf.fwhm * (1.0 + float(rng.normal(0.0, 0.03 + 0.5 / truth["snr"]))))
    else:
        flux, flux_err, fwhm = measure(diff, ctx)
        flux = max(abs(flux), flux_err)
        mag, magerr = config.zero_point - 2.5 * math.log10(flux), 1.0857362 * flux_err / flux
    radec = background.radec(xpos, ypos) if background is not None else None
    if radec is None:
        cosd = max(math.cos(math.radians(image.dec0)), 0.01)
        scale = image.pixel_scale / 3600.0
        radec = ((image.ra0 + (xpos - image.shape[1] / 2) * scale / cosd) % 360.0,
                 image.dec0 + (ypos - image.shape[0] / 2) * scale)
    meta = {"CANDID": candid, "MAG": round(mag, 4), "MAGERR": round(magerr, 4),
            "FILTER": image.filter, "FWHM": round(fwhm, 3),
            "EDGE": bool(edge) if config.logical_edge else str(bool(edge)),
            "RA": round(radec[0], 7), "DEC": round(radec[1], 7), "FILE": image.name,
            "XPOS": round(xpos, 3), "YPOS": round(ypos, 3), "FWHMPSF": round(image.psf.fwhm, 3),
            "SIMKIND": kind}
    if kind == "real":
        meta["SIMMAG"] = round(truth["mag"], 4)
    return sci, ref, diff, meta


def _plan(config: SimulationConfig, rng: np.random.Generator) -> list[tuple[int, str, bool, str]]:
    """Every candidate as ``(label, kind, edge, candid)``: true ones first, then false ones."""
    n = config.n_true + config.n_false
    ids = rng.permutation(n)
    weights = {k: v for k, v in config.artefact_mix.items() if v > 0}
    total = sum(weights.values()) or 1.0
    exact = {k: config.n_false * v / total for k, v in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    missing = config.n_false - sum(counts.values())
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[:missing]:  # largest remainders
        counts[k] += 1
    bogus = [k for k in BOGUS_KINDS if k in counts for _ in range(counts[k])]
    kinds = ["real"] * config.n_true + [bogus[i] for i in rng.permutation(len(bogus))]
    edges = np.zeros(n, dtype=bool)
    for start, count in ((0, config.n_true), (config.n_true, config.n_false)):
        n_edge = round(config.edge_fraction * count)
        edges[start + rng.choice(count, n_edge, replace=False)] = True
    width = max(6, len(str(n - 1)))
    return [(int(i < config.n_true), kinds[i], bool(edges[i]),
             f"{config.candid_prefix}{ids[i]:0{width}d}") for i in range(n)]


def simulate_cutouts(outdir: str | Path, config: SimulationConfig, overwrite: bool = False,
                     quiet: bool = False) -> SimulationSummary:
    """Write a folder of simulated labelled cutouts (see the module docstring).

    Parameters
    ----------
    outdir : str or Path
        Destination; ``true/``, ``false/``, ``crossmatch.dat`` and ``simulation.json`` go in it.
    config : SimulationConfig
        Parameters.
    overwrite : bool, default False
        Replace a previous simulation in ``outdir`` (its ``<prefix>NNNNNN.fits`` cutouts are
        deleted first). Without it, existing FITS files in ``true/`` or ``false/`` are an error.
    quiet : bool, default False
        Print nothing.

    Returns
    -------
    SimulationSummary

    Raises
    ------
    OtrainError
        Bad parameters, an unusable background image, or an output folder already in use.
    """
    start = time.monotonic()
    config.validate()
    outdir = Path(outdir)
    background = load_background(config.background, config.size) if config.background else None
    stale = prepare_outdir(outdir, overwrite, re.escape(config.candid_prefix) + r"\d+\.fits")
    plan_seq, image_seq, cand_seq = np.random.SeedSequence(config.seed).spawn(3)
    plan = _plan(config, np.random.default_rng(plan_seq))
    image_rng = np.random.default_rng(image_seq)
    images = [draw_image(image_rng, config, k, background) for k in range(config.n_images)]
    for path in stale:
        path.unlink()
    for sub in ("true", "false"):
        (outdir / sub).mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    rows: list[dict] = []
    kinds: dict[str, int] = {}
    try:
        with Progress(len(plan), "simulating cutouts", quiet=quiet, unit="cutouts") as bar:
            seqs = cand_seq.spawn(len(plan))
            for (label, kind, edge, candid), seq in zip(plan, seqs, strict=True):
                rng = np.random.default_rng(seq)
                image = images[int(rng.integers(len(images)))]
                sci, ref, diff, meta = render_candidate(rng, kind, config, image=image,
                                                        background=background, edge=edge,
                                                        candid=candid)
                name = f"{'true' if label else 'false'}/{candid}.fits"
                content = (cutout_bytes(meta, diff, sci, ref) if config.triplets
                           else cutout_bytes(meta, diff))
                written.append(outdir / name)
                written[-1].write_bytes(content)
                kinds[kind] = kinds.get(kind, 0) + 1
                if label:
                    rows.append({"idx": len(rows), "filename": meta["FILE"], "Xpos": meta["XPOS"],
                                 "Ypos": meta["YPOS"], "RA": meta["RA"], "Dec": meta["DEC"],
                                 "mag": meta["SIMMAG"], "filter": meta["FILTER"],
                                 "FWHM": meta["FWHMPSF"], "FWHMPSF": meta["FWHMPSF"],
                                 "Nmatches": 1, "closest_candID": candid, "cutout": name})
                bar.update()
        crossmatch = write_crossmatch(outdir / "crossmatch.dat", rows, overwrite)
        written.append(crossmatch)
        n_edge = int(sum(edge for _, _, edge, _ in plan))
        record = {"otrain_version": __version__, "seed": config.seed, "n_true": config.n_true,
                  "n_false": config.n_false, "n_edge": n_edge, "size": config.size,
                  "triplets": config.triplets, "kinds": kinds, "config": asdict(config)}
        write_text_atomic(outdir / "simulation.json", json.dumps(record, indent=2) + "\n",
                          overwrite)
    except BaseException:
        for path in written:  # do not leave a half-written simulation behind
            path.unlink(missing_ok=True)
        raise
    info(f"simulated {config.n_true + config.n_false} cutouts ({config.n_true} true, "
         f"{config.n_false} false, {n_edge} flagged EDGE) in {outdir}", quiet)
    return SimulationSummary(outdir, config.n_true, config.n_false, n_edge, kinds, crossmatch,
                             time.monotonic() - start)
