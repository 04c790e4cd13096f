"""Settings of one training: :class:`TrainConfig` (the defaults of ``otrain-train``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from otrain.errors import OtrainError
from otrain.models.networks import available_architectures
from otrain.models.normalise import AUTO, TRAIN_METHODS, resolve_method
from otrain.models.precision import PRECISIONS

__all__ = ["AUTO_MAX_EPOCHS", "AUTO_MIN_EPOCHS", "AUTO_PATIENCE_STEPS", "AUTO_STEPS",
           "AUTO_TARGET_FPR", "EPOCH_THRESHOLD", "LR_SCHEDULES", "TrainConfig", "auto_schedule",
           "epoch_lr", "epoch_threshold", "resolve_for_cube",
           "resolve_schedule"]

#: Learning-rate schedules of :class:`TrainConfig`.
LR_SCHEDULES = ("constant", "cosine")
#: ``epochs="auto"``: at most this many optimiser steps ...
AUTO_STEPS = 3000
#: ... but never fewer epochs than O'TRAIN's default, nor more than this many.
AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 10, 200
#: ``patience="auto"``: stop after this many optimiser steps' worth of epochs (at least 5
#: epochs) without a lower validation loss.
AUTO_PATIENCE_STEPS = 400
#: Network of ``arch="auto"`` for cubes made from survey alerts (benchmarks/ztf.py: vgg6 beat the
#: O'TRAIN network on every ZTF configuration at a third of the cost); other cubes keep O'TRAIN's.
ALERT_ARCH, CUTOUT_ARCH = "vgg6", "otrain"
#: ``threshold="auto"``: the stored threshold is the one of best MCC among those whose
#: false-positive rate on the (calibrated) validation rows is at most this. With calibrated
#: P(real) on a set where bogus cutouts are the minority (public ZTF alerts: 11%), ``P > 0.5``
#: calls about half of them real (benchmarks/ztf_recalibrate.py); a threshold held to an FPR
#: keeps the rate known.
AUTO_TARGET_FPR = 0.1
#: Threshold of the per-epoch training / validation accuracies when ``threshold="auto"``.
EPOCH_THRESHOLD = 0.5


@dataclass
class TrainConfig:
    """Settings of one training (defaults follow ``otrain-train``)."""

    #: Maximum number of epochs (with ``resume``: the total to reach). ``"auto"``: a budget of
    #: :data:`AUTO_STEPS` optimiser steps, at least 10 and at most 200 epochs
    #: (:func:`auto_schedule`), with early stopping on the validation loss.
    epochs: int | str = AUTO
    #: Fraction of the labelled cutouts for validation (early stopping, metrics).
    val_frac: float = 0.15
    #: Fraction held out as a test set (0: none).
    test_frac: float = 0.15
    #: Rate of every dropout layer.
    dropout: float = 0.3
    #: P(real) above which a cutout counts as real (metrics; stored in the model). ``"auto"``:
    #: the best validation MCC among thresholds of validation FPR <= :data:`AUTO_TARGET_FPR`
    #: (0.5 with a note when they hold no bogus row); ``target_fnr`` / ``target_fpr`` choose it
    #: for another target.
    threshold: float | str = AUTO
    #: Seeds the split, initial weights, shuffling, augmentation and dropout.
    seed: int = 0
    batch_size: int = 32
    #: Adam learning rate (the starting one with a cosine schedule).
    lr: float = 1e-3
    #: ``"constant"``, or ``"cosine"``: the learning rate of epoch ``e`` (1-based) is
    #: ``lr * (1 + cos(pi * (e - 1) / epochs)) / 2``, falling from ``lr`` towards 0.
    lr_schedule: str = "constant"
    #: Network name (:func:`otrain.models.available_architectures`); ``"auto"``: ``vgg6`` for cubes
    #: made from survey alerts, the O'TRAIN network otherwise (:func:`resolve_for_cube`).
    arch: str = AUTO
    #: Per-cutout scaling (:mod:`otrain.models.normalise`), recorded in the model file; ``"auto"``:
    #: ``l2`` for alert and multi-channel cubes, ``zscore`` otherwise.
    normalise: str = AUTO
    #: Random flips and 90-degree rotations of the training cutouts.
    augment: bool = True
    #: Weight the loss by the inverse class frequency of the training set ("balanced").
    class_weights: bool = True
    #: Stop after this many epochs without a lower validation loss (None: never). ``"auto"``:
    #: :data:`AUTO_PATIENCE_STEPS` optimiser steps' worth of epochs, at least 5, with
    #: ``epochs="auto"``; 5 epochs with a given number of epochs.
    patience: int | str | None = AUTO
    #: Model file whose weights start the training (fine-tuning); same network, channels and
    #: input size as this cube needs. None: fresh weights from ``seed``.
    init_from: str | None = None
    #: Table column whose values never straddle two parts of the split (e.g. ``objectId``).
    group_by: str | None = None
    #: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    device: str = "auto"
    #: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA) for the training steps and the
    #: validation passes (:mod:`otrain.models.precision`; the weights stay fp32). The API
    #: default is fp32 (bit-reproducible as before); ``otrain-train`` defaults to auto.
    precision: str = "fp32"
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
    #: Calibrate after training (stored in the model): with class weights, the prior correction
    #: ``logit_bias = log(n_real / n_bogus)`` of the training rows, then a temperature fitted
    #: on the validation rows (:mod:`otrain.training.ensemble`).
    calibrate: bool = True
    #: Choose the stored threshold on the validation rows (calibrated scores) so that their
    #: false-negative rate is at most this (excludes ``threshold`` and ``target_fpr``).
    target_fnr: float | None = None
    #: As ``target_fnr``, for the false-positive rate.
    target_fpr: float | None = None

    @property
    def epoch_threshold(self) -> float:
        """Threshold of the per-epoch accuracies (:func:`epoch_threshold`)."""
        return epoch_threshold(self.threshold)

    def validate(self) -> None:
        """Raise :class:`~otrain.errors.OtrainError` for out-of-range settings."""
        if self.epochs != AUTO and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise OtrainError(f"epochs must be 'auto' or at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise OtrainError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise OtrainError(f"learning rate must be positive, got {self.lr}")
        if self.threshold != AUTO and (isinstance(self.threshold, str)
                                       or not 0.0 <= self.threshold <= 1.0):
            raise OtrainError(f"threshold must be 'auto' or in [0, 1], got {self.threshold}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise OtrainError(f"unknown learning-rate schedule '{self.lr_schedule}'; choose "
                              f"from {', '.join(LR_SCHEDULES)}")
        if self.patience not in (None, AUTO) and (not isinstance(self.patience, int)
                                                  or self.patience < 1):
            raise OtrainError(f"patience must be 'auto' or at least 1 epoch, got "
                              f"{self.patience}")
        if self.workers < 0:
            raise OtrainError(f"workers must be >= 0, got {self.workers}")
        if self.precision not in PRECISIONS:
            raise OtrainError(f"unknown precision '{self.precision}'; choose from "
                              f"{', '.join(PRECISIONS)}")
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
                self.threshold != AUTO:
            raise OtrainError("give a threshold or a target FNR / FPR, not both")
        if self.arch != AUTO and self.arch not in available_architectures():
            raise OtrainError(f"unknown architecture '{self.arch}'; choose from auto, "
                              f"{', '.join(available_architectures())}")
        if self.normalise not in TRAIN_METHODS:
            raise OtrainError(f"unknown normalisation '{self.normalise}'; choose from "
                              f"{', '.join(TRAIN_METHODS)}")


def auto_schedule(n_train: int, batch_size: int) -> tuple[int, int]:
    """Epoch cap and patience of ``epochs="auto"`` for ``n_train`` training cutouts.

    A fixed number of epochs gives a small cube few optimiser steps (O'TRAIN's 10 epochs of ~830
    ZTF alerts in batches of 128 are 70 steps, and scored AUC 0.69 on unseen alerts), so the
    budget is counted in steps: at most :data:`AUTO_STEPS` steps, clipped to
    [:data:`AUTO_MIN_EPOCHS`, :data:`AUTO_MAX_EPOCHS`] epochs; training stops earlier once
    :data:`AUTO_PATIENCE_STEPS` steps' worth of epochs (at least 5) bring no lower validation
    loss, and the best epoch is kept.

    Returns
    -------
    (int, int)
        The maximum number of epochs and the patience in epochs.
    """
    steps_per_epoch = max(1, math.ceil(n_train / batch_size))
    cap = min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, math.ceil(AUTO_STEPS / steps_per_epoch)))
    patience = max(5, math.ceil(AUTO_PATIENCE_STEPS / steps_per_epoch))
    return cap, min(patience, cap)


def resolve_schedule(config: TrainConfig, n_train: int) -> TrainConfig:
    """``config`` with ``epochs`` and ``patience`` made concrete for ``n_train`` training rows.

    ``epochs="auto"`` takes both from :func:`auto_schedule` (a given ``patience`` is kept); a
    given number of epochs means exactly that maximum, with a patience of 5 unless given.
    """
    if config.epochs == AUTO:
        cap, patience = auto_schedule(n_train, config.batch_size)
        return replace(config, epochs=cap,
                       patience=patience if config.patience == AUTO else config.patience)
    return replace(config, patience=5 if config.patience == AUTO else config.patience)


def resolve_for_cube(config: TrainConfig, channels: Sequence[str],
                     source: str | None) -> TrainConfig:
    """``config`` with ``arch`` and ``normalise`` made concrete for a cube.

    ``arch="auto"`` is ``vgg6`` for cubes made from survey alerts (provenance ``source ==
    "alerts"``) and the O'TRAIN network otherwise; ``normalise="auto"`` follows
    :func:`otrain.models.normalise.resolve_method`.
    """
    arch = config.arch if config.arch != AUTO else (ALERT_ARCH if source == "alerts"
                                                     else CUTOUT_ARCH)
    return replace(config, arch=arch,
                   normalise=resolve_method(config.normalise, channels, source))


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (1-based) under ``config.lr_schedule``.

    It depends on the epoch number alone, so a resumed run (same ``epochs``) follows the schedule
    of an uninterrupted one; resuming with more ``epochs`` stretches a cosine schedule.
    """
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
    return config.lr


def epoch_threshold(threshold: float | str) -> float:
    """Threshold of the per-epoch accuracies: the given one, else :data:`EPOCH_THRESHOLD`
    (the stored threshold of ``"auto"`` is chosen only after training)."""
    return EPOCH_THRESHOLD if threshold == AUTO else float(threshold)
