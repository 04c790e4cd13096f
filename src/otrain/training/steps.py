"""One epoch of optimiser steps, with large batches cut into cache-sized chunks on the CPU.

A step's gradient is that of the class-weighted mean loss of its whole batch. On the CPU a batch
larger than :data:`CPU_CHUNK` cutouts is run through the network (forward and backward) in chunks
of at most :data:`CPU_CHUNK`, each chunk's weighted loss sum divided by the weight of the whole
batch, the gradients accumulated, then one optimiser step: the same step as one pass over the
whole batch up to float summation order (the networks have no batch statistics; dropout masks
are drawn per chunk, from the same seeded generator). Without chunks the activations of a batch
of 1024 32x32 cutouts (~130 MB in bf16 for the first layers) spill out of the CPU caches and
every elementwise layer waits on memory: batch 1024 took 1.18x as long per cutout as batch 128;
in chunks of 128 it is faster per cutout than batch 128, having 8x fewer optimiser steps
(README, Benchmarks). GPUs take the whole batch at once.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import DataLoader

from otrain.models.precision import TrainPrecision, resolve_precision
from otrain.progress import Progress

__all__ = ["CPU_CHUNK", "chunk_size", "train_epoch"]

#: Largest number of cutouts run through the network at once on the CPU (the fastest per cutout
#: of 32, 64, 128, 256 and 1024 in ``benchmarks/train_infer.py``'s sweep on 32x32 cutouts).
CPU_CHUNK = 128


def chunk_size(dev: torch.device, batch_size: int) -> int:
    """Cutouts per forward/backward pass: :data:`CPU_CHUNK` at most on the CPU, else the batch."""
    return min(batch_size, CPU_CHUNK) if torch.device(dev).type == "cpu" else batch_size


def train_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                weight: torch.Tensor, dev: torch.device, threshold: float, bar: Progress,
                shares: list[tuple[float, float]] | None = None,
                prec: TrainPrecision | None = None,
                chunk: int | None = None) -> tuple[float, int, int]:
    """One pass over ``loader``, one optimiser step per batch.

    Parameters
    ----------
    model : torch.nn.Module
        The network (DDP-wrapped with several processes), in any mode: set to training mode.
    loader : DataLoader
        Batches ``(images, labels)``.
    opt : torch.optim.Optimizer
        Steps once per batch.
    weight : torch.Tensor
        Class weights of the cross-entropy loss, ``(2,)``.
    dev : torch.device
        Where the network is.
    threshold : float
        P(real) above which a prediction counts as real (training accuracy).
    bar : Progress
        Advanced once per batch.
    shares : list of (float, float), optional
        Several processes: per batch, the factor turning this rank's weighted loss sum into its
        share of the global batch mean (x world size, as DDP averages gradients), and the factor
        turning that into this rank's part of loss x cutouts.
    prec : TrainPrecision, optional
        Autocast of the forward pass, (loss-scaled for fp16) backward pass and step; fp32 if
        not given.
    chunk : int, optional
        Cutouts per forward/backward pass (default :func:`chunk_size`).

    Returns
    -------
    tuple of (float, int, int)
        The sums over the epoch of loss x cutouts, correct predictions, and cutouts.
    """
    prec = prec or TrainPrecision(resolve_precision("fp32"), dev)
    cuda = dev.type == "cuda"
    weight = weight.to(dev)
    crit = nn.CrossEntropyLoss(weight=weight, reduction="sum")
    model.train()
    total, loss_sum, correct = 0, 0.0, 0
    for i, (xb, yb) in enumerate(loader):
        xb = xb.to(dev, non_blocking=cuda).contiguous(memory_format=torch.channels_last)
        yb = yb.to(dev, non_blocking=cuda)
        n = int(yb.shape[0])
        step = chunk or chunk_size(dev, n)
        if shares is None:
            scale, per_loss = 1.0 / float(weight[yb].sum()), float(n)
        else:
            scale, per_loss = shares[i]
        opt.zero_grad(set_to_none=True)
        starts = range(0, n, step)
        for j in starts:
            last = j == starts[-1]
            with _sync_unless(model, last):
                with prec.autocast():
                    logits = model(xb[j : j + step])
                logits = logits.float()
                yc = yb[j : j + step]
                loss = crit(logits, yc) * scale
                prec.backward(loss)
            loss_sum += float(loss.detach()) * per_loss
            pred = (torch.softmax(logits.detach(), 1)[:, 1] > threshold).long()
            correct += int((pred == yc).sum())
        prec.apply(opt)
        total += n
        bar.update(1, loss=f"{loss_sum / max(total, 1):.4f}")
    return loss_sum, correct, total


def _sync_unless(model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """DDP: no gradient all-reduce until the last chunk of a batch; otherwise nothing."""
    no_sync = getattr(model, "no_sync", None)
    return contextlib.nullcontext() if last or no_sync is None else no_sync()
