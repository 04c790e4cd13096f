"""otrain: real/bogus classification of transient candidates in image cutouts.

The package follows the data through the pipeline::

    cutouts (FITS) / alerts (Avro) -> datacube -> models + training -> inference -> evaluation

Every command-line tool in :mod:`otrain.cli` is a thin layer over the functions documented here.
"""

from typing import Any

from otrain._version import __version__
from otrain.errors import OtrainError

__all__ = ["OtrainError", "__version__", "load_model", "score_alerts", "score_stamps"]

#: Stream-step API (:mod:`otrain.broker.stream`), imported on first use so ``import otrain`` stays
#: cheap (no torch) and free of import cycles.
_LAZY = {"load_model": "otrain.broker.stream", "score_alerts": "otrain.broker.stream",
         "score_stamps": "otrain.broker.stream"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'otrain' has no attribute {name!r}")
