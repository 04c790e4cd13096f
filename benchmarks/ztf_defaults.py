"""Which defaults for alert cubes? Small comparisons on the shared ZTF alerts, object-wise splits.

Writes ``benchmarks/results/ztf_defaults.json``. Every configuration trains on the cube that
``otrain-convert --alerts DATA --channels diff,sci,ref --label-column drb --real-above 0.5`` writes
with the new defaults (every labelled alert kept, 63x63 stamps), split by ``objectId`` 60 / 15 /
25 % (``--group-by objectId``, ``--test-frac 0.25`` so that a test set holds ~38 bogus alerts),
the same splits (seeds) for every configuration, and is scored on its own test split (AUC, MCC
at the stored threshold, FNR at FPR 1 % / 5 %, FPR at the stored threshold). Configurations:

* ``old_default``: O'TRAIN's network, 10 epochs, batches of 128, patience 5 (the defaults
  before issue 12);
* ``auto_63_b32``: the new defaults (``--epochs auto``, ``--arch auto`` = vgg6 on alert cubes,
  batches of 32, full 63x63 stamps);
* ``auto_41_b32``: the same on the central 41x41 (``otrain-convert --cutout-size 41``, the
  README's earlier recipe);
* ``auto_63_b128``: the new defaults with the old batch size.

The choice of network (vgg6 vs O'TRAIN's) and of normalisation (l2 vs zscore) comes from the
10-split runs of ``benchmarks/ztf.py`` (``results/ztf.json``), not repeated here.

Usage: ``python benchmarks/ztf_defaults.py [--seeds 3] [--configs a,b] [--threads 1]``
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
from otrain.datacube.hdf5 import open_datacube
from otrain.metrics import binary_metrics
from otrain.models.modelfile import load_model, predict_proba
from otrain.training.config import TrainConfig
from otrain.training.loop import train
from ztf import CHANNELS, DEFAULT_DATA, HERE, LABELS, summarise, test_metrics

CONFIGS: dict[str, tuple[int, dict[str, Any]]] = {  # cutout size, TrainConfig settings
    "old_default": (63, {"arch": "otrain", "epochs": 10, "batch_size": 128, "patience": 5}),
    "auto_63_b32": (63, {}),
    "auto_41_b32": (41, {}),
    "auto_63_b128": (63, {"batch_size": 128}),
}


def run(cube: Path, tmp: Path, name: str, config: TrainConfig) -> dict[str, Any]:
    """Train, then score the test split with the saved model at its stored threshold."""
    start = time.perf_counter()
    result = train(cube, tmp / "models", name, config, overwrite=True, quiet=True)
    model = load_model(result.model_file)
    with open_datacube(result.test_cube) as test:
        y, p = test.labels, predict_proba(model, test.read(slice(None)))
    out = test_metrics(y, p)
    at = binary_metrics(y, p, model.threshold)
    out.update(mcc_stored=float(at["mcc"]), fpr_stored=float(at["fpr"]),
               fnr_stored=float(at["fnr"]), threshold=float(model.threshold),
               seed=config.seed, arch=model.meta["architecture"], epochs_run=result.epochs_run,
               best_epoch=result.best_epoch, epochs_cap=model.meta["training"]["epochs_requested"],
               seconds=round(time.perf_counter() - start, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ztf_defaults.json")
    parser.add_argument("--seeds", type=int, default=3, help="object-wise splits per config")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results: dict[str, Any] = {"data": str(args.data), "otrain_version": otrain.__version__,
                               "threads": args.threads, "seeds": list(range(args.seeds)),
                               "labels": "drb >= 0.5 real (braai's score, not human labels)",
                               "split": "objectId, val 0.15, test 0.25", "configs": {}}
    with tempfile.TemporaryDirectory(prefix="otrain-ztfdef-") as tmpdir:
        tmp = Path(tmpdir)
        cubes: dict[int, Path] = {}
        names = args.configs.split(",")
        for name in names:
            size = CONFIGS[name][0]
            if size not in cubes:
                cubes[size] = tmp / f"cube{size}.h5"
                convert_alerts(args.data, cubes[size], ConvertConfig(
                    channels=CHANNELS["triplet"], cutout_size=size if size != 63 else -1,
                    frac_true=None), LABELS["drb_0.5"], quiet=True)
        runs_of: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for seed in range(args.seeds):  # seed by seed: paired comparisons as the runs come in
            for name in names:
                size, settings = CONFIGS[name]
                config = TrainConfig(**{"group_by": "objectId", "test_frac": 0.25,
                                        **settings, "seed": seed})
                runs_of[name].append(run(cubes[size], tmp, f"{name}_{seed}", config))
                last = runs_of[name][-1]
                print(f"{name} seed {seed}: AUC {last['auc']:.3f} fpr@stored "
                      f"{last['fpr_stored']:.3f} epochs {last['epochs_run']} "
                      f"({last['seconds']:.0f} s)", flush=True)
                _record(results, name, runs_of[name], args.out, t0)
    print(f"written {args.out} in {time.perf_counter() - t0:.0f} s")


def _record(results: dict[str, Any], name: str, runs: list[dict[str, Any]], out: Path,
            t0: float) -> None:
    """Summarise ``runs`` of configuration ``name`` into ``results`` and rewrite the JSON."""
    size, settings = CONFIGS[name]
    summary = summarise(runs)
    for key in ("fpr_stored", "mcc_stored"):
        vals = np.array([r[key] for r in runs])
        summary[key] = {"mean": round(float(vals.mean()), 4),
                        "std": round(float(vals.std(ddof=1)) if vals.size > 1 else 0.0, 4)}
    summary.update(cutout_size=size, settings=settings)
    results["configs"][name] = summary
    out.parent.mkdir(parents=True, exist_ok=True)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
