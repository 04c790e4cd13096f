"""Alerts -> cutout images and table rows, in bounded batches, in memory or into a datacube."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from otrain.alerts.fields import (
    CHANNEL_FIELDS,
    COLUMNS,
    RecordError,
    native_stamp_size,
    record_row,
    stamp_bytes,
)
from otrain.alerts.report import AlertReport
from otrain.alerts.sources import iter_alerts
from otrain.alerts.stamps import StampError, decode_stamp, place_stamp
from otrain.errors import OtrainError
from otrain.progress import Progress

PathsLike = Sequence[str | Path] | str | Path
#: How stamps are made into cutouts, recorded in the datacube provenance.
STAMP_POLICY = ("window of cutout_size centred on the candidate: larger stamps centre-cropped, "
                "smaller ones (CCD edge) padded with NaN on the cut side; NaN pixels kept")


def check_channels(channels: Sequence[str] | str) -> tuple[str, ...]:
    """Validate channel names (``diff``, ``sci``, ``ref``) and return them as a tuple."""
    chans = (channels,) if isinstance(channels, str) else tuple(channels)
    if not chans:
        raise OtrainError("no channel asked for; choose from diff, sci, ref")
    unknown = [c for c in chans if c not in CHANNEL_FIELDS]
    if unknown:
        raise OtrainError(f"unknown channel(s) {', '.join(map(repr, unknown))}; "
                          "choose from diff, sci, ref")
    if len(set(chans)) != len(chans):
        raise OtrainError(f"channel listed twice in {', '.join(chans)}")
    return chans


def check_size(cutout_size: int) -> int:
    if int(cutout_size) != cutout_size or int(cutout_size) < 1:
        raise OtrainError(f"cutout_size must be a positive whole number, got {cutout_size!r}")
    return int(cutout_size)


class _Batch:
    """Images and column values of up to ``capacity`` alerts."""

    def __init__(self, capacity: int, n_channels: int, size: int) -> None:
        self.images = np.empty((capacity, n_channels, size, size), dtype=np.float32)
        self.values: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        self.n = 0

    @property
    def full(self) -> bool:
        return self.n == self.images.shape[0]

    def add(self, row: dict[str, Any]) -> None:
        for name, values in self.values.items():
            values.append(row[name])
        self.n += 1

    def arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        columns = {}
        for name, kind in COLUMNS.items():
            vals = self.values[name]
            columns[name] = (np.array(vals, dtype=str) if kind == "U" and vals
                             else np.array(vals, dtype="U1" if kind == "U" else kind))
        return self.images[: self.n], columns


def _fail(report: AlertReport, path: Path, index: int, message: str, strict: bool) -> None:
    if strict:
        raise OtrainError(f"record {index}: {message}", path)
    report.n_unreadable += 1
    report.add_problem(f"{path}#{index}", message)


def _add_alert(batch: _Batch, record: dict[str, Any], path: Path, index: int,
               channels: tuple[str, ...], report: AlertReport, strict: bool) -> None:
    """Decode one alert into the next slot of ``batch``, or count why it was skipped."""
    try:
        row = record_row(record)
    except RecordError as exc:
        _fail(report, path, index, str(exc), strict)
        return
    blobs = [stamp_bytes(record, c) for c in channels]
    missing = [CHANNEL_FIELDS[c] for c, b in zip(channels, blobs, strict=True) if b is None]
    if missing:
        report.n_missing_stamp += 1
        report.add_problem(f"{path}#{index}", f"candid {row['candid']}: no {', '.join(missing)} "
                                               "stamp, alert skipped")
        return
    try:
        stamps = [decode_stamp(b) for b in blobs]  # type: ignore[arg-type]
    except StampError as exc:
        _fail(report, path, index, f"candid {row['candid']}: {exc}", strict)
        return
    native = native_stamp_size(record)
    slot = batch.images[batch.n]
    truncated = padded = False
    n_nan = 0
    for plane, stamp in zip(slot, stamps, strict=True):
        t, p, k = place_stamp(plane, stamp, native, row["xpos"], row["ypos"])
        truncated, padded, n_nan = truncated or t, padded or p, n_nan + k
    report.n_bad_size += padded
    report.n_with_nan += n_nan > 0
    row.update(label=-1, file=str(path), source_file=f"{path}#{index}",
               edge=bool(truncated or padded or n_nan), n_nan=n_nan)
    batch.add(row)
    report.n_kept += 1


def iter_alert_batches(
    paths: PathsLike,
    channels: Sequence[str] = ("diff",),
    cutout_size: int = 63,
    batch_size: int = 1024,
    strict: bool = False,
    report: AlertReport | None = None,
    quiet: bool = True,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Yield alerts as cutout batches, holding one batch in memory at a time.

    Parameters
    ----------
    paths : path or sequence of paths
        Alert files (ZTF/Rubin Avro, Confluent wire-format messages, parquet) and folders.
    channels : sequence of str, default ("diff",)
        Stamps to stack, in order: ``diff`` (cutoutDifference), ``sci`` (cutoutScience),
        ``ref`` (cutoutTemplate).
    cutout_size : int, default 63
        Side of the square cutout, centred on the candidate (see :func:`place_stamp
        <otrain.alerts.stamps.place_stamp>`).
    batch_size : int, default 1024
        Alerts per batch.
    strict : bool, default False
        Raise :class:`~otrain.errors.OtrainError` naming the file on a corrupt record, an
        undecodable stamp or an unreadable file, instead of skipping and counting it.
    report : AlertReport, optional
        Filled in while reading (pass one to see the counts once the iterator is exhausted).
    quiet : bool, default True
        No progress output.

    Yields
    ------
    images : numpy.ndarray
        float32 ``(n, C, cutout_size, cutout_size)``, NaN kept; a fresh array per batch.
    columns : dict of str to numpy.ndarray
        The table columns of these ``n`` alerts (see ``otrain.alerts.fields.COLUMNS``), with
        ``label`` -1.
    """
    chans = check_channels(channels)
    size = check_size(cutout_size)
    if int(batch_size) < 1:
        raise OtrainError(f"batch_size must be at least 1, got {batch_size}")
    report = report if report is not None else AlertReport()
    batch = _Batch(int(batch_size), len(chans), size)
    with Progress(None, "reading alerts", quiet=quiet, unit="alerts") as bar:
        for path, index, record in iter_alerts(paths, strict=strict, report=report):
            report.n_alerts += 1
            _add_alert(batch, record, path, index, chans, report, strict)
            bar.update()
            if batch.full:
                yield batch.arrays()
                batch = _Batch(int(batch_size), len(chans), size)
        if batch.n:
            yield batch.arrays()


def read_alerts(
    paths: PathsLike,
    channels: Sequence[str] = ("diff",),
    cutout_size: int = 63,
    strict: bool = False,
    quiet: bool = False,
) -> tuple[np.ndarray, Table, AlertReport]:
    """Read alerts into memory: cutout images, a table, and a report of what was skipped.

    Parameters
    ----------
    paths : path or sequence of paths
        Alert files and folders.
    channels : sequence of str, default ("diff",)
        Stamps to stack, from ``diff``, ``sci``, ``ref``.
    cutout_size : int, default 63
        Side of the square cutouts.
    strict : bool, default False
        Raise instead of skipping corrupt records, stamps and files.
    quiet : bool, default False
        No progress output.

    Returns
    -------
    images : numpy.ndarray
        float32 ``(N, C, cutout_size, cutout_size)``; NaN where the survey had none or beyond
        a CCD edge.
    table : astropy.table.Table
        One row per image: ``candid`` (str), ``label`` (-1), ``objectId``, ``mag``, ``magerr``,
        ``filter``, ``fwhm``, ``ra``, ``dec``, ``xpos``, ``ypos``, ``isdiffpos``, ``rb``,
        ``drb``, ``jd``, ``programid``, ``file``, ``source_file`` (``file#record``), ``edge``,
        ``n_nan``.
    report : AlertReport
        Counts and problems.
    """
    chans = check_channels(channels)
    size = check_size(cutout_size)
    report = AlertReport()
    chunks: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
    # Small batches: their buffers are recycled by the allocator; one copy at the end.
    for images, columns in iter_alert_batches(paths, chans, size, 256, strict, report, quiet):
        chunks.append(images)
        for name, values in columns.items():
            parts[name].append(values)
    if len(chunks) == 1:
        images = chunks[0]
    elif chunks:
        images = np.concatenate(chunks)
    else:
        images = np.empty((0, len(chans), size, size), dtype=np.float32)
    cols = {name: (np.concatenate(v) if v else np.array([], dtype="U1" if k == "U" else k))
            for (name, k), v in zip(COLUMNS.items(), parts.values(), strict=True)}
    table = Table(cols, names=list(COLUMNS))
    table.meta.update(channels=list(chans), cutout_size=size)
    return images, table, report
