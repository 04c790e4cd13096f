"""otrain: real/bogus classification of transient candidates in image cutouts.

The package follows the data through the pipeline::

    cutouts (FITS) / alerts (Avro) -> datacube -> models + training -> inference -> evaluation

Every command-line tool in :mod:`otrain.cli` is a thin layer over the functions documented here.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("otrain")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

from typing import Any

from otrain.errors import OtrainError

__all__ = ["OtrainError", "__version__", "load_model", "score_alerts", "score_stamps"]

#: Stream-step API (:mod:`otrain.stream_api`), imported on first use so ``import otrain`` stays
#: cheap (no torch) and free of import cycles.
_LAZY = {"load_model": "otrain.stream_api", "score_alerts": "otrain.stream_api",
         "score_stamps": "otrain.stream_api"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'otrain' has no attribute {name!r}")
