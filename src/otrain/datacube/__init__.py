"""The datacube: the one data type that flows through otrain.

A datacube holds ``N`` candidate cutouts as images of shape ``(N, C, H, W)`` (float32, channels
first) plus a per-candidate table (astropy :class:`~astropy.table.Table`) with at least the columns
``candid`` and ``label`` (1 real, 0 bogus, -1 unknown).

Storage is one HDF5 file (:mod:`~otrain.datacube.hdf5`)::

    /images            float32 (N, C, H, W), chunked along N, appended in batches
    /table/<column>    one 1-D dataset per table column (numbers, booleans or UTF-8 strings)
    attrs              format="otrain-datacube", format_version, channels (JSON),
                       otrain_version, provenance (JSON)

Images are read lazily, so a cube larger than memory can be trained on and scored. The original
O'TRAIN ``.npz`` cubes open transparently with :func:`open_datacube` (:mod:`~otrain.datacube.npz`);
the old magnitude sentinels ``99``/``-99`` become NaN.
"""

from otrain.datacube.cube import BOGUS, FORMAT_NAME, FORMAT_VERSION, REAL, UNKNOWN, Datacube
from otrain.datacube.hdf5 import DatacubeWriter, open_datacube, write_datacube, write_subset
from otrain.datacube.npz import load_npz

__all__ = [
    "BOGUS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "REAL",
    "UNKNOWN",
    "Datacube",
    "DatacubeWriter",
    "load_npz",
    "open_datacube",
    "write_datacube",
    "write_subset",
]
