"""Multi-process (DDP) training plumbing on PyTorch's own engines: ``torch.distributed``, torchrun.

No scheduler of our own: a distributed run is either

* launched by ``torchrun`` (or any launcher that sets the ``torch.distributed.run`` variables
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
  ``MASTER_PORT``): :func:`setup` sees ``WORLD_SIZE > 1`` and joins the group, or
* spawned on this machine by :func:`spawn` (``otrain-train --nproc N``), which sets the same
  variables for a free localhost port and starts ``N`` processes with
  :func:`torch.multiprocessing.start_processes` (``spawn`` start method).

Backend: NCCL when this process has a GPU (device ``cuda:LOCAL_RANK``), else gloo on the CPU.

Sharding (:func:`shard_plan`): every rank draws the same seeded batch plan of an epoch and keeps
a contiguous slice of each global batch (``numpy.array_split`` order), so the global batch, and
so the optimisation, is the one of a single process; each rank reads only its own rows.

Errors: the set-up of a run (settings, files, checkpoint) ends with :meth:`DistContext.agree`,
a collective in which every rank reports whether it failed: the lowest failing rank raises its
own error and the others raise :class:`PeerFailed` (which the command line and :func:`spawn`
turn into a quiet exit with status 0, so torchrun names the failing rank as the root cause): a
user error is printed once. An error later in training ends that process; the launcher
(torchrun, or :func:`spawn`) then stops the others. Validation is sharded (see
:mod:`otrain.training`); rank 0 alone writes files.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.multiprocessing.spawn import ProcessException, start_processes

from otrain import errors
from otrain.errors import OtrainError
from otrain.models.modelfile import resolve_device

#: Seconds a collective may wait for the other ranks before the run fails.
TIMEOUT_S = 1800


class PeerFailed(OtrainError):
    """Another process of the distributed run failed and reports the error itself."""


def env_world_size() -> int:
    """``WORLD_SIZE`` set by a launcher such as torchrun (1 when not set)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def env_rank() -> int:
    """``RANK`` set by a launcher (0 when not set)."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


@dataclass
class DistContext:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    #: ``"gloo"`` or ``"nccl"``; None for a single process.
    backend: str | None = None
    #: True when :func:`setup` created the process group (and :func:`cleanup` destroys it).
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes."""
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Device of the tensors handed to collectives (a GPU for NCCL)."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def device(self, name: str) -> torch.device:
        """The training device of this process for ``--device name`` (auto, cpu, cuda).

        Raises
        ------
        OtrainError
            If a GPU is asked for and this process has none.
        """
        if not self.distributed:
            return resolve_device(name)
        if name != "cpu" and self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        if name.startswith("cuda"):
            raise OtrainError(f"device 'cuda' asked for but process {self.rank} (local rank "
                              f"{self.local_rank}) has no GPU of its own; "
                              f"{torch.cuda.device_count()} GPU(s) here (use --device cpu)")
        return resolve_device("cpu")

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (``numpy.array_split`` bounds)."""
        return shard_slice(n, self.rank, self.world_size)

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Sum ``values`` element-wise over all ranks (float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def broadcast(self, values: Sequence[float]) -> list[float]:
        """Rank 0's ``values`` on every rank (float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.comm_device)
        dist.broadcast(t, src=0)
        return t.cpu().tolist()

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``local`` rows in rank order, on every rank (on the CPU)."""
        if not self.distributed:
            return local
        dev = self.comm_device
        size = torch.tensor([local.shape[0]], dtype=torch.int64, device=dev)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        counts = [int(s) for s in sizes]
        padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=dev)
        padded[: local.shape[0]] = local.to(dev)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).cpu()

    def agree(self, error: BaseException | None) -> None:
        """Collective check that every rank got here without an error.

        Parameters
        ----------
        error : BaseException or None
            This rank's error, if any.

        Raises
        ------
        BaseException
            ``error`` on the lowest failing rank; :class:`PeerFailed` on the others when any
            rank failed. Nothing when none did.
        """
        if not self.distributed:
            if error is not None:
                raise error
            return
        flags = self.all_sum([float(r == self.rank and error is not None)
                              for r in range(self.world_size)])
        failed = [r for r, f in enumerate(flags) if f > 0]
        if not failed:
            return
        if error is not None and self.rank == failed[0]:
            raise error
        raise PeerFailed(f"training process {failed[0]} failed")

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model as DistributedDataParallel (gradients averaged over ranks), or as is."""
        if not self.distributed:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def launched() -> bool:
    """True inside a process group: a launcher's (``WORLD_SIZE > 1``) or an initialised one."""
    return env_world_size() > 1 or (dist.is_available() and dist.is_initialized())


def setup(device: str = "auto") -> DistContext:
    """Join the launcher's process group, if any.

    Uses an existing process group (the caller's own launcher) as is; else, when
    ``WORLD_SIZE > 1``, initialises one from the environment (``env://``) with NCCL when this
    process has a GPU and ``device`` is not ``"cpu"``, else gloo. Otherwise one process.

    Parameters
    ----------
    device : str, default "auto"
        ``--device`` of the run (decides the backend).

    Returns
    -------
    DistContext
        Rank, world size and backend of this process.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", "0")),
                           int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                           dist.get_backend(), owns_group=False)
    world = env_world_size()
    if world == 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    gpu = device != "cpu" and torch.cuda.is_available() and local_rank < torch.cuda.device_count()
    backend = "nccl" if gpu else "gloo"
    if gpu:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=env_rank(), world_size=world,
                            timeout=timedelta(seconds=TIMEOUT_S))
    return DistContext(env_rank(), world, local_rank,
                       int(os.environ.get("LOCAL_WORLD_SIZE", str(world))), backend,
                       owns_group=True)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it (also after an error)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------
# Sharding
# ------------------------------------------------------------------------------------------
def shard_slice(n: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s contiguous part of ``n`` items, as ``numpy.array_split`` cuts them."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def shard_plan(batches: list[np.ndarray], codes: list[np.ndarray] | None, rank: int,
               world: int) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """This rank's sub-batches of an epoch's batch plan (:func:`otrain.training.splits.epoch_plan`).

    Every global batch is cut into ``world`` contiguous parts (sizes differ by at most one; a
    part may be empty when a batch has fewer rows than ranks); rank ``rank`` keeps part
    ``rank``. The batches are sorted, so each part stays sorted (cheap reads).

    Parameters
    ----------
    batches : list of numpy.ndarray
        The global batches (row indices), the same on every rank.
    codes : list of numpy.ndarray or None
        Their augmentation codes.
    rank, world : int
        This rank and the number of ranks.

    Returns
    -------
    tuple
        The sub-batches and their codes, one per global batch.
    """
    cuts = [shard_slice(b.size, rank, world) for b in batches]
    mine = [b[s] for b, s in zip(batches, cuts, strict=True)]
    return mine, (None if codes is None else [c[s] for c, s in zip(codes, cuts, strict=True)])


# ------------------------------------------------------------------------------------------
# Local launcher (--nproc)
# ------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on localhost right now (as ``torchrun --standalone`` picks one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(nproc: int, target: Callable[..., Any], args: tuple[Any, ...],
          threads: int | None = None) -> Any:
    """Run ``target(*args)`` in ``nproc`` new local processes forming one gloo/NCCL group.

    Each process gets the variables of ``torch.distributed.run`` (``RANK``, ``LOCAL_RANK``,
    ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``) and
    ``torch.set_num_threads(threads)``.

    Parameters
    ----------
    nproc : int
        Number of processes.
    target : callable
        Picklable (module-level) function; it calls :func:`setup` itself.
    args : tuple
        Its arguments (picklable).
    threads : int, optional
        Torch threads per process (default: this process's count divided by ``nproc``, at
        least 1; ``OMP_NUM_THREADS``, when set, is left to torch).

    Returns
    -------
    object
        What ``target`` returned on rank 0.

    Raises
    ------
    OtrainError
        The user error a process reported (the lowest rank's).
    torch.multiprocessing.ProcessRaisedException
        Another failure of a process (its traceback in the message).
    """
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, torch.get_num_threads() // nproc)
    with tempfile.TemporaryDirectory(prefix="otrain-ddp-") as tmp:
        try:
            start_processes(_child, (nproc, free_port(), threads, tmp, target, args),
                            nprocs=nproc, join=True, start_method="spawn")
        except ProcessException:
            reported = sorted(Path(tmp).glob("error-*.json"))
            if reported:
                raise _error_from(reported[0]) from None
            raise
        result = Path(tmp) / "result.pkl"
        if not result.exists():
            raise OtrainError("the training processes ended without a result")
        with result.open("rb") as fh:
            return pickle.load(fh)  # our own file, written by rank 0 just now


def _child(index: int, nproc: int, port: int, threads: int | None, tmp: str,
           target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(index), "LOCAL_RANK": str(index), "GROUP_RANK": "0",
                       "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc)})
    if threads:
        torch.set_num_threads(threads)
    try:
        result = target(*args)
    except PeerFailed:
        return  # the failing rank reports; exiting quietly lets the launcher wait for it
    except OtrainError as exc:
        (Path(tmp) / f"error-{index:05d}.json").write_text(json.dumps(
            {"type": type(exc).__name__, "reason": exc.reason, "path": exc.path}))
        raise SystemExit(2) from None
    if index == 0:
        part = Path(tmp) / "result.pkl.part"
        with part.open("wb") as fh:
            pickle.dump(result, fh)
        part.replace(Path(tmp) / "result.pkl")


def _error_from(path: Path) -> OtrainError:
    info = json.loads(path.read_text())
    cls = getattr(errors, info["type"], OtrainError)
    if not (isinstance(cls, type) and issubclass(cls, OtrainError)):
        cls = OtrainError
    return cls(info["reason"], info["path"])
