"""Reading the files of a conversion: one cutout, or chunks of them packed for the trip home.

A worker process that returned one :class:`~otrain.cutouts.reading.Cutout` per file made the
main process unpickle a small array and a metadata dict per file (~40 us each, as long as
reading the file itself), on a CPU the workers need. :func:`read_packed` reads a chunk of files
and returns one stacked image array and the metadata values as tuples under one key list;
:func:`unpack` turns that back into the per-file results, in order, so the conversion is the same
whichever way the files were read.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from otrain.cutouts.reading import TRAINING_KEYWORDS, Cutout, read_cutout
from otrain.errors import CutoutError
from otrain.parallel import ordered_map

__all__ = ["CHUNK", "Packed", "map_packed", "read_one", "read_packed", "unpack"]

#: Files per worker task.
CHUNK = 64

#: ``(keys, images, rows)``: the metadata keys shared by the chunk's cutouts (or ``None``), their
#: images (one array when they share a shape, else a list), and per file either the reason it is
#: unusable (str), its metadata values (tuple, in ``keys`` order) or its metadata (dict).
Packed = tuple[tuple[str, ...] | None, Any, list[Any]]


def read_one(path: str | Path, channels: tuple[str, ...], cutout_size: int,
             keywords: dict[str, str] | None = None) -> Cutout | str:
    """One training cutout, or the reason it is unusable (one line naming the file)."""
    try:
        return read_cutout(path, channels, cutout_size, required=TRAINING_KEYWORDS,
                           keywords=keywords)
    except CutoutError as exc:
        return str(exc)


def read_packed(paths: Sequence[str | Path], channels: tuple[str, ...], cutout_size: int,
                keywords: dict[str, str] | None = None) -> Packed:
    """:func:`read_one` on every path, packed (:data:`Packed`)."""
    results = [read_one(p, channels, cutout_size, keywords) for p in paths]
    cutouts = [r for r in results if isinstance(r, Cutout)]
    keys = tuple(cutouts[0].meta) if cutouts else None
    same = all(tuple(c.meta) == keys for c in cutouts)
    images: Any = [c.image for c in cutouts]
    if cutouts and len({im.shape for im in images}) == 1:
        images = np.stack(images)
    rows = [r if isinstance(r, str) else tuple(r.meta.values()) if same else r.meta
            for r in results]
    return (keys if same else None), images, rows


def unpack(packed: Packed) -> Iterator[Cutout | str]:
    """The per-file results of a :func:`read_packed` chunk, in order."""
    keys, images, rows = packed
    k = 0
    for row in rows:
        if isinstance(row, str):
            yield row
            continue
        meta = dict(zip(keys, row, strict=True)) if isinstance(row, tuple) and keys else row
        yield Cutout(images[k], meta)
        k += 1


def map_packed(paths: Sequence[Path], channels: tuple[str, ...], cutout_size: int,
               keywords: dict[str, str] | None, workers: int,
               batch_size: int) -> Iterable[Cutout | str]:
    """:func:`read_one` of every path, in order, read by ``workers`` local processes in chunks
    of :data:`CHUNK` files, at most about ``2 * batch_size`` files in flight."""
    reader = functools.partial(read_packed, channels=channels, cutout_size=cutout_size,
                               keywords=keywords)
    names = [str(p) for p in paths]  # str, not Path: cheaper to pickle to the workers
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    with contextlib.closing(ordered_map(reader, chunks, workers,
                                        max(1, batch_size // CHUNK))) as packs:
        for packed in packs:
            yield from unpack(packed)
