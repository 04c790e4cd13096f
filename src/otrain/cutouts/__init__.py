"""FITS cutouts in: single-HDU and multi-extension files (``DIFF``/``SCI``/``REF``), header
keywords, channel selection, NaN policy, and the fast FITS parser that reads them straight
from their bytes (astropy is the fallback for anything unusual).
"""

from otrain.cutouts.fitsfile import FitsFormatError, parse_hdus, read_bytes
from otrain.cutouts.reading import (
    CUTOUT_SUFFIXES,
    DEFAULT_CHANNELS,
    EXTENSION_NAMES,
    INFERENCE_KEYWORDS,
    META_COLUMNS,
    TRAINING_KEYWORDS,
    Cutout,
    crop_center,
    find_cutouts,
    header_float,
    is_cutout_file,
    parse_channels,
    parse_edge,
    read_cutout,
)

__all__ = [
    "CUTOUT_SUFFIXES",
    "DEFAULT_CHANNELS",
    "EXTENSION_NAMES",
    "INFERENCE_KEYWORDS",
    "META_COLUMNS",
    "TRAINING_KEYWORDS",
    "Cutout",
    "FitsFormatError",
    "crop_center",
    "find_cutouts",
    "header_float",
    "is_cutout_file",
    "parse_channels",
    "parse_edge",
    "parse_hdus",
    "read_bytes",
    "read_cutout",
]
