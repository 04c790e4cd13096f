"""PNGs of candidate cutouts for the diagnostics: one image per cutout (zscale, its own id,
magnitude and score in the title) and contact sheets per outcome (TP, TN, FP, FN)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from astropy.visualization import ZScaleInterval
from matplotlib.figure import Figure

from otrain.datacube.cube import Datacube
from otrain.errors import OtrainError
from otrain.evaluation.scores import Scores
from otrain.outputs import atomic_output
from otrain.progress import Progress

#: Outcome -> (group folder, image folder, description).
OUTCOMES: dict[str, tuple[str, str, str]] = {
    "FP": ("misclassified", "images_FP", "bogus called real"),
    "FN": ("misclassified", "images_FN", "real called bogus"),
    "TP": ("well_classified", "images_TP", "real called real"),
    "TN": ("well_classified", "images_TN", "bogus called bogus"),
}
#: The diagnostics summary written beside the PNGs.
JSON_NAME = "diagnostics.json"
#: Most panels drawn on one contact sheet.
MAX_SHEET_PANELS = 100
_ZSCALE = ZScaleInterval()


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
        """Draw ``image`` (2-D, or ``(C, H, W)``: every channel side by side, each zscaled) with
        ``title`` and save it to ``path`` atomically."""
        if image.ndim == 3 and image.shape[0] > 1:
            shown, clim = _tile(image), (0.0, 1.0)
        else:
            image = image[0] if image.ndim == 3 else image
            shown, clim = np.where(np.isfinite(image), image, np.nan), zscale_limits(image)
        self.fig.set_size_inches(max(3.2, 0.1 + 3.0 * shown.shape[1] / shown.shape[0]), 3.7)
        self.im.set_data(shown)
        self.im.set_extent((-0.5, shown.shape[1] - 0.5, -0.5, shown.shape[0] - 0.5))
        self.im.set_clim(*clim)
        self.title.set_text(title)
        with atomic_output(path, overwrite) as tmp:
            self.fig.savefig(tmp, format="png", dpi=100)
        return path


def wrap_id(text: str, width: int = 12) -> str:
    """A candidate id cut into balanced lines of at most ``width`` characters, never shortened
    (19-digit ZTF candids differ only in their last digits)."""
    text = str(text)
    size = -(-len(text) // max(1, -(-len(text) // width))) if text else 1
    return "\n".join(text[i:i + size] for i in range(0, len(text), size)) or "?"


def _tile(image: np.ndarray) -> np.ndarray:
    """The channels of ``(C, H, W)`` side by side, each scaled by its own zscale to [0, 1]."""
    planes = []
    for plane in image if image.ndim == 3 else image[None]:
        lo, hi = zscale_limits(plane)
        planes.append(np.clip((np.asarray(plane, np.float64) - lo) / max(hi - lo, 1e-12), 0, 1))
        planes.append(np.full((plane.shape[0], 1), np.nan))  # a thin gap between channels
    return np.hstack(planes[:-1])


def contact_sheet(images: np.ndarray, labels: list[str], title: str, ncols: int = 10,
                  channels: list[str] | None = None) -> Figure:
    """A grid of cutouts (every channel side by side, each zscaled, origin lower), with labels.

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, H, W)`` or ``(n, C, H, W)``; may be empty (the sheet then says so).
    labels : list of str
        One label per image (may hold line breaks: see :func:`wrap_id`).
    title : str
        Sheet title.
    ncols : int, default 10
        Most tiles per row (fewer for several channels).
    channels : list of str, optional
        Channel names, shown in the title when there are several.

    Returns
    -------
    matplotlib.figure.Figure
        The sheet (not saved).
    """
    n = len(images)
    c = images.shape[1] if images.ndim == 4 else 1
    ncols = max(1, ncols // c)
    cols = max(1, min(ncols, n))
    rows = max(1, -(-n // cols))
    lines = max((lab.count("\n") + 1 for lab in labels), default=2)
    if channels and c > 1:
        title += f"\neach tile: {' | '.join(channels)}"
    fig = Figure(figsize=(max(4.5, 1.45 * cols * c), (1.45 + 0.13 * lines) * rows + 0.6),
                 layout="constrained")
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
        ax.imshow(_tile(images[k]), cmap="gray", origin="lower", interpolation="nearest",
                  vmin=0, vmax=1)
        ax.set_title(labels[k], fontsize=6.5, family="monospace")
    return fig


def outcome_sheet(cube: Datacube, scores: Scores, picks: np.ndarray, outcome: str,
                  threshold: float, total: int) -> Figure:
    """Contact sheet of the cutouts ``picks`` (positions into ``scores``) of one outcome: whole
    candidate ids (wrapped) and every channel."""
    shown = picks[:MAX_SHEET_PANELS]
    images = cube.read(scores.rows[shown]) if shown.size else np.empty((0, 1, 1, 1))
    cands = scores.candids
    labels = [f"{wrap_id(cands[i])}\nP={scores.p_real[i]:.3f}" for i in shown]
    order = "most confident first" if outcome in ("FP", "FN") else "random sample, by score"
    title = (f"{outcome}: {OUTCOMES[outcome][2]} (real when P(real) > {threshold:g}); "
             f"{shown.size} of {total} shown, {order}")
    return contact_sheet(images, labels, title, channels=list(cube.channels))


# ------------------------------------------------------------------------------------------
# Command
# ------------------------------------------------------------------------------------------
def outcome_folders(dest: Path, subset: str) -> dict[str, Path]:
    return {k: dest / subset / group / sub for k, (group, sub, _) in OUTCOMES.items()}


def sheet_path(dest: Path, subset: str, outcome: str) -> Path:
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
    for outcome, folder in outcome_folders(dest, subset).items():
        if sheet_path(dest, subset, outcome).exists() or (
                folder.is_dir() and any(folder.glob("*.png"))):
            raise OtrainError("already holds exported cutouts; pass --overwrite to replace them "
                              "or choose another --path-diagnostics", folder)


def export_cutouts(cube: Datacube, scores: Scores, picks: dict[str, np.ndarray], dest: Path,
                   subset: str, overwrite: bool, quiet: bool = False) -> dict[str, list[dict]]:
    """Write one PNG per picked cutout and return the index (candid, score, file) per outcome."""
    folders = outcome_folders(dest, subset)
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
                    writer.write(path, image, caption(cands[i], m, e, float(scores.p_real[i]),
                                                         outcome), overwrite)
                    index[outcome].append({
                        "candid": str(cands[i]), "row": int(scores.rows[i]),
                        "label": int(scores.y_true[i]), "score": float(scores.p_real[i]),
                        "mag": None if not np.isfinite(m) else m,
                        "magerr": None if not np.isfinite(e) else e,
                        "png": str(path.relative_to(dest))})
                    bar.update()
    return index


def warn_stale(folders: dict[str, Path], index: dict[str, list[dict]], dest: Path) -> None:
    for outcome, folder in folders.items():
        mine = {dest / item["png"] for item in index[outcome]}
        stale = [p for p in folder.glob("*.png") if p not in mine] if folder.is_dir() else []
        if stale:
            print(f"note: {folder} also holds {len(stale)} PNG(s) from an earlier run; this "
                  f"run's cutouts are listed in {dest / JSON_NAME}", file=sys.stderr)
