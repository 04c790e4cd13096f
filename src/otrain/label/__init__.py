"""Labelling and vetting candidates in the browser, with active learning (``otrain label``).

:mod:`~otrain.label.store` keeps every label event in SQLite (WAL), :mod:`~otrain.label.pool`
gathers candidates from cutout folders, datacubes or alert files, :mod:`~otrain.label.ranking`
orders the unlabelled pool (uncertainty, BALD, disagreement, random, score, file),
:mod:`~otrain.label.session` is the queue, :mod:`~otrain.label.export` writes ``labels.csv`` or
``true/``/``false/`` folders, and :mod:`~otrain.label.server` is the web app (Starlette on uvicorn,
``otrain[label]``; imported only when a server is started).
"""

from otrain.label.export import agreement, export_csv, export_folders, final_labels
from otrain.label.pool import Pool, from_alerts, from_cube, from_cutouts
from otrain.label.ranking import bald, disagreement, rank, uncertainty
from otrain.label.session import LabelSession
from otrain.label.store import LabelStore

__all__ = [
    "LabelSession",
    "LabelStore",
    "Pool",
    "agreement",
    "bald",
    "disagreement",
    "export_csv",
    "export_folders",
    "final_labels",
    "from_alerts",
    "from_cube",
    "from_cutouts",
    "rank",
    "uncertainty",
]
