"""Into a datacube: labelled cutout folders (``true/``, ``false/``), survey alert packets, and
alert packets to O'TRAIN-style FITS cutouts; on one machine or on a Dask cluster
(:mod:`otrain.convert.dask`, needs ``otrain[dask]``).

The names are imported on first use, so converting cutout folders does not pay for the alert
readers (fastavro, astropy.table's alert columns): ``otrain-convert --cutouts`` starts ~0.3 s
sooner.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and readers; at run time, __getattr__ below
    from otrain.convert.alerts import (
        AlertConvertReport,
        alerts_to_datacube,
        check_label_rule,
        convert_alerts,
    )
    from otrain.convert.fits_export import FitsExportReport, alerts_to_fits
    from otrain.convert.folders import (
        ConvertConfig,
        ConvertReport,
        balanced_choice,
        class_counts,
        convert_cutouts,
        datacube_path,
    )

_WHERE = {
    "otrain.convert.alerts": ("AlertConvertReport", "alerts_to_datacube", "check_label_rule",
                              "convert_alerts"),
    "otrain.convert.fits_export": ("FitsExportReport", "alerts_to_fits"),
    "otrain.convert.folders": ("ConvertConfig", "ConvertReport", "balanced_choice",
                               "class_counts", "convert_cutouts", "datacube_path"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

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


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module 'otrain.convert' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
