"""The :class:`Datacube` in memory or backed by an open file: images ``(N, C, H, W)`` float32
plus a per-candidate table. Reading and writing files is in :mod:`otrain.datacube.hdf5` and
:mod:`otrain.datacube.npz`; the package docstring describes the format."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.table import Table

from otrain.errors import OtrainError

FORMAT_NAME = "otrain-datacube"
FORMAT_VERSION = 1
#: Label values.
REAL, BOGUS, UNKNOWN = 1, 0, -1
#: Target size of one image chunk on disk, in bytes.
_CHUNK_BYTES = 1 << 20


class Datacube:
    """Images ``(N, C, H, W)`` and a per-candidate table.

    Parameters
    ----------
    images : h5py.Dataset or numpy.ndarray
        Image stack, float32, shape ``(N, C, H, W)``. An h5py dataset is read lazily.
    table : astropy.table.Table
        One row per image; must hold ``candid`` and ``label``.
    channels : sequence of str
        Name of each image channel (e.g. ``["diff"]`` or ``["diff", "sci", "ref"]``).
    attrs : mapping, optional
        Provenance and other metadata (JSON-serialisable).
    path : Path, optional
        The file the cube was read from.
    handle : h5py.File, optional
        Open file handle, closed by :meth:`close`.
    """

    def __init__(
        self,
        images: Any,
        table: Table,
        channels: Sequence[str],
        attrs: Mapping[str, Any] | None = None,
        path: Path | None = None,
        handle: h5py.File | None = None,
    ) -> None:
        if images.ndim != 4:
            raise OtrainError(f"datacube images must be 4-D (N, C, H, W), got shape {images.shape}",
                              path)
        if len(table) != images.shape[0]:
            raise OtrainError(f"table has {len(table)} rows but there are {images.shape[0]} images",
                              path)
        if len(channels) != images.shape[1]:
            raise OtrainError(f"{len(channels)} channel names for {images.shape[1]} channels", path)
        for col in ("candid", "label"):
            if col not in table.colnames:
                raise OtrainError(f"datacube table has no '{col}' column", path)
        self.images = images
        self.table = table
        self.channels = list(channels)
        self.attrs = dict(attrs or {})
        self.path = path
        self._handle = handle

    # -- shape and labels --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one cutout."""
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def labels(self) -> np.ndarray:
        """Labels as int64: 1 real, 0 bogus, -1 unknown."""
        return np.asarray(self.table["label"], dtype=np.int64)

    @property
    def in_memory(self) -> bool:
        """True when images are a numpy array rather than a lazily read file."""
        return isinstance(self.images, np.ndarray)

    # -- reading -----------------------------------------------------------------------------
    def read(self, indices: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        """Read the images at ``indices`` into memory.

        Parameters
        ----------
        indices : slice or sequence of int
            Rows to read, in the order wanted (any order, repeats allowed).

        Returns
        -------
        numpy.ndarray
            float32 array ``(len(indices), C, H, W)``.

        Raises
        ------
        OtrainError
            If the file's image data cannot be read (a damaged HDF5 file), naming the file.
        """
        if self.in_memory:
            return self._read(indices)
        try:
            return self._read(indices)
        except (OSError, RuntimeError) as exc:  # h5py: damaged chunks, bad offsets
            raise OtrainError(f"damaged datacube: its images cannot be read "
                              f"({' '.join(str(exc).split())[:120]})", self.path) from None

    def _read(self, indices: Sequence[int] | np.ndarray | slice) -> np.ndarray:
        if isinstance(indices, slice):
            return np.asarray(self.images[indices], dtype=np.float32)
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, *self.image_shape), dtype=np.float32)
        if self.in_memory:
            return np.asarray(self.images[idx], dtype=np.float32)
        # h5py wants increasing unique indices: read those, then reorder.
        uniq, inverse = np.unique(idx, return_inverse=True)
        span = int(uniq[-1] - uniq[0] + 1)
        if span <= 4 * uniq.size:  # dense: one slice read, then pick rows in memory
            block = np.asarray(self.images[int(uniq[0]) : int(uniq[-1]) + 1])
            block = block[uniq - uniq[0]]
        else:
            block = self.images[uniq]
        return np.asarray(block, dtype=np.float32)[inverse]

    def iter_batches(
        self, batch_size: int, indices: Sequence[int] | np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, images)`` in batches of at most ``batch_size``.

        Parameters
        ----------
        batch_size : int
            Rows per batch.
        indices : sequence of int, optional
            Rows to visit (default: all, in order).

        Yields
        ------
        tuple of numpy.ndarray
            Row indices of the batch and the float32 images.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        for start in range(0, idx.size, batch_size):
            chunk = idx[start : start + batch_size]
            if chunk.size and np.all(np.diff(chunk) == 1):
                yield chunk, self.read(slice(int(chunk[0]), int(chunk[-1]) + 1))
            else:
                yield chunk, self.read(chunk)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Datacube:
        """Return an in-memory datacube of the rows ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        return Datacube(self.read(idx), self.table[idx], self.channels, self.attrs)

    def summary(self) -> str:
        """One paragraph describing the cube (size, classes, channels)."""
        labels = self.labels
        c, h, w = self.image_shape
        parts = [
            f"{len(self)} cutouts of {h}x{w} pixels, {c} channel(s) [{', '.join(self.channels)}]",
            f"real (label 1): {int(np.sum(labels == REAL))}",
            f"bogus (label 0): {int(np.sum(labels == BOGUS))}",
        ]
        unknown = int(np.sum(labels == UNKNOWN))
        if unknown:
            parts.append(f"unlabelled: {unknown}")
        return "; ".join(parts)

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the underlying file, if any."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Datacube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
