"""Into a datacube: labelled cutout folders (``true/``, ``false/``), survey alert packets, and
alert packets to O'TRAIN-style FITS cutouts; on one machine or on a Dask cluster
(:mod:`otrain.convert.dask`, needs ``otrain[dask]``).
"""

from otrain.convert.alerts import (
    AlertConvertReport,
    alerts_to_datacube,
    check_label_rule,
    convert_alerts,
)
from otrain.convert.alerts_to_fits import FitsExportReport, alerts_to_fits
from otrain.convert.folders import (
    ConvertConfig,
    ConvertReport,
    balanced_choice,
    class_counts,
    convert_cutouts,
    datacube_path,
)

__all__ = [
    "AlertConvertReport",
    "ConvertConfig",
    "ConvertReport",
    "FitsExportReport",
    "alerts_to_datacube",
    "alerts_to_fits",
    "balanced_choice",
    "check_label_rule",
    "class_counts",
    "convert_alerts",
    "convert_cutouts",
    "datacube_path",
]
