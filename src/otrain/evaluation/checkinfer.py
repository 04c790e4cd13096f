"""Check inference on injected sources: recovery against magnitude, score and FWHM plots.

Inputs are two ``astropy`` ASCII tables (commented header, ECSV or plain header):

``crossmatch.dat`` (written by :mod:`otrain.simulate` or gmadet)
    one row per injected source; needs ``closest_candID`` (the candidate found nearest to it)
    and ``mag`` (its simulated magnitude). An empty / ``None`` / ``--`` id, or ``Nmatches == 0``
    when that column exists, means that no candidate was found.
``infer_results.dat`` (written by ``otrain-infer``)
    one row per scored candidate; needs ``cand_ID``, ``label1`` (P(real)), ``FWHM`` and
    ``FWHMPSF``. ``cand_ID`` must be unique.

Matching is a dictionary join of ``closest_candID`` onto ``cand_ID`` (no nested loop). An injected
source is *recovered* at a cut ``p`` when its candidate is in the inference table and
``label1 > p`` (strict, as everywhere in otrain); sources that were never detected, or whose
candidate was not scored (e.g. flagged EDGE), count as not recovered, so the recovery fraction is
out of all injected sources. Scored candidates not matched to an injected source are "other".

Error bars of fractions are Wilson score intervals at one sigma (z = 1), which stay inside [0, 1]
for 0 or all recovered. Magnitude bins are half-open and cover everything:
``mag < m0``, ``m0 <= mag < m1``, ..., ``mag >= mk``. FWHM / FWHMPSF is only computed where
FWHMPSF is finite and positive; the other rows are left out of the FWHM plots and counted.

Outputs in ``<plots>/CheckInfer/`` (file names follow O'TRAIN where the content matches):
``recovery_vs_mag.png``, ``distrib_CNN_prob_sim.png`` (P(real) of injected sources per magnitude
bin), ``distrib_CNNprob_all_and_sim.png`` (all / injected / other: counts and normalised
fractions, which replaces O'TRAIN's ``distrib_CNN_prob_all.png`` and ``fraction_per_bin.png``),
``distrib_FWHM_simulation.png`` (injected sources per P(real) bin), ``distrib_FWHM_real_vs_sim.png``
(other vs injected; the FWHM bounds of the command line are drawn in both FWHM plots) and
``checkinfer.json`` (all the numbers).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import ascii as astro_ascii
from astropy.table import Table
from matplotlib.figure import Figure

from otrain.errors import OtrainError
from otrain.outputs import atomic_output, check_writable, write_text_atomic
from otrain.progress import info

CROSSMATCH_NAME = "crossmatch.dat"
INFER_NAME = "infer_results.dat"
CROSSMATCH_COLUMNS = ("closest_candID", "mag")
INFER_COLUMNS = ("cand_ID", "label1", "FWHM", "FWHMPSF")
PLOT_NAMES = ("recovery_vs_mag.png", "distrib_CNN_prob_sim.png", "distrib_CNNprob_all_and_sim.png",
              "distrib_FWHM_simulation.png", "distrib_FWHM_real_vs_sim.png")
SUMMARY_NAME = "checkinfer.json"
_NO_ID = {"", "none", "nan", "--", "n/a", "null", "-"}
_PROB_EDGES = np.linspace(0.0, 1.0, 41)


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
    """Fraction ``k / n`` and its Wilson score interval ``(fraction, low, high)``; NaN if n = 0."""
    if n == 0:
        return math.nan, math.nan, math.nan
    f = k / n
    denom = 1.0 + z * z / n
    centre = (f + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(f * (1 - f) / n + z * z / (4 * n * n))
    return f, max(0.0, centre - half), min(1.0, centre + half)


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


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------
def _save(fig: Figure, path: Path, overwrite: bool) -> Path:
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_recovery(curve: list[dict[str, Any]], config: CheckInferConfig, path: Path,
                  overwrite: bool) -> Path:
    """Recovered fraction against magnitude, one line per P(real) cut, counts on a twin axis."""
    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.subplots()
    x = np.array([row["mag_centre"] for row in curve])
    ax2 = ax.twinx()
    if curve:
        n = [row["n_injected"] for row in curve]
        ax2.bar(x, n, width=config.mag_step * 0.95, color="0.85", label="injected per bin")
        for j, cut in enumerate(config.cnn_problim):
            f = np.array([np.nan if r["cuts"][j]["fraction"] is None else r["cuts"][j]["fraction"]
                          for r in curve])
            lo = np.array([r["cuts"][j]["low"] or 0.0 for r in curve])
            hi = np.array([r["cuts"][j]["high"] or 0.0 for r in curve])
            dodge = (j - (len(config.cnn_problim) - 1) / 2) * config.mag_step * 0.06
            ax.errorbar(x + dodge, f,
                        yerr=[np.clip(f - lo, 0, None), np.clip(hi - f, 0, None)],
                        fmt="o-", ms=4, capsize=2, label=f"P(real) > {cut:g}")
    for m in config.maglim:
        ax.axvline(m, color="0.5", ls=":", lw=0.8)
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("injected magnitude")
    ax.set_ylabel("fraction of injected sources recovered")
    ax2.set_ylabel("injected sources per bin", color="0.4")
    ax.set_title("Recovery of injected sources (Wilson 1-sigma error bars)")
    handles = ax.get_legend_handles_labels()
    extra = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="lower left", fontsize=8)
    return _save(fig, path, overwrite)


def _hist(ax: Any, values: np.ndarray, edges: np.ndarray, label: str, of: int | None = None,
          **kw: Any) -> None:
    v = values[np.isfinite(values)]
    n = f"n={v.size}" if of is None else f"{v.size} scored of {of}"
    ax.hist(np.clip(v, edges[0], edges[-1]), bins=edges, histtype="step", lw=1.5,
            label=f"{label} ({n})", **kw)


def plot_sim_scores(m: Matched, config: CheckInferConfig, path: Path, overwrite: bool) -> Path:
    """P(real) histograms of the scored injected sources, one per magnitude bin."""
    fig = Figure(figsize=(7.0, 4.8))
    ax = fig.subplots()
    for lo, hi, label in mag_bins(config.maglim):
        sel = (m.sim_mag >= lo) & (m.sim_mag < hi)
        _hist(ax, m.sim_p[sel], _PROB_EDGES, label, of=int(sel.sum()))
    ax.set_yscale("log")
    ax.set_xlabel("P(real) (CNN score, label1)")
    ax.set_ylabel("number of injected sources")
    ax.set_title("P(real) of injected sources, by injected magnitude")
    ax.legend(fontsize=8)
    return _save(fig, path, overwrite)


def plot_all_scores(m: Matched, path: Path, overwrite: bool) -> Path:
    """P(real) of all scored candidates, the injected ones and the others: counts and fractions."""
    fig = Figure(figsize=(11.0, 4.6))
    ax1, ax2 = fig.subplots(1, 2)
    groups = (("all candidates", m.infer_p, "k"), ("injected", m.infer_p[m.infer_is_sim], "C0"),
              ("other (not injected)", m.infer_p[~m.infer_is_sim], "C3"))
    for label, values, colour in groups:
        _hist(ax1, values, _PROB_EDGES, label, color=colour)
        v = values[np.isfinite(values)]
        counts = np.histogram(v, bins=_PROB_EDGES)[0]
        frac = counts / counts.sum() if counts.sum() else counts.astype(float)
        ax2.stairs(frac, _PROB_EDGES, color=colour, lw=1.5, label=f"{label} (n={v.size})")
    ax1.set_yscale("log")
    ax1.set_ylabel("number of candidates")
    ax1.set_title("P(real) distributions")
    ax2.set_ylabel("fraction of the group per bin")
    ax2.set_title("Normalised (each group sums to 1)")
    for ax in (ax1, ax2):
        ax.set_xlabel("P(real) (CNN score, label1)")
        ax.legend(fontsize=8)
    return _save(fig, path, overwrite)


def _ratio_axes(ax: Any, config: CheckInferConfig, xmax: float, excluded: int,
                ylabel: str) -> None:
    for bound, name in ((config.fwhm_ratio_lower, "lower"), (config.fwhm_ratio_upper, "upper")):
        ax.axvline(bound, color="red", ls="--", lw=1.2, label=f"{name} bound {bound:g}")
    ax.set_yscale("log")
    ax.set_xlabel(f"FWHM / FWHM_PSF (values above {xmax:g} in the last bin)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, title=f"excluded, FWHMPSF <= 0 or NaN: {excluded}", title_fontsize=8)


def plot_fwhm(m: Matched, config: CheckInferConfig, folder: Path,
              overwrite: bool) -> list[Path]:
    """FWHM / FWHMPSF of injected sources per P(real) bin, and of other vs injected candidates."""
    xmax = max(20.0, 1.25 * config.fwhm_ratio_upper)
    edges = np.linspace(0.0, xmax, 61)
    fig = Figure(figsize=(7.0, 4.8))
    ax = fig.subplots()
    for lo, hi, label in prob_bins(config.cnn_problim):
        sel = (m.sim_p > lo) & (m.sim_p <= hi)
        _hist(ax, m.sim_ratio[sel], edges, label)
    _ratio_axes(ax, config, xmax, m.counts["fwhmpsf_invalid_sim"], "number of injected sources")
    ax.set_title("FWHM ratio of injected sources, by P(real)")
    first = _save(fig, folder / PLOT_NAMES[3], overwrite)
    fig = Figure(figsize=(7.0, 4.8))
    ax = fig.subplots()
    _hist(ax, m.infer_ratio[~m.infer_is_sim], edges, "other (not injected)", color="C3")
    _hist(ax, m.sim_ratio, edges, "injected", color="C0")
    _ratio_axes(ax, config, xmax, m.counts["fwhmpsf_invalid_all"], "number of candidates")
    ax.set_title("FWHM ratio: other candidates vs injected sources")
    return [first, _save(fig, folder / PLOT_NAMES[4], overwrite)]


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------
def check_inference(crossmatch: str | Path, infer: str | Path, plots: str | Path,
                    config: CheckInferConfig | None = None, overwrite: bool = False,
                    quiet: bool = False) -> CheckInferResult:
    """Compare inference results with the injected sources and write plots and a summary.

    Parameters
    ----------
    crossmatch : str or Path
        ``crossmatch.dat`` or a folder holding it.
    infer : str or Path
        ``infer_results.dat`` or a folder holding it.
    plots : str or Path
        Output root; files go to ``<plots>/CheckInfer/``.
    config : CheckInferConfig, optional
        Magnitude limits, P(real) cuts, FWHM bounds.
    overwrite : bool, default False
        Replace existing outputs.
    quiet : bool, default False
        Print nothing.

    Returns
    -------
    CheckInferResult
        The summary (as in ``checkinfer.json``) and the files written.
    """
    config = config or CheckInferConfig()
    config.validate()
    cross_path = resolve_input(crossmatch, CROSSMATCH_NAME)
    infer_path = resolve_input(infer, INFER_NAME)
    folder = Path(plots) / "CheckInfer"
    for name in (*PLOT_NAMES, SUMMARY_NAME):
        check_writable(folder / name, overwrite)
    cross_table = read_table(cross_path, CROSSMATCH_COLUMNS, "closest_candID")
    infer_table = read_table(infer_path, INFER_COLUMNS, "cand_ID")
    m = match(cross_table, infer_table, infer_path)
    rec = recovery_table(m, config)
    summary = {"crossmatch": str(cross_path.resolve()), "infer": str(infer_path.resolve()),
               "config": {k: list(v) if isinstance(v, tuple | list) else v
                          for k, v in asdict(config).items()},
               "counts": m.counts, "recovery": rec["by_maglim"], "recovery_curve": rec["curve"],
               "fwhm_ratio": fwhm_summary(m, config),
               "error_bars": "Wilson score interval, z = 1 (68.3%)"}
    files = [plot_recovery(rec["curve"], config, folder / PLOT_NAMES[0], overwrite),
             plot_sim_scores(m, config, folder / PLOT_NAMES[1], overwrite),
             plot_all_scores(m, folder / PLOT_NAMES[2], overwrite),
             *plot_fwhm(m, config, folder, overwrite)]
    files.append(write_text_atomic(folder / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n",
                                   overwrite))
    info(f"CheckInfer outputs written to {folder}", quiet)
    return CheckInferResult(summary, files)

