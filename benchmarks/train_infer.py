"""Benchmark of training and inference against the original O'TRAIN (TensorFlow) numbers.

Writes ``benchmarks/results/train_infer.json`` with:

(a) seconds per epoch of :func:`otrain.training.train` on a cube of 20,000 synthetic 32x32
    1-channel cutouts (15% validation -> 17,000 training cutouts, the size of the original's
    reference run);
(b) ``otrain-infer`` end to end (:func:`otrain.inference.infer`: read 20,000 single-HDU FITS
    files, normalise, score, write ``infer_results.dat``), cutouts/s;
(c) the network alone on in-memory arrays: :func:`otrain.models.modelfile.predict_proba` (batch 512,
    normalisation included), and the optimised forward pass used by inference;
(d) FLOPs per cutout (:func:`otrain.models.count_flops`) and the achieved FLOP/s, next to the
    best of a few 4096x4096 float32 matrix products in torch (the machine's compute limit).

Each part runs in its own process (its own threads, pools and peak memory). The machine is shared:
the load average is recorded before and after each part.

Usage: ``python benchmarks/train_infer.py [--n 20000] [--epochs 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: The original O'TRAIN (TensorFlow) on the same kind of machine.
REFERENCE = {"epoch_seconds_17000": 59.0, "infer_end_to_end_cutouts_per_s": 450.0,
             "network_alone_cutouts_per_s": 1500.0, "mflop_per_cutout": 70.0,
             "compute_limit_cutouts_per_s": 2400.0}
TARGETS = {"epoch_time_vs_original": "<= 0.5", "infer_end_to_end_vs_original": ">= 4",
           "network_alone_fraction_of_limit": ">= 0.6"}


def synthetic(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real: a PSF-like Gaussian at the centre; bogus: hot pixels, dipoles or empty noise."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 1.0, (n, 1, size, size)).astype(np.float32)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2

    def blob(dx: np.ndarray, dy: np.ndarray, sigma: np.ndarray, flux: np.ndarray) -> np.ndarray:
        r2 = (xx[None] - dx[:, None, None]) ** 2 + (yy[None] - dy[:, None, None]) ** 2
        s2 = sigma[:, None, None] ** 2
        return (flux[:, None, None] / (2 * np.pi * s2) * np.exp(-r2 / (2 * s2))).astype(
            np.float32)

    real = np.flatnonzero(labels == 1)
    k = real.size
    images[real, 0] += blob(rng.uniform(-1, 1, k), rng.uniform(-1, 1, k),
                            rng.uniform(1.0, 2.2, k), rng.uniform(20, 300, k))
    bogus = np.flatnonzero(labels == 0)
    kind = rng.integers(0, 3, bogus.size)
    hot = bogus[kind == 0]
    images[hot, 0, rng.integers(4, size - 4, hot.size), rng.integers(4, size - 4, hot.size)] += \
        rng.uniform(20, 200, hot.size)
    dip = bogus[kind == 1]
    m = dip.size
    sig, flux, off = rng.uniform(1.0, 2.0, m), rng.uniform(50, 300, m), rng.uniform(1, 3, m)
    images[dip, 0] += blob(off, np.zeros(m), sig, flux) - blob(-off, np.zeros(m), sig, flux)
    return images, labels


def write_fits(root: Path, images: np.ndarray) -> None:
    from astropy.io import fits

    root.mkdir(parents=True)
    for i, image in enumerate(images):
        header = fits.Header()
        for key, value in dict(CANDID=f"c{i}", MAG=18.0, MAGERR=0.05, FILTER="r", FWHM=2.5,
                               EDGE="False", RA=10.0, DEC=-5.0, FILE="img.fits", XPOS=100.0,
                               YPOS=100.0, FWHMPSF=2.4).items():
            header[key] = value
        fits.writeto(root / f"c_{i:06d}.fits", image[0], header)


def _peak() -> dict:
    return {"peak_rss_main_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "peak_rss_worker_mb": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def part_train(cube: str, out: str, epochs: int) -> dict:
    from otrain.training.config import TrainConfig
    from otrain.training.loop import train

    config = TrainConfig(epochs=epochs, val_frac=0.15, test_frac=0.0, patience=None,
                         device="cpu", workers=0)
    start = time.perf_counter()
    result = train(cube, out, "bench", config, overwrite=True, quiet=True)
    total = time.perf_counter() - start
    n_train = int(result.metrics["sizes"]["train"]["n"])
    secs = [round(float(r["seconds"]), 2) for r in result.history]
    return {"epochs": len(secs), "epoch_seconds": secs, "n_train": n_train,
            "epoch_seconds_best": min(secs), "train_call_seconds": round(total, 1),
            "val_auc_last": round(float(result.history[-1]["val_auc"]), 4),
            "model_file": str(result.model_file), **_peak()}


def part_infer(folder: str, model: str, out: str, workers: int) -> dict:
    import otrain.cli.infer  # noqa: F401 - sets OMP_WAIT_POLICY before torch, as otrain-infer
    from otrain.inference.core import infer
    from otrain.inference.stream import plan_threads

    cpu0, start = _cpu_seconds(), time.perf_counter()
    result = infer(folder, model, out, workers=workers, quiet=True, overwrite=True)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    r = result.report
    readers, threads = plan_threads(workers, r.n_inputs)
    return {"workers": workers, "reading_processes": readers, "torch_threads": threads,
            "scored": r.n_scored, "seconds": round(seconds, 2),
            "cutouts_per_s": round(r.n_scored / seconds, 1), "cpu_seconds": round(cpu, 2),
            "cpu_ms_per_cutout": round(1000 * cpu / r.n_scored, 3), **_peak()}


def part_model(cube: str, model: str, n: int) -> dict:
    """Network alone, at 1 thread and at all cores, each next to a matmul at the same count."""
    import torch

    from otrain.datacube.hdf5 import open_datacube
    from otrain.inference.scoring import Scorer
    from otrain.models.modelfile import load_model, predict_proba
    from otrain.models.networks import count_flops
    from otrain.models.normalise import normalise

    with open_datacube(cube) as c:
        images = c.read(slice(0, n))
    loaded = load_model(model)
    flops = count_flops(loaded.model, images.shape[1:])
    cores = torch.get_num_threads()
    out: dict = {"flop_per_cutout": flops, "cores": cores, "by_threads": {}}
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    normed = normalise(images, loaded.normalisation)
    scorer = Scorer(loaded, images.shape[1:])
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        row: dict = {}
        for _ in range(2):  # interleaved rounds, best of each: the machine is shared
            mm = min(_timed(lambda: a @ b) for _ in range(3))
            row["matmul_gflop_s"] = max(row.get("matmul_gflop_s", 0), 2 * 4096**3 / mm / 1e9)
            scorer(normed[:512])
            fw = n / _timed(lambda: scorer(normed))
            row["optimised_forward_cutouts_per_s"] = max(
                row.get("optimised_forward_cutouts_per_s", 0), fw)
            pp = n / _timed(lambda: predict_proba(loaded, images, batch_size=512))
            row["predict_proba_cutouts_per_s"] = max(row.get("predict_proba_cutouts_per_s", 0), pp)
        row["limit_cutouts_per_s"] = row["matmul_gflop_s"] * 1e9 / flops
        row["forward_fraction_of_limit"] = row["optimised_forward_cutouts_per_s"] / row[
            "limit_cutouts_per_s"]
        row["predict_proba_fraction_of_limit"] = row["predict_proba_cutouts_per_s"] / row[
            "limit_cutouts_per_s"]
        out["by_threads"][str(threads)] = {k: round(v, 3 if "fraction" in k else 1)
                                           for k, v in row.items()}
    full = out["by_threads"][str(cores)]
    best = max(max(r["optimised_forward_cutouts_per_s"], r["predict_proba_cutouts_per_s"])
               for r in out["by_threads"].values())
    out["compute_limit_cutouts_per_s"] = full["limit_cutouts_per_s"]
    out["compute_limit_gflop_s"] = full["matmul_gflop_s"]
    out["network_alone_best_cutouts_per_s"] = best
    out["achieved_gflop_s"] = round(best * flops / 1e9, 1)
    out["fraction_of_limit"] = round(best / full["limit_cutouts_per_s"], 3)
    return out


def _timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _sub(*args: str) -> dict:
    before = os.getloadavg()
    proc = subprocess.run([sys.executable, __file__, "--part", *args], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"part {args[0]} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load_before_after"] = [round(before[0], 2), round(os.getloadavg()[0], 2)]
    print(f"{args[0]}: {result}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(HERE / "results" / "train_infer.json"))
    args = parser.parse_args()
    if args.part:
        name, rest = args.part[0], args.part[1:]
        func = {"train": lambda: part_train(rest[0], rest[1], int(rest[2])),
                "infer": lambda: part_infer(rest[0], rest[1], rest[2], int(rest[3])),
                "model": lambda: part_model(rest[0], rest[1], int(rest[2]))}[name]
        print(json.dumps(func()))
        return
    from otrain.datacube.hdf5 import write_datacube

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, labels = synthetic(args.n, args.size)
        cube = root / "cube.h5"
        write_datacube(cube, images, {"candid": [f"c{i}" for i in range(args.n)],
                                      "label": labels}, ["diff"])
        t0 = time.perf_counter()
        write_fits(root / "cutouts", images)
        print(f"wrote {args.n} FITS files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        del images
        train = _sub("train", str(cube), str(root / "models"), str(args.epochs))
        model = train.pop("model_file")
        infer_runs = [_sub("infer", str(root / "cutouts"), model, str(root / f"out{w}.dat"),
                           str(w)) for w in (0, 1)]
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "otrain-infer"), "--cutouts",
                        str(root / "cutouts"), "--model", model, "--output",
                        str(root / "cli.dat"), "-q"], check=True)
        cli_seconds = time.perf_counter() - start
        cli = {"seconds": round(cli_seconds, 2), "cutouts_per_s": round(args.n / cli_seconds, 1),
               "note": "otrain-infer as a user runs it: process start, imports, model load, "
                       "reading, scoring, writing"}
        net = _sub("model", str(cube), model, str(min(args.n, 10000)))
    epoch_17k = train["epoch_seconds_best"] * 17000 / train["n_train"]
    infer_best = max(r["cutouts_per_s"] for r in infer_runs)
    result = {
        "benchmark": "train_infer", "n_cutouts": args.n, "size": args.size, "channels": 1,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "torch": __import__("torch").__version__},
        "train": train, "infer_end_to_end": infer_runs, "infer_cli_wall": cli, "network": net,
        "reference_original_tensorflow": REFERENCE, "targets": TARGETS,
        "ratios": {
            "epoch_seconds_per_17000": round(epoch_17k, 2),
            "epoch_time_vs_original": round(epoch_17k / REFERENCE["epoch_seconds_17000"], 3),
            "infer_end_to_end_vs_original": round(
                infer_best / REFERENCE["infer_end_to_end_cutouts_per_s"], 2),
            "network_alone_vs_original": round(
                net["network_alone_best_cutouts_per_s"]
                / REFERENCE["network_alone_cutouts_per_s"], 2),
            "network_alone_fraction_of_limit": net["fraction_of_limit"],
            "flop_per_cutout_vs_original": round(
                net["flop_per_cutout"] / 1e6 / REFERENCE["mflop_per_cutout"], 3),
        },
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "notes": ["load averages (1-minute) include this benchmark's own processes",
                  "infer_end_to_end: infer() with OMP_WAIT_POLICY=PASSIVE as otrain-infer; "
                  "infer_cli_wall also counts process start and imports",
                  "optimised_forward: the forward pass otrain-infer uses (frozen TorchScript, "
                  "oneDNN); predict_proba: otrain.models.modelfile.predict_proba (eager)",
                  "train epoch seconds: otrain.training history (training + validation pass)"],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
