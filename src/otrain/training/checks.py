"""Checks of a training run that are not the loop itself: a fresh output folder, the model to
start from, a diverging loss, the number of loader processes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import nn

from otrain.datacube.cube import Datacube
from otrain.errors import OtrainError
from otrain.models.modelfile import load_model
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


def check_fresh(model_path: str | Path, model_name: str, config: TrainConfig,
                 overwrite: bool) -> Path:
    """The model folder, after refusing to replace an earlier model without ``overwrite``."""
    if not model_name or Path(model_name).name != model_name:
        raise OtrainError(f"model name must be a plain file name, got '{model_name}'")
    root = Path(model_path) / "CNN_training" / model_name
    if not config.resume and not overwrite:
        if (root / f"{model_name}.safetensors").exists():
            raise OtrainError("already exists; pass --overwrite to replace it or --resume to "
                              "continue its training", root / f"{model_name}.safetensors")
        if (root / "checkpoint.pt").exists() or any(root.glob("checkpoint_member*.pt")):
            raise OtrainError("holds an earlier, possibly unfinished training (checkpoint.pt); "
                              "pass --resume to continue it or --overwrite to start again", root)
    return root


def start_from(net: nn.Module, config: TrainConfig, cube: Datacube) -> None:
    """Copy the weights of the model file ``config.init_from`` into ``net`` (fine-tuning)."""
    source = load_model(config.init_from, "cpu")
    source.check_input(cube.channels, cube.image_shape[1:])
    if source.meta["architecture"] != config.arch:
        raise OtrainError(f"holds a '{source.meta['architecture']}' network, not the "
                          f"'{config.arch}' asked for (pass --arch "
                          f"{source.meta['architecture']})", config.init_from)
    net.load_state_dict(source.model.state_dict())
