"""The scores table as other tools read it: typed columns, units, provenance, sane numbers.

Applied by :func:`otrain.inference.core.write_scores` just before writing:

* probabilities (``label0``, ``label1``) are rounded to :data:`PROB_DECIMALS` decimals. The
  softmax of float32 logits is computed in float64, so a confident bogus gets P(real) like
  ``exp(-720) = 5.87e-314``, a denormal no reader needs (astropy warns of an overflow reading it
  back); below 5e-11 a probability carries no information the network's float32 logits can give;
* candidate ids (``cand_ID``, ``candid``) become int64 when every value is an integer (ZTF and
  Rubin candids are; astropy and pandas would otherwise keep them as strings in ECSV/Parquet);
* ECSV and Parquet get units (deg, pix, mag, d) and a header naming the model file, its version,
  the threshold and the numerical precision of the forward pass.

``.dat`` keeps the O'TRAIN layout (``ascii.commented_header``): only the rounding applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.table import Table

#: Decimals kept in written probabilities.
PROB_DECIMALS = 10
PROB_COLUMNS = ("label0", "label1")
ID_COLUMNS = ("cand_ID", "candid")
#: Column -> unit, for the formats that carry units (ECSV, Parquet).
UNITS = {"RA": "deg", "Dec": "deg", "ra": "deg", "dec": "deg", "Xpos": "pix", "Ypos": "pix",
         "mag": "mag", "magerr": "mag", "FWHM": "pix", "FWHMPSF": "pix", "fwhm": "pix",
         "jd": "d"}
_INTEGER = re.compile(r"^[+-]?\d+$")


def round_probabilities(table: Table) -> Table:
    """``table`` with ``label0``/``label1`` rounded to :data:`PROB_DECIMALS` (no denormals)."""
    for name in PROB_COLUMNS:
        if name in table.colnames:
            table[name] = np.round(np.asarray(table[name], dtype=np.float64), PROB_DECIMALS)
    return table


def integer_ids(table: Table) -> Table:
    """Candidate-id columns as int64 when every value is an integer that fits (else unchanged)."""
    for name in ID_COLUMNS:
        if name not in table.colnames or len(table) == 0:
            continue
        values = np.asarray(table[name])
        if values.dtype.kind in "iu":
            table[name] = values.astype(np.int64)
            continue
        text = values.astype(str)
        if all(_INTEGER.match(v) for v in text):
            try:
                table[name] = np.array([int(v) for v in text], dtype=np.int64)
            except OverflowError:  # wider than int64: keep the strings
                pass
    return table


def provenance(model_path: str, meta: Mapping[str, Any], threshold: float | None,
               precision: str = "float32") -> dict[str, Any]:
    """The header of an ECSV / Parquet scores table: which model, threshold and precision."""
    return {"model_file": str(model_path),
            "model_otrain_version": meta.get("otrain_version"),
            "model_format_version": meta.get("format_version"),
            "model_architecture": meta.get("architecture"),
            "model_threshold": meta.get("threshold"),
            "threshold": None if threshold is None else float(threshold),
            "precision": precision,
            "label1": "P(real); label0 = P(bogus) = 1 - label1"}


def typed_for_output(table: Table, fmt: str, header: Mapping[str, Any] | None = None) -> Table:
    """A copy of ``table`` ready for astropy format ``fmt``.

    Parameters
    ----------
    table : astropy.table.Table
        The scores table.
    fmt : str
        The astropy format (``ascii.commented_header``, ``ascii.csv``, ``ascii.ecsv``,
        ``parquet``).
    header : mapping, optional
        :func:`provenance`, written into ECSV and Parquet metadata.
    """
    out = round_probabilities(table.copy(copy_data=True))
    if fmt == "ascii.commented_header":
        return out
    integer_ids(out)
    if fmt in ("ascii.ecsv", "parquet"):
        for name, unit in UNITS.items():
            if name in out.colnames and out[name].dtype.kind == "f":
                out[name].unit = unit
        if header:
            out.meta.update({k: v for k, v in header.items() if v is not None})
    return out
