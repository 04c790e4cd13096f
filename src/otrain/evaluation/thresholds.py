"""Choosing the P(real) threshold: best MCC, best F1, and a target false-negative rate.

Convention (as :mod:`otrain.metrics`): a candidate is called real when
``P(real) > threshold`` (strict). Every operating point of the scores is enumerated with
:func:`sklearn.metrics.roc_curve` (``drop_intermediate=False``), whose points are "real when
``P(real) >= s``" for each distinct score ``s``. The same calls are made by any threshold in the
half-open interval ``[s_next, s)`` where ``s_next`` is the next lower distinct score; the reported
``threshold`` is the middle of that interval (so rounding it, or using ``>=`` instead of ``>``,
does not change the result) and ``range`` gives the whole interval.

"The threshold reaching a target FNR" is the largest threshold whose false-negative rate (real
candidates called bogus) is at most the target: the strictest cut that still keeps, e.g., 99 % of
the real transients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from otrain.errors import OtrainError
from otrain.metrics import confusion_counts, rates

__all__ = ["FNR_TARGETS", "confusion_counts", "format_thresholds", "operating_points",
           "optimal_thresholds", "rates"]

#: Default FNR targets: 1 % and 5 % of the real candidates lost.
FNR_TARGETS: tuple[float, ...] = (0.01, 0.05)


def operating_points(y_true: Sequence[int] | np.ndarray,
                     p_real: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """Every distinct operating point of the scores, from the strictest (nothing real) down.

    Parameters
    ----------
    y_true : sequence of int
        1 real, 0 bogus (both classes present).
    p_real : sequence of float
        Scores.

    Returns
    -------
    dict of numpy.ndarray
        ``low``, ``high`` (the interval ``[low, high)`` of thresholds giving that point),
        ``threshold`` (its middle), ``tp``, ``fp``, ``tn``, ``fn`` and the :func:`rates`.
    """
    y = np.asarray(y_true).ravel()
    p = np.asarray(p_real, dtype=np.float64).ravel()
    n_real, n_bogus = int(np.sum(y == 1)), int(np.sum(y == 0))
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    # thr[0] is +inf (nothing called real); then the distinct scores, decreasing.
    tp = np.rint(tpr * n_real).astype(np.int64)
    fp = np.rint(fpr * n_bogus).astype(np.int64)
    scores = thr[1:]
    end = 0.0 if scores[-1] > 0 else float(scores[-1]) - 1e-6  # below every score
    high = np.concatenate([[max(1.0, float(scores[0]))], scores])
    low = np.concatenate([scores, [end]])
    mid = (low + high) / 2
    out = {"low": low, "high": high, "threshold": mid, "tp": tp, "fp": fp,
           "tn": n_bogus - fp, "fn": n_real - tp}
    out.update(rates(tp, fp, n_bogus - fp, n_real - tp))
    return out


def _point(points: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    return {
        "threshold": float(points["threshold"][i]),
        "range": [float(points["low"][i]), float(points["high"][i])],
        **{k: float(points[k][i]) for k in ("precision", "recall", "f1", "mcc", "fpr", "fnr")},
        "confusion_matrix": [[int(points["tn"][i]), int(points["fp"][i])],
                             [int(points["fn"][i]), int(points["tp"][i])]],
    }


def optimal_thresholds(y_true: Sequence[int] | np.ndarray, p_real: Sequence[float] | np.ndarray,
                       fnr_targets: Sequence[float] = FNR_TARGETS) -> dict[str, Any]:
    """Thresholds maximising MCC and F1, and the largest thresholds reaching target FNRs.

    Parameters
    ----------
    y_true : sequence of int
        1 real, 0 bogus.
    p_real : sequence of float
        Scores, P(real).
    fnr_targets : sequence of float, default (0.01, 0.05)
        Highest acceptable fractions of real candidates called bogus.

    Returns
    -------
    dict
        ``max_mcc`` and ``max_f1``: the operating point (``threshold``, ``range``, ``precision``,
        ``recall``, ``f1``, ``mcc``, ``fpr``, ``fnr``, ``confusion_matrix``), ties going to the
        highest threshold; ``fnr_targets``: a list of such points, each with its ``target``.
        Points are ``None`` when the scores hold only one class.

    Raises
    ------
    OtrainError
        If a target is outside ``[0, 1]`` or the arrays differ in length.
    """
    y = np.asarray(y_true).ravel()
    p = np.asarray(p_real, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise OtrainError(f"{y.size} labels for {p.size} scores")
    for target in fnr_targets:
        if not 0.0 <= float(target) <= 1.0:
            raise OtrainError(f"FNR target must be in [0, 1], got {target}")
    n_real, n_bogus = int(np.sum(y == 1)), int(np.sum(y == 0))
    if n_real == 0 or n_bogus == 0:
        return {"max_mcc": None, "max_f1": None,
                "fnr_targets": [{"target": float(t), "point": None} for t in fnr_targets],
                "note": "needs both real and bogus cutouts"}
    pts = operating_points(y, p)
    out: dict[str, Any] = {
        "max_mcc": _point(pts, int(np.argmax(pts["mcc"]))),
        "max_f1": _point(pts, int(np.argmax(pts["f1"]))),
        "fnr_targets": [],
    }
    for target in fnr_targets:
        # Count-based test (no float round-off): at most floor(target * n_real) real lost.
        allowed = np.floor(float(target) * n_real + 1e-9)
        ok = np.flatnonzero(pts["fn"] <= allowed)  # non-empty: the last point loses none
        out["fnr_targets"].append({"target": float(target), "point": _point(pts, int(ok[0]))})
    return out


def format_thresholds(result: dict[str, Any]) -> str:
    """Human-readable lines for :func:`optimal_thresholds`."""
    if result["max_mcc"] is None:
        return "optimal thresholds: n/a (needs both real and bogus cutouts)"

    def line(name: str, pt: dict[str, Any]) -> str:
        return (f"  {name:<16} threshold {pt['threshold']:.4f}  recall {pt['recall']:.4f}  "
                f"precision {pt['precision']:.4f}  FPR {pt['fpr']:.4f}  FNR {pt['fnr']:.4f}  "
                f"F1 {pt['f1']:.4f}  MCC {pt['mcc']:.4f}")

    lines = ["optimal thresholds (real when P(real) > threshold):",
             line("max MCC", result["max_mcc"]), line("max F1", result["max_f1"])]
    for item in result["fnr_targets"]:
        lines.append(line(f"FNR <= {100 * item['target']:g}%", item["point"]))
    return "\n".join(lines)
