"""Scoring on a Dask cluster: the client (:mod:`~otrain.inference.dask.client`: plans,
ordered results, the table) and the tasks its workers run (:mod:`~otrain.inference.dask.worker`).
"""

from otrain.inference.dask.client import (
    infer_distributed,
    iter_distributed_scores,
    score_distributed,
)

__all__ = [
    "infer_distributed",
    "iter_distributed_scores",
    "score_distributed",
]
