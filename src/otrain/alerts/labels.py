"""Labels for alerts: a threshold on a score column, or a ``candid,label`` CSV file.

Public alerts carry no human labels, only machine scores (ZTF ``rb``, ``drb``; Rubin
``reliability``, read into ``drb``). Labelling from a score teaches the network to imitate that
score, so an evaluation against it is circular; a CSV of vetted labels avoids this.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from otrain.errors import OtrainError

REAL, BOGUS, UNKNOWN = 1, 0, -1
_WORDS = {"1": REAL, "real": REAL, "true": REAL, "0": BOGUS, "bogus": BOGUS, "false": BOGUS,
          "-1": UNKNOWN, "unknown": UNKNOWN, "": UNKNOWN}


@dataclass
class LabelRule:
    """How to label alerts: real (1), bogus (0) or unknown (-1).

    With ``from_csv`` the CSV alone decides (the score threshold is not used): alerts whose
    ``candid`` is listed get its label, the others are unknown. Otherwise the score ``column``
    decides: ``value >= real_above`` is real; ``value < bogus_below`` is bogus, and the band
    ``bogus_below <= value < real_above`` is unknown (with ``bogus_below=None``, everything below
    ``real_above`` is bogus). A NaN score (e.g. ``drb`` of the 2018 ZTF alerts) is unknown.
    Unknown alerts are left out of a training datacube by
    :func:`~otrain.convert.alerts_to_datacube`.

    Parameters
    ----------
    column : str or None, default "drb"
        Score column of the alert table (``drb``, ``rb``, ...).
    real_above : float, default 0.5
        Lowest score labelled real.
    bogus_below : float or None, default None
        Scores below this are bogus; None means ``real_above``.
    from_csv : str or Path or None, default None
        CSV file with a header and the columns ``candid`` and ``label`` (1/0/-1, or
        real/bogus/unknown, true/false).

    Examples
    --------
    >>> rule = LabelRule("drb", real_above=0.9, bogus_below=0.1)  # drop 0.1 <= drb < 0.9
    """

    column: str | None = "drb"
    real_above: float = 0.5
    bogus_below: float | None = None
    from_csv: str | Path | None = None
    _csv_labels: dict[str, int] | None = field(default=None, init=False, repr=False,
                                               compare=False)

    def __post_init__(self) -> None:
        if self.from_csv is None and not self.column:
            raise OtrainError("a label rule needs a score column or a CSV file of labels")
        if self.bogus_below is not None and self.bogus_below > self.real_above:
            raise OtrainError(f"bogus_below ({self.bogus_below}) must not exceed real_above "
                              f"({self.real_above})")

    def describe(self) -> str:
        """One line saying how labels are given (recorded in the datacube provenance)."""
        if self.from_csv is not None:
            return f"labels from {self.from_csv} (candid,label); unlisted alerts unknown"
        if self.bogus_below is None or self.bogus_below == self.real_above:
            return f"real if {self.column} >= {self.real_above}, else bogus; NaN unknown"
        return (f"real if {self.column} >= {self.real_above}, bogus if {self.column} < "
                f"{self.bogus_below}, unknown between and for NaN")

    def apply(self, table: Any) -> np.ndarray:
        """Labels of the rows of an alert table.

        Parameters
        ----------
        table : astropy.table.Table or mapping of str to array
            Needs ``candid`` (with ``from_csv``) or the score ``column``.

        Returns
        -------
        numpy.ndarray
            int64 labels: 1 real, 0 bogus, -1 unknown (to be dropped for training).

        Raises
        ------
        OtrainError
            If the needed column is missing or the CSV file is unusable.
        """
        names = table.colnames if hasattr(table, "colnames") else list(table)
        if self.from_csv is not None:
            if "candid" not in names:
                raise OtrainError("alert table has no 'candid' column to match the label CSV")
            labels = self._load_csv()
            return np.array([labels.get(str(c), UNKNOWN) for c in np.asarray(table["candid"])],
                            dtype=np.int64)
        if self.column not in names:
            raise OtrainError(f"alert table has no '{self.column}' column to label from "
                              f"(columns: {', '.join(names)})")
        score = np.asarray(table[self.column], dtype=np.float64)
        out = np.full(score.shape, UNKNOWN, dtype=np.int64)
        low = self.real_above if self.bogus_below is None else self.bogus_below
        with np.errstate(invalid="ignore"):
            out[score >= self.real_above] = REAL
            out[score < low] = BOGUS
        return out

    def _load_csv(self) -> dict[str, int]:
        if self._csv_labels is None:
            self._csv_labels = read_label_csv(self.from_csv)  # type: ignore[arg-type]
        return self._csv_labels


def read_label_csv(path: str | Path) -> dict[str, int]:
    """Read a ``candid,label`` CSV file.

    Parameters
    ----------
    path : str or Path
        CSV with a header row naming ``candid`` and ``label`` (other columns ignored).

    Returns
    -------
    dict
        ``candid`` (str) -> label (1, 0 or -1).

    Raises
    ------
    OtrainError
        If the file is missing, lacks the columns, holds an unknown label or gives one candid
        two different labels.
    """
    path = Path(path)
    if not path.is_file():
        raise OtrainError("no such label CSV file", path)
    labels: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        if "candid" not in fields or "label" not in fields:
            raise OtrainError("label CSV needs a header with 'candid' and 'label' columns", path)
        reader.fieldnames = fields
        for line, row in enumerate(reader, start=2):
            candid = (row.get("candid") or "").strip()
            word = (row.get("label") or "").strip().lower()
            if not candid:
                continue
            if word not in _WORDS:
                raise OtrainError(f"line {line}: label {word!r} is not 1/0/-1 or "
                                  "real/bogus/unknown", path)
            label = _WORDS[word]
            if labels.get(candid, label) != label:
                raise OtrainError(f"line {line}: candid {candid} labelled twice, differently",
                                  path)
            labels[candid] = label
    return labels


def label_counts(labels: np.ndarray) -> Mapping[str, int]:
    """Counts of real, bogus and unknown labels."""
    labels = np.asarray(labels)
    return {"real": int(np.sum(labels == REAL)), "bogus": int(np.sum(labels == BOGUS)),
            "unknown": int(np.sum(labels == UNKNOWN))}
