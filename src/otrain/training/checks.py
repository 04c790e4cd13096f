"""Checks of a training run that are not the loop itself: a diverging loss, the number of
loader processes."""

from __future__ import annotations

import os

import numpy as np

from otrain.errors import OtrainError
from otrain.progress import info
from otrain.training.config import TrainConfig


def check_finite(value: float, what: str, epoch: int, config: TrainConfig) -> None:
    """A NaN or infinite loss means the training diverged: stop with one line, not a model."""
    if not np.isfinite(value):
        raise OtrainError(f"training diverged at epoch {epoch}: the {what} is not finite (NaN "
                          f"or inf); lower the learning rate (--lr {config.lr:g}); no model "
                          "file was written")


def loader_workers(workers: int, quiet: bool) -> int:
    """``--workers``, capped at the number of cores (more only add start-up and memory)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    if workers > cores:
        info(f"note: --workers {workers} capped at {cores}, the number of cores", quiet)
        return cores
    return workers
