"""Benchmark of training and inference, fp32 and bf16, against the original O'TRAIN's way.

Writes ``benchmarks/results/train_infer.json`` with:

(a) seconds per epoch of :func:`otrain.training.train` on a cube of synthetic 32x32 1-channel
    cutouts (20,000 -> 15% validation -> 17,000 training cutouts, the size of the original's
    reference run): otrain-train's defaults (batch 32, ``--precision auto``) and fp32 at batch 32,
    fp32 and bf16 at batch 128, bf16 at batch 1024; and, when
    a Python with TensorFlow is given (``--keras-python``, default ``/tmp/tfenv16/bin/python``
    if present), Keras ``model.fit(batch_size=1024)`` of the same network on the same images
    (``keras_reference.py``), else "not measured";
(b) ``otrain-infer`` as a user runs it (process start, imports, model load, reading 20,000
    single-HDU FITS files, scoring, writing), ``--precision fp32`` and ``bf16`` interleaved;
(c) the network alone (:class:`otrain.inference.scoring.Scorer`) in fp32 and bf16, each as a
    fraction of a same-run 4096x4096 matrix product in the same precision, interleaved rounds
    (median and spread), and the largest |P(real)| difference bf16 - fp32 on the trained model;
(d) the CPU flags seen and what ``--precision auto`` picks (:mod:`otrain.models.precision`).

Each part runs in its own process. The machine is shared: every comparison is a ratio measured
in one run, and the load average is recorded before and after each part.

Usage: ``python benchmarks/train_infer.py [--n 20000] [--epochs 1]``
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

from otrain.training.config import TrainConfig

HERE = Path(__file__).resolve().parent
#: Issue 16, measured by its reporter side by side with Keras 2 / TF 2.21 on a 2-core machine.
REFERENCE = {"keras_epoch_seconds_17000": [19.9, 20.5], "otrain_defaults_epoch_seconds": [38, 44],
             "original_infer_20000_fits_seconds": 39.4}
TARGETS = {"epoch_vs_keras": "<= 0.5", "infer_whole_process_vs_original": ">= 10",
           "network_alone_bf16_fraction_of_bf16_matmul": ">= 0.5"}
KERAS_PYTHON = "/tmp/tfenv16/bin/python"
#: otrain-train's default batch size; with --precision auto, "the defaults".
DEFAULT_BATCH = int(TrainConfig.batch_size)


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


def part_train(cube: str, out: str, epochs: int, precision: str = "fp32",
               batch_size: int = 128) -> dict:
    from otrain.training.loop import train

    config = TrainConfig(epochs=epochs, val_frac=0.15, test_frac=0.0, patience=None,
                         device="cpu", workers=0, precision=precision, batch_size=batch_size)
    start = time.perf_counter()
    result = train(cube, out, "bench", config, overwrite=True, quiet=True)
    total = time.perf_counter() - start
    n_train = int(result.metrics["sizes"]["train"]["n"])
    secs = [round(float(r["seconds"]), 2) for r in result.history]
    return {"precision": precision, "batch_size": batch_size,
            "precision_used": _read_meta(result.model_file)["training"]["precision"],
            "epochs": len(secs), "epoch_seconds": secs, "n_train": n_train,
            "epoch_seconds_best": min(secs), "train_call_seconds": round(total, 1),
            "val_auc_last": round(float(result.history[-1]["val_auc"]), 4),
            "model_file": str(result.model_file), **_peak()}


def _read_meta(path: str | Path) -> dict:
    from otrain.models.modelfile import read_metadata

    return read_metadata(path)


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


def part_model(cube: str, model: str, n: int, rounds: int = 3) -> dict:
    """The network alone in fp32 and bf16, each next to a same-run matmul in its precision."""
    import torch

    from otrain.datacube.hdf5 import open_datacube
    from otrain.inference.scoring import Scorer
    from otrain.models.modelfile import load_model
    from otrain.models.networks import count_flops
    from otrain.models.normalise import normalise

    with open_datacube(cube) as c:
        images = c.read(slice(0, n))
    loaded = load_model(model)
    flops = count_flops(loaded.model, images.shape[1:])
    normed = normalise(images, loaded.normalisation)
    scorers = {"fp32": Scorer(loaded, images.shape[1:], "fp32"),
               "bf16": Scorer(loaded, images.shape[1:], "bf16")}
    scorers["bf16"].forward.tolerance = float("inf")  # measure bf16 itself, never fall back
    probs = {k: sc(normed) for k, sc in scorers.items()}  # warm-up, and the scores compared
    diff = np.abs(probs["bf16"][:, 1] - probs["fp32"][:, 1])
    mats = {"fp32": [torch.randn(4096, 4096) for _ in range(2)]}
    mats["bf16"] = [m.bfloat16() for m in mats["fp32"]]
    rows: dict[str, dict[str, list[float]]] = {k: {"matmul_gflop_s": [], "cutouts_per_s": []}
                                                for k in scorers}
    for _ in range(rounds):  # interleaved: fp32 matmul, bf16 matmul, fp32 net, bf16 net
        for k, (a, b) in mats.items():
            rows[k]["matmul_gflop_s"].append(2 * 4096**3 / min(
                _timed(lambda a=a, b=b: a @ b) for _ in range(2)) / 1e9)
        for k, sc in scorers.items():
            rows[k]["cutouts_per_s"].append(n / _timed(lambda sc=sc: sc(normed)))
    out: dict = {"flop_per_cutout": flops, "threads": torch.get_num_threads(), "n": n,
                 "bf16_vs_fp32_p_real": {"max": float(diff.max()),
                                         "p99": float(np.quantile(diff, 0.99)),
                                         "median": float(np.median(diff))}}
    for k, row in rows.items():
        fractions = [c * flops / 1e9 / g for c, g in zip(row["cutouts_per_s"],
                                                         row["matmul_gflop_s"], strict=True)]
        out[k] = {**{name: _spread(v) for name, v in row.items()},
                  "fraction_of_same_precision_matmul": _spread(fractions)}
    out["bf16_vs_fp32_speed"] = _spread([b / a for a, b in zip(
        rows["fp32"]["cutouts_per_s"], rows["bf16"]["cutouts_per_s"], strict=True)])
    out["bf16_vs_fp32_matmul"] = _spread([b / a for a, b in zip(
        rows["fp32"]["matmul_gflop_s"], rows["bf16"]["matmul_gflop_s"], strict=True)])
    return out


def _floors(net: dict, train: list[dict], keras: dict, n: int) -> dict:
    """Compute-bound lower bounds, from this run's own rates: the time the network's arithmetic
    alone takes at the same-run matrix-product rate (the best this CPU's kernels reach), against
    the time each target allows."""
    flop = net["flop_per_cutout"]
    rate = {k: net[k]["matmul_gflop_s"]["median"] * 1e9 for k in ("fp32", "bf16")}
    n_train = train[0]["n_train"]
    n_val = n - n_train  # the benchmark trains with test_frac 0: the rest is validation
    epoch_flop = flop * (3 * n_train + n_val)  # forward + backward (2x), then validation
    out: dict = {
        "epoch_tflop": round(epoch_flop / 1e12, 3),
        "epoch_seconds_at_matmul_rate": {k: round(epoch_flop / r, 2) for k, r in rate.items()},
        "infer_tflop": round(flop * n / 1e12, 3),
        "infer_network_seconds_at_matmul_rate": {k: round(flop * n / r, 2)
                                                 for k, r in rate.items()},
        "note": "FLOPs of the convolutions and dense layers only (count_flops), backward counted "
                "as twice the forward (the first convolution's input gradient, 0.4% of the "
                "FLOPs, is not computed but is counted); a floor otherwise, since pooling, "
                "activations, dropout, the optimiser and reading come on top"}
    if "keras_epoch_seconds" in keras:
        allowed = 0.5 * min(keras["keras_epoch_seconds"]) * n_train / keras["n_train"]
        out["epoch_target_seconds"] = round(allowed, 2)
        out["epoch_target_needs_gflop_s"] = round(epoch_flop / allowed / 1e9, 1)
        out["epoch_target_needs_fraction_of_bf16_matmul"] = round(
            epoch_flop / allowed / rate["bf16"], 3)
    out["infer_target_seconds"] = round(REFERENCE["original_infer_20000_fits_seconds"] / 10
                                        * n / 20000, 2)
    return out


def _spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements (rounded)."""
    return {"median": round(float(np.median(values)), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


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


def _cli_infer(folder: Path, model: str, out: Path, precision: str) -> tuple[float, str]:
    """Wall seconds of one ``otrain-infer`` process, and the precision line of its summary."""
    start = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "otrain-infer"), "--cutouts",
                           str(folder), "--model", model, "--output", str(out), "--overwrite",
                           "--precision", precision], check=True, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    used = [line for line in proc.stdout.splitlines() if line.startswith("precision ")]
    return seconds, used[-1] if used else ""


def _keras(python: str, images_npz: Path, epochs: int, repeats: int = 3) -> dict:
    """Keras ``fit`` in ``repeats`` separate processes. Its epoch time is bimodal here (about
    22 s or about 43 s for the same images, run to run, on a quiet machine), so every epoch is
    recorded and the ratios use the fastest: the comparison most favourable to Keras."""
    if not python or not Path(python).exists():
        return {"note": f"not measured: no Python with TensorFlow at {python!r} "
                        "(--keras-python)"}
    result: dict = {"keras_epoch_seconds": [], "load_before_after": []}
    for _ in range(repeats):
        before = os.getloadavg()
        proc = subprocess.run([python, str(HERE / "keras_reference.py"), str(images_npz),
                               str(epochs)], capture_output=True, text=True)
        if proc.returncode != 0:
            return {"note": f"not measured: Keras run failed: {proc.stderr.strip()[-300:]}"}
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        result["keras_epoch_seconds"] += run.pop("keras_epoch_seconds")
        result.update(run)
        result["load_before_after"].append([round(before[0], 2), round(os.getloadavg()[0], 2)])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved otrain-infer runs")
    parser.add_argument("--keras-python", default=KERAS_PYTHON)
    parser.add_argument("--keras-repeats", type=int, default=3,
                        help="Keras processes (the fastest epoch is the reference)")
    parser.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(HERE / "results" / "train_infer.json"))
    args = parser.parse_args()
    if args.part:
        name, rest = args.part[0], args.part[1:]
        func = {"train": lambda: part_train(rest[0], rest[1], int(rest[2]), rest[3],
                                            int(rest[4])),
                "infer": lambda: part_infer(rest[0], rest[1], rest[2], int(rest[3])),
                "model": lambda: part_model(rest[0], rest[1], int(rest[2]))}[name]
        print(json.dumps(func()))
        return
    from otrain.datacube.hdf5 import write_datacube
    from otrain.models.precision import hardware, resolve_precision

    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, labels = synthetic(args.n, args.size)
        cube = root / "cube.h5"
        write_datacube(cube, images, {"candid": [f"c{i}" for i in range(args.n)],
                                      "label": labels}, ["diff"])
        np.savez(root / "images.npz", images=images, labels=labels)
        t0 = time.perf_counter()
        write_fits(root / "cutouts", images)
        print(f"wrote {args.n} FITS files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        del images
        train = [_sub("train", str(cube), str(root / f"m_{p}_{b}"), str(args.epochs), p, str(b))
                 for p, b in (("fp32", 128), ("auto", DEFAULT_BATCH), ("fp32", DEFAULT_BATCH),
                              ("bf16", 128), ("bf16", 1024))]
        keras = _keras(args.keras_python, root / "images.npz", args.epochs, args.keras_repeats)
        model = train[0].pop("model_file")
        for t in train[1:]:
            t.pop("model_file")
        cli: dict[str, list[float]] = {"fp32": [], "bf16": [], "auto": []}
        cli_used: dict[str, str] = {}
        loads = [round(os.getloadavg()[0], 2)]
        for _ in range(args.repeats):  # interleaved
            for p in cli:
                seconds, used = _cli_infer(root / "cutouts", model, root / f"{p}.dat", p)
                cli[p].append(round(seconds, 2))
                cli_used[p] = used
                loads.append(round(os.getloadavg()[0], 2))
        net = _sub("model", str(cube), model, str(min(args.n, 5000)))
    hw = hardware("cpu")
    per_17k = {f"{t['precision']}_batch{t['batch_size']}": round(
        t["epoch_seconds_best"] * 17000 / t["n_train"], 2) for t in train}
    ratios: dict = {
        "epoch_bf16_vs_fp32_batch128": round(per_17k["bf16_batch128"] / per_17k["fp32_batch128"],
                                             3),
        "epoch_defaults_auto_vs_fp32": round(per_17k[f"auto_batch{DEFAULT_BATCH}"]
                                             / per_17k[f"fp32_batch{DEFAULT_BATCH}"], 3),
        "epoch_batch1024_vs_batch128_bf16": round(per_17k["bf16_batch1024"]
                                                  / per_17k["bf16_batch128"], 3),
        "infer_cli_bf16_vs_fp32_seconds": round(float(np.median(cli["bf16"]))
                                                / float(np.median(cli["fp32"])), 3),
        "network_alone_bf16_fraction_of_bf16_matmul":
            net["bf16"]["fraction_of_same_precision_matmul"]["median"],
        "network_alone_fp32_fraction_of_fp32_matmul":
            net["fp32"]["fraction_of_same_precision_matmul"]["median"],
    }
    if "keras_epoch_seconds" in keras:
        k17 = min(keras["keras_epoch_seconds"]) * 17000 / keras["n_train"]
        ratios["epoch_vs_keras"] = {k: round(v / k17, 3) for k, v in per_17k.items()}
    floors = _floors(net, train, keras, args.n)
    result = {
        "benchmark": "train_infer", "n_cutouts": args.n, "size": args.size, "channels": 1,
        "machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "torch": __import__("torch").__version__, "cpu": hw,
                    "auto_picks": {
                        "training": resolve_precision("auto", "cpu", hw).record(),
                        "inference": resolve_precision("auto", "cpu", hw,
                                                       inference=True).record()}},
        "train": train, "keras_reference": keras,
        "infer_cli_wall_seconds": {**cli, "load_averages": loads, "precision_used": cli_used,
                                   "note": "otrain-infer as a user runs it on the FITS folder: "
                                           "process start, imports, model load, reading, "
                                           "scoring, writing; precisions interleaved"},
        "network": net, "epoch_seconds_per_17000": per_17k, "ratios": ratios,
        "floors": floors, "reference_issue_16": REFERENCE, "targets": TARGETS,
        "total_seconds": round(time.perf_counter() - start_all, 1),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "notes": ["load averages (1-minute) include this benchmark's own processes; the machine "
                  "is shared by several engineers, so absolute times are noisy: compare ratios",
                  "train epoch seconds: otrain.training history (training + validation pass), "
                  "the best epoch of each run; the five training runs follow each other (not "
                  "interleaved)",
                  "Keras: every epoch of --keras-repeats processes; epoch_vs_keras uses the "
                  "fastest (its epoch time is bimodal here, ~22 s or ~43 s)",
                  "network bf16: the Scorer's bf16 copy (bf16 weights, channels-last, fp32 "
                  "logits layer) with the fallback guard disabled"],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
