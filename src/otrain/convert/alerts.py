"""Survey alerts -> datacube (what ``otrain-convert --alerts`` does).

The conversion:

1. checks the label rule (a score column of the alert table, or a ``candid,label`` CSV) before
   any decoding, so a typo fails at once;
2. decodes every alert (:func:`alerts_to_datacube`, in bounded batches) into a
   temporary cube beside the output, keeping only the alerts the rule labels (real or bogus);
   the stamp policies of :mod:`otrain.alerts` apply: stamps cut by a CCD edge are padded with
   NaN, NaN pixels are kept (the normaliser turns them into 0) and ``edge`` is true for both,
   alerts with a missing stamp or an unreadable record are skipped and counted;
3. balances the classes exactly as :func:`otrain.convert.convert_cutouts` does
   (:func:`~otrain.convert.balanced_choice`: the largest class sizes with the wanted fraction
   of real alerts, chosen at random with ``seed``), or keeps every labelled alert when
   ``frac_true`` is None;
4. copies the chosen rows (in reading order) into the final cube, deletes the temporary cube and
   writes a JSON report beside the cube (``<cube>.report.json``): the alert counts of
   :class:`~otrain.alerts.AlertReport`, the label rule, the class counts before and after
   balancing.

Unlike cutout folders, edge alerts are not excluded: 14 % of the public ZTF alerts hold NaN
pixels (always in the difference stamp), and dropping them would teach the network nothing about
the CCD edges it will meet in the stream. The ``edge`` and ``n_nan`` columns let a user filter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from otrain._version import __version__
from otrain.alerts import (
    COLUMNS,
    AlertReport,
    LabelRule,
    find_alert_files,
    read_label_csv,
)
from otrain.alerts.fields import ZTF_STAMP_SIZE
from otrain.alerts.labels import label_counts
from otrain.alerts.reading import STAMP_POLICY, check_channels, check_size, iter_alert_batches
from otrain.convert.folders import ConvertConfig, balanced_choice
from otrain.datacube.checks import duplicate_warnings
from otrain.datacube.cube import BOGUS, REAL
from otrain.datacube.hdf5 import DatacubeWriter, open_datacube, write_subset
from otrain.errors import OtrainError
from otrain.outputs import TMP_TAG, check_writable, write_text_atomic
from otrain.progress import info

PathsLike = Sequence[str | Path] | str | Path


@dataclass
class AlertConvertReport:
    """What an alert conversion read, labelled, skipped and kept.

    Attributes
    ----------
    cube : str
        The datacube written.
    inputs : list of str
        Alert files and folders given.
    label_rule : str or None
        How labels were given (:meth:`LabelRule.describe`), None for an unlabelled cube.
    frac_true : float or None
        Fraction of real alerts asked for; None keeps every labelled alert.
    n_real_labelled, n_bogus_labelled : int
        Alerts the rule labelled real / bogus (before balancing).
    n_real_kept, n_bogus_kept, n_unlabelled_kept : int
        Rows of the cube per label.
    alerts : AlertReport
        Decoding counts (padded stamps, NaN, missing stamps, unreadable, left unlabelled).
    notes : list of str
        Remarks on balancing and labels.
    """

    cube: str = ""
    inputs: list[str] = field(default_factory=list)
    label_rule: str | None = None
    frac_true: float | None = None
    n_real_labelled: int = 0
    n_bogus_labelled: int = 0
    n_real_kept: int = 0
    n_bogus_kept: int = 0
    n_unlabelled_kept: int = 0
    alerts: AlertReport = field(default_factory=AlertReport)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Lines describing the result, as printed by ``otrain-convert --alerts``."""
        n = self.n_real_kept + self.n_bogus_kept + self.n_unlabelled_kept
        head = (f"The datacube contains {n} candidates with Ntrue = {self.n_real_kept} and "
                f"Nfalse = {self.n_bogus_kept}")
        if self.n_unlabelled_kept:
            head += f" and {self.n_unlabelled_kept} unlabelled"
        lines = [head, f"alerts: {self.alerts.summary()}"]
        if self.label_rule:
            lines.append(f"labels: {self.label_rule}")
        return "\n".join(lines + self.notes)

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dictionary."""
        return asdict(self)


def alert_cutout_size(cutout_size: int) -> int:
    """Window side for alerts: ``-1`` (full size) means the ZTF stamp size, 63."""
    return ZTF_STAMP_SIZE if cutout_size == -1 else int(cutout_size)


def check_label_rule(rule: LabelRule | None) -> None:
    """Fail early on a label rule that cannot work on alert tables.

    Raises
    ------
    OtrainError
        If the score column is not an alert table column, or the CSV is missing or malformed.
    """
    if rule is None:
        return
    if rule.from_csv is not None:
        read_label_csv(rule.from_csv)
    elif rule.column not in COLUMNS:
        numeric = [c for c, kind in COLUMNS.items() if kind == "f8"]
        raise OtrainError(f"unknown label column '{rule.column}'; alert tables have the numeric "
                          f"columns {', '.join(numeric)}")


def convert_alerts(
    paths: PathsLike,
    out_path: str | Path,
    config: ConvertConfig | None = None,
    label_rule: LabelRule | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> AlertConvertReport:
    """Convert alert files (ZTF/Rubin Avro, parquet) and folders into a datacube file.

    Parameters
    ----------
    paths : path or sequence of paths
        Alert files and folders (searched recursively for ``.avro``/``.parquet``).
    out_path : str or Path
        The datacube to write (``.h5``); a ``.report.json`` is written beside it.
    config : ConvertConfig, optional
        ``channels`` (stamps to stack, e.g. ``("diff", "sci", "ref")``), ``cutout_size`` (-1:
        63, the ZTF stamp), ``frac_true`` (None keeps every labelled alert), ``seed``,
        ``strict`` (stop at the first unreadable file or record), ``batch_size``;
        ``workers`` is not used.
    label_rule : LabelRule, optional
        How alerts are labelled; alerts it leaves unknown are not written. Without a rule every
        alert is written unlabelled (-1), for scoring, and ``frac_true`` is not applied.
    overwrite : bool, default False
        Replace an existing cube and report.
    quiet : bool, default False
        Print nothing.

    Returns
    -------
    AlertConvertReport
        Counts of alerts decoded, skipped, labelled and kept.

    Raises
    ------
    OtrainError
        Missing inputs, an existing output without ``overwrite``, an unusable label rule, no
        labelled alert of a class the balancing needs, or (``strict``) an unreadable alert.
    """
    config = config or ConvertConfig()
    out_path = check_writable(out_path, overwrite)
    report_path = out_path.with_suffix(".report.json")
    check_writable(report_path, overwrite)
    find_alert_files(paths)  # missing inputs fail before any work
    check_label_rule(label_rule)
    frac = config.frac_true if label_rule is not None else None
    if frac is not None and not 0.0 <= frac <= 1.0:
        raise OtrainError(f"--frac-true must be between 0 and 1, got {frac}")
    size = alert_cutout_size(config.cutout_size)
    inputs = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    report = AlertConvertReport(cube=str(out_path), inputs=inputs, frac_true=frac,
                                label_rule=label_rule.describe() if label_rule else None)
    if label_rule is None:
        report.notes.append("no label rule: every alert is unlabelled (-1); such a cube can be "
                            "scored, not trained on")
    tmp_path = out_path.with_name(f".{out_path.name}{TMP_TAG}all.h5")
    try:
        _, report.alerts = alerts_to_datacube(
            paths, tmp_path, tuple(config.channels), size, label_rule, overwrite=True,
            quiet=quiet, strict=config.strict, batch_size=config.batch_size)
        _select_and_write(tmp_path, out_path, frac, config.seed, report, overwrite)
    except OtrainError as exc:
        if exc.path == str(tmp_path):  # the intermediate file is ours: name the cube asked for
            raise OtrainError(exc.reason, out_path) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    write_text_atomic(report_path, json.dumps(report.as_dict(), indent=2) + "\n",
                      overwrite=True)
    info(report.summary(), quiet)
    return report


def _select_and_write(tmp_path: Path, out_path: Path, frac: float | None, seed: int,
                      report: AlertConvertReport, overwrite: bool) -> None:
    with open_datacube(tmp_path) as cube:
        labels = cube.labels
        real = np.flatnonzero(labels == REAL)
        bogus = np.flatnonzero(labels == BOGUS)
        report.n_real_labelled, report.n_bogus_labelled = int(real.size), int(bogus.size)
        report.notes += duplicate_warnings(cube)
        if report.label_rule is not None and (real.size == 0) != (bogus.size == 0):
            only = "real" if real.size else "bogus"
            report.notes.append(f"warning: the label rule gave only {only} alerts "
                                f"({max(real.size, bogus.size)}) and no "
                                f"{'bogus' if real.size else 'real'} one: a classifier cannot "
                                "be trained on this cube")
        if frac is None:
            chosen = np.arange(len(cube), dtype=np.int64)
            keep_true, keep_false = int(real.size), int(bogus.size)
        else:
            if 0.0 < frac < 1.0:
                for n, name in ((real.size, "real"), (bogus.size, "bogus")):
                    if n == 0:
                        raise OtrainError(f"the label rule gave no {name} alert: cannot make a "
                                          f"cube with {frac:.0%} real candidates")
            chosen, keep_true, keep_false = balanced_choice(real, bogus, frac, seed)
            achieved = keep_true / max(1, keep_true + keep_false)
            if abs(achieved - frac) > 0.01:
                report.notes.append(f"note: asked for {frac:.0%} real alerts, the labelled "
                                    f"alerts allow {achieved:.1%}")
            dropped = (real.size - keep_true, bogus.size - keep_false)
            if any(dropped):
                report.notes.append(f"balancing left out {dropped[0]} real and {dropped[1]} "
                                    f"bogus alerts (chosen at random, seed {seed})")
        report.n_real_kept, report.n_bogus_kept = keep_true, keep_false
        report.n_unlabelled_kept = int(np.count_nonzero(labels[chosen] == -1))
        provenance = {
            "created_by": f"otrain {__version__} convert --alerts",
            "frac_true": frac, "seed": seed,
            "counts": {"real_labelled": report.n_real_labelled,
                       "bogus_labelled": report.n_bogus_labelled,
                       "real_kept": keep_true, "bogus_kept": keep_false},
        }
        write_subset(cube, chosen, out_path, overwrite=overwrite, provenance=provenance)


def alerts_to_datacube(
    paths: PathsLike,
    out_path: str | Path,
    channels: Sequence[str] = ("diff",),
    cutout_size: int = 63,
    label_rule: LabelRule | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    strict: bool = False,
    batch_size: int = 1024,
) -> tuple[Path, AlertReport]:
    """Write alerts into a datacube file, batch by batch (memory does not grow with N).

    Parameters
    ----------
    paths : path or sequence of paths
        Alert files and folders.
    out_path : str or Path
        Destination datacube (``.h5``).
    channels : sequence of str, default ("diff",)
        Stamps to stack, from ``diff``, ``sci``, ``ref``.
    cutout_size : int, default 63
        Side of the square cutouts.
    label_rule : LabelRule, optional
        How to label the alerts; alerts it leaves unknown are not written (counted in
        ``report.n_unlabelled``). Without a rule every alert is written with label -1.
    overwrite : bool, default False
        Whether an existing file may be replaced.
    quiet : bool, default False
        No progress output.
    strict : bool, default False
        Raise instead of skipping corrupt records, stamps and files.
    batch_size : int, default 1024
        Alerts decoded and written at a time.

    Returns
    -------
    path : Path
        The datacube written.
    report : AlertReport
        Counts and problems (also stored in the cube provenance under ``alert_report``).

    Raises
    ------
    OtrainError
        If the destination exists without ``overwrite``, or no alert could be written.
    """
    chans = check_channels(channels)
    size = check_size(cutout_size)
    out_path = check_writable(out_path, overwrite)
    report = AlertReport()
    sources = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    provenance: dict[str, Any] = {
        "source": "alerts", "inputs": sources, "channels": list(chans), "cutout_size": size,
        "stamp_policy": STAMP_POLICY,
        "label_rule": label_rule.describe() if label_rule is not None else None,
    }
    writer = DatacubeWriter(out_path, (len(chans), size, size), chans, overwrite, provenance)
    counts = {"real": 0, "bogus": 0, "unknown": 0}
    try:
        for images, columns in iter_alert_batches(paths, chans, size, batch_size, strict, report,
                                                  quiet):
            if label_rule is not None:
                labels = label_rule.apply(columns)
                keep = labels != -1
                report.n_unlabelled += int(np.count_nonzero(~keep))
                columns["label"] = labels
                if not keep.all():
                    images = images[keep]
                    columns = {name: values[keep] for name, values in columns.items()}
            for key, value in label_counts(columns["label"]).items():
                counts[key] += value
            writer.append(images, columns)
        if len(writer) == 0:
            raise OtrainError("no alert could be written to the datacube: "
                              + report.summary(max_lines=3).replace("\n", " "), out_path)
        writer.provenance.update(alert_report=report.as_dict(), labels=counts)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return out_path, report
