"""Binary real/bogus metrics at a probability threshold (scikit-learn underneath).

Conventions (as in the original O'TRAIN): the positive class is *real* (label 1); a candidate is
predicted real when ``P(real) > threshold`` (strict); the confusion matrix is scikit-learn's layout
``[[TN, FP], [FN, TP]]``. Values that are undefined (AUC or average precision with one class
present, precision with no positive prediction, ...) are ``None`` for AUC / average precision and
0 for the ratios, so the result is always valid JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from otrain.errors import OtrainError

#: Keys of :func:`binary_metrics`, in display order.
METRIC_NAMES: tuple[str, ...] = ("auc", "accuracy", "precision", "recall", "f1", "mcc", "fpr",
                                 "fnr", "average_precision")


def predict_labels(p_real: Sequence[float] | np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Predicted labels: 1 (real) where ``p_real > threshold``, else 0."""
    return (np.asarray(p_real, dtype=np.float64) > threshold).astype(np.int64)


def binary_metrics(
    y_true: Sequence[int] | np.ndarray,
    p_real: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Classification metrics of P(real) scores against true labels.

    Parameters
    ----------
    y_true : sequence of int
        True labels, 1 real and 0 bogus.
    p_real : sequence of float
        Scores, P(real) in ``[0, 1]``.
    threshold : float, default 0.5
        Predicted real when ``p_real > threshold``.

    Returns
    -------
    dict
        ``n``, ``n_real``, ``n_bogus``, ``threshold``, ``auc``, ``accuracy``, ``precision``,
        ``recall``, ``f1``, ``mcc``, ``fpr`` (FP / (FP + TN)), ``fnr`` (FN / (FN + TP)),
        ``average_precision``, ``confusion_matrix`` ``[[TN, FP], [FN, TP]]`` (plain Python
        numbers).

    Raises
    ------
    OtrainError
        If the arrays differ in length or labels are not 0/1.
    """
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(p_real, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise OtrainError(f"{y.size} labels for {p.size} scores")
    if y.size and not np.isin(y, (0, 1)).all():
        raise OtrainError("labels must be 0 (bogus) or 1 (real)")
    pred = predict_labels(p, threshold)
    n_real = int(np.sum(y == 1))
    n_bogus = int(np.sum(y == 0))
    out: dict[str, Any] = {"n": int(y.size), "n_real": n_real, "n_bogus": n_bogus,
                           "threshold": float(threshold)}
    if y.size == 0:
        out.update({k: None for k in METRIC_NAMES})
        out["confusion_matrix"] = [[0, 0], [0, 0]]
        return out
    (tn, fp), (fn, tp) = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    both = n_real > 0 and n_bogus > 0
    out["auc"] = float(roc_auc_score(y, p)) if both else None
    out["accuracy"] = float(accuracy_score(y, pred))
    out["precision"] = float(precision_score(y, pred, zero_division=0))
    out["recall"] = float(recall_score(y, pred, zero_division=0))
    out["f1"] = float(f1_score(y, pred, zero_division=0))
    out["mcc"] = float(matthews_corrcoef(y, pred)) if both else 0.0
    out["fpr"] = fp / (fp + tn) if fp + tn else 0.0
    out["fnr"] = fn / (fn + tp) if fn + tp else 0.0
    out["average_precision"] = float(average_precision_score(y, p)) if n_real else None
    out["confusion_matrix"] = [[int(tn), int(fp)], [int(fn), int(tp)]]
    return out


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A few human-readable lines for :func:`binary_metrics` output."""
    def fmt(v: object) -> str:
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [f"{title} ({metrics['n']} cutouts: {metrics['n_real']} real, "
             f"{metrics['n_bogus']} bogus; threshold {metrics['threshold']:g})".strip()]
    lines.append("  " + "  ".join(f"{k}={fmt(metrics.get(k))}" for k in METRIC_NAMES))
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    lines.append(f"  confusion matrix [[TN, FP], [FN, TP]] = [[{tn}, {fp}], [{fn}, {tp}]]")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Calibration and intervals
# ------------------------------------------------------------------------------------------
#: Bins of :func:`expected_calibration_error` (equal width on P(real)).
ECE_BINS = 10


def _checked(y_true: Sequence[int] | np.ndarray,
             p_real: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(p_real, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise OtrainError(f"{y.size} labels for {p.size} scores")
    return y, p


def reliability_bins(y_true: Sequence[int] | np.ndarray, p_real: Sequence[float] | np.ndarray,
                     n_bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of P(real): count, mean P(real) and fraction real (NaN when empty).

    Bin ``i`` holds ``i / n_bins <= p < (i + 1) / n_bins`` (the last bin includes 1).
    """
    y, p = _checked(y_true, p_real)
    idx = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=n_bins) / count
        frac = np.bincount(idx, weights=y, minlength=n_bins) / count
    return count, mean_p, frac


def expected_calibration_error(y_true: Sequence[int] | np.ndarray,
                               p_real: Sequence[float] | np.ndarray,
                               n_bins: int = ECE_BINS) -> float | None:
    """ECE of P(real): sum over equal-width bins of ``|fraction real - mean P(real)|`` weighted
    by the bin's share of the rows (None for no rows)."""
    count, mean_p, frac = reliability_bins(y_true, p_real, n_bins)
    if count.sum() == 0:
        return None
    full = count > 0
    return float(np.sum(count[full] * np.abs(frac[full] - mean_p[full])) / count.sum())


def brier_score(y_true: Sequence[int] | np.ndarray,
                p_real: Sequence[float] | np.ndarray) -> float | None:
    """Mean squared difference between P(real) and the label (None for no rows)."""
    y, p = _checked(y_true, p_real)
    return float(np.mean((p - y) ** 2)) if y.size else None


def calibration_metrics(y_true: Sequence[int] | np.ndarray,
                        p_real: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """``{"ece": ..., "brier": ...}`` of P(real) scores (10 bins)."""
    return {"ece": expected_calibration_error(y_true, p_real),
            "brier": brier_score(y_true, p_real)}


def wilson_interval(k: np.ndarray | float, n: np.ndarray | float,
                    z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval ``(low, high)`` of a binomial proportion ``k / n``.

    ``z = 1.96`` gives 95%; arrays broadcast; NaN where ``n == 0``. Scalars give 0-d arrays
    (``float()`` them).
    """
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = (k + z * z / 2) / (n + z * z)
        half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    lo, hi = np.where(n > 0, centre - half, np.nan), np.where(n > 0, centre + half, np.nan)
    return np.clip(lo, 0, 1), np.clip(hi, 0, 1)


def error_rates_with_intervals(y_true: Sequence[int] | np.ndarray,
                               p_real: Sequence[float] | np.ndarray, threshold: float,
                               z: float = 1.96) -> dict[str, Any]:
    """FNR and FPR at ``threshold`` with their Wilson intervals (95% by default).

    Returns
    -------
    dict
        ``fnr``, ``fnr_low``, ``fnr_high``, ``n_real``, ``fpr``, ``fpr_low``, ``fpr_high``,
        ``n_bogus`` (None where a class is absent), ``threshold`` and ``z``.
    """
    y, p = _checked(y_true, p_real)
    pred = p > threshold
    out: dict[str, Any] = {"threshold": float(threshold), "z": float(z)}
    for name, cls, wrong in (("fnr", 1, ~pred), ("fpr", 0, pred)):
        sel = y == cls
        n, k = int(sel.sum()), int(np.sum(wrong & sel))
        lo, hi = wilson_interval(k, n, z)
        out[f"n_{'real' if cls else 'bogus'}"] = n
        out[name] = k / n if n else None
        out[f"{name}_low"] = float(lo) if n else None
        out[f"{name}_high"] = float(hi) if n else None
    return out


def threshold_for_target(y_true: Sequence[int] | np.ndarray, p_real: Sequence[float] | np.ndarray,
                         target_fnr: float | None = None,
                         target_fpr: float | None = None) -> float:
    """The threshold meeting a target error rate on labelled rows (real when ``p > t``).

    ``target_fnr``: the highest threshold whose FNR is at most the target (fewest false
    positives), placed half-way to the next higher score, so a little score noise does not
    cross it. ``target_fpr``: the lowest threshold whose FPR is at most the target (fewest
    false negatives), which is a score itself (``p > t`` leaves that row out).

    Raises
    ------
    OtrainError
        Neither or both targets, a target outside [0, 1], or no row of the class it needs.
    """
    if (target_fnr is None) == (target_fpr is None):
        raise OtrainError("give one of target FNR and target FPR")
    target = float(target_fnr if target_fnr is not None else target_fpr)
    if not 0.0 <= target <= 1.0:
        raise OtrainError(f"target rate must be in [0, 1], got {target}")
    y, p = _checked(y_true, p_real)
    cls = 1 if target_fnr is not None else 0
    scores = p[y == cls]
    if scores.size == 0:
        raise OtrainError(f"no {'real' if cls else 'bogus'} row to choose a threshold on")
    cands = np.unique(np.concatenate([[0.0, 1.0], p]))
    if cls == 1:  # FNR(t) = share of real rows with p <= t, non-decreasing in t
        fnr = np.searchsorted(np.sort(scores), cands, side="right") / scores.size
        j = int(np.flatnonzero(fnr <= target + 1e-12).max())
        return float(cands[j] if j + 1 == cands.size else (cands[j] + cands[j + 1]) / 2)
    # FPR(t) = share of bogus rows with p > t, non-increasing in t
    fpr = 1.0 - np.searchsorted(np.sort(scores), cands, side="right") / scores.size
    return float(cands[int(np.flatnonzero(fpr <= target + 1e-12).min())])


def confusion_counts(y_true: Sequence[int] | np.ndarray, p_real: Sequence[float] | np.ndarray,
                     thresholds: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
    """TP, FP, TN, FN at each threshold (real when ``P(real) > threshold``).

    Parameters
    ----------
    y_true : sequence of int
        1 real, 0 bogus.
    p_real : sequence of float
        Scores.
    thresholds : sequence of float
        Thresholds to evaluate.

    Returns
    -------
    dict of numpy.ndarray
        ``tp``, ``fp``, ``tn``, ``fn`` (int64, one value per threshold).
    """
    y = np.asarray(y_true).ravel()
    p = np.asarray(p_real, dtype=np.float64).ravel()
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    real = np.sort(p[y == 1])
    bogus = np.sort(p[y == 0])
    fn = np.searchsorted(real, t, side="right").astype(np.int64)  # real with p <= t
    tn = np.searchsorted(bogus, t, side="right").astype(np.int64)
    return {"tp": real.size - fn, "fp": bogus.size - tn, "tn": tn, "fn": fn}


def rates(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1, MCC, FPR and FNR from confusion counts (0 where undefined).

    Parameters
    ----------
    tp, fp, tn, fn : numpy.ndarray
        Counts (same shape).

    Returns
    -------
    dict of numpy.ndarray
        ``precision``, ``recall``, ``f1``, ``mcc``, ``fpr``, ``fnr`` (float64).
    """
    tp, fp, tn, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, tn, fn))

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    den_mcc = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "mcc": ratio(tp * tn - fp * fn, den_mcc),
        "fpr": ratio(fp, fp + tn),
        "fnr": ratio(fn, fn + tp),
    }


def best_mcc_threshold(y_true: Sequence[int] | np.ndarray, p_real: Sequence[float] | np.ndarray,
                       minimum: float = 0.0) -> float:
    """The threshold of highest MCC among those at or above ``minimum`` (real when ``p > t``).

    Candidates are ``minimum`` and the midpoints between consecutive distinct scores above it
    (and above the highest score), so the choice sits between two rows, not on one; ties go to
    the lowest threshold.
    """
    y, p = _checked(y_true, p_real)
    above = np.unique(p[p > minimum])
    cands = np.concatenate([[minimum], (above[:-1] + above[1:]) / 2 if above.size else [],
                            [(above[-1] + 1.0) / 2] if above.size else []])
    counts = confusion_counts(y, p, cands)
    return float(cands[int(np.argmax(rates(**counts)["mcc"]))])
