"""Why the calibrated ZTF models miss ECE <= 0.05 and FPR <= 15 %: a post-hoc check of the
models ``benchmarks/ztf_ensemble.py`` trained (their folders copied out before the run's temporary
folder went away), by scoring only (no training).

Writes ``benchmarks/results/ztf_recalibrate.json``. For every model folder it scores the
validation rows (``validation_set/``: the rows temperature and threshold were fitted on), the
evaluation rows (the folder's ``test_set/`` for object-wise splits; ``--night-test``, every
other night, for the night hold-out models) and ztf_extra's alerts (``--extra``), and
compares, on the evaluation rows:

* ``stored``: the model as saved (temperature scaling, threshold 0.5);
* ``prior``: the class-weighted training made the network's P(real) that of a balanced set, and
  a temperature (no offset) cannot move it back; adding ``log(n_real / n_bogus)`` of the training
  rows to the logit (the standard prior correction) before the stored temperature does;
* ``platt``: a logistic fit of slope and offset on the validation rows (Platt scaling);
* thresholds chosen on the validation rows for FPR 10 % (``--target-fpr 0.1``) on the stored
  scores, instead of 0.5.

Usage: ``python benchmarks/ztf_recalibrate.py MODELS_DIR --night-test night_test.h5 --extra
extra.h5``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from otrain.datacube.hdf5 import open_datacube
from otrain.metrics import binary_metrics, calibration_metrics, threshold_for_target
from otrain.models.ensemble import member_probabilities
from otrain.models.modelfile import load_model

HERE = Path(__file__).resolve().parent
EPS = 1e-7


def raw_logit(model: Any, images: np.ndarray) -> np.ndarray:
    """Logit of the members' mean uncalibrated P(real)."""
    p = member_probabilities(model, images, calibrated=False).mean(axis=0)
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def member_logits(model: Any, images: np.ndarray) -> np.ndarray:
    """Per-member logits of the uncalibrated P(real), ``(M, N)``."""
    p = np.clip(member_probabilities(model, images, calibrated=False), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    at = binary_metrics(y, p, threshold)
    return {**{k: round(v, 4) for k, v in calibration_metrics(y, p).items()},
            "auc": round(float(roc_auc_score(y, p)), 4), "threshold": round(threshold, 4),
            "fpr": round(float(at["fpr"]), 4), "fnr": round(float(at["fnr"]), 4)}


def one_model(folder: Path, night_test: Path, extra: Path | None) -> dict[str, Any]:
    """Every method on the evaluation rows (and ztf_extra's drb-real recall / rb agreement)."""
    model = load_model(next(folder.glob("*.safetensors")))
    metrics = json.loads((folder / "metrics.json").read_text())
    train = metrics["sizes"]["train"]
    prior = float(np.log(train["real"] / train["bogus"]))
    temp = model.temperature
    with open_datacube(folder / "validation_set/datacube/cube_validation.h5") as cube:
        yv, zv = cube.labels, member_logits(model, cube.read(slice(None)))
    # night models: every other night (their own test split is more of the same night)
    test_path = (night_test if folder.name.startswith("night") else
                 folder / "test_set/datacube/cube_test.h5")
    with open_datacube(test_path) as cube:
        yt, zt = cube.labels, member_logits(model, cube.read(slice(None)))
    methods = {
        "stored": lambda z: sigmoid(z / temp).mean(axis=0),
        "prior": lambda z: sigmoid((z + prior) / temp).mean(axis=0),
    }
    zbar = np.log(np.clip(methods["stored"](zv), EPS, 1 - EPS))
    zbar_v = zbar - np.log1p(-np.exp(zbar))
    platt = LogisticRegression(C=1e6).fit(zbar_v[:, None], yv)

    def platt_p(z: np.ndarray) -> np.ndarray:
        q = np.clip(methods["stored"](z), EPS, 1 - EPS)
        return platt.predict_proba((np.log(q) - np.log1p(-q))[:, None])[:, 1]

    methods["platt"] = platt_p
    out: dict[str, Any] = {"model": folder.name, "members": len(model.members),
                           "temperature": round(temp, 4), "log_prior_ratio": round(prior, 4)}
    for name, fn in methods.items():
        out[name] = evaluate(yt, fn(zt), 0.5)
    thr = threshold_for_target(yv, methods["stored"](zv), target_fpr=0.1)
    out["stored_target_fpr_0.1"] = evaluate(yt, methods["stored"](zt), thr)
    thr_p = threshold_for_target(yv, methods["prior"](zv), target_fpr=0.1)
    out["prior_target_fpr_0.1"] = evaluate(yt, methods["prior"](zt), thr_p)
    if extra is not None:
        with open_datacube(extra) as cube:
            drb = np.asarray(cube.table["drb"], dtype=float)
            rb = np.asarray(cube.table["rb"], dtype=float)
            ze = member_logits(model, cube.read(slice(None)))
        old = ~np.isfinite(drb) & np.isfinite(rb)
        for name, p, t in (("stored", methods["stored"](ze), 0.5),
                           ("prior", methods["prior"](ze), 0.5),
                           ("stored_target_fpr_0.1", methods["stored"](ze), thr)):
            at = binary_metrics((rb[old] >= 0.5).astype(int), p[old], t)
            out[name]["extra_drb_recall"] = round(float(np.mean(p[drb >= 0.5] > t)), 4)
            out[name]["extra_rb_fpr"] = round(float(at["fpr"]), 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, help="folder of copied model folders")
    parser.add_argument("--night-test", type=Path, required=True)
    parser.add_argument("--extra", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ztf_recalibrate.json")
    args = parser.parse_args()
    rows = [one_model(f, args.night_test, args.extra) for f in sorted(args.models.iterdir())
            if (f / "metrics.json").is_file()  # complete copies only
            and (f / "validation_set/datacube/cube_validation.h5").is_file()]
    summary: dict[str, Any] = {}
    for group in ("object_splits_single", "object_splits_ensemble", "night_holdout_single",
                  "night_holdout_ensemble"):
        mine = [r for r in rows if r["model"].startswith(group)]
        if not mine:
            continue
        summary[group] = {"n_models": len(mine)}
        for method in ("stored", "prior", "platt", "stored_target_fpr_0.1",
                       "prior_target_fpr_0.1"):
            summary[group][method] = {
                key: {"mean": round(float(np.mean([r[method][key] for r in mine])), 4),
                      "std": round(float(np.std([r[method][key] for r in mine], ddof=1))
                                   if len(mine) > 1 else 0.0, 4)}
                for key in mine[0][method]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "models": rows}, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
