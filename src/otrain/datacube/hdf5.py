"""Reading and writing otrain HDF5 datacubes (and opening any datacube by its file name)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.table import Table

from otrain._version import __version__
from otrain.datacube.cube import _CHUNK_BYTES, FORMAT_NAME, FORMAT_VERSION, Datacube
from otrain.datacube.npz import load_npz
from otrain.errors import OtrainError
from otrain.outputs import atomic_output, write_error

#: Bytes reserved beyond the data for HDF5's own metadata when the file is closed.
_CLOSE_MARGIN = 1 << 20


# ------------------------------------------------------------------------------------------
# Opening
# ------------------------------------------------------------------------------------------
def open_datacube(path: str | Path) -> Datacube:
    """Open a datacube: otrain HDF5 (``.h5``/``.hdf5``) or an original O'TRAIN ``.npz``.

    Parameters
    ----------
    path : str or Path
        The cube file.

    Returns
    -------
    Datacube
        Images are read lazily from HDF5; an ``.npz`` is loaded into memory.

    Raises
    ------
    OtrainError
        If the file is missing or is not a datacube.
    """
    path = Path(path)
    if not path.exists():
        raise OtrainError("no such datacube file", path)
    if path.is_dir():
        raise OtrainError("is a folder, expected a datacube file (.h5 or .npz)", path)
    if path.suffix == ".npz":
        return load_npz(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        msg = f"not a readable HDF5 datacube ({exc.__class__.__name__})"
        raise OtrainError(msg, path) from None
    try:
        if handle.attrs.get("format") != FORMAT_NAME or "images" not in handle:
            raise OtrainError("HDF5 file is not an otrain datacube", path)
        for name in ("table", "images"):
            if name not in handle:
                raise OtrainError(f"damaged datacube: no '{name}' in the file", path)
        if not isinstance(handle["table"], h5py.Group):
            raise OtrainError("damaged datacube: 'table' is not a group", path)
        table = _read_table(handle["table"], path)
        channels = _json_attr(handle, "channels", path)
        if not (isinstance(channels, list) and all(isinstance(c, str) for c in channels)):
            raise OtrainError(f"damaged datacube: 'channels' must be a list of names, got "
                              f"{channels!r:.60}", path)
        attrs = _json_attr(handle, "provenance", path, "{}")
        if "label" in table.colnames:
            labels = np.asarray(table["label"])
            bad = ~np.isin(labels, (-1, 0, 1)) if labels.dtype.kind in "biuf" else labels == labels
            if bad.any():
                raise OtrainError(f"{int(bad.sum())} label(s) are not 0 (bogus), 1 (real) or -1 "
                                  f"(unknown), e.g. {labels[bad][:3].tolist()}", path)
        return Datacube(handle["images"], table, channels, attrs, path=path, handle=handle)
    except OtrainError:
        handle.close()
        raise
    except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
        handle.close()
        raise OtrainError(f"damaged datacube ({exc.__class__.__name__}: {exc})", path) from None
    except Exception:
        handle.close()
        raise


def _json_attr(obj: h5py.HLObject, name: str, path: Path, default: str | None = None) -> Any:
    """A JSON attribute, or one line naming the file and the attribute."""
    if name not in obj.attrs and default is None:
        raise OtrainError(f"damaged datacube: no '{name}' attribute", path)
    text = obj.attrs.get(name, default)
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        raise OtrainError(f"damaged datacube: attribute '{name}' is not valid JSON "
                          f"({str(text)[:40]!r})", path) from None


def _read_table(group: h5py.Group, path: Path) -> Table:
    order = _json_attr(group, "columns", path)
    if not (isinstance(order, list) and all(isinstance(c, str) for c in order)):
        raise OtrainError(f"damaged datacube: table 'columns' must be a list of names, got "
                          f"{order!r:.60}", path)
    cols = {}
    for name in order:
        if name not in group:
            raise OtrainError(f"damaged datacube: table column '{name}' is missing", path)
        ds = group[name]
        if h5py.check_string_dtype(ds.dtype) is not None:
            values = ds.asstr()[()] if ds.shape[0] else []
            cols[name] = np.array(values, dtype=str)
        else:
            cols[name] = ds[()]
    return Table(cols, names=order) if order else Table()


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
class DatacubeWriter:
    """Write a datacube in batches, so memory does not grow with the number of cutouts.

    The file is written under a temporary name and renamed into place by :meth:`close`; an
    exception inside a ``with`` block leaves any existing cube untouched.

    Parameters
    ----------
    path : str or Path
        Destination (``.h5``).
    image_shape : tuple of int
        ``(C, H, W)`` of one cutout.
    channels : sequence of str
        Channel names.
    overwrite : bool, default False
        Whether an existing file may be replaced.
    provenance : mapping, optional
        JSON-serialisable description of where the cube came from; may be updated before close
        through :attr:`provenance`.

    Examples
    --------
    >>> with DatacubeWriter("cube.h5", (1, 32, 32), ["diff"]) as w:  # doctest: +SKIP
    ...     w.append(images, {"candid": ids, "label": labels})
    """

    def __init__(
        self,
        path: str | Path,
        image_shape: tuple[int, int, int],
        channels: Sequence[str],
        overwrite: bool = False,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.channels = list(channels)
        self.provenance: dict[str, Any] = dict(provenance or {})
        self._columns: dict[str, list[np.ndarray]] = {}
        self._n = 0
        self._ctx = atomic_output(self.path, overwrite)
        self._tmp = self._ctx.__enter__()
        self._file: h5py.File | None = None
        per_image = 4 * int(np.prod(self.image_shape))
        chunk_n = max(1, min(1024, _CHUNK_BYTES // per_image))
        with self._write_errors():
            self._file = h5py.File(self._tmp, "w")
            self._images = self._file.create_dataset(
                "images", shape=(0, *self.image_shape), maxshape=(None, *self.image_shape),
                dtype=np.float32, chunks=(chunk_n, *self.image_shape),
            )

    @contextlib.contextmanager
    def _write_errors(self) -> Iterator[None]:
        """A failed HDF5 write (disk full, permission) aborts the file: one line naming it."""
        try:
            yield
        except OtrainError:
            self.abort()
            raise
        except (OSError, RuntimeError) as exc:
            self.abort()
            raise write_error(exc, self.path) from None

    def _reserve(self, nbytes: int) -> None:
        """Allocate disk space for the next ``nbytes`` (and a margin for closing) beforehand.

        HDF5 cannot recover from a failed write: its file then cannot be closed, and the
        interpreter crashes when it lets go of it. Reserving the space first turns a full disk
        into an ordinary error while the file can still be closed (within the margin). The
        reservation lies beyond HDF5's end of allocation, which it truncates to on close.
        """
        assert self._file is not None
        target = int(self._file.id.get_filesize()) + int(nbytes) + _CLOSE_MARGIN
        try:
            size = os.stat(self._tmp).st_size
            if target > size:
                fd = os.open(self._tmp, os.O_WRONLY)
                try:
                    os.posix_fallocate(fd, size, target - size)
                finally:
                    os.close(fd)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return  # a file system without fallocate: best effort
            raise

    def _close_file(self) -> None:
        """Close the HDF5 file exactly once, even when the disk is full.

        HDF5 flushes on close; if that fails the library keeps the file open and closing it
        again when the object is garbage-collected can crash the interpreter. So on failure the
        temporary file is truncated (freeing the space) and the close retried, then the error
        is raised.
        """
        handle, self._file = self._file, None
        if handle is None:
            return
        try:
            handle.close()
        except (OSError, RuntimeError):
            with contextlib.suppress(OSError):
                os.truncate(self._tmp, 0)
            with contextlib.suppress(Exception):
                handle.close()
            raise

    def __len__(self) -> int:
        return self._n

    def append(self, images: np.ndarray, columns: Mapping[str, Sequence[Any]]) -> None:
        """Append a batch of images and their table rows.

        Parameters
        ----------
        images : numpy.ndarray
            ``(n, C, H, W)``.
        columns : mapping of str to sequence
            Table columns for these ``n`` rows; every batch must give the same column names.
        """
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != self.image_shape:
            raise OtrainError(f"batch of shape {images.shape[1:]} for a cube of {self.image_shape}",
                              self.path)
        n = images.shape[0]
        if self._columns and set(columns) != set(self._columns):
            raise OtrainError("every batch must carry the same table columns", self.path)
        for name, values in columns.items():
            arr = np.asarray(values)
            if arr.shape[0] != n:
                raise OtrainError(f"column '{name}' has {arr.shape[0]} rows for {n} images",
                                  self.path)
            self._columns.setdefault(name, []).append(arr)
        with self._write_errors():
            self._reserve(images.nbytes)
            self._images.resize(self._n + n, axis=0)
            self._images[self._n : self._n + n] = images
        self._n += n

    def close(self) -> Path:
        """Write the table and attributes, then move the file into place."""
        names = list(self._columns)
        for required in ("candid", "label"):
            if required not in names:
                self.abort()
                raise OtrainError(f"datacube needs a '{required}' column", self.path)
        with self._write_errors():
            assert self._file is not None
            self._reserve(sum(a.nbytes if a.dtype.kind != "O" else 64 * a.size
                              for arrays in self._columns.values() for a in arrays))
            table_group = self._file.create_group("table")
            for name in names:
                arr = np.concatenate(self._columns[name]) if self._columns[name] else np.array([])
                _write_column(table_group, name, arr)
            table_group.attrs["columns"] = json.dumps(names)
            self._file.attrs["format"] = FORMAT_NAME
            self._file.attrs["format_version"] = FORMAT_VERSION
            self._file.attrs["channels"] = json.dumps(self.channels)
            self._file.attrs["otrain_version"] = __version__
            self._file.attrs["provenance"] = json.dumps(self.provenance, default=str)
            self._close_file()
        ctx, self._ctx = self._ctx, None
        assert ctx is not None
        ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Discard what was written; an existing destination is left as it was."""
        if self._ctx is None:
            return
        ctx, self._ctx = self._ctx, None
        with contextlib.suppress(Exception):
            self._close_file()
        with contextlib.suppress(Exception):
            ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> DatacubeWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _write_column(group: h5py.Group, name: str, arr: np.ndarray) -> None:
    if arr.dtype.kind in "USO":
        group.create_dataset(name, data=arr.astype(str).astype(object),
                             dtype=h5py.string_dtype("utf-8"))
    elif arr.dtype.kind == "b":
        group.create_dataset(name, data=arr.astype(bool))
    else:
        group.create_dataset(name, data=arr)


def write_datacube(
    path: str | Path,
    images: np.ndarray,
    table: Table | Mapping[str, Sequence[Any]],
    channels: Sequence[str],
    overwrite: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write an in-memory set of images and table rows as a datacube file.

    Parameters
    ----------
    path : str or Path
        Destination (``.h5``).
    images : numpy.ndarray
        ``(N, C, H, W)``.
    table : astropy.table.Table or mapping
        Per-row columns, including ``candid`` and ``label``.
    channels : sequence of str
        Channel names.
    overwrite : bool, default False
        Whether an existing file may be replaced.
    provenance : mapping, optional
        Where the data came from.

    Returns
    -------
    Path
        The file written.
    """
    images = np.asarray(images, dtype=np.float32)
    columns = {name: np.asarray(table[name]) for name in (
        table.colnames if isinstance(table, Table) else table)}
    with DatacubeWriter(path, images.shape[1:], channels, overwrite, provenance) as writer:
        writer.append(images, columns)
    return Path(path)


def write_subset(
    cube: Datacube,
    indices: Sequence[int] | np.ndarray,
    path: str | Path,
    overwrite: bool = False,
    provenance: Mapping[str, Any] | None = None,
    batch_size: int = 4096,
) -> Path:
    """Copy the rows ``indices`` of ``cube`` into a new datacube file, in bounded batches.

    Parameters
    ----------
    cube : Datacube
        Source.
    indices : sequence of int
        Rows to copy, in order.
    path : str or Path
        Destination.
    overwrite : bool, default False
        Whether an existing file may be replaced.
    provenance : mapping, optional
        Merged over the source cube's provenance.
    batch_size : int, default 4096
        Rows per read/write.

    Returns
    -------
    Path
        The file written.
    """
    idx = np.asarray(indices, dtype=np.int64)
    prov = {**cube.attrs, **(provenance or {})}
    with DatacubeWriter(path, cube.image_shape, cube.channels, overwrite, prov) as writer:
        for rows, images in cube.iter_batches(batch_size, idx):
            sub = cube.table[rows]
            writer.append(images, {name: np.asarray(sub[name]) for name in sub.colnames})
        if idx.size == 0:
            writer.append(np.empty((0, *cube.image_shape), np.float32),
                          {name: np.asarray(cube.table[name][:0]) for name in cube.table.colnames})
    return Path(path)
