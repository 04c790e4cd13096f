"""``otrain-diagnostics``: metrics, optimal thresholds and cutout exports for a labelled cube.

One model pass (:mod:`otrain.evaluation.scores`), then, under ``<dest>/``::

    diagnostics.json        metrics at the threshold, optimal thresholds, the exported cutouts
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
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.visualization import ZScaleInterval
from matplotlib.figure import Figure

from otrain.datacube import Datacube, open_datacube
from otrain.errors import OtrainError
from otrain.evaluation.metrics import binary_metrics, format_metrics, predict_labels
from otrain.evaluation.scores import Scores, score_datacube
from otrain.evaluation.thresholds import format_thresholds, optimal_thresholds
from otrain.modelfile import load_model
from otrain.outputs import atomic_output, write_text_atomic
from otrain.progress import Progress, info

#: Outcome -> (group folder, image folder, description).
OUTCOMES: dict[str, tuple[str, str, str]] = {
    "FP": ("misclassified", "images_FP", "bogus called real"),
    "FN": ("misclassified", "images_FN", "real called bogus"),
    "TP": ("well_classified", "images_TP", "real called real"),
    "TN": ("well_classified", "images_TN", "bogus called bogus"),
}
JSON_NAME = "diagnostics.json"
#: Most panels drawn on one contact sheet.
MAX_SHEET_PANELS = 100
_ZSCALE = ZScaleInterval()


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


def safe_name(candid: str) -> str:
    """A file-name-safe version of a candidate id."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", str(candid)).strip(".")[:120] or "candidate"


def _fmt(value: float, spec: str = ".2f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def caption(candid: str, mag: float, magerr: float, score: float, outcome: str) -> str:
    """Title of one exported cutout: id, magnitude, score and outcome."""
    magnitude = f"mag {_fmt(mag)} ± {_fmt(magerr)}" if np.isfinite(mag) else "mag n/a"
    return f"{candid}\n{magnitude}   P(real) {score:.3f}\n{outcome}: {OUTCOMES[outcome][2]}"


def zscale_limits(image: np.ndarray) -> tuple[float, float]:
    """Display limits of ``image`` (zscale on its finite pixels; (0, 1) if none)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in _ZSCALE.get_limits(finite))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------
class CutoutWriter:
    """Write single-cutout PNGs, re-using one figure (fast for thousands of cutouts)."""

    def __init__(self) -> None:
        self.fig = Figure(figsize=(3.2, 3.7))
        self.ax = self.fig.add_axes((0.05, 0.02, 0.9, 0.77))
        self.im = self.ax.imshow(np.zeros((2, 2)), cmap="gray", origin="lower",
                                 interpolation="nearest")
        self.ax.set_xticks([])
        self.ax.set_yticks([])
        self.title = self.fig.text(0.5, 0.985, "", ha="center", va="top", fontsize=9)

    def write(self, path: Path, image: np.ndarray, title: str, overwrite: bool) -> Path:
        """Draw ``image`` (2-D) with ``title`` and save it to ``path`` atomically."""
        shown = np.where(np.isfinite(image), image, np.nan)
        self.im.set_data(shown)
        self.im.set_extent((-0.5, image.shape[1] - 0.5, -0.5, image.shape[0] - 0.5))
        self.im.set_clim(*zscale_limits(image))
        self.title.set_text(title)
        with atomic_output(path, overwrite) as tmp:
            self.fig.savefig(tmp, format="png", dpi=100)
        return path


def contact_sheet(images: np.ndarray, labels: list[str], title: str, ncols: int = 10) -> Figure:
    """A grid of cutouts (channel 0, zscale, origin lower), each with a short label.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, H, W)``; may be empty (the sheet then says so).
    labels : list of str
        One short label per image.
    title : str
        Sheet title.
    ncols : int, default 10
        Most panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        The sheet (not saved).
    """
    n = len(images)
    cols = max(1, min(ncols, n))
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(max(4.5, 1.45 * cols), 1.75 * rows + 0.5), layout="constrained")
    fig.suptitle(title, fontsize=10)
    if n == 0:
        fig.text(0.5, 0.45, "none at this threshold", ha="center", va="center", fontsize=12)
        return fig
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        lo, hi = zscale_limits(images[k])
        ax.imshow(images[k], cmap="gray", origin="lower", interpolation="nearest",
                  vmin=lo, vmax=hi)
        ax.set_title(labels[k], fontsize=7)
    return fig


def outcome_sheet(cube: Datacube, scores: Scores, picks: np.ndarray, outcome: str,
                  threshold: float, total: int) -> Figure:
    """Contact sheet of the cutouts ``picks`` (positions into ``scores``) of one outcome."""
    shown = picks[:MAX_SHEET_PANELS]
    images = cube.read(scores.rows[shown])[:, 0] if shown.size else np.empty((0, 1, 1))
    cands = scores.candids
    labels = [f"{cands[i][:16]}\nP={scores.p_real[i]:.3f}" for i in shown]
    order = "most confident first" if outcome in ("FP", "FN") else "random sample, by score"
    title = (f"{outcome}: {OUTCOMES[outcome][2]} (real when P(real) > {threshold:g}); "
             f"{shown.size} of {total} shown, {order}")
    return contact_sheet(images, labels, title)


# ------------------------------------------------------------------------------------------
# Command
# ------------------------------------------------------------------------------------------
def _folders(dest: Path, subset: str) -> dict[str, Path]:
    return {k: dest / subset / group / sub for k, (group, sub, _) in OUTCOMES.items()}


def _sheet_path(dest: Path, subset: str, outcome: str) -> Path:
    return dest / subset / OUTCOMES[outcome][0] / f"contact_sheet_{outcome}.png"


def check_outputs(dest: Path, subset: str, overwrite: bool) -> None:
    """Refuse (before any work) to write over an earlier run unless ``overwrite``."""
    if dest.exists() and not dest.is_dir():
        raise OtrainError("is a file, expected a folder for the diagnostics", dest)
    if overwrite:
        return
    if (dest / JSON_NAME).exists():
        raise OtrainError("already holds diagnostics (diagnostics.json); pass --overwrite to "
                          "replace them or choose another --path-diagnostics", dest)
    for outcome, folder in _folders(dest, subset).items():
        if _sheet_path(dest, subset, outcome).exists() or (
                folder.is_dir() and any(folder.glob("*.png"))):
            raise OtrainError("already holds exported cutouts; pass --overwrite to replace them "
                              "or choose another --path-diagnostics", folder)


def export_cutouts(cube: Datacube, scores: Scores, picks: dict[str, np.ndarray], dest: Path,
                   subset: str, overwrite: bool, quiet: bool = False) -> dict[str, list[dict]]:
    """Write one PNG per picked cutout and return the index (candid, score, file) per outcome."""
    folders = _folders(dest, subset)
    cands = scores.candids
    mag, magerr = scores.column("mag"), scores.column("magerr")
    index: dict[str, list[dict]] = {}
    writer = CutoutWriter()
    total = sum(int(v.size) for v in picks.values())
    with Progress(total, "exporting cutouts", quiet, unit="cutout") as bar:
        for outcome, pos in picks.items():
            index[outcome] = []
            used: set[str] = set()
            for start in range(0, pos.size, 256):
                chunk = pos[start : start + 256]
                images = cube.read(scores.rows[chunk])
                for i, image in zip(chunk, images, strict=True):
                    name = safe_name(cands[i])
                    if name in used:
                        name = f"{name}_row{int(scores.rows[i])}"
                    used.add(name)
                    m = float(mag[i]) if mag is not None else float("nan")
                    e = float(magerr[i]) if magerr is not None else float("nan")
                    path = folders[outcome] / f"{name}.png"
                    writer.write(path, image[0], caption(cands[i], m, e, float(scores.p_real[i]),
                                                         outcome), overwrite)
                    index[outcome].append({
                        "candid": str(cands[i]), "row": int(scores.rows[i]),
                        "label": int(scores.y_true[i]), "score": float(scores.p_real[i]),
                        "mag": None if not np.isfinite(m) else m,
                        "magerr": None if not np.isfinite(e) else e,
                        "png": str(path.relative_to(dest))})
                    bar.update()
    return index


def _warn_stale(folders: dict[str, Path], index: dict[str, list[dict]], dest: Path) -> None:
    for outcome, folder in folders.items():
        mine = {dest / item["png"] for item in index[outcome]}
        stale = [p for p in folder.glob("*.png") if p not in mine] if folder.is_dir() else []
        if stale:
            print(f"note: {folder} also holds {len(stale)} PNG(s) from an earlier run; this "
                  f"run's cutouts are listed in {dest / JSON_NAME}", file=sys.stderr)


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
        sheets[outcome] = _sheet_path(dest, subset, outcome)
        with atomic_output(sheets[outcome], overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    _warn_stale(_folders(dest, subset), index, dest)
    summary = {
        "format": "otrain-diagnostics", "cube": str(scores.cube_path),
        "model": str(scores.model_path), "threshold": float(threshold),
        "model_threshold": scores.meta.get("threshold"), "n_unlabelled_skipped":
        scores.n_unlabelled, "metrics": metrics, "optimal_thresholds": optimal,
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
