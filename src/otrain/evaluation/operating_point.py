"""Choosing an operating point on a labelled cube for ``otrain set-threshold``.

``target_fnr``: the largest threshold losing at most that fraction of the real candidates (as
:func:`otrain.evaluation.thresholds.optimal_thresholds`). ``max_fpr``: the smallest threshold
letting through at most that fraction of the bogus ones (the most recall within the FPR budget).
Counts are compared, not rates, so round-off cannot move the choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from otrain.errors import OtrainError
from otrain.evaluation.scores import score
from otrain.evaluation.thresholds import operating_points


def choose_threshold(model: str | Path, cube: str | Path, target_fnr: float | None = None,
                     max_fpr: float | None = None, batch_size: int = 512, device: str = "auto",
                     quiet: bool = False) -> tuple[float, dict[str, Any]]:
    """Score ``cube`` with ``model`` and pick the threshold meeting one target.

    Parameters
    ----------
    model, cube : str or Path
        Model file and labelled datacube.
    target_fnr, max_fpr : float, optional
        Exactly one: highest acceptable false-negative or false-positive rate, in ``[0, 1]``.
    batch_size, device, quiet
        As :func:`otrain.evaluation.scores.score`.

    Returns
    -------
    threshold : float
        The middle of the interval of thresholds giving the chosen point.
    record : dict
        ``method``, ``target``, ``cube``, ``n_real``, ``n_bogus``, ``fnr``, ``fpr``,
        ``precision`` (at the cube's own share of real candidates) and ``range``.
    """
    if (target_fnr is None) == (max_fpr is None):
        raise OtrainError("give exactly one of --threshold, --target-fnr, --max-fpr")
    method, target = ("target_fnr", target_fnr) if target_fnr is not None else ("max_fpr",
                                                                                max_fpr)
    if not 0.0 <= float(target) <= 1.0:
        raise OtrainError(f"--{method.replace('_', '-')} must be in [0, 1], got {target}")
    s = score(model, cube, batch_size=batch_size, device=device, quiet=quiet)
    n_real, n_bogus = int(np.sum(s.y_true == 1)), int(np.sum(s.y_true == 0))
    if n_real == 0 or n_bogus == 0:
        raise OtrainError("needs both real and bogus labelled cutouts to choose a threshold",
                          cube)
    pts = operating_points(s.y_true, s.p_real)
    if method == "target_fnr":
        ok = np.flatnonzero(pts["fn"] <= np.floor(float(target) * n_real + 1e-9))
        i = int(ok[0])  # the strictest threshold meeting the target
    else:
        ok = np.flatnonzero(pts["fp"] <= np.floor(float(target) * n_bogus + 1e-9))
        i = int(ok[-1])  # the most permissive one within the FPR budget
    record = {"method": method, "target": float(target), "cube": str(Path(cube).resolve()),
              "n_real": n_real, "n_bogus": n_bogus,
              "range": [float(pts["low"][i]), float(pts["high"][i])],
              **{k: float(pts[k][i]) for k in ("fnr", "fpr", "precision")}}
    return float(pts["threshold"][i]), record
