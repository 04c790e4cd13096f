"""Running otrain work on a Dask cluster: connecting, and an ordered, bounded map over chunks.

otrain writes no scheduler of its own: Dask (``dask.distributed``) places the tasks, restarts
dead workers and re-runs their tasks. This module holds the parts shared by distributed
inference and conversion (:mod:`otrain.inference.dask.client`):

- :func:`require_dask` imports ``distributed`` lazily (an :class:`~otrain.errors.OtrainError`
  naming ``pip install 'otrain[dask]'`` when it is missing);
- :func:`dask_client` connects to a running scheduler (an address or a scheduler file) or starts
  a :class:`~distributed.LocalCluster` of single-threaded worker processes and closes it after;
- :func:`dask_ordered_map` submits one task per chunk, keeps a bounded window of chunks in flight
  (new ones are submitted as others complete), and yields the results in input order (the
  out-of-order ones are buffered, within the window), so memory does not grow with the input.

A task whose worker dies is re-run by Dask on another worker (up to
``distributed.scheduler.allowed-failures`` times); ``retries`` also re-runs a task that raised.
Each chunk's result is used exactly once, in order: no row is lost or doubled.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from otrain.errors import OtrainError

T = TypeVar("T")
R = TypeVar("R")

#: Items (files, cube rows) per Dask task by default.
DEFAULT_CHUNK_SIZE = 2000
#: Chunks in flight or waiting to be used, per worker thread.
WINDOW_PER_THREAD = 2
INSTALL_HINT = "pip install 'otrain[dask]'"


def require_dask() -> ModuleType:
    """Import and return ``distributed``, or raise an OtrainError saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise OtrainError(f"running on a Dask cluster (--scheduler) needs Dask: {INSTALL_HINT}"
                          ) from None
    return distributed


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _connect_timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    import dask
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")))


@contextlib.contextmanager
def dask_client(scheduler: str, workers: int = 0, timeout: float | None = None,
                quiet: bool = False) -> Iterator[Any]:
    """A :class:`distributed.Client` for the scheduler asked for, closed on exit.

    Parameters
    ----------
    scheduler : str
        ``"local"``: start a :class:`~distributed.LocalCluster` here (worker processes with one
        thread each), closed on exit. A scheduler file (an existing ``.json``, as written by
        ``dask scheduler --scheduler-file`` or dask-mpi), or an address such as
        ``tcp://host:8786``: connect to a running scheduler (the cluster is left running).
    workers : int, default 0
        Worker processes of a local cluster; 0 means one per core. Ignored otherwise.
    timeout : float, optional
        Seconds to wait for the scheduler; default Dask's ``distributed.comm.timeouts.connect``
        (also set by the environment variable ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``).
    quiet : bool, default False
        Silence the local cluster's warnings (worker restarts) too.

    Yields
    ------
    distributed.Client

    Raises
    ------
    OtrainError
        Dask missing, or the scheduler unreachable (one line naming the address).
    """
    distributed = require_dask()
    if scheduler == "local":
        n = workers if workers > 0 else _cores()
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR if quiet else logging.WARNING)
        try:
            with distributed.Client(cluster) as client:
                # Ctrl-C reaches the whole process group: the local workers leave it to this
                # process, which kills them (else each logs its cancelled task)
                with contextlib.suppress(Exception):
                    client.run(_ignore_sigint)
                yield client
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM: stop now, quietly
                _stop_workers_now()
            raise
        finally:
            cluster.close()
        return
    wait = _connect_timeout(timeout)
    as_file = scheduler.endswith(".json") and Path(scheduler).is_file()
    if scheduler.endswith(".json") and not as_file:
        raise OtrainError("no such Dask scheduler file (give 'local', a scheduler file written "
                          "by 'dask scheduler --scheduler-file', or tcp://host:port)", scheduler)
    target = {"scheduler_file": scheduler} if as_file else {"address": scheduler}
    try:
        client = distributed.Client(**target, timeout=wait)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise OtrainError(f"cannot connect to the Dask scheduler at {scheduler} within "
                          f"{wait:g} s ({_first_line(exc)})") from None
    try:
        yield client
    finally:
        client.close()


def _ignore_sigint() -> None:
    """Run on each local worker: SIGINT is for the otrain process that owns the cluster."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers_now() -> None:
    """On an interrupt: silence distributed's shutdown warnings (cancelled tasks, a nanny
    waiting 4 s for its worker) and kill this process's local worker processes, so the
    command ends in about a second with its own one line."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)
    for child in multiprocessing.active_children():
        with contextlib.suppress(Exception):
            child.kill()


def use_client(client: Any, scheduler: str, workers: int = 0, quiet: bool = False
               ) -> contextlib.AbstractContextManager[Any]:
    """``client`` as is (left open) when given, else :func:`dask_client` for ``scheduler``."""
    if client is not None:
        return contextlib.nullcontext(client)
    return dask_client(scheduler, workers, quiet=quiet)


def total_threads(client: Any) -> int:
    """Worker threads the scheduler knows now (0 while no worker has joined)."""
    return int(sum(client.nthreads().values()))


def dask_ordered_map(
    client: Any,
    func: Callable[..., R],
    chunks: Sequence[T],
    *args: Any,
    name: str = "otrain",
    retries: int = 2,
    window: int | None = None,
    on_done: Callable[[int, R], None] | None = None,
) -> Iterator[R]:
    """Yield ``func(chunk, *args)`` for every chunk, in order, computed on Dask workers.

    Parameters
    ----------
    client : distributed.Client
        The cluster.
    func : callable
        A picklable (module-level) function.
    chunks : sequence
        One task per chunk.
    *args
        Further arguments of ``func`` (small; sent with every task).
    name : str, default "otrain"
        Prefix of the task keys (what the Dask dashboard shows).
    retries : int, default 2
        Re-runs of a task that raised; a task whose worker died is re-run by Dask anyway.
    window : int, optional
        Most chunks submitted but not yet yielded; default :data:`WINDOW_PER_THREAD` x the
        worker threads (at least 2), re-read as workers join or leave.
    on_done : callable, optional
        ``on_done(index, result)`` as each chunk completes, in completion order (progress).

    Yields
    ------
    object
        The results, in the order of ``chunks``. Closing the generator cancels the tasks left.

    Raises
    ------
    OtrainError
        When a chunk's workers died too often (Dask's ``KilledWorker``).
    """
    distributed = require_dask()
    token = uuid.uuid4().hex[:10]
    futures: dict[int, Any] = {}
    index: dict[Any, int] = {}
    ready: dict[int, R] = {}
    queue = distributed.as_completed()
    state = {"next": 0, "submitted": 0}

    def fill() -> None:
        width = window or max(2, WINDOW_PER_THREAD * total_threads(client))
        while state["submitted"] < min(len(chunks), state["next"] + width):
            i = state["submitted"]
            fut = client.submit(func, chunks[i], *args, key=f"{name}-{token}-{i}",
                                retries=retries, pure=False)
            futures[i], index[fut.key] = fut, i
            queue.add(fut)
            state["submitted"] += 1

    try:
        fill()
        for fut in queue:
            i = index.pop(fut.key)
            try:
                ready[i] = fut.result()
            except distributed.KilledWorker as exc:
                raise OtrainError(f"Dask workers kept dying on chunk {i} of {len(chunks)} "
                                  f"({_first_line(exc)})") from None
            del futures[i]
            if on_done is not None:
                on_done(i, ready[i])
            while state["next"] in ready:
                result = ready.pop(state["next"])
                state["next"] += 1
                yield result
            fill()
    finally:
        if futures:
            client.cancel(list(futures.values()))


def add_dask_arguments(parser: argparse.ArgumentParser, items: str = "files") -> None:
    """Add ``--scheduler`` and ``--chunk-size`` (run on a Dask cluster) to a command."""
    group = parser.add_argument_group("Dask cluster (many processes or machines; needs "
                                      f"{INSTALL_HINT})")
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on Dask: a scheduler address (tcp://host:8786), a scheduler "
                            "file (.json), or 'local' to start a local cluster of --workers "
                            "processes (0 = one per core). The inputs (and the model) must "
                            "be visible to every worker under the same paths; the output is "
                            "written by this process")
    group.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="N",
                       help=f"{items} per Dask task (default: {DEFAULT_CHUNK_SIZE})")


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` if at least 1, else an OtrainError."""
    if chunk_size < 1:
        raise OtrainError(f"chunk size must be at least 1, got {chunk_size}")
    return int(chunk_size)
