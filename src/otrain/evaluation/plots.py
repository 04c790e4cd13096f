"""``otrain-plot-results``: the evaluation plots of a model on a labelled cube, from one model pass.

Figures (``matplotlib.figure.Figure``, Agg, no pyplot state), written as PNG into ``--path-plots``
(created if needed, never emptied)::

    roc.png                         ROC curve, AUC in the legend, the threshold's operating point
    precision_recall.png            precision-recall curve, average precision (AP) in the legend
    f1_mcc_vs_threshold.png         F1 and MCC, then FNR and FPR, against the threshold
    score_distribution.png          P(real) histograms split by the TRUE class
    recall_precision_vs_mag.png     recall and precision per magnitude bin (Wilson 95 % bars)
    recall_precision_vs_magerr.png  the same per magnitude-error bin
    reliability.png                 calibration curve and score histogram

Colours follow the true class everywhere: real = orange, bogus = blue. A candidate is called real
when ``P(real) > threshold``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, precision_recall_curve, roc_curve

from otrain.errors import OtrainError
from otrain.evaluation.scores import Scores, score
from otrain.evaluation.thresholds import FNR_TARGETS, confusion_counts, optimal_thresholds, rates
from otrain.metrics import binary_metrics, wilson_interval
from otrain.outputs import atomic_output, check_writable
from otrain.progress import info

REAL_COLOUR, BOGUS_COLOUR = "tab:orange", "tab:blue"
RECALL_COLOUR, PRECISION_COLOUR = "#009E73", "#CC79A7"
#: Plot name -> file name, in display order.
PLOT_FILES: dict[str, str] = {
    "roc": "roc.png", "precision_recall": "precision_recall.png",
    "f1_mcc": "f1_mcc_vs_threshold.png", "score_distribution": "score_distribution.png",
    "mag": "recall_precision_vs_mag.png", "magerr": "recall_precision_vs_magerr.png",
    "reliability": "reliability.png",
}
#: Magnitude placeholders of old catalogues, never a real value.
SENTINELS = (99.0, -99.0)
_QUANTITY = {"mag": "magnitude", "magerr": "magnitude error"}


def _legend(ax: Any, **kwargs: Any) -> None:
    ax.legend(fontsize=8, framealpha=0.9, **kwargs)


def roc_figure(y: np.ndarray, p: np.ndarray, threshold: float, optimal: dict[str, Any]) -> Figure:
    """ROC curve with its AUC, the chance line and the operating points."""
    fpr, tpr, _ = roc_curve(y, p)
    m = binary_metrics(y, p, threshold)
    fig = Figure(figsize=(6, 5.4))
    ax = fig.subplots()
    ax.plot(fpr, tpr, color="k", lw=1.8, label=f"model (AUC = {m['auc']:.4f})")
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="chance (AUC = 0.5)")
    ax.plot(m["fpr"], 1 - m["fnr"], "o", color="tab:red", ms=8,
            label=f"threshold {threshold:g}: TPR {1 - m['fnr']:.3f}, FPR {m['fpr']:.3f}")
    best = optimal["max_mcc"]
    ax.plot(best["fpr"], best["recall"], "D", color="tab:green", ms=7,
            label=f"max MCC, threshold {best['threshold']:.3f}")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal",
           xlabel="false positive rate (bogus called real)",
           ylabel="true positive rate = recall (real kept)",
           title=f"ROC curve ({m['n_real']} real, {m['n_bogus']} bogus)")
    ax.grid(alpha=0.3)
    _legend(ax, loc="lower right")
    fig.tight_layout()
    return fig


def pr_figure(y: np.ndarray, p: np.ndarray, threshold: float) -> Figure:
    """Precision-recall curve with its average precision and the no-skill level."""
    precision, recall, _ = precision_recall_curve(y, p)
    m = binary_metrics(y, p, threshold)
    frac = m["n_real"] / m["n"]
    fig = Figure(figsize=(6, 5.4))
    ax = fig.subplots()
    ax.step(recall, precision, where="post", color="k", lw=1.8,
            label=f"model (average precision AP = {m['average_precision']:.4f})")
    ax.axhline(frac, ls="--", color="gray", lw=1, label=f"no skill (fraction real = {frac:.3f})")
    ax.plot(m["recall"], m["precision"], "o", color="tab:red", ms=8,
            label=f"threshold {threshold:g}: recall {m['recall']:.3f}, "
                  f"precision {m['precision']:.3f}")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="recall (fraction of real kept)",
           ylabel="precision (fraction of 'real' calls that are real)",
           title="precision-recall curve")
    ax.grid(alpha=0.3)
    _legend(ax, loc="lower left")
    fig.tight_layout()
    return fig


def f1_mcc_figure(y: np.ndarray, p: np.ndarray, threshold: float,
                  optimal: dict[str, Any]) -> Figure:
    """F1 and MCC (top), FNR and FPR (bottom) against the threshold, with the chosen ones."""
    grid = np.linspace(0.0, 1.0, 1001)
    r = rates(**confusion_counts(y, p, grid))
    fig = Figure(figsize=(10, 7.2))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(grid, r["f1"], color=RECALL_COLOUR, lw=1.8, label="F1")
    top.plot(grid, r["mcc"], color=PRECISION_COLOUR, lw=1.8, label="MCC")
    bottom.plot(grid, r["fnr"], color=REAL_COLOUR, lw=1.8, label="FNR (real called bogus)")
    bottom.plot(grid, r["fpr"], color=BOGUS_COLOUR, lw=1.8, label="FPR (bogus called real)")
    for ax in (top, bottom):
        ax.axvline(threshold, color="k", ls="--", lw=1.2, label=f"chosen threshold {threshold:g}")
    top.axvline(optimal["max_f1"]["threshold"], color=RECALL_COLOUR, ls=":", lw=1.5,
                label=f"max F1 {optimal['max_f1']['f1']:.3f} at "
                      f"{optimal['max_f1']['threshold']:.3f}")
    top.axvline(optimal["max_mcc"]["threshold"], color=PRECISION_COLOUR, ls=":", lw=1.5,
                label=f"max MCC {optimal['max_mcc']['mcc']:.3f} at "
                      f"{optimal['max_mcc']['threshold']:.3f}")
    for item, ls in zip(optimal["fnr_targets"], (":", "-."), strict=False):
        pt = item["point"]
        bottom.axvline(pt["threshold"], color="gray", ls=ls, lw=1.3,
                       label=f"FNR <= {100 * item['target']:g}%: threshold {pt['threshold']:.3f} "
                             f"(FPR {pt['fpr']:.3f})")
    top.set(ylabel="score", ylim=(min(-0.05, float(np.min(r["mcc"])) - 0.05), 1.05),
            title="F1 and MCC against the threshold (real when P(real) > threshold)")
    bottom.set(xlabel="threshold on P(real)", ylabel="error rate", ylim=(-0.02, 1.02),
               xlim=(0, 1), title="error rates against the threshold")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        _legend(ax, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def score_distribution_figure(y: np.ndarray, p: np.ndarray, threshold: float) -> Figure:
    """Histograms of P(real) for the true real and the true bogus cutouts."""
    bins = np.linspace(0.0, 1.0, 26)
    fig = Figure(figsize=(7, 4.8))
    ax = fig.subplots()
    counts = []
    for label, name, colour in ((0, "bogus", BOGUS_COLOUR), (1, "real", REAL_COLOUR)):
        sel = p[y == label]
        c, _, _ = ax.hist(sel, bins=bins, color=colour, alpha=0.45, edgecolor=colour, lw=1.2,
                          histtype="stepfilled", label=f"true {name} (n = {sel.size})")
        counts.append(c)
    ax.axvline(threshold, color="k", ls="--", lw=1.2, label=f"threshold {threshold:g}")
    nonzero = np.concatenate(counts)
    nonzero = nonzero[nonzero > 0]
    if nonzero.size and nonzero.max() / nonzero.min() > 50:
        ax.set_yscale("log")
        ax.set_ylabel("number of cutouts (log scale)")
    else:
        ax.set_ylabel("number of cutouts")
    ax.set(xlim=(0, 1), xlabel="P(real) given by the model",
           title="score distribution by true class")
    _legend(ax, loc="best")
    fig.tight_layout()
    return fig


def bin_edges(values: np.ndarray, n_bins: int = 6,
              edges: Sequence[float] | None = None) -> np.ndarray:
    """Increasing, non-overlapping bin edges: ``edges`` if given, else quantiles of ``values``."""
    if edges is not None:
        out = np.asarray(edges, dtype=np.float64)
        if out.ndim != 1 or out.size < 2 or np.any(np.diff(out) <= 0):
            raise OtrainError("bin edges must be at least two strictly increasing numbers")
        return out
    out = np.unique(np.quantile(values, np.linspace(0.0, 1.0, n_bins + 1)))
    if out.size == 1:
        out = np.array([out[0] - 0.05, out[0] + 0.05])
    return out


def binned_figure(values: np.ndarray | None, y: np.ndarray, p: np.ndarray, threshold: float,
                  quantity: str, n_bins: int = 6,
                  edges: Sequence[float] | None = None) -> tuple[Figure | None, str]:
    """Recall and precision per bin of ``values`` (mag or magerr), with counts per true class.

    Bins are ``[e_i, e_i+1)`` (the last one closed). NaN, infinite, sentinel (+-99) and, for an
    error, negative values are excluded and counted, as are values outside fixed ``edges``.

    Returns
    -------
    (Figure or None, str)
        The figure (``None`` when no value is usable) and a note on what was excluded.
    """
    if values is None:
        return None, f"no '{quantity}' column: plot skipped"
    v = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(v) & ~np.isin(v, SENTINELS)
    if quantity == "magerr":
        valid &= v >= 0
    if not valid.any():
        return None, f"no usable '{quantity}' value (all missing): plot skipped"
    e = bin_edges(v[valid], n_bins, edges)
    idx = np.searchsorted(e, v, side="right") - 1
    idx[v == e[-1]] = e.size - 2
    inside = valid & (idx >= 0) & (idx < e.size - 1)
    n_missing, n_out = int(np.sum(~valid)), int(np.sum(valid & ~inside))
    pred = p > threshold
    nb = e.size - 1
    n_real = np.bincount(idx[inside & (y == 1)], minlength=nb)
    n_bogus = np.bincount(idx[inside & (y == 0)], minlength=nb)
    tp = np.bincount(idx[inside & (y == 1) & pred], minlength=nb)
    n_called = np.bincount(idx[inside & pred], minlength=nb)
    # Bins are drawn side by side, one slot each, labelled with their range: quantile bins of
    # uneven width and far outliers (e.g. a magerr of 1e3) stay readable.
    x = np.arange(nb, dtype=np.float64)
    fig = Figure(figsize=(max(7.5, 1.1 * nb + 1.5), 6.8))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for k, n, name, colour, marker, dx in (
            (tp, n_real, "recall (real kept)", RECALL_COLOUR, "o", -0.08),
            (tp, n_called, "precision (real among 'real' calls)", PRECISION_COLOUR, "s", 0.08)):
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        lo, hi = wilson_interval(k, n)
        top.errorbar(x + dx, frac, yerr=[frac - lo, hi - frac], fmt=marker, color=colour, ms=6,
                     capsize=3, lw=1.3, label=name)
    for edge in x[1:] - 0.5:
        top.axvline(edge, color="0.85", lw=0.8)
    top.set(ylabel="fraction (Wilson 95% interval)", ylim=(-0.03, 1.08),
            title=f"recall and precision per {_QUANTITY[quantity]} bin "
                  f"(real when P(real) > {threshold:g})")
    top.grid(alpha=0.3, axis="y")
    _legend(top, loc="lower left")
    bottom.bar(x, n_bogus, width=0.9, color=BOGUS_COLOUR, alpha=0.6, label="true bogus")
    bottom.bar(x, n_real, width=0.9, bottom=n_bogus, color=REAL_COLOUR, alpha=0.6,
               label="true real")
    for c, r, b in zip(x, n_real, n_bogus, strict=True):
        bottom.text(c, r + b, f"{r} real\n{b} bogus", ha="center", va="bottom", fontsize=7)
    bottom.set_ylim(0, 1.7 * max(1, int((n_real + n_bogus).max())))
    labels = [f"[{e[i]:.4g}, {e[i + 1]:.4g}" + ("]" if i == nb - 1 else ")") for i in range(nb)]
    bottom.set_xticks(x, labels, rotation=30 if nb > 5 else 0, ha="right" if nb > 5 else "center",
                      fontsize=8)
    bottom.set(xlim=(-0.6, nb - 0.4), xlabel=f"{_QUANTITY[quantity]} bin ({quantity})",
               ylabel="cutouts per bin")
    bottom.grid(alpha=0.3, axis="y")
    _legend(bottom, loc="upper left", ncol=2)
    note = f"{int(inside.sum())} cutouts in {nb} bins; {n_missing} without a usable {quantity}"
    if n_out:
        note += f", {n_out} outside the bins"
    fig.text(0.99, 0.005, note + " (excluded)", ha="right", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig, note


def reliability_figure(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> Figure:
    """Calibration curve (fraction of real against mean score per bin) and the score histogram."""
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    bins = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(bins[1:-1], p)  # the binning of calibration_curve
    n = np.bincount(ids, minlength=n_bins)
    k = np.bincount(ids, weights=(y == 1).astype(float), minlength=n_bins)
    lo, hi = wilson_interval(k[n > 0], n[n > 0])
    fig = Figure(figsize=(6.4, 7.2))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.4))
    top.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfectly calibrated")
    yerr = np.maximum(0.0, [prob_true - lo, hi - prob_true])  # rounding can give -1e-17
    top.errorbar(prob_pred, prob_true, yerr=yerr, fmt="o-",
                 color="k", capsize=3, lw=1.4,
                 label=f"model (Brier score = {brier_score_loss(y, p):.4f})")
    top.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel="fraction of true real in bin",
            title=f"reliability diagram ({n_bins} equal-width bins, Wilson 95% bars)")
    top.grid(alpha=0.3)
    _legend(top, loc="upper left")
    bottom.hist([p[y == 0], p[y == 1]], bins=bins, stacked=True, color=[BOGUS_COLOUR, REAL_COLOUR],
                alpha=0.6, label=["true bogus", "true real"])
    bottom.set(xlabel="P(real) given by the model (bin mean)", ylabel="number of cutouts")
    _legend(bottom, loc="upper center")
    fig.tight_layout()
    return fig


def build_figures(scores: Scores, threshold: float = 0.5, n_bins: int = 6,
                  mag_edges: Sequence[float] | None = None,
                  magerr_edges: Sequence[float] | None = None
                  ) -> tuple[dict[str, Figure], list[str]]:
    """Every evaluation figure from one set of scores.

    Parameters
    ----------
    scores : Scores
        From :mod:`otrain.evaluation.scores`.
    threshold : float, default 0.5
        Real when ``P(real) > threshold``.
    n_bins : int, default 6
        Quantile bins of mag / magerr (when no edges are given).
    mag_edges, magerr_edges : sequence of float, optional
        Fixed bin edges.

    Returns
    -------
    (dict, list of str)
        Figures by name (keys of :data:`PLOT_FILES`; plots that cannot be made are missing) and
        notes on what was skipped or excluded.
    """
    if not 0.0 <= threshold <= 1.0:
        raise OtrainError(f"threshold must be in [0, 1], got {threshold}")
    y, p = scores.y_true, scores.p_real
    figs: dict[str, Figure] = {}
    notes: list[str] = []
    if np.unique(y).size == 2:
        optimal = optimal_thresholds(y, p, FNR_TARGETS)
        figs["roc"] = roc_figure(y, p, threshold, optimal)
        figs["precision_recall"] = pr_figure(y, p, threshold)
        figs["f1_mcc"] = f1_mcc_figure(y, p, threshold, optimal)
    else:
        notes.append("only one class in the cube: ROC, precision-recall and F1/MCC skipped")
    figs["score_distribution"] = score_distribution_figure(y, p, threshold)
    for key, edges in (("mag", mag_edges), ("magerr", magerr_edges)):
        fig, note = binned_figure(scores.column(key), y, p, threshold, key, n_bins, edges)
        notes.append(f"{key}: {note}")
        if fig is not None:
            figs[key] = fig
    figs["reliability"] = reliability_figure(y, p)
    return {k: figs[k] for k in PLOT_FILES if k in figs}, notes


def write_figures(figs: dict[str, Figure], outdir: str | Path, overwrite: bool = False,
                  dpi: int = 100) -> dict[str, Path]:
    """Save figures as ``outdir/<PLOT_FILES[name]>`` (atomically; the folder is never emptied)."""
    outdir = Path(outdir)
    written = {}
    for name, fig in figs.items():
        with atomic_output(outdir / PLOT_FILES[name], overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
        written[name] = outdir / PLOT_FILES[name]
    return written


def plot_results(cube_path: str | Path, model_path: str | Path, path_plots: str | Path,
                 threshold: float = 0.5, overwrite: bool = False, n_bins: int = 6,
                 batch_size: int = 512, device: str = "cpu",
                 quiet: bool = False) -> dict[str, Path]:
    """Score the cube once and write every plot into ``path_plots``.

    Parameters
    ----------
    cube_path : str or Path
        Labelled cube (``.h5`` or O'TRAIN ``.npz``).
    model_path : str or Path
        Model file.
    path_plots : str or Path
        Output folder (created if needed; existing files are kept, plots of the same name are
        replaced only with ``overwrite``).
    threshold : float, default 0.5
        Real when ``P(real) > threshold``.
    overwrite : bool, default False
        Replace earlier plots of the same names.
    n_bins : int, default 6
        Quantile bins of mag / magerr.
    batch_size : int, default 512
        Cutouts scored at a time.
    device : str, default "cpu"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    quiet : bool, default False
        Print nothing.

    Returns
    -------
    dict of Path
        Plot name -> file written.
    """
    if not 0.0 <= threshold <= 1.0:
        raise OtrainError(f"threshold must be in [0, 1], got {threshold}")
    if n_bins < 1:
        raise OtrainError(f"number of bins must be at least 1, got {n_bins}")
    outdir = Path(path_plots)
    if outdir.exists() and not outdir.is_dir():
        raise OtrainError("is a file, expected a folder for the plots", outdir)
    for name in PLOT_FILES.values():  # refuse before the (slow) model pass
        check_writable(outdir / name, overwrite)
    scores = score(model_path, cube_path, batch_size, device, quiet)
    figs, notes = build_figures(scores, threshold, n_bins)
    written = write_figures(figs, outdir, overwrite)
    for note in notes:
        info(note, quiet)
    for path in written.values():
        info(f"Saved to {path}", quiet)
    return written
