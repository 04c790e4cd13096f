"""Learning curve: how the scores grow with the number of training cutouts.

The labelled rows of the cube are split once
(:func:`~otrain.training.splits.split_indices`, ``seed``) into a
held-out **test set**, the same for every run, and a pool (training + validation). For
``n_sections`` sizes ``round(n_pool * i / n_sections)``, ``i = 1 .. n_sections`` (the last is the
whole pool; O'TRAIN used ``n_sections - 1`` sizes), and ``repeats`` repeats per size, a stratified
subset of the pool is trained on with :func:`otrain.training.train` (its own validation split,
``val_frac``; no test split) and scored on the common test set. Repeat ``r`` uses the seed
``seed + r`` for training and draws its subsets from ``numpy.random.default_rng([seed, r])``; the
subsets of one repeat are nested (each size adds cutouts to the previous one), keeping the class
ratio of the pool.

``group_by`` (e.g. ``objectId`` for alerts) keeps the rows sharing a value together: the test set
and the pool have no group in common, nor has a run's training and validation split.

``repeats`` defaults to 3 so that every size has an error bar (standard deviation over the
repeats); ``repeats=1`` is the original single run per size.

Files: each run is a normal training folder ``<model_path>/CNN_training/<name>_size_<n>_r<k>/``
(as O'TRAIN kept one model per size; ``lean`` deletes the run's ``checkpoint.pt`` and validation
cube once it is scored). The subset cubes go to a temporary folder inside ``outdir``, removed at
the end (a run's model metadata names its subset cube; ``learning_curve.csv`` ties the run to
the source cube, size, repeat and seed). In ``outdir``: ``learning_curve.csv`` (one row per
run, rewritten after each run), ``learning_curve.json`` (per-size mean and std, the plateau, the
test-set hash), ``<name>_scores_dataset_size.png`` and ``<name>_accuracy_gap_dataset_size.png``.

Plateau: the smallest size whose mean test MCC is within ``max(std, 0.01)`` of the best mean test
MCC, ``std`` being the standard deviation over repeats at the best size.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from otrain.datacube.hdf5 import open_datacube, write_subset
from otrain.errors import OtrainError
from otrain.metrics import binary_metrics
from otrain.models.modelfile import load_model, predict_proba
from otrain.outputs import atomic_output, check_writable, write_text_atomic
from otrain.progress import info
from otrain.training.config import TrainConfig
from otrain.training.loop import train
from otrain.training.splits import group_values, split_indices

SCORES = ("mcc", "f1", "auc", "accuracy")
CSV_COLUMNS = ("size", "repeat", "seed", "n_train", "n_val", "n_test",
               *(f"{part}_{s}" for part in ("train", "val", "test") for s in SCORES),
               "acc_gap", "final_epoch_acc_gap", "final_val_loss", "epochs_run", "best_epoch",
               "seconds", "test_hash", "model_file")
#: Smallest plateau tolerance on the mean test MCC.
PLATEAU_TOL = 0.01


@dataclass
class LearningCurveConfig:
    """Settings of :func:`learning_curve` (defaults of ``otrain-optimise-dataset-size``)."""

    epochs: int = 10
    n_sections: int = 20
    repeats: int = 3
    dropout: float = 0.3
    seed: int = 0
    test_frac: float = 0.15
    val_frac: float = 0.15
    arch: str = "otrain"
    threshold: float = 0.5
    batch_size: int = 128
    lr: float = 1e-3
    patience: int | None = 5
    normalise: str = "auto"
    device: str = "auto"
    #: Table column whose values are kept together (test set, and each run's validation
    #: split), e.g. ``objectId`` for alerts: no object is both trained on and scored.
    group_by: str | None = None
    #: Delete each run's checkpoint.pt and validation cube after scoring it.
    lean: bool = False

    def validate(self) -> None:
        """Raise :class:`~otrain.errors.OtrainError` for out-of-range settings."""
        if self.n_sections < 1:
            raise OtrainError(f"--n_sections must be at least 1, got {self.n_sections}")
        if self.repeats < 1:
            raise OtrainError(f"--repeats must be at least 1, got {self.repeats}")
        if not 0.0 < self.test_frac < 1.0:
            raise OtrainError(f"--test-frac must be in (0, 1): the learning curve needs a test "
                              f"set, got {self.test_frac}")
        self.train_config(0).validate()

    def train_config(self, seed: int) -> TrainConfig:
        """The :class:`TrainConfig` of one run."""
        return TrainConfig(epochs=self.epochs, val_frac=self.val_frac, test_frac=0.0,
                           dropout=self.dropout, threshold=self.threshold, seed=seed,
                           batch_size=self.batch_size, lr=self.lr, arch=self.arch,
                           normalise=self.normalise, patience=self.patience, device=self.device,
                           group_by=self.group_by)


def _part(groups: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if groups is None else groups[rows]


def dataset_sizes(n_pool: int, n_sections: int) -> list[int]:
    """Increasing distinct sizes ``round(n_pool * i / n_sections)``, ``i = 1 .. n_sections``."""
    sizes = sorted({round(n_pool * i / n_sections) for i in range(1, n_sections + 1)})
    return [s for s in sizes if s > 0]


def nested_subsets(pool: np.ndarray, labels: np.ndarray, sizes: list[int],
                   rng: np.random.Generator) -> list[np.ndarray]:
    """Nested stratified subsets of ``pool`` (sorted rows), one per size."""
    real = rng.permutation(pool[labels[pool] == 1])
    bogus = rng.permutation(pool[labels[pool] == 0])
    out = []
    for size in sizes:
        k_real = round(size * real.size / pool.size)
        out.append(np.sort(np.concatenate([real[:k_real], bogus[: size - k_real]])))
    return out


def candid_hash(candids: np.ndarray) -> str:
    """SHA-256 (first 16 hex digits) of the sorted test candidate ids: equal hashes, same set."""
    text = "\n".join(sorted(np.asarray(candids).astype(str).tolist()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _score(metrics: dict[str, Any] | None, prefix: str) -> dict[str, Any]:
    metrics = metrics or {}
    return {f"{prefix}_{s}": metrics.get(s) for s in SCORES}


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-size mean and std of the test scores and gaps, and the plateau size."""
    keys = ("test_mcc", "test_f1", "test_auc", "test_accuracy", "acc_gap", "final_epoch_acc_gap")
    per_size = []
    for size in sorted({r["size"] for r in rows}):
        group = [r for r in rows if r["size"] == size]
        entry: dict[str, Any] = {"size": size, "runs": len(group)}
        for k in keys:
            v = np.array([_num(r[k]) for r in group])
            v = v[np.isfinite(v)]
            entry[f"{k}_mean"] = float(v.mean()) if v.size else None
            entry[f"{k}_std"] = float(v.std(ddof=1)) if v.size > 1 else 0.0 if v.size else None
        per_size.append(entry)
    plateau = None
    valid = [e for e in per_size if e["test_mcc_mean"] is not None]
    if valid:
        best = max(valid, key=lambda e: e["test_mcc_mean"])
        tol = max(best["test_mcc_std"] or 0.0, PLATEAU_TOL)
        first = next(e for e in valid if e["test_mcc_mean"] >= best["test_mcc_mean"] - tol)
        plateau = {"size": first["size"], "test_mcc_mean": first["test_mcc_mean"],
                   "best_size": best["size"], "best_test_mcc_mean": best["test_mcc_mean"],
                   "tolerance": tol,
                   "criterion": "smallest size whose mean test MCC is within max(std at the "
                                f"best size, {PLATEAU_TOL}) of the best mean test MCC"}
    return {"sizes": per_size, "plateau": plateau}


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------
def _errorbars(ax: Any, rows: list[dict[str, Any]], summary: dict[str, Any], key: str,
               label: str, fmt: str) -> None:
    per = summary["sizes"]
    x = np.array([e["size"] for e in per], dtype=float)
    y = np.array([_num(e[f"{key}_mean"]) for e in per])
    err = np.array([_num(e[f"{key}_std"]) for e in per])
    line = ax.errorbar(x, y, yerr=err, fmt=fmt, capsize=3, label=label)
    ax.plot([r["size"] for r in rows], [_num(r[key]) for r in rows], ".", alpha=0.35,
            color=line[0].get_color())


def plot_scores(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str,
                overwrite: bool) -> Path:
    """Test MCC, F1 and AUC against the training-pool size, mean +/- std over repeats."""
    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.subplots()
    for key, label, fmt in (("test_mcc", "MCC", "o-"), ("test_f1", "F1", "s-"),
                            ("test_auc", "ROC AUC", "^-")):
        _errorbars(ax, rows, summary, key, label, fmt)
    if summary["plateau"]:
        ax.axvline(summary["plateau"]["size"], color="gray", ls="--",
                   label=f"plateau from {summary['plateau']['size']} cutouts")
    ax.set_xlabel("cutouts used (training + validation)")
    ax.set_ylabel("score on the common test set")
    ax.set_title(title)
    ax.legend(fontsize=8, title="mean +/- std over repeats; dots: single runs", title_fontsize=8)
    return _save(fig, path, overwrite)


def plot_gap(rows: list[dict[str, Any]], summary: dict[str, Any], path: Path, title: str,
             overwrite: bool) -> Path:
    """Train minus validation accuracy against size (saved model, and last epoch's history)."""
    fig = Figure(figsize=(7.5, 5.0))
    ax = fig.subplots()
    _errorbars(ax, rows, summary, "acc_gap", "saved model (eval mode)", "o-")
    _errorbars(ax, rows, summary, "final_epoch_acc_gap", "last epoch (training history)", "s--")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("cutouts used (training + validation)")
    ax.set_ylabel("train accuracy - validation accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, title="mean +/- std over repeats; dots: single runs", title_fontsize=8)
    return _save(fig, path, overwrite)


def _save(fig: Figure, path: Path, overwrite: bool) -> Path:
    fig.tight_layout()
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else f"{row[c]:.6g}" if isinstance(row[c], float)
                         else row[c] for c in CSV_COLUMNS])
    write_text_atomic(path, buf.getvalue(), overwrite=True)


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------
@dataclass
class LearningCurveResult:
    """What :func:`learning_curve` measured and wrote."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    csv: Path
    json: Path
    plots: list[Path]


def learning_curve(cube_path: str | Path, model_path: str | Path, model_name: str,
                   outdir: str | Path, config: LearningCurveConfig | None = None,
                   overwrite: bool = False, quiet: bool = False) -> LearningCurveResult:
    """Train on growing subsets of a cube and score every model on one held-out test set.

    Parameters
    ----------
    cube_path : str or Path
        Labelled datacube.
    model_path : str or Path
        Root of the model folders (``<model_path>/CNN_training/<name>_size_<n>_r<k>/``).
    model_name : str
        Base name of the models.
    outdir : str or Path
        Folder of the CSV, JSON and plots (and, while running, of the subset cubes).
    config : LearningCurveConfig, optional
        Settings.
    overwrite : bool, default False
        Replace existing outputs and model folders of the same names.
    quiet : bool, default False
        Print nothing.

    Returns
    -------
    LearningCurveResult
    """
    config = config or LearningCurveConfig()
    config.validate()
    if not model_name or Path(model_name).name != model_name:
        raise OtrainError(f"model name must be a plain file name, got '{model_name}'")
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OtrainError("exists and is not a folder", outdir)
    csv_path, json_path = outdir / "learning_curve.csv", outdir / "learning_curve.json"
    plot_paths = [outdir / f"{model_name}_scores_dataset_size.png",
                  outdir / f"{model_name}_accuracy_gap_dataset_size.png"]
    for path in (csv_path, json_path, *plot_paths):
        check_writable(path, overwrite)
    with open_datacube(cube_path) as cube:
        labels = cube.labels
        groups = group_values(cube, config.group_by)
        split = split_indices(labels, config.val_frac, config.test_frac, config.seed, groups)
        test, pool = split.test, np.sort(np.concatenate([split.train, split.val]))
        candids = np.asarray(cube.table["candid"]).astype(str)
        test_hash = candid_hash(candids[test])
        sizes = dataset_sizes(pool.size, config.n_sections)
        plans = [nested_subsets(pool, labels, sizes, np.random.default_rng([config.seed, r]))
                 for r in range(config.repeats)]
        runs = [(size, r, config.seed + r, plans[r][i], f"{model_name}_size_{size}_r{r}")
                for i, size in enumerate(sizes) for r in range(config.repeats)]
        for size, _, seed, rows, name in runs:  # fail before any training
            try:
                sub = split_indices(labels[rows], config.val_frac, 0.0, seed, _part(groups, rows))
            except OtrainError as exc:
                raise OtrainError(f"{size} cutouts are too few to train on ({exc.reason}); use "
                                  "fewer --n_sections or a larger cube", cube_path) from None
            if np.unique(labels[rows][sub.train]).size < 2:
                raise OtrainError(f"{size} cutouts leave a training set with one class; use "
                                  "fewer --n_sections or a larger cube", cube_path)
            folder = Path(model_path) / "CNN_training" / name
            for existing in (folder / f"{name}.safetensors", folder / "checkpoint.pt"):
                if existing.exists() and not overwrite:
                    raise OtrainError("already exists; pass --overwrite to replace it", existing)
        info(f"{cube.summary()}\ntest set: {test.size} cutouts (hash {test_hash}); training "
             f"pool: {pool.size}; sizes: {', '.join(map(str, sizes))}; {config.repeats} "
             f"repeat(s) -> {len(runs)} trainings", quiet)
        y_test = labels[test]
        x_test = cube.read(test)
        outdir.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=".otrain-subsets-", dir=outdir))
        results: list[dict[str, Any]] = []
        try:
            for k, (size, r, seed, rows, name) in enumerate(runs, start=1):
                t0 = time.monotonic()
                sub_path = write_subset(cube, rows, tmpdir / f"{name}.h5", provenance={
                    "learning_curve": {"source_cube": str(Path(cube_path).resolve()),
                                       "size": size, "repeat": r, "seed": seed}})
                res = train(sub_path, model_path, name, config.train_config(seed),
                            overwrite=overwrite, quiet=True)
                sub_path.unlink()
                sub = split_indices(labels[rows], config.val_frac, 0.0, seed, _part(groups, rows))
                train_rows = rows[sub.train]
                if train_rows.size != res.metrics["sizes"]["train"]["n"]:
                    raise OtrainError("internal error: training split differs from otrain.train")
                loaded = load_model(res.model_file)
                m_train = binary_metrics(labels[train_rows],
                                         predict_proba(loaded, cube.read(train_rows)),
                                         config.threshold)
                m_test = binary_metrics(y_test, predict_proba(loaded, x_test), config.threshold)
                m_val = res.metrics["validation"]
                last = res.history[-1]
                row = {"size": size, "repeat": r, "seed": seed, "n_train": int(train_rows.size),
                       "n_val": int(sub.val.size), "n_test": int(test.size),
                       **_score(m_train, "train"), **_score(m_val, "val"),
                       **_score(m_test, "test"),
                       "acc_gap": _num(m_train["accuracy"]) - _num(m_val["accuracy"]),
                       "final_epoch_acc_gap": float(last["train_acc"] - last["val_acc"]),
                       "final_val_loss": float(last["val_loss"]), "epochs_run": res.epochs_run,
                       "best_epoch": res.best_epoch, "seconds": time.monotonic() - t0,
                       "test_hash": test_hash, "model_file": str(res.model_file)}
                results.append(row)
                _write_csv(csv_path, results)
                if config.lean:
                    res.checkpoint.unlink(missing_ok=True)
                    shutil.rmtree(res.folder / "validation_set", ignore_errors=True)
                info(f"[{k}/{len(runs)}] size {size} repeat {r}: test MCC "
                     f"{_num(m_test['mcc']):.3f} F1 {_num(m_test['f1']):.3f} AUC "
                     f"{_num(m_test['auc']):.3f} ({row['seconds']:.1f} s)", quiet)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    summary = summarise(results)
    record = {"cube": str(Path(cube_path).resolve()), "model_name": model_name,
              "config": asdict(config), "pool_size": int(pool.size), "n_test": int(test.size),
              "test_hash": test_hash, "dataset_sizes": sizes, **summary}
    write_text_atomic(json_path, json.dumps(record, indent=2) + "\n", overwrite)
    title = f"{model_name}: {test.size} test cutouts, {config.repeats} repeat(s) per size"
    plots = [plot_scores(results, summary, plot_paths[0], title, overwrite),
             plot_gap(results, summary, plot_paths[1], title, overwrite)]
    if summary["plateau"]:
        p = summary["plateau"]
        info(f"test MCC flattens from {p['size']} cutouts (mean {p['test_mcc_mean']:.3f}; best "
             f"{p['best_test_mcc_mean']:.3f} at {p['best_size']}, tolerance {p['tolerance']:.3f})",
             quiet)
    return LearningCurveResult(results, summary, csv_path, json_path, plots)
