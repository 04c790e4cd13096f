"""Training: settings (:class:`TrainConfig`), seeded stratified / grouped splits and batch
plans (:mod:`~otrain.training.splits`), the loop (:func:`train`), its output files and metrics
(:mod:`~otrain.training.outputs`, :mod:`~otrain.training.evaluate`) and distributed data-parallel
training (:mod:`~otrain.training.ddp`, ``--nproc`` / torchrun).
"""

from otrain.training.config import LR_SCHEDULES, TrainConfig
from otrain.training.loop import train
from otrain.training.outputs import HISTORY_COLUMNS, TrainResult
from otrain.training.splits import Split, split_indices

__all__ = [
    "HISTORY_COLUMNS",
    "LR_SCHEDULES",
    "Split",
    "TrainConfig",
    "TrainResult",
    "split_indices",
    "train",
]
