"""Benchmark of the active-learning loop of ``otrain label`` on the shared real ZTF alerts.

Writes ``benchmarks/results/active_learning.json`` and ``active_learning.png``. What it does:

1. One triplet cube (diff, sci, ref; 41x41 centre crops) through
   :func:`otrain.convert.alerts.convert_alerts`, labelled by ``drb >= 0.5`` (``drb`` null
   dropped), as ``benchmarks/ztf.py``.
2. Per seed, an object-wise split (:func:`otrain.training.splits.split_indices` grouped by
   ``objectId``, test 25 %): the other 75 % is the pool, the test set is fixed. The oracle
   answers with the ``drb`` label.
3. Each strategy starts from the same 100 random pool labels (per seed) and adds batches of 50
   up to ``--max-labels``: ``random`` (seeded), ``uncertainty`` (mean P(real) closest to 0.5,
   one eval-mode pass) and ``bald`` (mutual information of 10 MC-dropout passes,
   :func:`otrain.label.ranking.draws_from_model`). Every round trains a fresh vgg6 (dropout
   0.3, l2 normalisation, class-weighted loss, flips/rotations, Adam 1e-3 with a cosine decay
   to 0, batches of 32) for a fixed ``--epochs`` (at least ``--min-steps`` steps) on the
   labels so far, and records the test AUC. The same recipe on the whole pool gives the
   reference AUC.
4. ``labels_to_target``: the fewest labels at which the seed-mean curve reaches 98 % of the
   seed-mean full-pool AUC (None when not reached within ``--max-labels``), and per seed.

Labels are braai's ``drb`` score, not human vetting. A fixed epoch count replaces early stopping
(a validation split would take labels from the loop), so the AUCs are below
``benchmarks/ztf.py``'s.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/active_learning.py [--seeds 3] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import otrain
from otrain.alerts import LabelRule
from otrain.convert.alerts import convert_alerts
from otrain.convert.folders import ConvertConfig
from otrain.datacube.hdf5 import open_datacube
from otrain.label.ranking import draws_from_model, rank
from otrain.models.modelfile import LoadedModel
from otrain.models.networks import build_model
from otrain.models.normalise import normalise
from otrain.training.splits import augment, split_indices

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "ztf"
CHANNELS = ("diff", "sci", "ref")
STRATEGIES = ("random", "uncertainty", "bald")
TARGET = 0.98


def fit(x: np.ndarray, y: np.ndarray, rows: np.ndarray, seed: int, args: argparse.Namespace
        ) -> torch.nn.Module:
    """A fresh vgg6 trained on ``rows`` of the l2-normalised ``x`` for a fixed budget."""
    torch.manual_seed(seed)
    net = build_model("vgg6", x.shape[1], x.shape[2:], 0.3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    counts = np.bincount(y[rows], minlength=2).astype(np.float64)
    weight = torch.tensor(rows.size / (2.0 * np.maximum(counts, 1.0)), dtype=torch.float32)
    crit = torch.nn.CrossEntropyLoss(weight=weight)
    per_epoch = math.ceil(rows.size / args.batch_size)
    epochs = max(args.epochs, math.ceil(args.min_steps / per_epoch))
    # Cosine decay to 0 over the run: the last weights are stable, no early stopping needed.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(epochs):
        order = rng.permutation(rows)
        codes = rng.integers(0, 8, order.size)
        for start in range(0, order.size, args.batch_size):
            sel = order[start:start + args.batch_size]
            xb = np.ascontiguousarray(augment(x[sel], codes[start:start + sel.size]))
            opt.zero_grad(set_to_none=True)
            loss = crit(net(torch.from_numpy(xb)), torch.from_numpy(y[sel]))
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return net


def predict(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Eval-mode P(real) of normalised cutouts."""
    net.eval()
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(x)), 1)[:, 1].double().numpy()


def query(strategy: str, net: torch.nn.Module, raw: np.ndarray, xn: np.ndarray,
          unlabelled: np.ndarray, batch: int, seed: int) -> np.ndarray:
    """The next ``batch`` pool rows the strategy asks the oracle about."""
    n = unlabelled.size
    if strategy == "random":
        order = rank("random", n, seed=seed)
    elif strategy == "uncertainty":
        order = rank("uncertainty", n, predict(net, xn[unlabelled])[:, None])
    else:
        loaded = LoadedModel(model=net, meta={"channels": list(CHANNELS), "normalisation": "l2",
                                              "input_size": list(raw.shape[2:])})
        draws = draws_from_model(loaded, raw[unlabelled], n_samples=10, seed=seed)
        order = rank(strategy, n, draws)
    return unlabelled[order[:batch]]


def initial_labels(pool: np.ndarray, y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` random pool rows holding at least 2 of each class."""
    rng = np.random.default_rng(10_000 + seed)
    while True:
        pick = rng.choice(pool, size=n, replace=False)
        if min(np.sum(y[pick] == 0), np.sum(y[pick] == 1)) >= 2:
            return np.sort(pick)


def run_seed(raw: np.ndarray, xn: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int,
             args: argparse.Namespace) -> dict[str, Any]:
    """Full-pool reference and one curve per strategy for one split."""
    split = split_indices(y, val_frac=0.01, test_frac=0.25, seed=seed, groups=groups)
    pool = np.sort(np.concatenate([split.train, split.val]))
    test = split.test
    t0 = time.perf_counter()
    full_auc = float(roc_auc_score(y[test], predict(fit(xn, y, pool, seed, args), xn[test])))
    out: dict[str, Any] = {"seed": seed, "pool": int(pool.size), "test": int(test.size),
                           "test_bogus": int(np.sum(y[test] == 0)), "full_pool_auc": full_auc,
                           "full_pool_seconds": round(time.perf_counter() - t0, 1),
                           "curves": {}}
    print(f"seed {seed}: pool {pool.size}, test {test.size}, full-pool AUC {full_auc:.3f}",
          flush=True)
    start_rows = initial_labels(pool, y, args.initial, seed)
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        labelled = start_rows.copy()
        curve: list[list[float]] = []
        for round_no in range(10_000):
            net = fit(xn, y, labelled, seed * 1000 + round_no, args)
            auc = float(roc_auc_score(y[test], predict(net, xn[test])))
            curve.append([int(labelled.size), auc])
            if labelled.size >= min(args.max_labels, pool.size):
                break
            unlabelled = np.setdiff1d(pool, labelled)
            new = query(strategy, net, raw, xn, unlabelled, args.batch, seed * 1000 + round_no)
            labelled = np.sort(np.concatenate([labelled, new]))
        out["curves"][strategy] = {"n_labels": [c[0] for c in curve],
                                   "auc": [round(c[1], 4) for c in curve],
                                   "bogus_labelled": int(np.sum(y[labelled] == 0)),
                                   "seconds": round(time.perf_counter() - t0, 1)}
        print(f"  {strategy}: " + " ".join(f"{n}:{a:.3f}" for n, a in curve)
              + f" ({out['curves'][strategy]['seconds']} s)", flush=True)
    return out


def labels_to_target(n_labels: list[int], auc: list[float], target: float) -> int | None:
    """First label count whose AUC reaches ``target``."""
    for n, a in zip(n_labels, auc, strict=True):
        if a >= target:
            return int(n)
    return None


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed-mean curves, labels to 98 % of the full-pool AUC, per strategy."""
    full = np.array([s["full_pool_auc"] for s in seeds])
    target = TARGET * float(full.mean())
    out: dict[str, Any] = {"full_pool_auc": {"mean": round(float(full.mean()), 4),
                                             "std": round(float(full.std(ddof=1)), 4)
                                             if full.size > 1 else 0.0},
                           "target_auc": round(target, 4), "strategies": {}}
    for strategy in STRATEGIES:
        curves = [s["curves"][strategy] for s in seeds if strategy in s["curves"]]
        if not curves:
            continue
        n_labels = curves[0]["n_labels"]
        aucs = np.array([c["auc"] for c in curves])
        mean = aucs.mean(axis=0)
        per_seed = [labels_to_target(c["n_labels"], c["auc"],
                                     TARGET * s["full_pool_auc"])
                    for c, s in zip(curves, seeds, strict=True)]
        out["strategies"][strategy] = {
            "n_labels": n_labels, "auc_mean": [round(float(v), 4) for v in mean],
            "auc_std": [round(float(v), 4) for v in aucs.std(axis=0, ddof=1)]
            if len(curves) > 1 else [0.0] * len(n_labels),
            "labels_to_target": labels_to_target(n_labels, list(mean), target),
            "labels_to_target_per_seed": per_seed}
    ref = out["strategies"].get("random", {}).get("labels_to_target")
    for strategy, entry in out["strategies"].items():
        mine = entry["labels_to_target"]
        entry["ratio_to_random"] = (round(mine / ref, 3) if mine is not None and ref else None)
        # Area under the learning curve (mean test AUC over the budgets), paired with random
        # on the same split and starting labels: less noisy than one crossing point.
        paired = [float(np.mean(s["curves"][strategy]["auc"])
                        - np.mean(s["curves"]["random"]["auc"]))
                  for s in seeds if strategy in s["curves"] and "random" in s["curves"]]
        areas = [float(np.mean(s["curves"][strategy]["auc"])) for s in seeds
                 if strategy in s["curves"]]
        entry["mean_auc_over_curve"] = round(float(np.mean(areas)), 4)
        if paired:
            entry["minus_random"] = {
                "mean": round(float(np.mean(paired)), 4),
                "std": round(float(np.std(paired, ddof=1)), 4) if len(paired) > 1 else 0.0,
                "per_seed": [round(v, 4) for v in paired]}
    return out


def plot(summary: dict[str, Any], max_labels: int, path: Path) -> None:
    """Test AUC against labels, mean +- std over seeds, target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=80)
    for strategy, entry in summary["strategies"].items():
        n = np.array(entry["n_labels"])
        m, s = np.array(entry["auc_mean"]), np.array(entry["auc_std"])
        ax.plot(n, m, marker="o", ms=3, label=f"{strategy} (to target: "
                f"{entry['labels_to_target'] or f'>{max_labels}'})")
        ax.fill_between(n, m - s, m + s, alpha=0.15)
    ax.axhline(summary["full_pool_auc"]["mean"], color="k", lw=1,
               label=f"full pool ({summary['full_pool_auc']['mean']:.3f})")
    ax.axhline(summary["target_auc"], color="k", ls="--", lw=1, label="98% of full pool")
    ax.set_xlabel("labels")
    ax.set_ylabel("test ROC AUC")
    ax.set_title("Active learning on ZTF alerts (drb oracle, vgg6, triplets)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "active_learning.json")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--initial", type=int, default=100)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--max-labels", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--min-steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=41)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 seed, up to 200 labels")
    parser.add_argument("--resume", action="store_true",
                        help="keep the seeds already in --out (same settings), run the others")
    parser.add_argument("--summarise-only", action="store_true",
                        help="recompute the summary and plot of --out from its seeds")
    args = parser.parse_args()
    if args.summarise_only:
        results = json.loads(args.out.read_text())
        results["summary"] = summarise(results["seeds"])
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        plot(results["summary"], results["settings"]["max_labels"], args.out.with_suffix(".png"))
        return
    if args.quick:
        args.seeds, args.max_labels, args.epochs = 1, 200, 3
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="otrain-al-") as tmp:
        cube_path = Path(tmp) / "ztf.h5"
        convert_alerts(args.data, cube_path, ConvertConfig(channels=CHANNELS,
                                                           cutout_size=args.size,
                                                           frac_true=None),
                       LabelRule("drb", 0.5), quiet=True)
        with open_datacube(cube_path) as cube:
            raw = cube.read(slice(None)).astype(np.float32)
            y = np.asarray(cube.labels, dtype=np.int64)
            groups = np.asarray(cube.table["objectId"])
    xn = normalise(raw, "l2")
    results: dict[str, Any] = {
        "data": str(args.data), "otrain_version": otrain.__version__,
        "torch_version": torch.__version__, "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "settings": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
        "oracle": "drb >= 0.5 (braai's machine score, not human vetting)",
        "alerts": int(y.size), "real": int(np.sum(y == 1)), "bogus": int(np.sum(y == 0))}
    seeds: list[dict[str, Any]] = []
    if args.resume and args.out.is_file():
        old = json.loads(args.out.read_text())
        skip = ("seeds", "resume", "summarise_only", "threads")
        same = {k: v for k, v in old["settings"].items() if k not in skip}
        if same == {k: v for k, v in results["settings"].items() if k not in skip}:
            seeds = [s for s in old["seeds"] if s["seed"] < args.seeds]
            t_start -= old.get("total_seconds", 0.0)
            print(f"resuming: seeds {[s['seed'] for s in seeds]} kept", flush=True)
    for seed in range(len(seeds), args.seeds):
        seeds.append(run_seed(raw, xn, y, groups, seed, args))
        results["seeds"] = seeds
        results["summary"] = summarise(seeds)
        results["total_seconds"] = round(time.perf_counter() - t_start, 1)
        results["load_average"] = list(__import__("os").getloadavg())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        plot(results["summary"], args.max_labels, args.out.with_suffix(".png"))
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk in ("labels_to_target",
                                                                     "ratio_to_random")}
                      for k, v in results["summary"]["strategies"].items()}), flush=True)
    print(f"total {results['total_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
