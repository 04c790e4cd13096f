"""Plots of ``otrain-checkinfer``: recovery against magnitude, P(real) and FWHM-ratio histograms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from otrain.evaluation.recovery import (
    PLOT_NAMES,
    PROB_EDGES,
    CheckInferConfig,
    Matched,
    mag_bins,
    prob_bins,
)
from otrain.outputs import atomic_output


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
        _hist(ax, m.sim_p[sel], PROB_EDGES, label, of=int(sel.sum()))
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
        _hist(ax1, values, PROB_EDGES, label, color=colour)
        v = values[np.isfinite(values)]
        counts = np.histogram(v, bins=PROB_EDGES)[0]
        frac = counts / counts.sum() if counts.sum() else counts.astype(float)
        ax2.stairs(frac, PROB_EDGES, color=colour, lw=1.5, label=f"{label} (n={v.size})")
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
