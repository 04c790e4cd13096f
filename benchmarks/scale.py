"""Beyond one process: inference on Dask with 1 and 2 workers, a streamed large cube, training.

Writes ``benchmarks/results/scale.json`` with:

(a) ``files``: ``otrain-infer`` on ``--n-files`` (20,000) single-HDU 32x32 FITS cutouts in a
    temporary folder: the single-process path (:func:`otrain.inference.infer`, its own reading
    processes and threads) and :func:`otrain.inference.dask.client.infer_distributed` on a
    LocalCluster of 1 and 2 single-threaded worker processes (cluster start-up timed apart;
    the run includes each worker loading the model once). Throughput, scaling efficiency
    (speed-up / workers), peak RSS of each worker and of the client.
(b) ``stream``: ``--n-stream`` (1,000,000) 16x16 1-channel cutouts written to an HDF5 cube in
    batches of 50,000 (1 GB of images; 32x32 would be 4 GB), never all in memory, then scored
    on 2 Dask workers into a ``.dat`` table written chunk by chunk (total time, peak RSS per
    worker and of the client), and by the single-process path for comparison (which keeps the
    table's rows in memory and writes them at the end).

Each measurement runs in a fresh Python process, so its peak memory (``VmHWM``) is its own.
(c) ``training``: :func:`scale_training.bench_training` (seconds per epoch, 1 and 2 processes).

The machine has 2 cores shared by the Dask scheduler, the client and the workers (and by other
people): the load average is recorded before and after each part. Nothing is extrapolated:
the numbers are those of the sizes run, given in the JSON.

Usage: ``python benchmarks/scale.py [--n-files 20000] [--n-stream 1000000] [--train-n 20000]
[--skip-training] [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as otrain-infer, before torch

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _peak_rss_mb() -> float:
    """Peak RSS of this process: ``VmHWM`` (reset at exec; ``ru_maxrss`` of a spawned Dask
    worker keeps its parent's high-water mark from the fork), else ``ru_maxrss``."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _model(path: Path, size: int) -> Path:
    import torch

    from otrain.models.modelfile import save_model
    from otrain.models.networks import build_model

    torch.manual_seed(0)
    return save_model(path, build_model("otrain", 1, size, 0.0),
                      {"normalisation": "zscore", "channels": ["diff"]})


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    images = rng.normal(0.0, 1.0, (n, 1, size, size)).astype(np.float32)
    c = size // 2
    images[::2, 0, c - 1:c + 2, c - 1:c + 2] += rng.uniform(5, 50, (images[::2].shape[0], 1, 1))
    return images


def write_files(root: Path, n: int, size: int = 32) -> None:
    """``n`` single-HDU FITS cutouts with the O'TRAIN keywords."""
    from astropy.io import fits

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    header = fits.Header()
    for key, value in dict(MAG=18.0, MAGERR=0.05, FILTER="r", FWHM=2.5, EDGE="False", RA=10.0,
                           DEC=-5.0, FILE="img.fits", XPOS=100.0, YPOS=100.0,
                           FWHMPSF=2.4).items():
        header[key] = value
    for start in range(0, n, 1000):
        for i, image in enumerate(_images(rng, min(1000, n - start), size), start):
            header["CANDID"] = f"c{i}"
            fits.writeto(root / f"c_{i:07d}.fits", image[0], header)


def write_stream_cube(path: Path, n: int, size: int, batch: int = 50_000) -> Path:
    """An HDF5 cube of ``n`` cutouts written ``batch`` at a time (never all in memory)."""
    from otrain.datacube.hdf5 import DatacubeWriter

    rng = np.random.default_rng(1)
    with DatacubeWriter(path, (1, size, size), ["diff"]) as writer:
        for start in range(0, n, batch):
            k = min(batch, n - start)
            writer.append(_images(rng, k, size),
                          {"candid": np.char.add("s", np.arange(start, start + k).astype(str)),
                           "label": np.full(k, -1, dtype=np.int8)})
    return path


def _import_otrain() -> None:
    import otrain.inference.dask.worker  # noqa: F401 - torch and otrain, as a first task would


def measure_dask(source: str, model: str, out: str, workers: int, chunk_size: int
                 ) -> dict[str, Any]:
    """:func:`infer_distributed` on a new LocalCluster (run in a fresh process)."""
    from otrain.cluster import dask_client
    from otrain.inference.dask.client import infer_distributed

    load_before, t = _load(), time.perf_counter()
    with dask_client("local", workers, quiet=True) as client:
        startup = time.perf_counter() - t
        t = time.perf_counter()
        client.run(_import_otrain)
        imports = time.perf_counter() - t
        t = time.perf_counter()
        res = infer_distributed(source, model, out, chunk_size=chunk_size, client=client,
                                quiet=True, overwrite=True)
        seconds = time.perf_counter() - t
        peaks = sorted(client.run(_peak_rss_mb).values())
    n = res.report.n_scored
    return {"workers": workers, "threads_per_worker": 1, "chunk_size": chunk_size,
            "scored": n, "cluster_startup_s": round(startup, 2),
            "worker_imports_s": round(imports, 2), "seconds": round(seconds, 2),
            "cutouts_per_s": round(n / seconds, 1), "peak_rss_worker_mb": peaks,
            "peak_rss_client_mb": _peak_rss_mb(),
            "output_mb": round(Path(out).stat().st_size / 2**20, 1),
            "load_before": load_before, "load_after": _load()}


def measure_single(source: str, model: str, out: str) -> dict[str, Any]:
    """The single-process :func:`otrain.inference.infer` (run in a fresh process)."""
    from otrain.inference.core import infer

    load_before, t = _load(), time.perf_counter()
    res = infer(source, model, out, quiet=True, overwrite=True)
    seconds = time.perf_counter() - t
    n = res.report.n_scored
    return {"scored": n, "seconds": round(seconds, 2), "cutouts_per_s": round(n / seconds, 1),
            "peak_rss_process_mb": _peak_rss_mb(),
            "note": "otrain's own reading processes and threads; their memory is not counted",
            "load_before": load_before, "load_after": _load()}


def _child(name: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``measure_<name>(**kwargs)`` in a fresh Python (clean peak memory), return its dict."""
    proc = subprocess.run([sys.executable, __file__, "--measure", name, json.dumps(kwargs)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(name, json.dumps(result), flush=True)
    return result


def _compare(a: Path, b: Path) -> dict[str, Any]:
    """Byte identity, row order (``filename``) and the largest difference of ``label1``."""
    if a.read_bytes() == b.read_bytes():
        return {"byte_identical": True, "same_rows_in_order": True, "max_abs_diff_label1": 0.0}
    with a.open() as fa, b.open() as fb:
        names = fa.readline().lstrip("#").split()
        fb.readline()
        i, j, same, diff = names.index("filename"), names.index("label1"), True, 0.0
        for la, lb in zip(fa, fb, strict=True):
            ra, rb = la.split(), lb.split()
            same = same and ra[i] == rb[i]
            diff = max(diff, abs(float(ra[j]) - float(rb[j])))
    return {"byte_identical": False, "same_rows_in_order": same, "max_abs_diff_label1": diff,
            "why": "the single process runs torch with 2 threads, a Dask task with 1: the last "
                   "bits of the convolution sums differ"}


def part_files(root: Path, n: int, chunk_size: int) -> dict[str, Any]:
    """Single process, then Dask with 1 and 2 workers, on ``n`` FITS files."""
    t = time.perf_counter()
    write_files(root / "files", n)
    write_s = time.perf_counter() - t
    model = str(_model(root / "m32.safetensors", 32))
    files = str(root / "files")
    single = _child("single", source=files, model=model, out=str(root / "one.dat"))
    runs = [_child("dask", source=files, model=model, out=str(root / f"dask{w}.dat"),
                   workers=w, chunk_size=chunk_size) for w in (1, 2)]
    speedup = runs[1]["cutouts_per_s"] / runs[0]["cutouts_per_s"]
    same = (root / "dask1.dat").read_bytes() == (root / "dask2.dat").read_bytes()
    return {"n_files": n, "size": 32, "write_files_s": round(write_s, 1),
            "single_process": single, "dask": runs,
            "speedup_2_vs_1_workers": round(speedup, 3),
            "scaling_efficiency_2_workers": round(speedup / 2, 3),
            "dask_1_and_2_workers_tables_identical": same,
            "dask_vs_single": _compare(root / "dask2.dat", root / "one.dat")}


def part_stream(root: Path, n: int, size: int, chunk_size: int, workers: list[int],
                single: bool) -> dict[str, Any]:
    """A cube of ``n`` cutouts written in batches, scored on Dask (and in one process)."""
    free = shutil.disk_usage(root).free
    t = time.perf_counter()
    cube = write_stream_cube(root / "stream.h5", n, size)
    write_s = time.perf_counter() - t
    model = str(_model(root / f"m{size}.safetensors", size))
    out: dict[str, Any] = {"n_cutouts": n, "size": size, "channels": 1,
                           "cube_gb": round(cube.stat().st_size / 1e9, 2),
                           "disk_free_before_gb": round(free / 1e9, 1),
                           "write_cube_s": round(write_s, 1)}
    out["dask"] = [_child("dask", source=str(cube), model=model, out=str(root / "stream.dat"),
                          workers=w, chunk_size=chunk_size) for w in workers]
    if single:
        out["single_process"] = _child("single", source=str(cube), model=model,
                                       out=str(root / "stream_one.dat"))
        out["dask_vs_single"] = _compare(root / "stream.dat", root / "stream_one.dat")
    cube.unlink()
    return out


def main() -> None:
    """Run the parts asked for and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-files", type=int, default=20_000)
    parser.add_argument("--n-stream", type=int, default=1_000_000)
    parser.add_argument("--stream-size", type=int, default=16)
    parser.add_argument("--stream-workers", default="2",
                        help="comma-separated Dask worker counts for the stream (default: 2)")
    parser.add_argument("--no-stream-single", action="store_true",
                        help="skip the single-process run on the stream")
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--train-n", type=int, default=20_000)
    parser.add_argument("--skip-files", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--workdir", default=None, help="temporary data (default: /tmp)")
    parser.add_argument("--output", default=str(HERE / "results" / "scale.json"))
    parser.add_argument("--measure", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        func = {"single": measure_single, "dask": measure_dask}[args.measure[0]]
        print(json.dumps(func(**json.loads(args.measure[1]))))
        return
    import dask
    import torch

    result: dict[str, Any] = {
        "benchmark": "scale: Dask inference 1 vs 2 workers, 1M-cutout stream, training 1 vs 2 "
                     "processes",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "dask": dask.__version__},
        "load_at_start": _load(),
        "note": ("2 cores are shared by the Dask scheduler, the client (which also writes the "
                 "table) and the workers, and by other users of the machine (see the load "
                 "averages): 2 workers cannot reach 2x here, and the 1-worker run already has "
                 "the second core for the client and scheduler. Scaling across machines is "
                 "not measured. Nothing is extrapolated: sizes are those run."),
    }
    with tempfile.TemporaryDirectory(prefix="otrain-scale-", dir=args.workdir) as tmp:
        root = Path(tmp)
        if not args.skip_files:
            result["files"] = part_files(root, args.n_files, args.chunk_size)
        if not args.skip_stream:
            result["stream"] = part_stream(
                root, args.n_stream, args.stream_size, args.chunk_size,
                [int(w) for w in args.stream_workers.split(",")], not args.no_stream_single)
    if not args.skip_training:
        from scale_training import bench_training

        result["training"] = bench_training(n=args.train_n)
    result["load_at_end"] = _load()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
