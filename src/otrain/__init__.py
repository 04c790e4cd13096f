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

from otrain.errors import OtrainError

__all__ = ["OtrainError", "__version__"]
