"""Grad-CAM: where in a cutout the network looks when it decides real or bogus.

Method (Selvaraju et al. 2017) on the network's last convolution, found by its module name
(``last_conv`` in every otrain network, see :mod:`otrain.models`), with hooks, so it works for any
registered architecture:

1. forward the normalised cutouts (the model file's normalisation) and keep the output ``A`` of
   the target convolution (``K`` feature maps of ``h x w``, before the ReLU that follows it);
2. take the gradient of the **logit** (pre-softmax score) of the target class with respect to
   ``A`` -- the paper's choice; the original O'TRAIN differentiated the softmax probability, which
   saturates for confident predictions and then gives near-zero, noisy gradients;
3. weights ``alpha_k`` = spatial mean of the gradient; heatmap = ReLU(sum_k alpha_k A_k);
4. upsample bilinearly to the cutout size (``torch.nn.functional.interpolate``) and divide by the
   maximum, so it lies in ``[0, 1]``; a heatmap that is zero everywhere (no positive evidence)
   stays zeros, never NaN.

The target class is the predicted one at ``threshold`` (real when P(real) > threshold, P(real)
being the model's calibrated score, :func:`otrain.models.modelfile.predict_proba`), so for a
false positive the map shows what made the network say "real". For an ensemble file the map is
the mean of the members' maps (each explaining the class the ensemble predicts), rescaled to a
peak of 1.

:func:`write_overlays` draws, for each cutout, every channel (e.g. diff, sci, ref side by side)
in gray with ZScale limits and the heatmap over it (``jet``, alpha 0.5) and a colour bar, into
``<cam_path>/{true_positive,true_negative,false_positive,false_negative}/``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy.visualization import ZScaleInterval
from matplotlib.figure import Figure
from torch import nn

from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.models.modelfile import LoadedModel, load_model, predict_proba
from otrain.models.normalise import normalise
from otrain.outputs import atomic_output, check_writable, write_text_atomic
from otrain.progress import Progress, info

#: Output sub-folders, one per outcome.
CATEGORIES = ("true_positive", "true_negative", "false_positive", "false_negative")
#: Module name of the target convolution in otrain networks.
TARGET_LAYER = "last_conv"
INDEX_NAME = "grad_cam_index.csv"


@dataclass
class GradCamResult:
    """Heatmaps and the scores they explain."""

    #: ``(N, H, W)`` float32 in ``[0, 1]``.
    heatmaps: np.ndarray
    #: P(real) per cutout.
    p_real: np.ndarray
    #: Class whose logit was differentiated (1 real, 0 bogus).
    target: np.ndarray


def _target_layer(model: nn.Module, layer: str) -> nn.Module:
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise OtrainError(f"the network has no layer '{layer}' for Grad-CAM") from None
    if not isinstance(module, nn.Conv2d):
        raise OtrainError(f"layer '{layer}' is a {type(module).__name__}, not a convolution")
    return module


def _member_cam(loaded: LoadedModel, model: nn.Module, images: np.ndarray, threshold: float,
                target: np.ndarray, layer: str, batch_size: int) -> GradCamResult:
    """Grad-CAM of one network for the given target classes (checked images)."""
    conv = _target_layer(model, layer)
    n, _, h, w = images.shape
    heat = np.zeros((n, h, w), np.float32)
    p_real = np.zeros(n, np.float64)
    targets = np.zeros(n, np.int64)
    if target is not None:
        targets[:] = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
    kept: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, out: kept.append(out))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            x = torch.from_numpy(normalise(images[start:stop], loaded.normalisation))
            x = x.to(loaded.device).requires_grad_(True)
            kept.clear()
            with torch.enable_grad():
                logits = model(x).float()
                prob = torch.softmax(logits.detach(), 1)[:, 1].cpu().numpy()
                if target is None:
                    targets[start:stop] = prob > threshold
                idx = torch.from_numpy(targets[start:stop]).to(logits.device)
                score = logits.gather(1, idx[:, None]).sum()
                (grads,) = torch.autograd.grad(score, kept[0])
            acts = kept[0].detach()
            alpha = grads.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((alpha * acts).sum(dim=1, keepdim=True))
            cam = nn.functional.interpolate(cam, size=(h, w), mode="bilinear",
                                            align_corners=False)[:, 0]
            peak = cam.amax(dim=(1, 2), keepdim=True)
            cam = torch.where(peak > 0, cam / peak.clamp_min(1e-30), torch.zeros_like(cam))
            heat[start:stop] = torch.nan_to_num(cam, nan=0.0).cpu().numpy()
            p_real[start:stop] = prob
    finally:
        handle.remove()
        model.train(was_training)
    return GradCamResult(heat, p_real, targets)




def compute_grad_cam(loaded: LoadedModel, images: np.ndarray, threshold: float | None = None,
                     target: int | Sequence[int] | np.ndarray | None = None,
                     layer: str = TARGET_LAYER, batch_size: int = 256) -> GradCamResult:
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
    layer : str, default "last_conv"
        Module name of the convolution whose maps are used.
    batch_size : int, default 256
        Cutouts per pass.

    Returns
    -------
    GradCamResult
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise OtrainError(f"images must be (N, C, H, W), got shape {images.shape}")
    loaded.check_input(images.shape[1], images.shape[2:])
    threshold = loaded.threshold if threshold is None else float(threshold)
    # the score explained is the model's (calibrated, ensemble mean): one prediction path
    p_real = predict_proba(loaded, images, batch_size)
    targets = ((p_real > threshold).astype(np.int64) if target is None else
               np.broadcast_to(np.asarray(target, dtype=np.int64), (images.shape[0],)).copy())
    maps = [_member_cam(loaded, net, images, threshold, targets, layer, batch_size).heatmaps
            for net in loaded.members]
    heat = np.mean(maps, axis=0).astype(np.float32)
    if len(maps) > 1:  # the members' mean map, scaled back to a peak of 1
        peak = heat.max(axis=(1, 2), keepdims=True)
        heat = np.where(peak > 0, heat / np.maximum(peak, 1e-30), 0.0).astype(np.float32)
    return GradCamResult(heat, p_real, targets)


def grad_cam(loaded: LoadedModel, images: np.ndarray, threshold: float | None = None,
             layer: str = TARGET_LAYER) -> np.ndarray:
    """Grad-CAM heatmaps ``(N, H, W)`` in ``[0, 1]`` for the predicted class of each cutout.

    See :func:`compute_grad_cam` for the parameters and the module documentation for the method.
    """
    return compute_grad_cam(loaded, images, threshold=threshold, layer=layer).heatmaps


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
                 path: Path, overwrite: bool = False, alpha: float = 0.5) -> Path:
    """One PNG: each channel in gray (ZScale) with the heatmap over it, and a colour bar."""
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
        mappable = ax.imshow(heatmap, cmap="jet", alpha=alpha, origin="lower", vmin=0.0,
                             vmax=1.0, interpolation="bilinear")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x (pixel)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("y (pixel)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    bar = fig.colorbar(mappable, ax=list(axes), shrink=0.9, pad=0.02)
    bar.set_label("Grad-CAM (normalised)", fontsize=8)
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


def run_grad_cam(cube_path: str | Path, model_path: str | Path, cam_path: str | Path = "grad_cam",
                 n_random: int = 30, threshold: float = 0.5, seed: int = 0,
                 overwrite: bool = False, device: str = "cpu", quiet: bool = False) -> GradCamRun:
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

    Returns
    -------
    GradCamRun
    """
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
        check_writable(folder / INDEX_NAME, overwrite)
        files: list[Path] = []
        index_rows = []
        with Progress(len(plan), "Grad-CAM overlays", quiet, unit="cutouts") as bar:
            for start in range(0, len(plan), 64):
                part = plan[start : start + 64]
                rows = np.array([row for _, row, _ in part], dtype=np.int64)
                images = cube.read(rows)
                res = compute_grad_cam(loaded, images, threshold=threshold)
                for k, (name, row, path) in enumerate(part):
                    title = (f"{name.replace('_', ' ')} | cand: {candids[row]} | "
                             f"P(real) = {res.p_real[k]:.3f}\nmag = {_fmt(mags[row], '.2f')} "
                             f"+/- {_fmt(errs[row], '.2f')} | label {labels[row]} | "
                             f"explained class: {'real' if res.target[k] else 'bogus'}")
                    files.append(draw_overlay(images[k], res.heatmaps[k], cube.channels, title,
                                              path, overwrite))
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
    info("Grad-CAM overlays: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                            for k, v in counts.items()), quiet)
    return GradCamRun(folder, counts, files, index)
