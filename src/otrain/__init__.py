"""otrain: real/bogus classification of transient candidates in image cutouts.

The package follows the data through the pipeline::

    cutouts (FITS) / alerts (Avro) -> datacube -> models + training -> inference -> evaluation

Every command-line tool in :mod:`otrain.cli` is a thin layer over the functions documented here.
"""

from otrain._version import __version__
from otrain.errors import OtrainError

__all__ = ["OtrainError", "__version__"]
