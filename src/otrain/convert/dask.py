"""Conversion on a Dask cluster: workers read the cutout files, the client writes the cube.

:func:`convert_distributed` is :func:`otrain.convert.convert_cutouts` with its per-file reading
(``map_files``) done by Dask workers over chunks of files: the results come back in file order,
so the selection, the balancing and the cube are exactly those of a local run. The workers
return images and header metadata; only the client writes (the temporary cube, then the final
one), so the output folder need not be visible to the workers, but the cutouts must be.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from otrain.cluster import check_chunk_size, dask_ordered_map, use_client
from otrain.convert.folders import ConvertConfig, ConvertReport, convert_cutouts
from otrain.errors import OtrainError

__all__ = ["convert_distributed", "dask_convert", "dask_file_mapper"]


def _apply(chunk: Sequence[Any], func: Callable[[Any], Any]) -> list[Any]:
    """Worker task: ``func`` on every item of a chunk."""
    return [func(item) for item in chunk]


def dask_file_mapper(client: Any, chunk_size: int = 2000, retries: int = 2
                     ) -> Callable[[Callable[[Any], Any], Sequence[Any]], Iterator[Any]]:
    """A ``map_files(func, items)`` for :func:`otrain.convert.convert_cutouts`: ``func`` runs on
    Dask workers over chunks of ``items``; the results come back one per item, in order."""
    check_chunk_size(chunk_size)

    def map_files(func: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
        chunks = [list(items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]
        for part in dask_ordered_map(client, _apply, chunks, func, name="otrain-read",
                                     retries=retries):
            yield from part

    return map_files


def convert_distributed(
    cutouts_dir: str | Path,
    out_path: str | Path,
    config: ConvertConfig | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    *,
    scheduler: str = "local",
    chunk_size: int = 2000,
    retries: int = 2,
    client: Any = None,
) -> ConvertReport:
    """:func:`otrain.convert.convert_cutouts` with the files read on a Dask cluster.

    The selection, balancing and cube are those of ``convert_cutouts`` (same cube for the same
    files and seed); ``config.workers`` is the number of local Dask workers when
    ``scheduler="local"``. Other parameters as
    :func:`otrain.inference.dask.client.infer_distributed`.
    """
    config = config or ConvertConfig()
    check_chunk_size(chunk_size)
    with use_client(client, scheduler, config.workers, quiet) as cl:
        return convert_cutouts(cutouts_dir, out_path, config, overwrite=overwrite, quiet=quiet,
                               map_files=dask_file_mapper(cl, chunk_size, retries))


def dask_convert(args: Any) -> Callable[..., ConvertReport]:
    """``otrain-convert --cutouts ... --scheduler``: :func:`convert_distributed` bound to
    ``--scheduler`` and ``--chunk-size`` (``--workers``: local Dask workers)."""
    if getattr(args, "alerts", None):
        raise OtrainError("--scheduler reads cutout folders (--cutouts), not alerts")
    return functools.partial(convert_distributed, scheduler=args.scheduler,
                             chunk_size=args.chunk_size)
