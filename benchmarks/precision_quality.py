"""Quality is not traded for speed: test AUC of fp32 and bf16 training, and bf16 inference of
fp32-trained models, on the built-in simulator (several seeds, small).

For each seed: simulate 32x32 cutouts, convert, train in fp32 and in bf16 (same split, same
seed), score the held-out test cube with each model in fp32 and bf16
(:class:`otrain.inference.scoring.Scorer`, fallback guard off so bf16 is measured) and record
test AUCs and the largest |P(real)| difference bf16 - fp32. Writes
``benchmarks/results/precision_quality.json``.

Usage: ``python benchmarks/precision_quality.py [--seeds 3] [--n 500] [--epochs 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

HERE = Path(__file__).resolve().parent


def _scores(model_file: Path, cube: Path, precision: str) -> tuple[np.ndarray, np.ndarray]:
    from otrain.datacube.hdf5 import open_datacube
    from otrain.inference.scoring import Scorer
    from otrain.models.modelfile import load_model
    from otrain.models.normalise import normalise

    loaded = load_model(model_file)
    with open_datacube(cube) as c:
        images, labels = c.read(np.arange(len(c))), c.labels
    scorer = Scorer(loaded, images.shape[1:], precision)
    scorer.forward.tolerance = float("inf")
    return scorer(normalise(images, loaded.normalisation))[:, 1], labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n", type=int, default=500, help="true and false cutouts per seed")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--output", default=str(HERE / "results" / "precision_quality.json"))
    args = parser.parse_args()
    from otrain.convert.folders import ConvertConfig, convert_cutouts
    from otrain.simulate.core import SimulationConfig, simulate_cutouts
    from otrain.training.config import TrainConfig
    from otrain.training.loop import train

    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed in range(args.seeds):
            sim = root / f"sim{seed}"
            simulate_cutouts(sim, SimulationConfig(n_true=args.n, n_false=args.n, size=32,
                                                   seed=seed), quiet=True)
            cube = root / f"cube{seed}.h5"
            convert_cutouts(sim, cube, ConvertConfig(seed=seed, workers=1), quiet=True)
            row: dict = {"seed": seed}
            for prec in ("fp32", "bf16"):
                res = train(cube, root / f"m{seed}", prec, TrainConfig(
                    epochs=args.epochs, seed=seed, test_frac=0.3, patience=None,
                    precision=prec), quiet=True)
                test_cube = res.folder / "test_set/datacube/cube_test.h5"
                p32, y = _scores(res.model_file, test_cube, "fp32")
                p16, _ = _scores(res.model_file, test_cube, "bf16")
                diff = np.abs(p16 - p32)
                row[f"trained_{prec}"] = {
                    "test_auc_fp32_scores": round(float(roc_auc_score(y, p32)), 4),
                    "test_auc_bf16_scores": round(float(roc_auc_score(y, p16)), 4),
                    "bf16_minus_fp32_p_real": {"max": float(diff.max()),
                                               "p99": float(np.quantile(diff, 0.99)),
                                               "median": float(np.median(diff))},
                    "epoch_seconds": [round(float(r["seconds"]), 1) for r in res.history],
                    "n_test": int(y.size)}
            runs.append(row)
            print(json.dumps(row), flush=True)
    auc = {p: [r[f"trained_{p}"]["test_auc_fp32_scores"] for r in runs] for p in ("fp32", "bf16")}
    summary = {
        "test_auc_fp32_training": {"mean": round(float(np.mean(auc["fp32"])), 4),
                                   "std": round(float(np.std(auc["fp32"], ddof=1)), 4)
                                   if len(runs) > 1 else None},
        "test_auc_bf16_training": {"mean": round(float(np.mean(auc["bf16"])), 4),
                                   "std": round(float(np.std(auc["bf16"], ddof=1)), 4)
                                   if len(runs) > 1 else None},
        "paired_difference_bf16_minus_fp32": [round(b - a, 4) for a, b in
                                              zip(auc["fp32"], auc["bf16"], strict=True)],
        "max_bf16_vs_fp32_p_real_of_fp32_models": max(
            r["trained_fp32"]["bf16_minus_fp32_p_real"]["max"] for r in runs),
    }
    result = {"benchmark": "precision_quality", "seeds": args.seeds, "n_per_class": args.n,
              "epochs": args.epochs, "runs": runs, "summary": summary,
              "seconds": round(time.perf_counter() - start, 1),
              "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
