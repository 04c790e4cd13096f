"""``otrain-diagnostics``: metrics, optimal thresholds and cutout exports for a labelled cube.

One model pass (:mod:`otrain.evaluation.scores`), then, under ``<dest>/``::

    diagnostics.json        metrics at the threshold, optimal thresholds, calibration (ECE / Brier,
                            before and after the model's temperature), FNR / FPR with Wilson
                            95% intervals, the exported cutouts
    <subset>/misclassified/images_FP/<candid>.png       every false positive (bogus called real)
    <subset>/misclassified/images_FN/<candid>.png       every false negative (real called bogus)
    <subset>/well_classified/images_TP/<candid>.png     a seeded sample of true positives
    <subset>/well_classified/images_TN/<candid>.png     a seeded sample of true negatives
    <subset>/misclassified/contact_sheet_FP.png, ..._FN.png, well_classified/..._TP.png, ..._TN.png

``<subset>`` is ``validation_set`` (the original layout). Each PNG shows channel 0 (zscale, gray,
origin lower) titled with *its own* candidate's id, magnitude and score (the original captioned
the well-classified sample with other candidates' ids). Nothing is ever deleted; existing outputs
are replaced only with ``overwrite``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from otrain.datacube.cube import Datacube
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.evaluation.calibration import calibration_summary, format_calibration
from otrain.evaluation.gallery import (
    JSON_NAME,
    check_outputs,
    export_cutouts,
    outcome_folders,
    outcome_sheet,
    sheet_path,
    warn_stale,
)
from otrain.evaluation.scores import Scores, score_datacube
from otrain.evaluation.thresholds import format_thresholds, optimal_thresholds
from otrain.metrics import binary_metrics, format_metrics, predict_labels
from otrain.models.modelfile import load_model
from otrain.outputs import atomic_output, write_text_atomic
from otrain.progress import info


@dataclass
class DiagnosticsResult:
    """What :func:`run_diagnostics` measured and wrote."""

    folder: Path
    json_path: Path
    summary: dict[str, Any]
    pngs: dict[str, list[Path]] = field(default_factory=dict)
    sheets: dict[str, Path] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# Selection
# ------------------------------------------------------------------------------------------
def select_examples(y_true: np.ndarray, p_real: np.ndarray, threshold: float,
                    n_examples: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """Positions (into the scores) of the cutouts to export, per outcome.

    Parameters
    ----------
    y_true, p_real : numpy.ndarray
        Labels and scores.
    threshold : float
        Real when ``p_real > threshold``.
    n_examples : int, default 30
        Size of the random sample of TP and of TN (all are taken when fewer).
    seed : int, default 0
        Seed of the sample.

    Returns
    -------
    dict of numpy.ndarray
        ``FP`` and ``FN``: all, the most confident mistakes first; ``TP`` and ``TN``: the sample,
        ordered by score (highest first).
    """
    y = np.asarray(y_true)
    p = np.asarray(p_real, dtype=np.float64)
    pred = predict_labels(p, threshold)
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, truth, called in (("FP", 0, 1), ("FN", 1, 0), ("TP", 1, 1), ("TN", 0, 0)):
        idx = np.flatnonzero((y == truth) & (pred == called))
        if name in ("TP", "TN") and idx.size > n_examples:
            idx = rng.choice(idx, size=n_examples, replace=False)
        key = p[idx] if name == "FN" else -p[idx]
        out[name] = idx[np.lexsort((idx, key))]
    return out


def _check_args(threshold: float, n_examples: int) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise OtrainError(f"threshold must be in [0, 1], got {threshold}")
    if n_examples < 0:
        raise OtrainError(f"the number of well-classified examples must be >= 0, got {n_examples}")


def diagnose(cube: Datacube, scores: Scores, dest: str | Path, threshold: float = 0.5,
             n_examples: int = 30, seed: int = 0, overwrite: bool = False,
             subset: str = "validation_set", quiet: bool = False) -> DiagnosticsResult:
    """Compute the diagnostics of already scored cutouts and write every output.

    Parameters
    ----------
    cube : Datacube
        The open cube the scores come from (images are read back for the exports).
    scores : Scores
        From :func:`otrain.evaluation.scores.score_datacube` on ``cube``.
    dest : str or Path
        Output folder (created; never emptied).
    threshold : float, default 0.5
        Real when ``P(real) > threshold``.
    n_examples : int, default 30
        Well-classified sample size per class.
    seed : int, default 0
        Seed of that sample.
    overwrite : bool, default False
        Replace the outputs of an earlier run.
    subset : str, default "validation_set"
        Folder between ``dest`` and the image folders.
    quiet : bool, default False
        Print nothing.

    Returns
    -------
    DiagnosticsResult
        Paths and the ``diagnostics.json`` content.
    """
    _check_args(threshold, n_examples)
    dest = Path(dest)
    check_outputs(dest, subset, overwrite)
    y, p = scores.y_true, scores.p_real
    metrics = binary_metrics(y, p, threshold)
    optimal = optimal_thresholds(y, p)
    picks = select_examples(y, p, threshold, n_examples, seed)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    counts = {"FP": fp, "FN": fn, "TP": tp, "TN": tn}
    index = export_cutouts(cube, scores, picks, dest, subset, overwrite, quiet)
    sheets = {}
    for outcome, pos in picks.items():
        fig = outcome_sheet(cube, scores, pos, outcome, threshold, counts[outcome])
        sheets[outcome] = sheet_path(dest, subset, outcome)
        with atomic_output(sheets[outcome], overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    warn_stale(outcome_folders(dest, subset), index, dest)
    summary = {
        "format": "otrain-diagnostics", "cube": str(scores.cube_path),
        "model": str(scores.model_path), "threshold": float(threshold),
        "model_threshold": scores.meta.get("threshold"), "n_unlabelled_skipped":
        scores.n_unlabelled, "metrics": metrics, "optimal_thresholds": optimal,
        "calibration": calibration_summary(scores, threshold),
        "counts": counts, "n_examples": int(n_examples), "seed": int(seed),
        "contact_sheets": {k: str(v.relative_to(dest)) for k, v in sheets.items()},
        "cutouts": index,
    }
    json_path = write_text_atomic(dest / JSON_NAME, json.dumps(summary, indent=2) + "\n",
                                  overwrite)
    pngs = {k: [dest / item["png"] for item in v] for k, v in index.items()}
    return DiagnosticsResult(folder=dest, json_path=json_path, summary=summary, pngs=pngs,
                             sheets=sheets)


def run_diagnostics(cube_path: str | Path, model_path: str | Path,
                    dest: str | Path = "cnn_results", threshold: float = 0.5,
                    n_examples: int = 30, seed: int = 0, overwrite: bool = False,
                    batch_size: int = 512, device: str = "cpu",
                    quiet: bool = False) -> DiagnosticsResult:
    """Load the model and cube once, score once, and write the diagnostics (see :func:`diagnose`).

    Parameters
    ----------
    cube_path : str or Path
        Labelled cube (``.h5``, or O'TRAIN ``.npz`` with integer or one-hot labels).
    model_path : str or Path
        Model file.
    dest, threshold, n_examples, seed, overwrite, quiet
        As :func:`diagnose`.
    batch_size : int, default 512
        Cutouts scored at a time.
    device : str, default "cpu"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    DiagnosticsResult
        Paths and the ``diagnostics.json`` content.
    """
    _check_args(threshold, n_examples)
    check_outputs(Path(dest), "validation_set", overwrite)  # before the (slow) model pass
    with open_datacube(cube_path) as cube:
        loaded = load_model(model_path, device)
        scores = score_datacube(loaded, cube, batch_size, quiet)
        return diagnose(cube, scores, dest, threshold, n_examples, seed, overwrite,
                        quiet=quiet)


def format_diagnostics(summary: dict[str, Any]) -> str:
    """The printed summary of ``diagnostics.json``."""
    m = summary["metrics"]
    lines = [format_metrics(m, f"diagnostics of {summary['cube']}"),
             "  (average_precision = area under the precision-recall curve)"]
    if summary.get("n_unlabelled_skipped"):
        lines.append(f"  {summary['n_unlabelled_skipped']} unlabelled cutouts skipped")
    if summary.get("calibration"):
        lines.append(format_calibration(summary["calibration"]))
    lines.append(format_thresholds(summary["optimal_thresholds"]))
    c = summary["counts"]
    ex = {k: len(v) for k, v in summary["cutouts"].items()}
    lines.append(f"exported cutouts: FP {ex['FP']}/{c['FP']}, FN {ex['FN']}/{c['FN']}, "
                 f"TP {ex['TP']}/{c['TP']} (sample), TN {ex['TN']}/{c['TN']} (sample)")
    return "\n".join(lines)


def print_diagnostics(result: DiagnosticsResult, quiet: bool = False) -> None:
    """Print the summary and where it was written."""
    info(format_diagnostics(result.summary), quiet)
    info(f"Saved to {result.json_path}", quiet)
