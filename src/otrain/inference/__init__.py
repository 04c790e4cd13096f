"""Scoring: cutout folders or files, datacubes and alert packets -> a scores table
(``infer_results.dat`` and friends). :mod:`~otrain.inference.scoring` holds what every path shares,
:mod:`~otrain.inference.stream` reads files in worker processes overlapped with scoring,
:mod:`~otrain.inference.alerts` scores alert packets, :mod:`otrain.inference.dask` runs the
same on a Dask cluster (needs ``otrain[dask]``).
"""

from otrain.inference.core import (
    InferResult,
    infer,
    score_alerts,
    score_cutouts,
    score_datacube,
    write_scores,
)
from otrain.inference.dask.client import infer_distributed, score_distributed
from otrain.inference.scoring import InferReport, Scorer

__all__ = [
    "InferReport",
    "InferResult",
    "Scorer",
    "infer",
    "infer_distributed",
    "score_alerts",
    "score_cutouts",
    "score_datacube",
    "score_distributed",
    "write_scores",
]
