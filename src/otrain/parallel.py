"""Ordered parallel map over many small files, in bounded batches.

Reading thousands of cutouts is embarrassingly parallel; :func:`ordered_map` runs a function on
worker processes and yields the results in input order, keeping at most two batches in flight so
that memory does not grow with the number of inputs. With one worker it runs in-process.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import multiprocessing.pool
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
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


def _worker_init() -> None:
    """Workers leave interrupts to their parent.

    Ctrl-C in a terminal reaches every process of the group: the workers ignore SIGINT (no
    tracebacks), the parent stops and terminates the pool (SIGTERM, default action in workers).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # blocked by _start_pool


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when the process that made it ends.

    A pool whose workers were killed by the same signal as their parent can be left with
    replacement workers its ``terminate`` never sees; they would wait for tasks for ever.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent ended before the request took effect
        os._exit(1)


def _kill_pool(pool: mp.pool.Pool) -> None:
    """Stop a pool at once, even one whose workers were killed by the same signal as us.

    ``Pool.terminate`` first takes the task queue's lock, which an idle worker holds while it
    waits; if that worker was killed (SIGTERM to the process group), the lock is never released
    and ``terminate`` blocks for ever. So the workers are killed here and the pool's own
    finaliser is cancelled (its helper threads are daemons and end with the process).
    """
    workers = getattr(pool, "_pool", None)
    finaliser = getattr(pool, "_terminate", None)
    handler = getattr(pool, "_worker_handler", None)
    if workers is None or finaliser is None or not hasattr(finaliser, "cancel"):
        pool.terminate()
        return
    if handler is not None:  # no more replacement workers
        handler._state = mp.pool.TERMINATE
    for _ in range(50):  # until the replacements started meanwhile are gone too
        alive = [proc for proc in list(workers) if proc.exitcode is None]
        if not alive:
            break
        for proc in alive:
            with contextlib.suppress(Exception):
                proc.kill()
        for proc in alive:
            with contextlib.suppress(Exception):
                proc.join(timeout=1)
    finaliser.cancel()


def _get(pending: Any) -> list[Any]:
    """``pending.get()``, waiting in short steps.

    A signal for the whole process group may be taken by a thread other than the main one
    (one that does not block it, e.g. a numerical library's); Python then runs its handler in
    the main thread only at the next bytecode, which an endless ``get()`` never reaches (and
    the workers the same signal killed took their tasks with them): a hang. Waking every
    0.1 s lets the handler raise (KeyboardInterrupt, SIGTERM's exception) within that time.
    """
    while not pending.ready():
        pending.wait(0.1)
    return pending.get()


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
    # SIGINT/SIGTERM are blocked while the pool forks: a signal handled during a fork runs in an
    # at-fork callback, where Python only prints the exception and the interrupt is lost. The
    # pool's helper threads keep them blocked, the workers unblock them in _worker_init, and
    # the main thread gets any pending one when the mask is restored, inside the try below.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pool = _context().Pool(workers, initializer=_worker_init)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        pending = pool.map_async(func, batches[0], chunksize) if batches else None
        for k in range(len(batches)):
            assert pending is not None
            results = _get(pending)
            pending = (pool.map_async(func, batches[k + 1], chunksize)
                       if k + 1 < len(batches) else None)
            yield from results
    except BaseException:  # an error, an interrupt, or the consumer stopped early
        _kill_pool(pool)
        raise
    pool.terminate()
