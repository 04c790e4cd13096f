"""The class-activation map of one network (Grad-CAM or HiResCAM on a chosen convolution),
used by :mod:`otrain.evaluation.gradcam` for every member of a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from otrain.errors import OtrainError
from otrain.models.modelfile import LoadedModel
from otrain.models.normalise import normalise


@dataclass
class GradCamResult:
    """Heatmaps and the scores they explain."""

    #: ``(N, H, W)`` float32 in ``[0, 1]``.
    heatmaps: np.ndarray
    #: P(real) per cutout.
    p_real: np.ndarray
    #: Class whose logit was differentiated (1 real, 0 bogus).
    target: np.ndarray


#: Default convolution of the maps when a network names no ``cam_layer``.
TARGET_LAYER = "last_conv"


def _target_layer(model: nn.Module, layer: str) -> nn.Module:
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise OtrainError(f"the network has no layer '{layer}' for Grad-CAM") from None
    if not isinstance(module, nn.Conv2d):
        raise OtrainError(f"layer '{layer}' is a {type(module).__name__}, not a convolution")
    return module


def _member_cam(loaded: LoadedModel, model: nn.Module, images: np.ndarray, threshold: float,
                target: np.ndarray | None, layer: str | None, batch_size: int,
                mode: str) -> GradCamResult:
    """The map of one network for the given target classes (checked images)."""
    conv = _target_layer(model, layer or getattr(model, "cam_layer", TARGET_LAYER))
    n, _, h, w = images.shape
    heat = np.zeros((n, h, w), np.float32)
    p_real = np.zeros(n, np.float64)
    targets = np.zeros(n, np.int64)
    if target is not None:
        targets[:] = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))
    kept: list[torch.Tensor] = []
    def keep(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        rectified = torch.relu(out)  # the network applies ReLU next: same scores
        kept.append(rectified)
        return rectified

    handle = conv.register_forward_hook(keep)
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
                log_odds = logits.gather(1, idx[:, None]) - logits.gather(1, 1 - idx[:, None])
                score = log_odds.sum()
                (grads,) = torch.autograd.grad(score, kept[0])
            acts = kept[0].detach()
            alpha = grads.mean(dim=(2, 3), keepdim=True) if mode == "gradcam" else grads
            cam = torch.relu((alpha * acts).sum(dim=1, keepdim=True))
            cam = _upsample(cam, h, w)
            peak = cam.amax(dim=(1, 2), keepdim=True)
            cam = torch.where(peak > 0, cam / peak.clamp_min(1e-30), torch.zeros_like(cam))
            heat[start:stop] = torch.nan_to_num(cam, nan=0.0).cpu().numpy()
            p_real[start:stop] = prob
    finally:
        handle.remove()
        model.train(was_training)
    return GradCamResult(heat, p_real, targets)


def _upsample(cam: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(N, 1, hm, wm)`` maps onto ``(N, h, w)`` pixels: each cell onto the ``s x s`` pixels it
    covers (``s = h // hm``), the uncovered last rows / columns (floor pooling) edge-padded."""
    hm, wm = cam.shape[2:]
    sy, sx = max(1, h // hm), max(1, w // wm)
    up = nn.functional.interpolate(cam, size=(min(h, hm * sy), min(w, wm * sx)),
                                   mode="bilinear", align_corners=False)
    pad = (0, w - up.shape[3], 0, h - up.shape[2])
    return nn.functional.pad(up, pad, mode="replicate")[:, 0] if any(pad) else up[:, 0]
