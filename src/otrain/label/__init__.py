"""Labelling and vetting candidates in the browser, with active learning (``otrain label``).

- :mod:`~otrain.label.store`: the SQLite database of label events (:class:`LabelStore`);
- :mod:`~otrain.label.pool`: the candidates of a cutout folder, a datacube or alert files;
- :mod:`~otrain.label.ranking`: query strategies over a matrix of P(real) draws, and the one
  adapter from a model file to that matrix (:func:`draws_from_model`, MC dropout);
- :mod:`~otrain.label.session`: one labeller's queue; :mod:`~otrain.label.server`: the page
  (Starlette, extra ``label``); :mod:`~otrain.label.export`: CSV, true/false folders, agreement.

Example
-------
>>> from otrain.label import LabelStore, export_csv
>>> with LabelStore("labels.sqlite") as store:                    # doctest: +SKIP
...     export_csv(store, "labels.csv")                           # for otrain-convert --labels
"""

from otrain.label.export import agreement, export_csv, export_folders
from otrain.label.pool import Pool, from_alerts, from_cube, from_cutouts
from otrain.label.ranking import ORDERS, bald, disagreement, draws_from_model, rank, uncertainty
from otrain.label.server import create_app
from otrain.label.session import LabelSession
from otrain.label.store import LABELS, LabelStore

__all__ = [
    "LABELS",
    "ORDERS",
    "LabelSession",
    "LabelStore",
    "Pool",
    "agreement",
    "bald",
    "create_app",
    "disagreement",
    "draws_from_model",
    "export_csv",
    "export_folders",
    "from_alerts",
    "from_cube",
    "from_cutouts",
    "rank",
    "uncertainty",
]
