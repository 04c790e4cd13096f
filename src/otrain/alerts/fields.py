"""Alert records (ZTF or Rubin, any schema version) mapped onto otrain's table columns.

A record is the ``dict`` fastavro or pyarrow gives for one alert. ZTF records carry a
``candidate`` record (IPAC schema 1.8 to 4.02, or the Fink Spark-rewritten variants where every
field is nullable); a flat record holding ``magpsf`` etc. at top level, as some parquet exports
have, is read the same way. Rubin records (lsst-alert-packet schemas) carry ``diaSource``.

Rubin mapping: ``psfFlux``/``psfFluxErr`` (nJy) become an AB magnitude of the absolute flux,
``31.4 - 2.5 log10(|psfFlux|)``, and its error ``1.0857 psfFluxErr / |psfFlux|`` (ZTF's ``magpsf``
is also the magnitude of the absolute difference flux); ``isdiffpos`` is ``"f"`` for a negative
flux (or ``isNegative``); ``band`` becomes ``filter``; ``midpointMjdTai + 2400000.5`` becomes
``jd``; the machine-learning ``reliability`` score goes into ``drb`` (the deep real/bogus score
column, so one :class:`~otrain.alerts.LabelRule` serves both surveys) and ``rb``, ``fwhm`` and
``programid`` are missing.
"""

from __future__ import annotations

import math
from typing import Any

#: Table columns of an alert datacube, in order, with their numpy dtype.
COLUMNS: dict[str, str] = {
    "candid": "U", "label": "i8", "objectId": "U", "mag": "f8", "magerr": "f8", "filter": "U",
    "fwhm": "f8", "ra": "f8", "dec": "f8", "xpos": "f8", "ypos": "f8", "isdiffpos": "U",
    "rb": "f8", "drb": "f8", "jd": "f8", "programid": "i8", "file": "U", "source_file": "U",
    "edge": "?", "n_nan": "i8",
}
#: Channel name -> stamp field of the alert record.
CHANNEL_FIELDS = {"diff": "cutoutDifference", "sci": "cutoutScience", "ref": "cutoutTemplate"}
#: Full stamp size of ZTF alerts; smaller stamps were cut by a CCD edge.
ZTF_STAMP_SIZE = 63
_ZTF_FILTERS = {1: "g", 2: "r", 3: "i"}
_NJY_AB_ZEROPOINT = 31.4
_MAG_PER_FLUX_RATIO = 2.5 / math.log(10.0)


class RecordError(ValueError):
    """A record that is not a usable alert (no candidate, no id)."""


def _num(value: Any) -> float:
    """A float, NaN for null / non-numeric."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _int(value: Any, missing: int = -1) -> int:
    try:
        return int(value) if value is not None else missing
    except (TypeError, ValueError):
        return missing


def _first(*values: Any) -> Any:
    """The first value that is not None (fields present but null in a merged schema)."""
    return next((v for v in values if v is not None), None)


def _id(value: Any) -> str:
    """An identifier as text (integers without a decimal point)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    try:
        return str(int(value))
    except (TypeError, ValueError):
        raise RecordError(f"unusable candidate id {value!r}") from None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def is_rubin(record: dict[str, Any]) -> bool:
    """True for a Rubin (lsst-alert-packet) record, which carries ``diaSource``."""
    return "diaSource" in record


def stamp_bytes(record: dict[str, Any], channel: str) -> bytes | None:
    """The stamp bytes of ``channel`` (``diff``, ``sci``, ``ref``), None when absent or empty.

    ZTF stores ``{"fileName", "stampData"}``; Rubin stores the FITS bytes directly.
    """
    value = record.get(CHANNEL_FIELDS[channel])
    if isinstance(value, dict):
        value = value.get("stampData")
    if value is None or not isinstance(value, (bytes, bytearray, memoryview)) or len(value) == 0:
        return None
    return value  # type: ignore[return-value]


def native_stamp_size(record: dict[str, Any]) -> int | None:
    """Full stamp size of the survey (63 for ZTF), None when stamps vary (Rubin)."""
    return None if is_rubin(record) else ZTF_STAMP_SIZE


def record_row(record: dict[str, Any]) -> dict[str, Any]:
    """Map one alert record onto the table columns (without file, label, edge, n_nan).

    Parameters
    ----------
    record : dict
        A ZTF or Rubin alert record.

    Returns
    -------
    dict
        Values for ``candid``, ``objectId``, ``mag``, ``magerr``, ``filter``, ``fwhm``, ``ra``,
        ``dec``, ``xpos``, ``ypos``, ``isdiffpos``, ``rb``, ``drb``, ``jd``, ``programid``.

    Raises
    ------
    RecordError
        If the record has no candidate / diaSource or no candidate id.
    """
    return _rubin_row(record) if is_rubin(record) else _ztf_row(record)


def _ztf_row(record: dict[str, Any]) -> dict[str, Any]:
    cand = record.get("candidate", record)
    if not isinstance(cand, dict):
        raise RecordError("record has no 'candidate'")
    candid = _first(cand.get("candid"), record.get("candid"))
    if candid is None:
        raise RecordError("record has no 'candid'")
    isdiffpos = _text(cand.get("isdiffpos")).strip().lower()
    return {
        "candid": _id(candid),
        "objectId": _text(_first(record.get("objectId"), cand.get("objectId"))),
        "mag": _num(cand.get("magpsf")),
        "magerr": _num(cand.get("sigmapsf")),
        "filter": _ZTF_FILTERS.get(_int(cand.get("fid")), ""),
        "fwhm": _num(cand.get("fwhm")),
        "ra": _num(cand.get("ra")),
        "dec": _num(cand.get("dec")),
        "xpos": _num(cand.get("xpos")),
        "ypos": _num(cand.get("ypos")),
        "isdiffpos": {"1": "t", "0": "f", "true": "t", "false": "f"}.get(isdiffpos, isdiffpos),
        "rb": _num(cand.get("rb")),
        "drb": _num(cand.get("drb")),
        "jd": _num(cand.get("jd")),
        "programid": _int(cand.get("programid")),
    }


def _rubin_row(record: dict[str, Any]) -> dict[str, Any]:
    src = record.get("diaSource")
    if not isinstance(src, dict):
        raise RecordError("Rubin record has no 'diaSource'")
    candid = _first(src.get("diaSourceId"), record.get("diaSourceId"))
    if candid is None:
        raise RecordError("Rubin record has no 'diaSourceId'")
    obj = record.get("diaObject") if isinstance(record.get("diaObject"), dict) else {}
    object_id = _first(obj.get("diaObjectId"), src.get("diaObjectId"), src.get("ssObjectId"))
    flux = _num(_first(src.get("psfFlux"), src.get("psFlux")))  # psFlux: schemas before 5.0
    flux_err = _num(_first(src.get("psfFluxErr"), src.get("psFluxErr")))
    mag = magerr = math.nan
    if flux and math.isfinite(flux):  # non-zero, finite
        mag = _NJY_AB_ZEROPOINT - 2.5 * math.log10(abs(flux))
        magerr = _MAG_PER_FLUX_RATIO * flux_err / abs(flux)
    negative = src.get("isNegative")
    if negative is None:
        negative = flux < 0 if flux == flux else None
    mjd = _num(_first(src.get("midpointMjdTai"), src.get("midPointTai")))
    return {
        "candid": _id(candid),
        "objectId": "" if object_id is None else str(object_id),
        "mag": mag,
        "magerr": magerr,
        "filter": _text(_first(src.get("band"), src.get("filterName"))),
        "fwhm": math.nan,
        "ra": _num(src.get("ra")),
        "dec": _num(_first(src.get("dec"), src.get("decl"))),
        "xpos": _num(src.get("x")),
        "ypos": _num(src.get("y")),
        "isdiffpos": "" if negative is None else ("f" if negative else "t"),
        "rb": math.nan,
        "drb": _num(src.get("reliability")),
        "jd": mjd + 2400000.5,
        "programid": -1,
    }
