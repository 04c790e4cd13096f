"""Calibration and operating point of scored cutouts, for diagnostics and the report.

From one :class:`~otrain.evaluation.scores.Scores`: ECE (10 equal-width bins) and Brier score of
the scores as the model gives them (calibrated by its temperature and logit bias) and, when the
model is calibrated, before calibration; the FNR and FPR at the threshold with Wilson 95%
intervals; how the model's threshold was chosen (``threshold_choice`` of the model file); and,
for an ensemble, the mean spread of the members.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otrain.evaluation.scores import Scores
from otrain.metrics import calibration_metrics, error_rates_with_intervals

__all__ = ["calibration_summary", "describe_choice", "format_calibration"]


def calibration_summary(scores: Scores, threshold: float) -> dict[str, Any]:
    """Calibration numbers of ``scores`` and error rates at ``threshold``.

    Returns
    -------
    dict
        ``temperature``, ``logit_bias``, ``after`` (ECE / Brier of the scores used),
        ``before`` (without the calibration; None for an uncalibrated model), ``error_rates``
        (:func:`otrain.metrics.error_rates_with_intervals`), ``threshold_choice`` (from the
        model file, None for old files), ``n_members`` and ``mean_p_real_std`` (None for one
        network).
    """
    meta = scores.meta
    members = int((meta.get("ensemble") or {}).get("n_members", 1))
    return {
        "temperature": float(meta.get("temperature", 1.0)),
        "logit_bias": float(meta.get("logit_bias", 0.0)),
        "after": calibration_metrics(scores.y_true, scores.p_real),
        "before": (calibration_metrics(scores.y_true, scores.p_uncalibrated)
                   if scores.p_uncalibrated is not None else None),
        "error_rates": error_rates_with_intervals(scores.y_true, scores.p_real, threshold),
        "threshold_choice": meta.get("threshold_choice"),
        "n_members": members,
        "mean_p_real_std": (float(np.mean(scores.p_real_std))
                            if scores.p_real_std is not None else None),
    }


def describe_choice(choice: dict[str, Any] | None, threshold: float | None = None) -> str:
    """How a threshold was chosen, in words."""
    if not choice:
        return "recorded in the model file (how it was chosen is not recorded)"
    method = choice.get("method")
    if method == "given":
        return "given at training (--threshold, or the default 0.5)"
    if method == "manual":
        return f"set by hand with otrain set-threshold ({choice.get('set_at', 'time unknown')})"
    if "set_at" in choice:  # otrain set-threshold --target-fnr / --max-fpr on a labelled cube
        rate = "false-negative" if method == "target_fnr" else "false-positive"
        return (f"set with otrain set-threshold on {choice.get('cube', 'a labelled cube')}: "
                f"{rate} rate at most {choice.get('target', float('nan')):g}")
    rate = "false-negative" if method == "target_fnr" else "false-positive"
    text = (f"chosen at training on the validation rows' calibrated scores: {rate} rate at "
            f"most {choice.get('target', float('nan')):g}")
    if method == "max_mcc_within_fpr":
        text = (f"chosen at training on the validation rows' calibrated scores: best MCC among "
                f"the thresholds of false-positive rate at most "
                f"{choice.get('target', float('nan')):g} (the default)")
    elif method == "default":
        text = f"the fallback 0.5 ({choice.get('reason', 'no reason recorded')})"
    if choice.get("validation_fnr") is not None:
        text += (f" (validation FNR {choice['validation_fnr']:.4f}, FPR "
                 f"{choice['validation_fpr']:.4f})")
    return text


def _rate(r: dict[str, Any], name: str) -> str:
    if r[name] is None:
        return "n/a"
    return f"{r[name]:.4f} [{r[f'{name}_low']:.4f}, {r[f'{name}_high']:.4f}]"


def format_calibration(summary: dict[str, Any]) -> str:
    """A few printed lines of :func:`calibration_summary`."""
    a, b = summary["after"], summary["before"]
    line = f"calibration (10 bins): ECE {a['ece']:.4f}, Brier {a['brier']:.4f}"
    if b is not None:
        line += (f"; before calibration (temperature {summary['temperature']:.4g}, logit bias "
                 f"{summary.get('logit_bias', 0.0):.4g}): ECE {b['ece']:.4f}, "
                 f"Brier {b['brier']:.4f}")
    lines = [line]
    r = summary["error_rates"]
    lines.append(f"at threshold {r['threshold']:g}: FNR {_rate(r, 'fnr')}, FPR "
                 f"{_rate(r, 'fpr')} (Wilson 95%)")
    lines.append(f"model threshold: {describe_choice(summary['threshold_choice'])}")
    if summary["mean_p_real_std"] is not None:
        lines.append(f"ensemble of {summary['n_members']}: mean p_real_std "
                     f"{summary['mean_p_real_std']:.4f}")
    return "\n".join(lines)
