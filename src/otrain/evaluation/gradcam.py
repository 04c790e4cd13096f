"""Grad-CAM / HiResCAM: where in a cutout the network looks when it decides real or bogus.

Method (Selvaraju et al. 2017) on a convolution found by its module name, with hooks:

1. forward the normalised cutouts and keep the **rectified** maps ``A = ReLU(conv(x))`` of the
   target convolution (the hook returns ``ReLU(A)``; the network's own ReLU next changes
   nothing). Until issue 15 the maps were taken before that ReLU;
2. take the gradient, with respect to ``A``, of the **log-odds** of the target class,
   ``z_target - z_other`` (P(real) is the softmax of that difference alone);
3. heatmap = ReLU(sum_k alpha_k A_k). Grad-CAM's ``alpha_k`` is the spatial mean of the
   gradient; but the otrain networks end in flatten + dense layers, whose weights differ at
   every position, and on the demo model the Grad-CAM maps sit on the background and fail the
   deletion test (``benchmarks/gradcam_check.py``). The default is HiResCAM (Draelos & Carin
   2020): ``alpha_k`` is the gradient itself, pixel by pixel, faithful for such heads
   (``mode="gradcam"`` keeps the classic). The target layer is the network's ``cam_layer``
   (``conv3`` in the O'TRAIN CNN, whose last convolution works at 1/4 of the resolution), else
   ``last_conv``;
4. upsample bilinearly onto the pixels the maps cover (``h * s`` for a stride ``s``: pooling
   floors odd sizes, so a 63-pixel cutout's 15-cell map covers 60 pixels, not 63) and divide by
   the maximum, so it lies in ``[0, 1]``; a heatmap that is zero everywhere (no positive
   evidence) stays zeros, never NaN, and the figure says so.

Every run checks its maps with the deletion test of :mod:`otrain.evaluation.explain` (masking
the top 10 % of a map must lower the explained class's probability more than a random 10 %), and
``method="occlusion"`` gives the model-agnostic occlusion map instead.

The target class is the predicted one at ``threshold`` (real when P(real) > threshold), so for a
false positive the map shows what made the network say "real" (P(real) being the model's
calibrated score; for an ensemble file the map is the mean of the members' maps, each explaining
the class the ensemble predicts, rescaled to a peak of 1). :func:`draw_overlay` draws every
channel in gray (ZScale) with the map over it into ``<cam_path>/<outcome>/``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.visualization import ZScaleInterval
from matplotlib.figure import Figure

from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.evaluation.cam_maps import (  # noqa: F401 (_upsample: tests)
    TARGET_LAYER,
    GradCamResult,
    _member_cam,
    _upsample,
)
from otrain.evaluation.explain import (
    DeletionResult,
    deletion_figure,
    deletion_test,
    merge_deletions,
    occlusion_maps,
)
from otrain.models.ensemble import checked_images
from otrain.models.modelfile import LoadedModel, load_model, predict_proba
from otrain.outputs import atomic_output, check_writable, write_text_atomic
from otrain.progress import Progress, info

#: Output sub-folders, one per outcome.
CATEGORIES = ("true_positive", "true_negative", "false_positive", "false_negative")
#: Module name of the target convolution in otrain networks.
INDEX_NAME = "grad_cam_index.csv"
DELETION_JSON = "deletion_test.json"
DELETION_PNG = "deletion_test.png"
#: ``--method`` choices and the name shown on the figures.
METHODS = {"hirescam": "HiResCAM", "gradcam": "Grad-CAM", "occlusion": "occlusion"}


def compute_grad_cam(loaded: LoadedModel, images: np.ndarray, threshold: float | None = None,
                     target: int | Sequence[int] | np.ndarray | None = None,
                     layer: str | None = None, batch_size: int = 256,
                     mode: str = "hirescam") -> GradCamResult:
    """Grad-CAM heatmaps, with P(real) and the class explained.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`otrain.models.modelfile.load_model`.
    images : numpy.ndarray
        Raw cutouts ``(N, C, H, W)`` (``(N, H, W)`` for one channel), as in the datacube.
    threshold : float, optional
        P(real) above which the predicted class is real (default: the model's threshold).
    target : int or sequence of int, optional
        Class to explain per cutout (default: the predicted class).
    layer : str, optional
        Module name of the convolution whose maps are used (default: the network's
        ``cam_layer`` attribute, else ``last_conv``).
    batch_size : int, default 256
        Cutouts per pass.
    mode : {"hirescam", "gradcam"}, default "hirescam"
        ``gradcam`` weighs each map by its spatially averaged gradient; ``hirescam`` multiplies
        maps and gradients pixel by pixel (see the module documentation).

    Returns
    -------
    GradCamResult
    """
    images = checked_images(loaded, images)
    threshold = loaded.threshold if threshold is None else float(threshold)
    # the score explained is the model's (calibrated, ensemble mean): one prediction path
    p_real = predict_proba(loaded, images, batch_size)
    targets = ((p_real > threshold).astype(np.int64) if target is None else
               np.broadcast_to(np.asarray(target, dtype=np.int64), (images.shape[0],)).copy())
    maps = [_member_cam(loaded, net, images, threshold, targets, layer, batch_size,
                        mode).heatmaps for net in loaded.members]
    heat = np.mean(maps, axis=0).astype(np.float32)
    if len(maps) > 1:  # the members' mean map, scaled back to a peak of 1
        peak = heat.max(axis=(1, 2), keepdims=True)
        heat = np.where(peak > 0, heat / np.maximum(peak, 1e-30), 0.0).astype(np.float32)
    return GradCamResult(heat, p_real, targets)


def grad_cam(loaded: LoadedModel, images: np.ndarray, threshold: float | None = None,
             layer: str | None = None, mode: str = "hirescam") -> np.ndarray:
    """Grad-CAM heatmaps ``(N, H, W)`` in ``[0, 1]`` for the predicted class of each cutout.

    See :func:`compute_grad_cam` for the parameters and the module documentation for the method.
    """
    return compute_grad_cam(loaded, images, threshold=threshold, layer=layer,
                            mode=mode).heatmaps


# ------------------------------------------------------------------------------------------
# Choosing cutouts and drawing
# ------------------------------------------------------------------------------------------
def select_cutouts(labels: np.ndarray, p_real: np.ndarray, threshold: float, n_random: int,
                   seed: int) -> dict[str, np.ndarray]:
    """Row indices per outcome: all false positives / negatives, ``n_random`` TP and TN.

    TP and TN are a seeded random sample (fewer when fewer exist); unlabelled rows are skipped.
    """
    pred = p_real > threshold
    masks = {"true_positive": (labels == 1) & pred, "true_negative": (labels == 0) & ~pred,
             "false_positive": (labels == 0) & pred, "false_negative": (labels == 1) & ~pred}
    rng = np.random.default_rng(seed)
    out = {}
    for name in CATEGORIES:
        rows = np.flatnonzero(masks[name])
        if name.startswith("true") and rows.size > n_random:
            rows = np.sort(rng.choice(rows, size=max(n_random, 0), replace=False))
        out[name] = rows
    return out


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "cutout"


def _fmt(value: float, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def draw_overlay(image: np.ndarray, heatmap: np.ndarray, channels: Sequence[str], title: str,
                 path: Path, overwrite: bool = False, alpha: float = 0.5,
                 label: str = "Grad-CAM") -> Path:
    """One PNG: each channel in gray (ZScale) with the heatmap over it, and a colour bar; an
    empty map (zero everywhere) is not drawn and the figure says so."""
    empty = not np.any(heatmap > 0)
    c = image.shape[0]
    fig = Figure(figsize=(3.2 * c + 1.2, 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, c, squeeze=False)[0])
    zscale = ZScaleInterval()
    mappable = None
    for ax, plane, name in zip(axes, image, channels, strict=True):
        finite = np.isfinite(plane)
        fill = float(np.median(plane[finite])) if finite.any() else 0.0
        plane = np.where(finite, plane, fill)
        try:
            vmin, vmax = zscale.get_limits(plane)
        except Exception:  # flat or degenerate cutout
            vmin, vmax = float(plane.min()), float(plane.max())
        ax.imshow(plane, cmap="gray", origin="lower", vmin=vmin, vmax=vmax,
                  interpolation="nearest")
        if empty:
            ax.text(0.5, 0.5, f"empty {label} map:\nno positive evidence", color="red",
                    ha="center", va="center", fontsize=8, transform=ax.transAxes)
            continue
        mappable = ax.imshow(heatmap, cmap="jet", alpha=alpha, origin="lower", vmin=0.0,
                             vmax=1.0, interpolation="bilinear")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x (pixel)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("y (pixel)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=list(axes), shrink=0.9, pad=0.02)
        bar.set_label(f"{label} (normalised)", fontsize=8)
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path


@dataclass
class GradCamRun:
    """What :func:`run_grad_cam` wrote."""

    folder: Path
    counts: dict[str, int]
    files: list[Path]
    index: Path
    deletion: dict | None = None


def run_grad_cam(cube_path: str | Path, model_path: str | Path, cam_path: str | Path = "grad_cam",
                 n_random: int = 30, threshold: float = 0.5, seed: int = 0,
                 overwrite: bool = False, device: str = "cpu", quiet: bool = False,
                 method: str = "hirescam") -> GradCamRun:
    """Score a labelled cube, pick TP/TN/FP/FN cutouts and write their Grad-CAM overlays.

    Parameters
    ----------
    cube_path : str or Path
        Labelled datacube (e.g. the ``cube_test.h5`` or ``cube_validation.h5`` of a training).
    model_path : str or Path
        Model file (``.safetensors``).
    cam_path : str or Path, default "grad_cam"
        Output folder; one sub-folder per outcome, plus ``grad_cam_index.csv``.
    n_random : int, default 30
        Correctly classified cutouts drawn per class (all misclassified ones are drawn).
    threshold : float, default 0.5
        P(real) above which a cutout is called real.
    seed : int, default 0
        Seed of the random choice of TP and TN.
    overwrite : bool, default False
        Replace existing overlays.
    device : str, default "cpu"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    quiet : bool, default False
        Print nothing.
    method : {"hirescam", "gradcam", "occlusion"}, default "hirescam"
        The map drawn; either way the deletion test of :mod:`otrain.evaluation.explain` is run
        on the drawn cutouts (``deletion_test.json`` and ``deletion_test.png``).

    Returns
    -------
    GradCamRun
    """
    if method not in METHODS:
        raise OtrainError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if n_random < 0:
        raise OtrainError(f"--n_random must be >= 0, got {n_random}")
    if not 0.0 <= threshold <= 1.0:
        raise OtrainError(f"threshold must be in [0, 1], got {threshold}")
    folder = Path(cam_path)
    if folder.exists() and not folder.is_dir():
        raise OtrainError("exists and is not a folder", folder)
    loaded = load_model(model_path, device)
    with open_datacube(cube_path) as cube:
        loaded.check_input(cube.channels, cube.image_shape[1:])
        labels = cube.labels
        labelled = np.flatnonzero(np.isin(labels, (0, 1)))
        if labelled.size == 0:
            raise OtrainError("the cube has no labelled cutouts (label 0 or 1)", cube_path)
        p_real = np.full(len(cube), np.nan)
        with Progress(labelled.size, "scoring", quiet, unit="cutouts") as bar:
            for rows, images in cube.iter_batches(512, labelled):
                p_real[rows] = predict_proba(loaded, images)
                bar.update(rows.size)
        chosen = select_cutouts(labels, p_real, threshold, n_random, seed)
        table = cube.table
        candids = np.asarray(table["candid"]).astype(str)
        mags = (np.asarray(table["mag"], dtype=np.float64) if "mag" in table.colnames
                else np.full(len(cube), np.nan))
        errs = (np.asarray(table["magerr"], dtype=np.float64) if "magerr" in table.colnames
                else np.full(len(cube), np.nan))
        plan = [(name, int(row), folder / name / f"cam_{row:06d}_{_safe_name(candids[row])}.png")
                for name in CATEGORIES for row in chosen[name]]
        for _, _, path in plan:
            check_writable(path, overwrite)
        for name in (INDEX_NAME, DELETION_JSON, DELETION_PNG):
            check_writable(folder / name, overwrite)
        deletions: dict[str, list[DeletionResult]] = {name: [] for name in CATEGORIES}
        files: list[Path] = []
        index_rows = []
        with Progress(len(plan), "Grad-CAM overlays", quiet, unit="cutouts") as bar:
            for start in range(0, len(plan), 64):
                part = plan[start : start + 64]
                rows = np.array([row for _, row, _ in part], dtype=np.int64)
                images = cube.read(rows)
                res = compute_grad_cam(loaded, images, threshold=threshold,
                                       mode="gradcam" if method == "gradcam" else "hirescam")
                if method == "occlusion":
                    res.heatmaps = occlusion_maps(loaded, images, res.target)
                names = np.array([name for name, _, _ in part])
                for name in CATEGORIES:
                    sel = names == name
                    if sel.any():
                        deletions[name].append(deletion_test(loaded, images[sel],
                                                             res.heatmaps[sel],
                                                             res.target[sel], seed))
                for k, (name, row, path) in enumerate(part):
                    title = (f"{name.replace('_', ' ')} | cand: {candids[row]} | "
                             f"P(real) = {res.p_real[k]:.3f}\nmag = {_fmt(mags[row], '.2f')} "
                             f"+/- {_fmt(errs[row], '.2f')} | label {labels[row]} | "
                             f"explained class: {'real' if res.target[k] else 'bogus'}")
                    files.append(draw_overlay(images[k], res.heatmaps[k], cube.channels, title,
                                              path, overwrite, label=METHODS[method]))
                    index_rows.append([name, row, candids[row], int(labels[row]),
                                       f"{res.p_real[k]:.6f}", _fmt(mags[row], ".4f"),
                                       str(path.relative_to(folder))])
                    bar.update(1)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["category", "row", "candid", "label", "p_real", "mag", "file"])
    writer.writerows(index_rows)
    index = write_text_atomic(folder / INDEX_NAME, buf.getvalue(), overwrite)
    counts = {name: int(chosen[name].size) for name in CATEGORIES}
    merged = {name: merge_deletions(parts) for name, parts in deletions.items() if parts}
    deletion = {"method": method, "all": merge_deletions(list(merged.values())).summary(),
                **{name: r.summary() for name, r in merged.items()}}
    write_text_atomic(folder / DELETION_JSON, json.dumps(deletion, indent=2) + "\n", overwrite)
    with atomic_output(folder / DELETION_PNG, overwrite) as tmp:
        deletion_figure(merged, METHODS[method]).savefig(tmp, format="png", dpi=90)
    d = deletion["all"]
    if d["passed"] is not None:
        info(f"deletion test {'passed' if d['passed'] else 'FAILED'}: masking the top 10% of the "
             f"maps lowers P(explained class) by {d['mean_drop_top']:.3f} on average, a random "
             f"10% by {d['mean_drop_random']:.3f} ({d['n']} cutouts; {d['n_empty_maps']} empty "
             "maps left out)", quiet)
    else:
        info(f"deletion test not run: every map is empty ({d['n_empty_maps']})", quiet)
    info("Grad-CAM overlays: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                            for k, v in counts.items()), quiet)
    return GradCamRun(folder, counts, files, index, deletion)
