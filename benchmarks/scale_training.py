"""Seconds per training epoch with 1 and 2 processes (DDP, gloo on the CPU).

:func:`bench_training` writes a synthetic cube of 20,000 32x32 1-channel cutouts and trains on
it with :func:`otrain.training.train`, once per layout of processes x threads, and returns a dict
(``benchmarks/scale.py`` calls it).

Be careful reading the numbers: on one machine the processes share its cores. The fair
comparison on 2 cores is **1 process x 2 threads** (intra-op parallelism) against **2 processes
x 1 thread** (data parallelism, DDP: each process computes half of every batch, then the
gradients, ~2.1 M floats, are summed over the gloo ring); both use the same 2 cores, so a gain
can only come from better use of them, never from more hardware. DDP earns its keep across GPUs
and machines, which this benchmark does not measure.

Per epoch = training (17,000 cutouts: 15% go to validation, no test set) + validation, from the
``seconds`` column of the history; the start of the processes (torch imports, process group) is
reported apart as ``startup_s``.

Usage: ``python benchmarks/scale_training.py [--n 20000] [--epochs 1]`` prints the dict as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: (processes, threads per process) measured by default.
LAYOUTS: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (1, 1))


def synthetic_cube(path: Path, n: int = 20_000, size: int = 32, seed: int = 0) -> Path:
    """Write an HDF5 cube: real = a Gaussian blob, bogus = a hot pixel or a dipole, on noise.

    Parameters
    ----------
    path : Path
        Destination ``.h5``.
    n, size : int
        Number of cutouts and their side in pixels.
    seed : int
        Seed of the noise and the sources.

    Returns
    -------
    Path
        ``path``.
    """
    from otrain.datacube.hdf5 import write_datacube

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    dx, dy = rng.uniform(-1.5, 1.5, (2, n, 1, 1))
    s2 = 2 * rng.uniform(1.0, 2.0, (n, 1, 1)) ** 2
    amp = rng.uniform(3.0, 20.0, (n, 1, 1))
    blob = amp * np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / s2)
    dipole = blob - amp * np.exp(-((xx - dx - 1.5) ** 2 + (yy - dy) ** 2) / s2)
    hot = np.zeros_like(blob)
    hot[:, size // 2, size // 2] = 2 * amp[:, 0, 0]
    kind = rng.integers(0, 2, n)
    images = np.where(labels[:, None, None] == 1, blob,
                      np.where(kind[:, None, None] == 0, hot, dipole))
    images = images + rng.normal(0.0, 1.0, images.shape) + rng.normal(0.0, 5.0, (n, 1, 1))
    table = {"candid": np.array([f"s{i:06d}" for i in range(n)]), "label": labels}
    return write_datacube(path, images[:, None].astype(np.float32), table, ["diff"])


@contextlib.contextmanager
def _threads(processes: int, threads: int) -> Iterator[None]:
    """Torch threads of this process (1 process) or of the spawned ones (OMP_NUM_THREADS)."""
    before_env, before_n = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if processes == 1:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before_n)
        if before_env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before_env


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def bench_training(n: int = 20_000, size: int = 32, epochs: int = 1, batch_size: int = 128,
                   layouts: Sequence[tuple[int, int]] = LAYOUTS,
                   workdir: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """Measure seconds per training epoch for each (processes, threads per process) layout.

    Parameters
    ----------
    n, size : int, default 20000, 32
        Synthetic cube: number of cutouts and side in pixels.
    epochs : int, default 1
        Epochs per layout (more gives a mean over epochs).
    batch_size : int, default 128
        Global batch size (split across the processes).
    layouts : sequence of (int, int), default ((1, 2), (2, 1), (1, 1))
        (processes, threads per process) to measure.
    workdir : str or Path, optional
        Where the cube and models go (default: a temporary folder, removed afterwards).
    seed : int, default 0
        Seed of the cube and of the trainings (same split and plan in every layout).

    Returns
    -------
    dict
        Settings, machine, and per layout: ``seconds_per_epoch`` (list), ``mean_epoch_s``,
        ``train_cutouts_per_s``, ``startup_s`` (wall time not spent in epochs), ``val_auc``
        (no test set), the load average before and after, and ``speedup`` of each layout
        against the first.
    """
    from otrain.training.config import TrainConfig
    from otrain.training.loop import train

    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="otrain-bench-")))
        root.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        cube = synthetic_cube(root / "bench_cube.h5", n, size, seed)
        cube_s = time.perf_counter() - t
        runs, n_train = [], 0
        for processes, threads in layouts:
            cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, test_frac=0.0,
                              patience=None, device="cpu", nproc=processes)
            load_before = _load()
            with _threads(processes, threads):
                t = time.perf_counter()
                res = train(cube, root, f"p{processes}t{threads}", cfg, overwrite=True,
                            quiet=True)
                wall = time.perf_counter() - t
            secs = [float(row["seconds"]) for row in res.history]
            n_train = res.metrics["sizes"]["train"]["n"]
            runs.append({
                "processes": processes, "threads_per_process": threads,
                "seconds_per_epoch": [round(s, 2) for s in secs],
                "mean_epoch_s": round(float(np.mean(secs)), 2),
                "train_cutouts_per_s": round(n_train / float(np.mean(secs)), 1),
                "startup_s": round(wall - sum(secs), 2), "wall_s": round(wall, 2),
                "val_auc": res.metrics["validation"]["auc"],
                "load_before": load_before, "load_after": _load()})
    for run in runs:
        run["speedup"] = round(runs[0]["mean_epoch_s"] / run["mean_epoch_s"], 3)
    return {
        "benchmark": "training seconds per epoch, 1 vs 2 processes (DDP, gloo, CPU)",
        "n_cutouts": n, "size": size, "epochs": epochs, "batch_size": batch_size,
        "train_cutouts": n_train,
        "cube_write_s": round(cube_s, 2), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "python": platform.python_version(),
        "torch": torch.__version__, "runs": runs,
        "note": ("processes x threads share the same cores: 1x2 (intra-op threads) and 2x1 "
                 "(DDP data parallel) use the same 2 cores, so speedup here is not scaling; "
                 "DDP pays off across GPUs and machines. The load average shows whether the "
                 "machine was shared during a run."),
    }


def main() -> None:
    """Command line: print :func:`bench_training`'s dict as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = bench_training(args.n, args.size, args.epochs, args.batch_size)
    text = json.dumps(result, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
