"""Benchmark of otrain on the shared real ZTF alerts: difference stamps vs triplets, O'TRAIN CNN
vs vgg6, object-wise splits, several seeds; plus alert decoding speed and a night hold-out.

Writes ``benchmarks/results/ztf.json``. What it does:

1. Decoding: alerts/s of :func:`otrain.alerts.read_alerts` (difference stamp only, and the
   triplet) and of :func:`otrain.convert.alerts.convert_alerts` (decode + label + write a cube).
2. Cubes, through ``convert_alerts`` (every labelled alert kept, ``frac_true=None``): labels
   ``drb >= 0.5`` real / ``< 0.5`` bogus (``drb`` null dropped), and the same with the uncertain
   band dropped (real ``drb >= 0.9``, bogus ``drb < 0.1``); channels ``diff`` and
   ``diff,sci,ref``.
3. Training (:func:`otrain.training.train`): 41x41 centre crops, split by ``objectId``
   (``group_by``) into train / validation / test (60 / 15 / 25 %: the test set holds ~38
   bogus alerts), class-weighted loss, flips and rotations, Adam (lr 1e-3, batches of 32), at
   most 80 epochs with early stopping on the validation loss (patience 15); the normalisation
   is otrain's default ``auto`` (``l2`` on alert cubes); the split and the initial weights
   change with the seed (10 seeds; 5 for the zscore references: with ~38 bogus test alerts a
   split moves the AUC by +-0.02, so 5 splits leave the mean uncertain by ~0.007). Both
   networks on the ``drb >= 0.5`` labels, vgg6 alone on the middle-band variant; reference
   runs with the ``zscore`` normalisation. Test metrics from the test-set scores: ROC AUC,
   MCC at P(real) > 0.5, and the FNR at a FPR of 1 % and 5 % (from
   :func:`sklearn.metrics.roc_curve`: the lowest FNR whose FPR does not exceed the target).
   Mean, standard deviation and standard error of the mean over seeds.
4. Night hold-out: 70 % of the alerts come from one night (JD 2460235.6-2460236.2,
   fink-broker's simulated stream of 2023-10-18). A model is trained on that night alone and
   tested on every other night and programme (Ampel, Fink tests, Kowalski, BOOM, 2019-2026),
   objects seen in training removed, as a proxy for "holds on alerts from other nights".
5. Optional: ``--save-model DIR`` keeps a final model (the best triplet network, trained on
   every labelled shared alert); ``--external PATH...`` scores other ZTF alerts with it (any
   alert sharing a ``candid`` or ``objectId`` with the shared set removed) and records the
   same metrics: the check on public alerts never seen, when such alerts are at hand.

Labels are braai's (``drb``, ZTF's deep real/bogus CNN) own scores, not human vetting: the
numbers measure how well otrain imitates braai from ~1,000 alerts, nothing more.

The default path of issue 12 (``--epochs auto``, calibration, the deep ensemble ``--ensemble 5``,
ECE / Brier, FPR at the stored threshold, checks on ``../shared/data/ztf_extra``) is measured by
``benchmarks/ztf_ensemble.py`` (``results/ztf_ensemble.json``), which reuses this file's metrics.

Usage: ``python benchmarks/ztf.py [--data ../shared/data/ztf] [--seeds 10] [--quick]
[--external other_alerts/ --save-model models/]``
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

import otrain
from otrain.alerts import LabelRule, read_alerts
from otrain.convert.alerts import convert_alerts
from otrain.convert.folders import ConvertConfig
from otrain.datacube.hdf5 import open_datacube, write_subset
from otrain.metrics import binary_metrics
from otrain.models.modelfile import load_model, predict_proba
from otrain.training.config import TrainConfig
from otrain.training.loop import train

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "ztf"
NIGHT = (2460235.6, 2460236.2)
LABELS = {"drb_0.5": LabelRule("drb", 0.5),
          "drb_band_0.1_0.9": LabelRule("drb", real_above=0.9, bogus_below=0.1)}
CHANNELS = {"diff": ("diff",), "triplet": ("diff", "sci", "ref")}


def test_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """AUC, MCC at 0.5 and FNR at FPR 1 % / 5 % of test-set scores."""
    fpr, tpr, _ = roc_curve(y, p)
    out = {"auc": float(roc_auc_score(y, p)),
           "mcc": float(binary_metrics(y, p, 0.5)["mcc"]),
           "n_real": int(np.sum(y == 1)), "n_bogus": int(np.sum(y == 0))}
    for target in (0.01, 0.05):
        out[f"fnr_at_fpr_{target:g}"] = float(1.0 - tpr[fpr <= target + 1e-12].max())
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation (ddof=1) and standard error of the mean of each metric."""
    keys = ("auc", "mcc", "fnr_at_fpr_0.01", "fnr_at_fpr_0.05")
    out: dict[str, Any] = {}
    for key in keys:
        vals = np.array([r[key] for r in runs], dtype=float)
        out[key] = {"mean": round(float(vals.mean()), 4),
                    "std": round(float(vals.std(ddof=1)) if vals.size > 1 else 0.0, 4)}
        out[key]["sem"] = round(float(vals.std(ddof=1) / np.sqrt(vals.size))
                                if vals.size > 1 else 0.0, 4)
    out["seconds_per_run"] = round(float(np.mean([r["seconds"] for r in runs])), 1)
    out["runs"] = runs
    return out


def decode_speed(data: Path, tmp: Path) -> dict[str, Any]:
    """Alerts per second of reading (diff, triplet) and of a whole conversion to a cube."""
    read_alerts(data, ("diff",), quiet=True)  # warm the file cache
    out: dict[str, Any] = {}
    for name, chans in CHANNELS.items():
        start = time.perf_counter()
        images, _, report = read_alerts(data, chans, quiet=True)
        seconds = time.perf_counter() - start
        out[f"read_{name}"] = {"alerts": report.n_kept, "seconds": round(seconds, 3),
                               "alerts_per_s": round(report.n_kept / seconds, 1)}
        del images
    start = time.perf_counter()
    rep = convert_alerts(data, tmp / "speed.h5", ConvertConfig(channels=CHANNELS["triplet"],
                                                               frac_true=None),
                         LabelRule("drb", 0.5), quiet=True)
    seconds = time.perf_counter() - start
    out["convert_triplet_cube"] = {"alerts": rep.alerts.n_alerts, "seconds": round(seconds, 3),
                                   "alerts_per_s": round(rep.alerts.n_alerts / seconds, 1)}
    return out


def run_one(cube: Path, tmp: Path, name: str, config: TrainConfig,
            test_cube: Path | None = None) -> dict[str, Any]:
    """Train on ``cube``; score its test split (or ``test_cube``) with the saved model file."""
    start = time.perf_counter()
    result = train(cube, tmp / "models", name, config, overwrite=True, quiet=True)
    model = load_model(result.model_file)
    with open_datacube(test_cube or result.test_cube) as test:
        p = predict_proba(model, test.read(slice(None)))
        metrics = test_metrics(test.labels, p)
    metrics.update(seed=config.seed, epochs_run=result.epochs_run, best_epoch=result.best_epoch,
                   normalisation=model.normalisation,
                   seconds=round(time.perf_counter() - start, 1))
    return metrics


def night_holdout(cube_path: Path, tmp: Path, base: dict[str, Any],
                  seeds: list[int]) -> dict[str, Any]:
    """Train on the big night only, test on all other nights (objects in training removed)."""
    with open_datacube(cube_path) as cube:
        jd = np.asarray(cube.table["jd"])
        objects = np.asarray(cube.table["objectId"])
        night = (jd >= NIGHT[0]) & (jd <= NIGHT[1])
        train_rows = np.flatnonzero(night)
        test_rows = np.flatnonzero(~night & ~np.isin(objects, objects[night]))
        write_subset(cube, train_rows, tmp / "night_train.h5", overwrite=True)
        write_subset(cube, test_rows, tmp / "night_test.h5", overwrite=True)
    runs = []
    for seed in seeds:
        config = TrainConfig(**{**base, "seed": seed, "val_frac": 0.2, "test_frac": 0.0})
        runs.append(run_one(tmp / "night_train.h5", tmp, f"night_{seed}", config,
                            tmp / "night_test.h5"))
        print(f"  night hold-out seed {seed}: AUC {runs[-1]['auc']:.3f}", flush=True)
    out = summarise(runs)
    out["train"] = "the 2023-10-18 night (fink-broker simulated stream), JD 2460235.6-2460236.2"
    out["test"] = "every other night and programme; objects seen in training removed"
    return out


def final_model(cube_path: Path, tmp: Path, base: dict[str, Any], arch: str,
                save: Path | None) -> Path:
    """Train the chosen recipe on every labelled shared alert (validation split only)."""
    config = TrainConfig(**{**base, "arch": arch, "seed": 0, "test_frac": 0.0})
    root = save or tmp / "final"
    result = train(cube_path, root, "ztf_triplet", config, overwrite=True, quiet=True)
    return result.model_file


def external_check(model_file: Path, external: list[Path], shared_cube: Path, tmp: Path,
                   size: int) -> dict[str, Any]:
    """Score other alerts (candid or objectId shared with the training alerts removed)."""
    path = tmp / "external.h5"
    rep = convert_alerts(external, path, ConvertConfig(channels=CHANNELS["triplet"],
                                                      cutout_size=size, frac_true=None),
                         LABELS["drb_0.5"], quiet=True)
    with open_datacube(shared_cube) as shared:
        seen_c = set(np.asarray(shared.table["candid"]).tolist())
        seen_o = set(np.asarray(shared.table["objectId"]).tolist())
    with open_datacube(path) as cube:
        cand = np.asarray(cube.table["candid"]).tolist()
        obj = np.asarray(cube.table["objectId"]).tolist()
        keep = np.array([c not in seen_c and o not in seen_o for c, o in zip(cand, obj,
                                                                           strict=True)])
        labels = cube.labels[keep]
        out: dict[str, Any] = {"n_real": int(np.sum(labels == 1)),
                               "n_bogus": int(np.sum(labels == 0))}
        if min(out["n_real"], out["n_bogus"]) > 0:  # metrics need both classes
            p = predict_proba(load_model(model_file), cube.read(np.flatnonzero(keep)))
            out = test_metrics(labels, p)
    out.update(inputs=[str(e) for e in external], alerts_decoded=rep.alerts.n_alerts,
               removed_as_seen=int((~keep).sum()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ztf.json")
    parser.add_argument("--seeds", type=int, default=10,
                        help="splits (and initial weights) per configuration")
    parser.add_argument("--reference-seeds", type=int, default=5,
                        help="splits of the zscore reference runs")

    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=41, help="cutout side (centre crop)")
    parser.add_argument("--normalise", default="auto",
                        help="auto resolves to l2 on these alert cubes")
    parser.add_argument("--archs", default="vgg6,otrain")
    parser.add_argument("--band-archs", default="vgg6",
                        help="networks trained on the middle-band-dropped labels ('' for none)")
    parser.add_argument("--reference", default="zscore",
                        help="normalisation of the reference runs (vgg6, drb >= 0.5); "
                             "'' for none")
    parser.add_argument("--external", type=Path, nargs="*", default=[],
                        help="other ZTF alert files/folders: the final model (trained on every "
                             "shared alert) is scored on them, shared objects removed")
    parser.add_argument("--save-model", type=Path, default=None,
                        help="keep the final model under DIR/CNN_training/ztf_triplet/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.reference_seeds, args.epochs = 1, 1, 3
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    archs = args.archs.split(",")
    base = {"epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size,
            "lr": args.lr, "normalise": args.normalise, "group_by": "objectId",
            "val_frac": 0.15, "test_frac": 0.25}
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "data": str(args.data), "otrain_version": otrain.__version__,
        "torch_version": torch.__version__, "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "settings": {**base, "cutout_size": args.size, "seeds": seeds, "archs": archs,
                     "reference_seeds": args.reference_seeds},
        "labels_note": "drb is braai's own machine score (ZTF deep real/bogus CNN), not a human "
                       "label: these metrics measure agreement with braai",
    }
    with tempfile.TemporaryDirectory(prefix="otrain-ztf-") as tmpdir:
        tmp = Path(tmpdir)
        results["decode"] = decode_speed(args.data, tmp)
        print("decode:", json.dumps(results["decode"]), flush=True)
        cubes: dict[tuple[str, str], Path] = {}
        results["cubes"] = {}
        for lname, rule in LABELS.items():
            for cname, chans in CHANNELS.items():
                path = tmp / f"{lname}_{cname}.h5"
                rep = convert_alerts(args.data, path, ConvertConfig(
                    channels=chans, cutout_size=args.size, frac_true=None), rule, quiet=True)
                cubes[lname, cname] = path
                results["cubes"][f"{lname}/{cname}"] = {
                    "real": rep.n_real_kept, "bogus": rep.n_bogus_kept,
                    "dropped_unlabelled": rep.alerts.n_unlabelled}
        results["configs"] = {}
        band_archs = [a for a in args.band_archs.split(",") if a]
        plan = [("drb_0.5", c, a, args.normalise) for c in CHANNELS for a in archs]
        plan += [("drb_band_0.1_0.9", c, a, args.normalise) for c in CHANNELS for a in band_archs]
        if args.reference:
            plan += [("drb_0.5", c, "vgg6", args.reference) for c in CHANNELS]
        for lname, cname, arch, method in plan:
            runs = []
            for seed in (seeds if method == args.normalise else seeds[:args.reference_seeds]):
                config = TrainConfig(**{**base, "arch": arch, "seed": seed, "normalise": method})
                runs.append(run_one(cubes[lname, cname], tmp,
                                    f"{lname}_{cname}_{arch}_{method}_{seed}", config))
            key = f"{lname}/{cname}/{arch}" + ("" if method == args.normalise else f"/{method}")
            results["configs"][key] = summarise(runs)
            results["configs"][key]["normalisation"] = runs[0]["normalisation"]
            auc = results["configs"][key]["auc"]
            print(f"{key}: AUC {auc['mean']:.3f} +- {auc['std']:.3f} "
                  f"({time.perf_counter() - t_start:.0f} s)", flush=True)
        best_arch = max(archs, key=lambda a: results["configs"][
            f"drb_0.5/triplet/{a}"]["auc"]["mean"])
        results["night_holdout"] = night_holdout(cubes["drb_0.5", "triplet"], tmp,
                                                 {**base, "arch": best_arch}, seeds)
        results["night_holdout"]["config"] = f"drb_0.5/triplet/{best_arch}"
        if args.external or args.save_model:
            model_file = final_model(cubes["drb_0.5", "triplet"], tmp,
                                     {**base, "arch": best_arch}, best_arch, args.save_model)
            results["final_model"] = {"config": f"drb_0.5/triplet/{best_arch}",
                                      "trained_on": "every labelled shared alert",
                                      "saved_to": str(args.save_model and model_file)}
            if args.external:
                results["external"] = external_check(model_file, args.external,
                                                     cubes["drb_0.5", "triplet"], tmp, args.size)
                print(f"external: {results['external']}", flush=True)
        results["manifest_sources"] = _sources(args.data)
    results["total_seconds"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {args.out} in {results['total_seconds']:.0f} s")


def _sources(data: Path) -> dict[str, int]:
    """Alerts per source repository (MANIFEST.csv), for the record."""
    manifest = data / "MANIFEST.csv"
    if not manifest.is_file():
        return {}
    counts: dict[str, int] = {}
    with open(manifest, newline="") as fh:
        for row in csv.DictReader(fh):
            counts[row["source"]] = counts.get(row["source"], 0) + 1
    return counts


if __name__ == "__main__":
    main()
