"""Matching of injected sources to scored candidates and recovery statistics (for checkinfer).

See :mod:`otrain.evaluation.checkinfer` for the conventions: dictionary join of
``closest_candID`` onto ``cand_ID``, strict ``label1 > p`` cuts, Wilson intervals at z = 1,
half-open magnitude bins covering everything, FWHM / FWHMPSF only where FWHMPSF > 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import ascii as astro_ascii
from astropy.table import Table

from otrain.errors import OtrainError
from otrain.metrics import wilson_interval as metrics_wilson

CROSSMATCH_NAME = "crossmatch.dat"
INFER_NAME = "infer_results.dat"
CROSSMATCH_COLUMNS = ("closest_candID", "mag")
INFER_COLUMNS = ("cand_ID", "label1", "FWHM", "FWHMPSF")
PLOT_NAMES = ("recovery_vs_mag.png", "distrib_CNN_prob_sim.png", "distrib_CNNprob_all_and_sim.png",
              "distrib_FWHM_simulation.png", "distrib_FWHM_real_vs_sim.png")
SUMMARY_NAME = "checkinfer.json"
_NO_ID = {"", "none", "nan", "--", "n/a", "null", "-"}
PROB_EDGES = np.linspace(0.0, 1.0, 41)


@dataclass
class CheckInferConfig:
    """Settings of :func:`check_inference` (defaults of ``otrain-checkinfer``)."""

    #: Magnitude limits splitting the injected sources (increasing).
    maglim: Sequence[float] = (12.0, 18.0, 21.0)
    #: P(real) cuts of the recovery and of the FWHM plot (increasing, in [0, 1]).
    cnn_problim: Sequence[float] = (0.1, 0.5, 0.7)
    #: Bounds of FWHM / FWHMPSF drawn in the FWHM plots and counted in the summary.
    fwhm_ratio_lower: float = 0.5
    fwhm_ratio_upper: float = 4.2
    #: Width of the magnitude bins of the recovery curve.
    mag_step: float = 0.5

    def validate(self) -> None:
        """Raise :class:`~otrain.errors.OtrainError` for unusable settings."""
        for name, values in (("--maglim", self.maglim), ("--cnn-problim", self.cnn_problim)):
            arr = np.asarray(values, dtype=np.float64)
            if arr.size == 0 or not np.all(np.isfinite(arr)):
                raise OtrainError(f"{name} needs at least one finite number")
            if np.any(np.diff(arr) <= 0):
                raise OtrainError(f"{name} values must increase, got {list(values)}")
        if not all(0.0 <= p <= 1.0 for p in self.cnn_problim):
            raise OtrainError("--cnn-problim values must be in [0, 1], got "
                              f"{list(self.cnn_problim)}")
        if not 0.0 <= self.fwhm_ratio_lower < self.fwhm_ratio_upper:
            raise OtrainError("FWHM ratio bounds must satisfy 0 <= lower < upper, got "
                              f"{self.fwhm_ratio_lower} and {self.fwhm_ratio_upper}")
        if not self.mag_step > 0:
            raise OtrainError(f"magnitude step must be positive, got {self.mag_step}")


@dataclass
class Matched:
    """Injected sources joined with the scored candidates (arrays aligned as documented)."""

    #: Per injected source: simulated magnitude, P(real) of its candidate (NaN when not scored),
    #: FWHM / FWHMPSF of its candidate (NaN when not scored or FWHMPSF unusable).
    sim_mag: np.ndarray
    sim_p: np.ndarray
    sim_ratio: np.ndarray
    #: Per scored candidate: P(real), FWHM / FWHMPSF (NaN when unusable), matched to a source.
    infer_p: np.ndarray
    infer_ratio: np.ndarray
    infer_is_sim: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class CheckInferResult:
    """What :func:`check_inference` computed and wrote."""

    summary: dict[str, Any]
    files: list[Path]


# ------------------------------------------------------------------------------------------
# Reading and matching
# ------------------------------------------------------------------------------------------
def resolve_input(path: str | Path, default_name: str) -> Path:
    """A file, or a folder holding ``default_name``; raise if neither exists."""
    path = Path(path)
    if path.is_dir():
        if not (path / default_name).is_file():
            raise OtrainError(f"folder holds no {default_name}", path)
        return path / default_name
    if not path.is_file():
        raise OtrainError("no such file or folder", path)
    return path


def read_table(path: str | Path, required: Sequence[str], id_column: str) -> Table:
    """Read a ``commented_header`` / ECSV / plain ASCII table having the ``required`` columns.

    ``id_column`` is read as text, so that ids such as ``007`` keep their zeros.

    Raises
    ------
    OtrainError
        Unreadable, empty, or a required column is missing (the message names file and column).
    """
    path = Path(path)
    with path.open(errors="replace") as fh:
        first = next((ln.strip() for ln in fh if ln.strip()), "")
    if not first:
        raise OtrainError("empty table", path)
    fmt = ("ecsv" if first.startswith("# %ECSV") else
           "commented_header" if first.startswith("#") else None)
    try:
        table = astro_ascii.read(path, format=fmt, converters={id_column: str}) if fmt else \
            astro_ascii.read(path, converters={id_column: str})
    except Exception as exc:
        raise OtrainError(f"unreadable table ({exc.__class__.__name__})", path) from None
    for col in required:
        if col not in table.colnames:
            raise OtrainError(f"missing column '{col}' (columns: {', '.join(table.colnames)})",
                              path)
    if len(table) == 0:
        raise OtrainError("table has no rows", path)
    return table


def _floats(table: Table, name: str) -> np.ndarray:
    try:
        return np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan)
    except (TypeError, ValueError):  # text such as "None" among numbers: NaN
        return np.array([float(v) if _is_float(v) else np.nan for v in _strings(table, name)])


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _strings(table: Table, name: str) -> np.ndarray:
    return np.array([s.strip() for s in np.ma.filled(np.ma.asarray(table[name]).astype(str), "")])


def fwhm_ratio(fwhm: np.ndarray, fwhmpsf: np.ndarray) -> np.ndarray:
    """FWHM / FWHMPSF, NaN where FWHMPSF is not finite and positive or FWHM is not finite."""
    ok = np.isfinite(fwhmpsf) & (fwhmpsf > 0) & np.isfinite(fwhm)
    out = np.full(fwhm.shape, np.nan)
    out[ok] = fwhm[ok] / fwhmpsf[ok]
    return out


def match(crossmatch: Table, infer: Table, infer_path: str | Path | None = None) -> Matched:
    """Join injected sources (``closest_candID``) to scored candidates (``cand_ID``).

    Raises :class:`~otrain.errors.OtrainError` if ``cand_ID`` values repeat (ambiguous join).
    """
    ids = _strings(infer, "cand_ID")
    uniq, n_each = np.unique(ids[ids != ""], return_counts=True)
    if np.any(n_each > 1):
        dup = uniq[np.argmax(n_each)]
        raise OtrainError(f"column 'cand_ID' is not unique ('{dup}' appears {n_each.max()} "
                          "times), so injected sources cannot be matched", infer_path)
    index = {cid: i for i, cid in enumerate(ids) if cid}
    closest = _strings(crossmatch, "closest_candID")
    no_cand = np.array([c.lower() in _NO_ID for c in closest], dtype=bool)
    if "Nmatches" in crossmatch.colnames:
        no_cand |= _floats(crossmatch, "Nmatches") == 0
    rows = np.array([-1 if skip else index.get(c, -1) for c, skip in zip(closest, no_cand,
                                                                          strict=True)], np.int64)
    found = rows >= 0
    infer_p = _floats(infer, "label1")
    fwhm, fwhmpsf = _floats(infer, "FWHM"), _floats(infer, "FWHMPSF")
    infer_ratio = fwhm_ratio(fwhm, fwhmpsf)
    bad_psf = ~(np.isfinite(fwhmpsf) & (fwhmpsf > 0))
    sim_p = np.full(rows.size, np.nan)
    sim_ratio = np.full(rows.size, np.nan)
    sim_p[found] = infer_p[rows[found]]
    sim_ratio[found] = infer_ratio[rows[found]]
    is_sim = np.zeros(len(infer), dtype=bool)
    is_sim[rows[found]] = True
    used, times = np.unique(rows[found], return_counts=True)
    sim_mag = _floats(crossmatch, "mag")
    counts = {
        "injected": int(rows.size), "scored": int(found.sum()),
        "no_candidate": int(no_cand.sum()), "candidate_not_scored": int((~no_cand & ~found).sum()),
        "sharing_a_candidate": int(times[times > 1].sum()), "mag_unknown": int(
            np.sum(~np.isfinite(sim_mag))),
        "infer_rows": len(infer), "infer_matched": int(is_sim.sum()),
        "infer_other": int((~is_sim).sum()), "infer_no_score": int(np.sum(~np.isfinite(infer_p))),
        "fwhmpsf_invalid_all": int(bad_psf.sum()),
        "fwhmpsf_invalid_sim": int(bad_psf[used].sum()),
        "fwhmpsf_invalid_other": int(bad_psf[~is_sim].sum()),
    }
    return Matched(sim_mag, sim_p, sim_ratio, infer_p, infer_ratio, is_sim, counts)


# ------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------
def wilson_interval(k: int, n: int, z: float = 1.0) -> tuple[float, float, float]:
    """Fraction ``k / n`` and its Wilson score interval ``(fraction, low, high)``; NaN if n = 0
    (the interval is :func:`otrain.metrics.wilson_interval`; here 1 sigma by default)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    lo, hi = metrics_wilson(k, n, z)
    return k / n, float(lo), float(hi)


def _bins(limits: Sequence[float], name: str, ops: tuple[str, str, str]
          ) -> list[tuple[float, float, str]]:
    edges = [-math.inf, *(float(x) for x in limits), math.inf]
    return [(lo, hi, f"{name} {ops[1]} {hi:g}" if lo == -math.inf else f"{name} {ops[2]} {lo:g}"
             if hi == math.inf else f"{lo:g} {ops[0]} {name} {ops[1]} {hi:g}")
            for lo, hi in itertools.pairwise(edges)]


def mag_bins(maglim: Sequence[float]) -> list[tuple[float, float, str]]:
    """Bins ``(low, high, label)``: ``mag < m0``, ``m0 <= mag < m1``, ..., ``mag >= mk``."""
    return _bins(maglim, "mag", ("<=", "<", ">="))


def prob_bins(cuts: Sequence[float]) -> list[tuple[float, float, str]]:
    """P(real) bins ``(low, high, label)``: ``P <= c0``, ``c0 < P <= c1``, ..., ``P > ck``."""
    return _bins(cuts, "P(real)", ("<", "<=", ">"))


def _none(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def recovery_row(p: np.ndarray, cuts: Sequence[float], **extra: Any) -> dict[str, Any]:
    """Counts and Wilson intervals of ``p > cut`` among ``p`` (NaN = not scored)."""
    n = int(p.size)
    row: dict[str, Any] = {**extra, "n_injected": n, "n_scored": int(np.isfinite(p).sum()),
                           "cuts": []}
    for cut in cuts:
        k = int(np.sum(p > cut))
        f, lo, hi = wilson_interval(k, n)
        row["cuts"].append({"p_cut": float(cut), "n_recovered": k, "fraction": _none(f),
                            "low": _none(lo), "high": _none(hi)})
    return row


def recovery_table(m: Matched, config: CheckInferConfig) -> dict[str, Any]:
    """Recovery per ``--maglim`` bin and overall, and the fine recovery curve."""
    table = [recovery_row(m.sim_p, config.cnn_problim, bin="all", mag_min=None, mag_max=None)]
    for lo, hi, label in mag_bins(config.maglim):
        sel = (m.sim_mag >= lo) & (m.sim_mag < hi)
        table.append(recovery_row(m.sim_p[sel], config.cnn_problim, bin=label,
                                  mag_min=_none(lo), mag_max=_none(hi)))
    curve = []
    finite = m.sim_mag[np.isfinite(m.sim_mag)]
    if finite.size:
        step = config.mag_step
        start = math.floor(finite.min() / step) * step
        edges = start + step * np.arange(math.floor((finite.max() - start) / step) + 2)
        for lo, hi in itertools.pairwise(edges):
            sel = (m.sim_mag >= lo) & (m.sim_mag < hi)
            if sel.any():
                curve.append(recovery_row(m.sim_p[sel], config.cnn_problim, mag_min=float(lo),
                                          mag_max=float(hi), mag_centre=float((lo + hi) / 2)))
    return {"by_maglim": table, "curve": curve}


def fwhm_summary(m: Matched, config: CheckInferConfig) -> dict[str, Any]:
    """Fractions of injected / other candidates with FWHM/FWHMPSF inside the bounds."""
    out: dict[str, Any] = {"lower": config.fwhm_ratio_lower, "upper": config.fwhm_ratio_upper,
                           "excluded_fwhmpsf_invalid": {
                               "all": m.counts["fwhmpsf_invalid_all"],
                               "injected": m.counts["fwhmpsf_invalid_sim"],
                               "other": m.counts["fwhmpsf_invalid_other"]}}
    for name, ratio in (("injected", m.sim_ratio), ("other", m.infer_ratio[~m.infer_is_sim])):
        r = ratio[np.isfinite(ratio)]
        inside = int(np.sum((r >= config.fwhm_ratio_lower) & (r <= config.fwhm_ratio_upper)))
        out[name] = {"n": int(r.size), "inside_bounds": inside,
                     "fraction_inside": _none(inside / r.size if r.size else math.nan)}
    return out
