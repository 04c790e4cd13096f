"""Ordered parallel map over many small files, in bounded batches.

Reading thousands of cutouts is embarrassingly parallel; :func:`ordered_map` runs a function on
worker processes and yields the results in input order, keeping at most two batches in flight so
that memory does not grow with the number of inputs. With one worker it runs in-process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(workers: int, n_items: int, min_per_worker: int = 256) -> int:
    """Choose the number of worker processes.

    Parameters
    ----------
    workers : int
        Requested number; 0 or negative means "as many as the machine has cores".
    n_items : int
        Number of items to process (few items are not worth a process pool).
    min_per_worker : int, default 256
        Minimum items per worker.

    Returns
    -------
    int
        At least 1.
    """
    if workers <= 0:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    return max(1, min(workers, n_items // min_per_worker if n_items >= min_per_worker else 1))


def _context() -> mp.context.BaseContext:
    # fork is cheap and the workers only run numpy/astropy code; elsewhere use spawn.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def ordered_map(
    func: Callable[[T], R],
    items: Sequence[T],
    workers: int = 1,
    batch_size: int = 2048,
) -> Iterator[R]:
    """Yield ``func(item)`` for every item, in order, computed by ``workers`` processes.

    Parameters
    ----------
    func : callable
        A picklable (module-level) function of one argument.
    items : sequence
        Inputs.
    workers : int, default 1
        Number of processes; 1 runs in the calling process.
    batch_size : int, default 2048
        Items per batch; at most two batches are in flight at once.

    Yields
    ------
    object
        The results, in the order of ``items``.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield func(item)
        return
    chunksize = max(1, min(64, batch_size // (4 * workers)))
    with _context().Pool(workers) as pool:
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        pending = pool.map_async(func, batches[0], chunksize) if batches else None
        for k in range(len(batches)):
            assert pending is not None
            results = pending.get()
            pending = (pool.map_async(func, batches[k + 1], chunksize)
                       if k + 1 < len(batches) else None)
            yield from results
