"""Learning curve on the shared real ZTF alerts: does more labelled data still help?

Writes ``benchmarks/results/ztf_curve.json``. The triplet cube of ``benchmarks/ztf.py``
(``drb >= 0.5`` labels, 41x41 ``diff,sci,ref`` crops) goes through otrain's own learning curve
(:func:`otrain.evaluation.learning_curve.learning_curve`, ``group_by="objectId"``, vgg6 and the
``ztf.py`` training settings) once per test split: seed ``s`` holds out an object-wise 25 % test
set and trains on 1/4, 1/2, 3/4 and all of the rest (each run with its own 15 % validation
split). One test split alone is too small to read a trend from (~38 bogus alerts: +-0.02 AUC
between splits, +-0.04 between trainings on one split), so the curve is averaged over ``--seeds``
test splits, and the gain of each size over the previous one is given per split (paired) with
its standard error.

Usage: ``python benchmarks/ztf_curve.py [--data ../shared/data/ztf] [--seeds 10] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import otrain
from otrain.convert.alerts import convert_alerts
from otrain.convert.folders import ConvertConfig
from otrain.evaluation.learning_curve import LearningCurveConfig, learning_curve
from ztf import CHANNELS, DEFAULT_DATA, HERE, LABELS


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    sem = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0
    return {"mean": round(float(v.mean()), 4), "sem": round(sem, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ztf_curve.json")
    parser.add_argument("--seeds", type=int, default=10, help="test splits")
    parser.add_argument("--sections", type=int, default=4, help="training-set sizes")
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--arch", default="vgg6")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 splits, 3 epochs (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = 2, 3
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    by_seed: dict[int, dict[int, float]] = {}
    sizes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="otrain-ztf-curve-") as tmpdir:
        tmp = Path(tmpdir)
        cube = tmp / "triplet.h5"
        convert_alerts(args.data, cube, ConvertConfig(channels=CHANNELS["triplet"], cutout_size=41,
                                                      frac_true=None),
                       LABELS["drb_0.5"], quiet=True)
        for seed in range(args.seeds):
            config = LearningCurveConfig(
                epochs=args.epochs, patience=args.patience, batch_size=32, lr=1e-3,
                normalise="auto", val_frac=0.15, test_frac=0.25, group_by="objectId",
                arch=args.arch, n_sections=args.sections, repeats=1, seed=seed, lean=True)
            res = learning_curve(cube, tmp / f"models{seed}", "ztf", tmp / f"curve{seed}",
                                 config, quiet=True)
            by_seed[seed] = {int(r["size"]): float(r["test_auc"]) for r in res.rows}
            sizes = sorted(by_seed[seed])
            print(f"test split {seed}: " + ", ".join(
                f"{n} -> {by_seed[seed][n]:.3f}" for n in sizes), flush=True)
    seeds = sorted(by_seed)
    curve = []
    for i, size in enumerate(sizes):
        entry: dict[str, Any] = {"pool": size, "fraction": round((i + 1) / len(sizes), 3),
                                 "test_auc": _stats([by_seed[s][size] for s in seeds])}
        if i:
            entry["gain_over_previous"] = _stats([by_seed[s][size] - by_seed[s][sizes[i - 1]]
                                                  for s in seeds])
        curve.append(entry)
        print(f"pool {size}: test AUC {entry['test_auc']['mean']:.3f} +- "
              f"{entry['test_auc']['sem']:.3f}", flush=True)
    results = {
        "data": str(args.data), "otrain_version": otrain.__version__,
        "torch_version": torch.__version__, "threads": args.threads,
        "settings": {"labels": "drb >= 0.5 (braai's score, not human vetting)",
                     "channels": "diff,sci,ref", "cutout_size": 41, "arch": args.arch,
                     "epochs": args.epochs, "patience": args.patience, "batch_size": 32,
                     "lr": 1e-3, "val_frac": 0.15, "test_frac": 0.25, "group_by": "objectId",
                     "test_splits": seeds, "sections": args.sections},
        "curve": curve,
        "runs": {str(s): {str(n): round(v, 4) for n, v in by_seed[s].items()} for s in seeds},
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out} in {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
