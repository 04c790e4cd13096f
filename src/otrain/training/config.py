"""Settings of one training: :class:`TrainConfig` (the defaults of ``otrain-train``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from otrain.errors import OtrainError
from otrain.models.networks import available_architectures
from otrain.models.normalise import AUTO, TRAIN_METHODS

__all__ = ["LR_SCHEDULES", "TrainConfig", "epoch_lr"]

#: Learning-rate schedules of :class:`TrainConfig`.
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Settings of one training (defaults follow ``otrain-train``)."""

    #: Maximum number of epochs (with ``resume``: the total to reach).
    epochs: int = 10
    #: Fraction of the labelled cutouts for validation (early stopping, metrics).
    val_frac: float = 0.15
    #: Fraction held out as a test set (0: none).
    test_frac: float = 0.15
    #: Rate of every dropout layer.
    dropout: float = 0.3
    #: P(real) above which a cutout counts as real (accuracies, metrics; stored in the model).
    threshold: float = 0.5
    #: Seeds the split, initial weights, shuffling, augmentation and dropout.
    seed: int = 0
    batch_size: int = 128
    #: Adam learning rate (the starting one with a cosine schedule).
    lr: float = 1e-3
    #: ``"constant"``, or ``"cosine"``: the learning rate of epoch ``e`` (1-based) is
    #: ``lr * (1 + cos(pi * (e - 1) / epochs)) / 2``, falling from ``lr`` towards 0.
    lr_schedule: str = "constant"
    #: Network name (:func:`otrain.models.available_architectures`).
    arch: str = "otrain"
    #: Per-cutout scaling (:mod:`otrain.models.normalise`), recorded in the model file; ``"auto"``:
    #: ``l2`` for alert and multi-channel cubes, ``zscore`` otherwise.
    normalise: str = AUTO
    #: Random flips and 90-degree rotations of the training cutouts.
    augment: bool = True
    #: Weight the loss by the inverse class frequency of the training set ("balanced").
    class_weights: bool = True
    #: Stop after this many epochs without a lower validation loss (None: never).
    patience: int | None = 5
    #: Model file whose weights start the training (fine-tuning); same network, channels and
    #: input size as this cube needs. None: fresh weights from ``seed``.
    init_from: str | None = None
    #: Table column whose values never straddle two parts of the split (e.g. ``objectId``).
    group_by: str | None = None
    #: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    device: str = "auto"
    #: Continue from the model folder's ``checkpoint.pt``.
    resume: bool = False
    #: DataLoader processes preparing batches (helps with large HDF5 cubes read lazily).
    workers: int = 0
    #: Split rows whose images fit in this many GB are held in memory, others read lazily.
    memory_limit_gb: float = 2.0
    #: Local processes training together (DDP); 1: this process alone, or the process group
    #: of a torchrun launch.
    nproc: int = 1
    #: Members of a deep ensemble (1: one network). Member ``i`` uses seed ``seed + i``
    #: (:mod:`otrain.training.ensemble`).
    ensemble: int = 1
    #: Ensemble members early-stop on their own grouped split of the training rows (True) or
    #: all on the shared validation rows (False).
    member_splits: bool = True
    #: Fit temperature scaling on the validation rows after training (stored in the model).
    calibrate: bool = True
    #: Choose the stored threshold on the validation rows (calibrated scores) so that their
    #: false-negative rate is at most this (excludes ``threshold`` and ``target_fpr``).
    target_fnr: float | None = None
    #: As ``target_fnr``, for the false-positive rate.
    target_fpr: float | None = None

    def validate(self) -> None:
        """Raise :class:`~otrain.errors.OtrainError` for out-of-range settings."""
        if self.epochs < 1:
            raise OtrainError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise OtrainError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise OtrainError(f"learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.threshold <= 1.0:
            raise OtrainError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise OtrainError(f"unknown learning-rate schedule '{self.lr_schedule}'; choose "
                              f"from {', '.join(LR_SCHEDULES)}")
        if self.patience is not None and self.patience < 1:
            raise OtrainError(f"patience must be at least 1 epoch, got {self.patience}")
        if self.workers < 0:
            raise OtrainError(f"workers must be >= 0, got {self.workers}")
        if self.nproc < 1:
            raise OtrainError(f"nproc must be at least 1, got {self.nproc}")
        if self.ensemble < 1:
            raise OtrainError(f"ensemble must have at least 1 member, got {self.ensemble}")
        for name in ("target_fnr", "target_fpr"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise OtrainError(f"{name.replace('_', ' ')} must be in [0, 1), got {value}")
        if self.target_fnr is not None and self.target_fpr is not None:
            raise OtrainError("give a target FNR or a target FPR, not both")
        if (self.target_fnr is not None or self.target_fpr is not None) and \
                self.threshold != 0.5:
            raise OtrainError("give a threshold or a target FNR / FPR, not both")
        if self.arch not in available_architectures():
            raise OtrainError(f"unknown architecture '{self.arch}'; choose from "
                              f"{', '.join(available_architectures())}")
        if self.normalise not in TRAIN_METHODS:
            raise OtrainError(f"unknown normalisation '{self.normalise}'; choose from "
                              f"{', '.join(TRAIN_METHODS)}")


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (1-based) under ``config.lr_schedule``.

    It depends on the epoch number alone, so a resumed run (same ``epochs``) follows the schedule
    of an uninterrupted one; resuming with more ``epochs`` stretches a cosine schedule.
    """
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
    return config.lr
