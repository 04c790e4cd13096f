"""Alert files in: Avro containers, Confluent wire-format messages, parquet exports.

The format of a file is told from its first bytes, not its name:

- ``Obj\\x01``: an Avro container file (one or many records, the writer schema in the header):
  ZTF alerts of any schema version, broker rewrites (Fink), Rubin sample packets.
- ``\\x00`` + 4-byte schema id: one or more Confluent wire-format messages (a Kafka message saved
  to a file), as Rubin sends them. The schema comes from the lsst-alert-packet package: registry
  id ``100 * major + minor`` (the ids Rubin registers), id 0 (unregistered) means the newest
  schema the package ships.
- ``PAR1`` (or a ``.parquet``/``.pq`` name): a parquet export with the alert fields as columns
  (``candidate`` a struct, stamps structs or binary), read in batches with pyarrow.

pyarrow and lsst-alert-packet are optional: they are imported only when a file needs them, and
their absence is an :class:`~otrain.errors.OtrainError` saying what to install.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fastavro

from otrain.alerts.report import AlertReport
from otrain.errors import OtrainError

#: File name endings looked for inside folders.
ALERT_SUFFIXES = (".avro", ".parquet", ".pq")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_PARQUET_BATCH = 256


class AlertFileError(ValueError):
    """An alert file whose content cannot be read."""


def find_alert_files(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """Expand files and folders into the alert files to read, in order.

    Parameters
    ----------
    paths : path or sequence of paths
        Alert files (any name: the format is told from the content) and folders, searched
        recursively for ``*.avro``, ``*.parquet`` and ``*.pq`` files (sorted by path).

    Returns
    -------
    list of Path

    Raises
    ------
    OtrainError
        If a path does not exist or a folder holds no alert file.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file()
                           and p.suffix.lower() in ALERT_SUFFIXES and not p.name.startswith("."))
            if not found:
                raise OtrainError("folder holds no .avro or .parquet alert files", path)
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise OtrainError("no such alert file or folder", path)
    if not files:
        raise OtrainError("no alert files given")
    return files


def iter_alerts(
    paths: Sequence[str | Path] | str | Path,
    strict: bool = True,
    report: AlertReport | None = None,
) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Yield the raw alert records of files and folders, as fastavro / pyarrow decode them.

    Parameters
    ----------
    paths : path or sequence of paths
        Alert files and folders (see :func:`find_alert_files`).
    strict : bool, default True
        Raise on an unreadable file. When false the file is skipped, counted in ``report``
        (``n_unreadable``) with a problem line, and reading goes on with the next file; records
        read before a corrupt block are still yielded.
    report : AlertReport, optional
        Updated with ``n_files`` and unreadable files.

    Yields
    ------
    tuple
        ``(path, index, record)``: the file, the record's position in it (from 0), the record.

    Raises
    ------
    OtrainError
        If a path is missing, a file is unreadable and ``strict`` is set, or an optional
        package needed for a file (pyarrow, lsst-alert-packet) is not installed.
    """
    report = report if report is not None else AlertReport()
    for path in find_alert_files(paths):
        report.n_files += 1
        index = 0
        try:
            for record in _file_records(path):
                yield path, index, record
                index += 1
        except OtrainError:
            raise
        except Exception as exc:  # fastavro/pyarrow raise many types on corrupt input
            where = f"after {index} record(s)" if index else "no record read"
            message = (f"unreadable alert file ({where}): "
                       f"{exc.__class__.__name__}: {str(exc)[:200]}")
            if strict:
                raise OtrainError(message, path) from None
            report.n_unreadable += 1
            report.add_problem(str(path), message)


def _file_records(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        head = fh.read(5)
        fh.seek(0)
        if head[:4] == b"PAR1" or path.suffix.lower() in _PARQUET_SUFFIXES:
            yield from _parquet_records(path)
        elif head[:4] == b"Obj\x01":
            yield from fastavro.reader(fh)
        elif len(head) == 5 and head[0] == 0:
            yield from _wire_records(fh)
        elif not head:
            raise AlertFileError("empty file")
        else:
            raise AlertFileError("not an Avro container file, a Confluent wire-format message "
                                 "or a parquet file")


def _parquet_records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise OtrainError("reading parquet alert files needs pyarrow: pip install pyarrow",
                          path) from None
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
        yield from batch.to_pylist()


def _wire_records(fh: io.BufferedReader) -> Iterator[dict[str, Any]]:
    data = fh.read()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        header = stream.read(5)
        if len(header) < 5 or header[0] != 0:
            raise AlertFileError(f"bad Confluent wire-format header at byte {start}")
        schema_id = int.from_bytes(header[1:], "big")
        yield fastavro.schemaless_reader(stream, rubin_schema(schema_id))


def _lsst_schema_root() -> Path:
    try:
        spec = importlib.util.find_spec("lsst.alert.packet")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise OtrainError("reading Confluent wire-format (Rubin) alerts needs the schemas of "
                          "lsst-alert-packet: pip install lsst-alert-packet")
    return Path(next(iter(spec.submodule_search_locations))) / "schema"


def rubin_schema_versions() -> list[tuple[int, int]]:
    """The Rubin alert schema versions ``(major, minor)`` lsst-alert-packet ships, sorted."""
    root = _lsst_schema_root()
    versions = []
    for avsc in root.glob("*/*/lsst.v*_*.alert.avsc"):
        try:
            versions.append((int(avsc.parent.parent.name), int(avsc.parent.name)))
        except ValueError:
            continue
    return sorted(versions)


@functools.lru_cache(maxsize=32)
def rubin_schema(schema_id: int) -> Any:
    """The parsed Rubin alert schema of a Confluent registry id.

    Parameters
    ----------
    schema_id : int
        ``100 * major + minor`` (e.g. 1101 for schema 11.1); 0 means the newest known schema.

    Returns
    -------
    object
        A fastavro parsed schema.

    Raises
    ------
    OtrainError
        If lsst-alert-packet is not installed.
    AlertFileError
        If the id is not a schema version the package knows.
    """
    root = _lsst_schema_root()
    if schema_id == 0:
        latest = (root / "latest.txt").read_text().strip()
        major, minor = (int(x) for x in latest.split(".", 1))
    else:
        major, minor = divmod(schema_id, 100)
    avsc = root / str(major) / str(minor) / f"lsst.v{major}_{minor}.alert.avsc"
    if not avsc.is_file():
        known = ", ".join(f"{a}.{b} (id {100 * a + b})" for a, b in rubin_schema_versions())
        raise AlertFileError(f"unknown Rubin alert schema id {schema_id}; lsst-alert-packet "
                             f"knows {known}")
    return fastavro.schema.load_schema(str(avsc))
