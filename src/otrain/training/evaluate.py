"""Scoring during and after training: predictions of split rows and the validation numbers
(the final metrics: :func:`otrain.training.ensemble.calibrate_and_measure`).

With several processes (:mod:`otrain.training.ddp`) each rank scores a contiguous part of the
rows and the logits are gathered, in order, on every rank, so every rank computes the same
numbers from the same logits.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from otrain.models.precision import Precision, autocast
from otrain.training.ddp import DistContext
from otrain.training.splits import SplitImages

#: Cutouts per forward pass when scoring on the CPU (elsewhere: the training batch, if larger).
#: The fastest per cutout here (forward only, bf16, 32x32: 32 -> 205 us, 128 -> 178, 256 -> 182,
#: 512 -> 245, 1024 -> 308: larger batches spill out of the caches).
SCORING_BATCH = 256


def predict(model: nn.Module, source: SplitImages, rows: np.ndarray, dev: torch.device,
            batch_size: int, precision: Precision | None = None) -> torch.Tensor:
    """Logits ``(len(rows), 2)`` on the CPU, eval mode, no gradient (autocast in
    ``precision``: bf16/fp16 validation passes), in batches of :data:`SCORING_BATCH`
    channels-last cutouts (the network's layout) on the CPU, of ``max(batch_size,
    SCORING_BATCH)`` elsewhere."""
    model.eval()
    out = []
    step = SCORING_BATCH if torch.device(dev).type == "cpu" else max(batch_size, SCORING_BATCH)
    with torch.no_grad(), autocast(dev, precision):
        for start in range(0, rows.size, step):
            x = torch.from_numpy(source.get(rows[start : start + step])).to(dev)
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(out) if out else torch.empty((0, 2))


def predict_all(model: nn.Module, source: SplitImages, rows: np.ndarray, ctx: DistContext,
                dev: torch.device, batch_size: int,
                precision: Precision | None = None) -> torch.Tensor:
    """Logits of ``rows``, each rank scoring its contiguous part, gathered on every rank."""
    if not ctx.distributed:
        return predict(model, source, rows, dev, batch_size, precision)
    return ctx.gather_rows(predict(model, source, rows[ctx.shard(rows.size)], dev, batch_size,
                                   precision))


def evaluate(logits: torch.Tensor, y: np.ndarray, weight: torch.Tensor,
             threshold: float) -> tuple[float, float, float]:
    """Class-weighted cross-entropy, accuracy at ``threshold`` and AUC (NaN when undefined)."""
    target = torch.from_numpy(y)
    loss = float(nn.functional.cross_entropy(logits, target, weight=weight)) if y.size else \
        float("nan")
    p = torch.softmax(logits, 1)[:, 1].numpy()
    acc = float(np.mean((p > threshold) == y)) if y.size else float("nan")
    auc = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else float("nan")
    return loss, acc, auc
