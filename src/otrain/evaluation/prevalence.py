"""Metrics at the share of real candidates the user will meet (the prevalence), not the cube's.

Training and test cubes are usually balanced (50 % real), a survey's stream is not (often 1 % or
less). The recall (TPR) and the false-positive rate (FPR) of a threshold do not depend on the
share of real candidates; precision, F1, MCC and the calibration do. At prevalence ``pi``::

    precision(pi) = TPR pi / (TPR pi + FPR (1 - pi))
    F1(pi)        = 2 precision(pi) TPR / (precision(pi) + TPR)
    MCC(pi)       = (TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN)),
                    with TP = TPR pi, FN = (1 - TPR) pi, FP = FPR (1 - pi), TN = (1 - FPR)(1 - pi)

The reliability diagram at ``pi`` weights each real cutout by ``pi / pi_cube`` and each bogus one
by ``(1 - pi) / (1 - pi_cube)``, so the fraction of real in a bin is the one a stream with that
prevalence would show for the same scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from otrain.errors import OtrainError
from otrain.metrics import binary_metrics


def cube_prevalence(y_true: np.ndarray) -> float:
    """The share of real cutouts among the labelled ones."""
    y = np.asarray(y_true)
    return float(np.mean(y == 1)) if y.size else float("nan")


def check_prevalence(prevalence: float | None) -> None:
    """Refuse a prevalence outside ``(0, 1)``."""
    if prevalence is not None and not 0.0 < float(prevalence) < 1.0:
        raise OtrainError(f"prevalence must be in (0, 1), got {prevalence}")


def at_prevalence(tpr: float, fpr: float, prevalence: float) -> dict[str, float]:
    """Precision, recall, F1, MCC, FPR and FNR at ``prevalence`` for a threshold's TPR and FPR.

    Parameters
    ----------
    tpr, fpr : float
        Recall and false-positive rate of the threshold (measured on any labelled cube).
    prevalence : float
        Share of real candidates, in (0, 1).

    Returns
    -------
    dict of float
        ``prevalence``, ``precision``, ``recall``, ``f1``, ``mcc``, ``fpr``, ``fnr`` (precision,
        F1 and MCC are 0 where undefined).
    """
    check_prevalence(prevalence)
    pi = float(prevalence)
    tp, fn, fp, tn = tpr * pi, (1 - tpr) * pi, fpr * (1 - pi), (1 - fpr) * (1 - pi)
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    f1 = 2 * precision * tpr / (precision + tpr) if precision + tpr > 0 else 0.0
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = float((tp * tn - fp * fn) / den) if den > 0 else 0.0
    return {"prevalence": pi, "precision": float(precision), "recall": float(tpr),
            "f1": float(f1), "mcc": mcc, "fpr": float(fpr), "fnr": float(1 - tpr)}


def prevalence_summary(metrics: dict[str, Any], y_true: np.ndarray,
                       prevalence: float | None) -> dict[str, Any]:
    """The balanced-cube metrics beside those at ``prevalence`` (default: the cube's own).

    ``metrics`` is :func:`otrain.metrics.binary_metrics` (its ``recall`` and ``fpr`` are used).
    """
    own = cube_prevalence(y_true)
    pi = own if prevalence is None else float(prevalence)
    out = at_prevalence(float(metrics["recall"]), float(metrics["fpr"]), pi)
    out["cube_prevalence"] = own
    out["source"] = "the labelled cube's own share" if prevalence is None else "--prevalence"
    return out


def format_prevalence(at: dict[str, Any], balanced: dict[str, Any]) -> str:
    """Two lines: the cube's figures and those at the stated prevalence."""
    def row(name: str, m: dict[str, Any]) -> str:
        return (f"  {name:<28} precision {m['precision']:.4f}  recall {m['recall']:.4f}  "
                f"F1 {m['f1']:.4f}  MCC {m['mcc']:.4f}")

    return "\n".join([
        f"at a prevalence of {100 * at['prevalence']:.3g}% real ({at['source']}; the cube has "
        f"{100 * at['cube_prevalence']:.3g}%):",
        row(f"on the cube ({100 * at['cube_prevalence']:.3g}% real)", balanced),
        row(f"at {100 * at['prevalence']:.3g}% real", at)])


def reliability_weights(y_true: np.ndarray, prevalence: float) -> np.ndarray:
    """Per-cutout weights moving the cube's share of real to ``prevalence``."""
    y = np.asarray(y_true)
    own = cube_prevalence(y)
    if not 0.0 < own < 1.0:
        raise OtrainError("the cube needs real and bogus cutouts for a prevalence reweighting")
    return np.where(y == 1, prevalence / own, (1 - prevalence) / (1 - own))


def prevalence_reliability_figure(y: np.ndarray, p: np.ndarray, prevalence: float,
                                  n_bins: int = 10) -> Figure:
    """Reliability diagram on the cube and reweighted to ``prevalence``, same bins."""
    check_prevalence(prevalence)
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    bins = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(bins[1:-1], p)
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfectly calibrated")
    own = cube_prevalence(y)
    for pi, style, name in ((own, "o-", "on the cube"), (prevalence, "s-", "at prevalence")):
        w = reliability_weights(y, pi)
        n = np.bincount(ids, weights=w, minlength=n_bins)
        k = np.bincount(ids, weights=w * (y == 1), minlength=n_bins)
        mean_p = np.bincount(ids, weights=p, minlength=n_bins) / np.maximum(
            np.bincount(ids, minlength=n_bins), 1)
        ok = n > 0
        ax.plot(mean_p[ok], k[ok] / n[ok], style, lw=1.4,
                label=f"{name}: {100 * pi:.3g}% real")
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="P(real) given by the model (bin mean)",
           ylabel="fraction of real in bin",
           title=f"reliability at {100 * prevalence:.3g}% real (reweighted cube)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    return fig


def prevalence_outputs(y: np.ndarray, p: np.ndarray, threshold: float,
                       prevalence: float | None) -> tuple[Figure, str]:
    """The reliability figure at ``prevalence`` (default: the cube's own) and the printed lines
    comparing the cube's metrics at ``threshold`` with those at that prevalence."""
    check_prevalence(prevalence)
    balanced = binary_metrics(y, p, threshold)
    at = prevalence_summary(balanced, y, prevalence)
    return (prevalence_reliability_figure(y, p, at["prevalence"]),
            format_prevalence(at, balanced))


def prevalence_section(at: dict[str, Any], balanced: dict[str, Any]) -> str:
    """HTML of the report's "at your share of real candidates" table and formula."""
    def row(name: str, m: dict[str, Any]) -> str:
        cells = "".join(f"<td>{m[k]:.4f}</td>" for k in ("precision", "recall", "f1", "mcc",
                                                         "fpr"))
        return f"<tr><th>{name}</th>{cells}</tr>"

    own, pi = 100 * at["cube_prevalence"], 100 * at["prevalence"]
    return ("<table><tr><th></th><th>precision</th><th>recall</th><th>F1</th><th>MCC</th>"
            f"<th>FPR</th></tr>{row(f'on the cube ({own:.3g}% real)', balanced)}"
            f"{row(f'at {pi:.3g}% real', at)}</table>"
            f"<p>The prevalence is {at['source']} ({pi:.3g}% real; otrain report --prevalence P "
            "sets it). Recall and FPR do not depend on it; precision does: precision(&pi;) = "
            "TPR&middot;&pi; / (TPR&middot;&pi; + FPR&middot;(1 &minus; &pi;)).</p>")
