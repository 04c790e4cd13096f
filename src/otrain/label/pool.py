"""The candidates to label: a cutout folder, a datacube or alert files, read with the existing
readers (:mod:`otrain.cutouts`, :mod:`otrain.datacube`, :mod:`otrain.alerts`).

A :class:`Pool` has one entry per candidate, addressed by its position (0..N-1): the
``candid`` (unique text), display metadata, the source (cutout file or alert record) and the
images ``(C, H, W)`` on demand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from otrain.cutouts.reading import find_cutouts, parse_channels, read_cutout
from otrain.errors import CutoutError, OtrainError

#: Metadata shown on the page, in order, when the input has them.
META_FIELDS = ("candid", "objectId", "mag", "magerr", "filter", "fwhm", "edge", "drb", "rb",
               "ra", "dec", "jd", "isdiffpos", "source_file")
TRIPLET = ("diff", "sci", "ref")


@dataclass
class Pool:
    """Candidates and a way to read their images.

    Attributes
    ----------
    kind : str
        ``cutouts``, ``cube`` or ``alerts``.
    inputs : list of Path
        What was read.
    candids : list of str
        Unique candidate ids, in input order.
    meta : list of dict
        Display metadata per candidate (JSON-ready: NaN is None).
    sources : list of str
        Cutout file or ``alert file#record`` per candidate.
    channels : list of str
        Channel names of the images.
    skipped : list of str
        ``"file: problem"`` for inputs that could not be read.
    """

    kind: str
    inputs: list[Path]
    candids: list[str]
    meta: list[dict[str, Any]]
    sources: list[str]
    channels: list[str]
    reader: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    skipped: list[str] = field(default_factory=list)
    closer: Callable[[], None] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.candids)

    def images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 images ``(n, C, H, W)`` of the candidates at ``indices``."""
        return self.reader(np.asarray(indices, dtype=np.int64))

    def index_of(self) -> dict[str, int]:
        """candid -> position."""
        return {c: i for i, c in enumerate(self.candids)}

    def close(self) -> None:
        """Release open files."""
        if self.closer is not None:
            self.closer()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _unique(candids: Sequence[str], fallback: Sequence[str]) -> list[str]:
    """Candids made unique: empty ones take ``fallback``, repeats get ``#2``, ``#3``..."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for c, f in zip(candids, fallback, strict=True):
        base = str(c).strip() or str(f)
        n = seen.get(base, 0) + 1
        seen[base] = n
        out.append(base if n == 1 else f"{base}#{n}")
    return out


def _table_meta(table: Any, row: int) -> dict[str, Any]:
    return {k: _jsonable(table[k][row]) for k in META_FIELDS if k in table.colnames}


def from_cutouts(folder: str | Path, channels: Sequence[str] | None = None) -> Pool:
    """Cutout files in ``folder`` and in its ``true/`` and ``false/`` sub-folders.

    Channels default to diff,sci,ref when the first file has them, else diff.
    """
    folder = Path(folder)
    files = find_cutouts(folder)
    for sub in ("true", "false"):
        if (folder / sub).is_dir():
            files += find_cutouts(folder / sub)
    if not files:
        raise OtrainError("no cutout files (.fits, .fit, .fts, optionally .gz) in the folder "
                          "or its true/ and false/", folder)
    if channels is None:
        try:
            read_cutout(files[0], TRIPLET)
            channels = TRIPLET
        except CutoutError:
            channels = ("diff",)
    chans = parse_channels(list(channels))
    kept, metas, skipped = [], [], []
    for path in files:
        try:
            cut = read_cutout(path, chans)
        except CutoutError as exc:
            skipped.append(f"{path}: {exc.reason}")
            continue
        kept.append(path)
        metas.append({k: _jsonable(cut.meta.get(k)) for k in META_FIELDS if k in cut.meta})
    if not kept:
        raise OtrainError(f"no readable cutout ({skipped[0]})", folder)
    candids = _unique([str(m.get("candid") or "") for m in metas],
                      [str(p.relative_to(folder)) for p in kept])
    for m, c in zip(metas, candids, strict=True):
        m["candid"] = c

    def reader(idx: np.ndarray) -> np.ndarray:
        return np.stack([read_cutout(kept[i], chans).image for i in idx]).astype(np.float32)

    return Pool("cutouts", [folder], candids, metas, [str(p) for p in kept], list(chans),
                reader, skipped)


def from_cube(path: str | Path) -> Pool:
    """Every row of a datacube (read lazily)."""
    from otrain.datacube.hdf5 import open_datacube

    cube = open_datacube(path)
    table = cube.table
    raw = [_jsonable(c) for c in np.asarray(table["candid"])]
    candids = _unique([str(c) for c in raw], [f"row{i}" for i in range(len(cube))])
    metas = []
    for i, c in enumerate(candids):
        m = _table_meta(table, i)
        m["candid"] = c
        metas.append(m)
    sources = ([str(_jsonable(s)) for s in table["source_file"]] if "source_file" in
               table.colnames else [f"{path}#{i}" for i in range(len(cube))])

    def reader(idx: np.ndarray) -> np.ndarray:
        if idx.size == 0:
            return np.empty((0, *cube.image_shape), dtype=np.float32)
        order = np.argsort(idx, kind="stable")
        block = np.asarray(cube.read(idx[order]), dtype=np.float32)
        out = np.empty_like(block)
        out[order] = block
        return out

    return Pool("cube", [Path(path)], candids, metas, sources, list(cube.channels), reader,
                closer=cube.close)


def from_alerts(paths: Sequence[str | Path], channels: Sequence[str] | None = None,
                cutout_size: int = 63, quiet: bool = False) -> Pool:
    """Alert files or folders (ZTF/Rubin Avro, parquet), stamps decoded into memory."""
    from otrain.alerts import read_alerts

    chans = parse_channels(list(channels)) if channels is not None else TRIPLET
    images, table, report = read_alerts(list(paths), chans, cutout_size, quiet=quiet)
    if len(table) == 0:
        raise OtrainError("no usable alert in the input (every alert lacked the stamps "
                          f"{','.join(chans)} or was unreadable)", Path(paths[0]))
    candids = _unique([str(_jsonable(c)) for c in table["candid"]],
                      [f"alert{i}" for i in range(len(table))])
    metas = []
    for i, c in enumerate(candids):
        m = _table_meta(table, i)
        m["candid"] = c
        metas.append(m)

    def reader(idx: np.ndarray) -> np.ndarray:
        return images[idx]

    skipped = [str(p) for p in report.problems][:100]
    return Pool("alerts", [Path(p) for p in paths], candids, metas,
                [str(_jsonable(s)) for s in table["source_file"]], list(chans), reader,
                skipped)


def model_images(pool: Pool, indices: np.ndarray, channels: Sequence[str],
                 size: Sequence[int]) -> np.ndarray:
    """Images of ``indices`` with the model's channels (chosen by name) and centre crop.

    Raises
    ------
    OtrainError
        If the pool lacks a channel the model needs or its cutouts are smaller.
    """
    want = list(channels)
    if all(c in pool.channels for c in want):
        pick = [pool.channels.index(c) for c in want]
    elif len(want) == len(pool.channels):
        pick = list(range(len(want)))  # generic channel names: by position
    else:
        raise OtrainError(f"the model needs channels {','.join(want)}; the input has "
                          f"{','.join(pool.channels)} (use --channels)")
    images = pool.images(indices)[:, pick]
    h, w = images.shape[2:]
    eh, ew = (int(s) for s in size)
    if h < eh or w < ew:
        raise OtrainError(f"the model needs {eh}x{ew} cutouts; the input's are {h}x{w}")
    top, left = h // 2 - eh // 2, w // 2 - ew // 2  # as otrain.cutouts.crop_center
    return np.ascontiguousarray(images[:, :, top:top + eh, left:left + ew])
