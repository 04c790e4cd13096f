"""Diagnostics (otrain.evaluation.scores / thresholds / diagnostics) and ``otrain-diagnostics``.

The model has seeded random weights (training is not needed for the plumbing); every number in
``diagnostics.json`` is checked against scikit-learn on scores computed independently here.
The helpers :func:`make_eval_cube` and :func:`make_model` are shared with test_plots / test_report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from conftest import assert_clean_error, run_cli
from otrain.datacube.hdf5 import open_datacube, write_datacube
from otrain.errors import OtrainError
from otrain.evaluation import diagnostics as diag
from otrain.evaluation import gallery
from otrain.evaluation import scores as scores_mod
from otrain.evaluation.thresholds import optimal_thresholds
from otrain.models.modelfile import load_model, predict_proba, save_model
from otrain.models.networks import build_model

SIZE = 16


def make_eval_cube(path: Path, n: int = 64, size: int = SIZE, seed: int = 0,
                   n_unlabelled: int = 0) -> Path:
    """Gaussian blobs (real) and spikes (bogus) on noise; mag/magerr with NaN and a 99 sentinel."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[0:size, 0:size]
    images = rng.normal(0, 1, (n, 1, size, size)).astype(np.float32)
    for i in range(n):
        c = size / 2 + rng.uniform(-2, 2, 2)
        if labels[i]:
            images[i, 0] += 8 * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / 4.0)
        else:
            images[i, 0, int(c[1]), int(c[0])] += 30
    mag = rng.uniform(15, 21, n)
    mag[[1, 4, 7]] = np.nan
    mag[10] = 99.0
    magerr = rng.uniform(0.01, 0.3, n)
    magerr[[2, 5]] = np.nan
    labels[:n_unlabelled] = -1
    table = {"candid": np.array([f"cand{i:04d}" for i in range(n)]), "label": labels,
             "mag": mag, "magerr": magerr}
    return write_datacube(path, images, table, ["diff"])


def make_model(path: Path, size: int = SIZE, seed: int = 0) -> Path:
    """A model file with seeded random weights."""
    torch.manual_seed(seed)
    model = build_model("otrain", 1, (size, size), dropout=0.0)
    return save_model(path, model, {"normalisation": "zscore", "threshold": 0.5})


def independent_scores(model: Path, cube: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, P(real) and candids of the labelled rows, computed without otrain.evaluation."""
    with open_datacube(cube) as c:
        keep = c.labels >= 0
        p = predict_proba(load_model(model), c.read(np.flatnonzero(keep)))
        return c.labels[keep], p, np.asarray(c.table["candid"])[keep].astype(str)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("diag")
    cube = make_eval_cube(root / "cube.h5", n_unlabelled=4)
    model = make_model(root / "m.safetensors")
    y, p, cands = independent_scores(model, cube)
    threshold = float(np.round(np.median(p), 6))  # every outcome (TP, TN, FP, FN) present
    return {"root": root, "cube": cube, "model": model, "y": y, "p": p, "cands": cands,
            "threshold": threshold}


@pytest.fixture(scope="module")
def result(setup: dict) -> diag.DiagnosticsResult:
    return diag.run_diagnostics(setup["cube"], setup["model"], setup["root"] / "out",
                                threshold=setup["threshold"], n_examples=5, seed=3, quiet=True)


def test_metrics_match_sklearn(setup: dict, result: diag.DiagnosticsResult) -> None:
    y, p, t = setup["y"], setup["p"], setup["threshold"]
    pred = (p > t).astype(int)
    m = json.loads(result.json_path.read_text())["metrics"]
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    assert min(np.ravel(m["confusion_matrix"])) > 0
    for key, ref in (("accuracy", accuracy_score(y, pred)), ("precision", precision_score(y, pred)),
                     ("recall", recall_score(y, pred)), ("f1", f1_score(y, pred)),
                     ("mcc", matthews_corrcoef(y, pred)), ("auc", roc_auc_score(y, p)),
                     ("average_precision", average_precision_score(y, p))):
        assert m[key] == pytest.approx(ref, abs=1e-9), key
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    assert m["fpr"] == pytest.approx(fp / (fp + tn)) and m["fnr"] == pytest.approx(fn / (fn + tp))
    assert result.summary["n_unlabelled_skipped"] == 4 and m["n"] == y.size


def test_thresholds(setup: dict, result: diag.DiagnosticsResult) -> None:
    y, p = setup["y"], setup["p"]
    opt = result.summary["optimal_thresholds"]
    grid = np.unique(np.concatenate([p, [0.0, 1.0], (np.sort(p)[1:] + np.sort(p)[:-1]) / 2]))
    best_mcc = max(matthews_corrcoef(y, (p > g).astype(int)) for g in grid)
    best_f1 = max(f1_score(y, (p > g).astype(int), zero_division=0) for g in grid)
    t = opt["max_mcc"]["threshold"]
    assert matthews_corrcoef(y, (p > t).astype(int)) == pytest.approx(best_mcc)
    t = opt["max_f1"]["threshold"]
    assert f1_score(y, (p > t).astype(int)) == pytest.approx(best_f1)
    assert [item["target"] for item in opt["fnr_targets"]] == [0.01, 0.05]
    for item in opt["fnr_targets"]:
        pt = item["point"]
        fnr = np.mean(p[y == 1] <= pt["threshold"])
        assert fnr <= item["target"] and fnr == pytest.approx(pt["fnr"])
        assert np.mean(p[y == 1] <= pt["range"][1]) > item["target"]  # the largest such threshold
    # Direct API, with ties and a perfect separation.
    tied = optimal_thresholds([0, 0, 1, 1, 1], [0.2, 0.2, 0.2, 0.9, 0.9])
    assert tied["fnr_targets"][0]["point"]["fnr"] == 0.0
    perfect = optimal_thresholds([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8])
    assert perfect["max_mcc"]["mcc"] == 1.0 and 0.3 <= perfect["max_mcc"]["threshold"] < 0.6
    assert optimal_thresholds([1, 1], [0.3, 0.4])["max_mcc"] is None


def test_exports_belong_to_the_right_candidate(setup: dict,
                                               result: diag.DiagnosticsResult) -> None:
    y, p, cands, t = setup["y"], setup["p"], setup["cands"], setup["threshold"]
    by_id = {c: i for i, c in enumerate(cands)}
    cut = result.summary["cutouts"]
    expect = {"FP": (0, True), "FN": (1, False), "TP": (1, True), "TN": (0, False)}
    for outcome, (label, called) in expect.items():
        for item in cut[outcome]:
            i = by_id[item["candid"]]
            assert item["score"] == pytest.approx(p[i], abs=1e-6)
            assert y[i] == label == item["label"] and (p[i] > t) == called
            png = result.folder / item["png"]
            assert png.name == f"{item['candid']}.png" and png.is_file()
            assert png.parent.name == f"images_{outcome}"
    assert {it["candid"] for it in cut["FP"]} == set(cands[(y == 0) & (p > t)])
    assert {it["candid"] for it in cut["FN"]} == set(cands[(y == 1) & (p <= t)])
    assert len(cut["TP"]) == 5 and len(cut["TN"]) == 5
    fp_scores = [it["score"] for it in cut["FP"]]
    assert fp_scores == sorted(fp_scores, reverse=True)  # most confident mistakes first
    for outcome, sheet in result.summary["contact_sheets"].items():
        img = imread(result.folder / sheet)
        assert img.std() > 0, outcome


def test_titles_and_one_model_pass(setup: dict, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    titles: dict[str, str] = {}
    seen = []
    original_write, original_predict = gallery.CutoutWriter.write, scores_mod.member_logits

    def write(self: gallery.CutoutWriter, path: Path, image: np.ndarray, title: str,
              overwrite: bool) -> Path:
        titles[path.stem] = title
        return original_write(self, path, image, title, overwrite)

    def predict(loaded: object, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        seen.append(len(images))
        return original_predict(loaded, images, batch_size)

    monkeypatch.setattr(gallery.CutoutWriter, "write", write)
    monkeypatch.setattr(scores_mod, "member_logits", predict)  # the one network pass
    res = diag.run_diagnostics(setup["cube"], setup["model"], tmp_path / "o",
                               threshold=setup["threshold"], n_examples=4, seed=1,
                               batch_size=16, quiet=True)
    assert sum(seen) == setup["y"].size  # every labelled cutout scored exactly once
    by_id = dict(zip(setup["cands"], setup["p"], strict=True))
    assert len(titles) == sum(len(v) for v in res.summary["cutouts"].values())
    for candid, title in titles.items():
        assert title.startswith(candid + "\n") and f"P(real) {by_id[candid]:.3f}" in title
    # The sample is seeded: the same seed picks the same cutouts, another seed others.
    picks = [diag.select_examples(setup["y"], setup["p"], setup["threshold"], 4, seed)["TN"]
             for seed in (1, 1, 2)]
    assert [it["candid"] for it in res.summary["cutouts"]["TN"]] == list(setup["cands"][picks[0]])
    assert np.array_equal(picks[0], picks[1]) and not np.array_equal(picks[0], picks[2])


def test_original_one_hot_npz(setup: dict, result: diag.DiagnosticsResult,
                              tmp_path: Path) -> None:
    with open_datacube(setup["cube"]) as c:
        keep = np.flatnonzero(c.labels >= 0)
        images, table = c.read(keep), c.table[keep]
    npz = tmp_path / "cube_validation.npz"
    np.savez(npz, cube=np.moveaxis(images, 1, -1), labels=np.eye(2, dtype=np.float32)[
        np.asarray(table["label"])], mags=np.nan_to_num(table["mag"], nan=99.0),
        errmags=np.asarray(table["magerr"]), candids=np.asarray(table["candid"]))
    res = diag.run_diagnostics(npz, setup["model"], tmp_path / "o", threshold=setup["threshold"],
                               n_examples=5, seed=3, quiet=True)
    a, b = res.summary["metrics"], result.summary["metrics"]
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert a["auc"] == pytest.approx(b["auc"], abs=1e-9)
    def strip(items: list[dict]) -> list[dict]:
        return [{k: v for k, v in it.items() if k != "row"} for it in items]

    assert strip(res.summary["cutouts"]["FP"]) == strip(result.summary["cutouts"]["FP"])


def test_refusals_and_nothing_deleted(setup: dict, tmp_path: Path) -> None:
    dest = tmp_path / "o"
    keep = dest / "validation_set" / "misclassified" / "images_FP" / "mine.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("keep me")
    args = (setup["cube"], setup["model"], dest)
    diag.run_diagnostics(*args, threshold=0.9, n_examples=0, quiet=True)
    with pytest.raises(OtrainError, match="overwrite"):
        diag.run_diagnostics(*args, threshold=0.9, quiet=True)
    diag.run_diagnostics(*args, threshold=0.9, n_examples=0, overwrite=True, quiet=True)
    assert keep.read_text() == "keep me"
    with pytest.raises(OtrainError, match="threshold"):
        diag.run_diagnostics(*args, threshold=1.5, quiet=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OtrainError, match="expected a folder"):
        diag.run_diagnostics(setup["cube"], setup["model"], tmp_path / "file", quiet=True)
    wrong = make_eval_cube(tmp_path / "big.h5", n=12, size=20)
    with pytest.raises(OtrainError, match="16x16"):
        diag.run_diagnostics(wrong, setup["model"], tmp_path / "w", quiet=True)


def test_cli(setup: dict, tmp_path: Path) -> None:
    proc = run_cli("otrain-diagnostics", "--path-cube-validation", str(setup["cube"]),
                   "--model-path", str(setup["model"]), "--path-diagnostics",
                   str(tmp_path / "d"), "--threshold", str(setup["threshold"]),
                   "--n-examples", "3", "--device", "cpu", check=True)
    assert "average_precision=" in proc.stdout and "max MCC" in proc.stdout
    assert "average accuracy" not in proc.stdout
    summary = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    assert len(summary["cutouts"]["TP"]) == 3
    bad = run_cli("otrain-diagnostics", "--path-cube-validation", str(tmp_path / "none.h5"),
                  "--model-path", str(setup["model"]), "--path-diagnostics", str(tmp_path / "e"))
    assert bad.returncode == 2
    assert_clean_error(bad, "none.h5", "no such datacube file")
    assert not (tmp_path / "e").exists()
