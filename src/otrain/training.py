"""Train a network on a datacube: splits, training loop, checkpoints, outputs.

Everything lands in ``<model_path>/CNN_training/<model_name>/`` (the original O'TRAIN layout)::

    <model_name>.safetensors                   the model file (otrain.modelfile)
    checkpoint.pt                              last epoch: weights, optimizer, best weights, history
    history.csv                                epoch, train_loss, train_acc, val_loss, val_acc,
                                               val_auc, seconds
    <model_name>_loss_vs_epochs.png, <model_name>_accuracy_vs_epochs.png
    metrics.json                               validation and test metrics at the threshold, sizes
    validation_set/datacube/cube_validation.h5 the validation rows (for otrain-diagnostics, ...)
    test_set/datacube/cube_test.h5             the held-out test rows (when test_frac > 0)

Data: images are read through :meth:`otrain.datacube.Datacube.read` in sorted batches. When the
labelled rows take at most ``memory_limit_gb`` (2 GB by default) they are read and normalised once
into memory (fast); larger HDF5 cubes are read and normalised batch by batch, never whole.

Reproducibility: the weights start from ``torch.manual_seed(seed)``; every epoch reseeds torch (for
dropout) and draws its shuffle and augmentation (random flips and 90-degree rotations) from
``numpy.random.default_rng([seed, epoch])``, so the same seed gives the same weights on CPU (same
machine and torch thread count: float sums depend on it) and ``resume`` continues from the
checkpoint exactly as if the run had not stopped (``torch.use_deterministic_algorithms`` is on,
warn-only, while training). Changing the split or network settings on resume is refused.

The loss is cross-entropy, class-weighted ("balanced", from the training set) unless disabled;
the optimizer is Adam; early stopping watches the validation loss and the weights of the best
epoch are the ones saved.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from otrain.datacube import Datacube, open_datacube, write_subset
from otrain.errors import OtrainError
from otrain.evaluation.metrics import binary_metrics
from otrain.modelfile import resolve_device, save_model
from otrain.models import available_architectures, build_model, count_parameters
from otrain.normalise import check_method
from otrain.outputs import atomic_output, write_text_atomic
from otrain.progress import Progress, info
from otrain.splits import (
    EpochBatches,
    Split,
    SplitImages,
    epoch_plan,
    epoch_torch_seed,
    split_indices,
)

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "seconds")
#: Settings that must not change when a training is resumed.
RESUME_KEYS = ("val_frac", "test_frac", "seed", "group_by", "arch", "dropout", "normalise",
                "batch_size", "lr", "augment", "class_weights")


@dataclass
class TrainConfig:
    """Settings of one training (defaults follow ``otrain-train``)."""

    #: Maximum number of epochs (with ``resume``: the total to reach).
    epochs: int = 10
    #: Fraction of the labelled cutouts for validation (early stopping, metrics).
    val_frac: float = 0.15
    #: Fraction held out as a test set (0: none).
    test_frac: float = 0.15
    #: Rate of every dropout layer.
    dropout: float = 0.3
    #: P(real) above which a cutout counts as real (accuracies, metrics; stored in the model).
    threshold: float = 0.5
    #: Seeds the split, initial weights, shuffling, augmentation and dropout.
    seed: int = 0
    batch_size: int = 128
    #: Adam learning rate.
    lr: float = 1e-3
    #: Network name (:func:`otrain.models.available_architectures`).
    arch: str = "otrain"
    #: Per-cutout scaling (:mod:`otrain.normalise`), recorded in the model file.
    normalise: str = "zscore"
    #: Random flips and 90-degree rotations of the training cutouts.
    augment: bool = True
    #: Weight the loss by the inverse class frequency of the training set ("balanced").
    class_weights: bool = True
    #: Stop after this many epochs without a lower validation loss (None: never).
    patience: int | None = 5
    #: Table column whose values never straddle two parts of the split (e.g. ``objectId``).
    group_by: str | None = None
    #: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    device: str = "auto"
    #: Continue from the model folder's ``checkpoint.pt``.
    resume: bool = False
    #: DataLoader processes preparing batches (helps with large HDF5 cubes read lazily).
    workers: int = 0
    #: Split rows whose images fit in this many GB are held in memory, others read lazily.
    memory_limit_gb: float = 2.0

    def validate(self) -> None:
        """Raise :class:`~otrain.errors.OtrainError` for out-of-range settings."""
        if self.epochs < 1:
            raise OtrainError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise OtrainError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise OtrainError(f"learning rate must be positive, got {self.lr}")
        if not 0.0 <= self.threshold <= 1.0:
            raise OtrainError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.patience is not None and self.patience < 1:
            raise OtrainError(f"patience must be at least 1 epoch, got {self.patience}")
        if self.workers < 0:
            raise OtrainError(f"workers must be >= 0, got {self.workers}")
        if self.arch not in available_architectures():
            raise OtrainError(f"unknown architecture '{self.arch}'; choose from "
                              f"{', '.join(available_architectures())}")
        check_method(self.normalise)


@dataclass
class TrainResult:
    """What :func:`train` wrote and measured."""

    folder: Path
    model_file: Path
    checkpoint: Path
    history_csv: Path
    metrics_json: Path
    plots: list[Path]
    validation_cube: Path
    test_cube: Path | None
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    epochs_run: int = 0


# ------------------------------------------------------------------------------------------
# Loop pieces
# ------------------------------------------------------------------------------------------
def _train_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                 crit: nn.Module, dev: torch.device, threshold: float,
                 bar: Progress) -> tuple[float, float]:
    model.train()
    total, loss_sum, correct = 0, 0.0, 0
    for xb, yb in loader:
        xb, yb = xb.to(dev), yb.to(dev)
        opt.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = crit(logits, yb)
        loss.backward()
        opt.step()
        n = int(yb.shape[0])
        total += n
        loss_sum += float(loss.detach()) * n
        pred = (torch.softmax(logits.detach(), 1)[:, 1] > threshold).long()
        correct += int((pred == yb).sum())
        bar.update(1, loss=f"{loss_sum / total:.4f}")
    return loss_sum / max(total, 1), correct / max(total, 1)


def _predict(model: nn.Module, source: SplitImages, rows: np.ndarray, dev: torch.device,
             batch_size: int) -> torch.Tensor:
    """Logits ``(len(rows), 2)`` on the CPU, eval mode, no gradient."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, rows.size, batch_size):
            x = torch.from_numpy(source.get(rows[start : start + batch_size])).to(dev)
            out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty((0, 2))


def _evaluate(logits: torch.Tensor, y: np.ndarray, weight: torch.Tensor,
              threshold: float) -> tuple[float, float, float]:
    target = torch.from_numpy(y)
    loss = float(nn.functional.cross_entropy(logits, target, weight=weight)) if y.size else \
        float("nan")
    p = torch.softmax(logits, 1)[:, 1].numpy()
    acc = float(np.mean((p > threshold) == y)) if y.size else float("nan")
    auc = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else float("nan")
    return loss, acc, auc


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _read_checkpoint(path: Path, dev: torch.device | str = "cpu") -> dict[str, Any]:
    if not path.exists():
        raise OtrainError("nothing to resume: no checkpoint.pt in this model folder", path.parent)
    try:
        return torch.load(path, map_location=dev, weights_only=True)
    except Exception as exc:
        raise OtrainError(f"unreadable checkpoint ({exc.__class__.__name__})", path) from None


def resumable_settings(model_path: str | Path, model_name: str) -> dict[str, Any]:
    """The settings a resumed training must keep, as saved in the model's checkpoint.

    Returns
    -------
    dict
        :class:`TrainConfig` field -> value, for the fields that cannot change on resume.

    Raises
    ------
    OtrainError
        If there is no readable checkpoint.
    """
    ckpt = _read_checkpoint(Path(model_path) / "CNN_training" / model_name / "checkpoint.pt")
    saved = json.loads(ckpt["config"])
    return {k: saved[k] for k in RESUME_KEYS if k in saved}


def _load_checkpoint(path: Path, config: TrainConfig, split: Split,
                     dev: torch.device) -> dict[str, Any]:
    ckpt = _read_checkpoint(path, dev)
    saved = json.loads(ckpt["config"])
    changed = [k for k in RESUME_KEYS if saved.get(k) != asdict(config)[k]]
    if changed:
        raise OtrainError("cannot resume with different settings: " + ", ".join(
            f"{k} was {saved.get(k)!r}, now {asdict(config)[k]!r}" for k in changed), path)
    for name in ("train", "val", "test"):
        if not np.array_equal(ckpt["split"][name].cpu().numpy(), getattr(split, name)):
            raise OtrainError("cannot resume: the cube's rows differ from the earlier run", path)
    return ckpt


# ------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------
def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in history:
        writer.writerow([int(row["epoch"])] + [f"{row[k]:.6g}" for k in HISTORY_COLUMNS[1:]])
    write_text_atomic(path, buf.getvalue(), overwrite=True)


def _plot_history(path: Path, history: list[dict[str, float]], key: str, ylabel: str,
                  title: str, best_epoch: int) -> Path:
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row[f"train_{key}"] for row in history], "o-", label="train")
    ax.plot(epochs, [row[f"val_{key}"] for row in history], "s-", label="validation")
    if best_epoch:
        ax.axvline(best_epoch, color="gray", ls=":", label=f"best epoch ({best_epoch})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _class_sizes(y: np.ndarray) -> dict[str, int]:
    return {"n": int(y.size), "real": int(np.sum(y == 1)), "bogus": int(np.sum(y == 0))}


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------
def train(cube_path: str | Path, model_path: str | Path, model_name: str,
          config: TrainConfig | None = None, overwrite: bool = False,
          quiet: bool = False) -> TrainResult:
    """Train a network on a datacube and write the model folder.

    Parameters
    ----------
    cube_path : str or Path
        Labelled datacube (``.h5`` or original ``.npz``); unlabelled rows are ignored.
    model_path : str or Path
        Output root; the model goes to ``<model_path>/CNN_training/<model_name>/``.
    model_name : str
        Name of the model (folder and file names).
    config : TrainConfig, optional
        Settings (defaults of :class:`TrainConfig`).
    overwrite : bool, default False
        Replace an existing model of that name. Without it, an existing model file or checkpoint
        stops the run (``config.resume`` continues from the checkpoint instead).
    quiet : bool, default False
        Print nothing.

    Returns
    -------
    TrainResult
        Paths written, metrics (as in ``metrics.json``) and the per-epoch history.
    """
    config = config or TrainConfig()
    config.validate()
    if not model_name or Path(model_name).name != model_name:
        raise OtrainError(f"model name must be a plain file name, got '{model_name}'")
    root = Path(model_path) / "CNN_training" / model_name
    model_file = root / f"{model_name}.safetensors"
    ckpt_path = root / "checkpoint.pt"
    if not config.resume and not overwrite:
        if model_file.exists():
            raise OtrainError("already exists; pass --overwrite to replace it or --resume to "
                              "continue its training", model_file)
        if ckpt_path.exists():
            raise OtrainError("holds an earlier, possibly unfinished training (checkpoint.pt); "
                              "pass --resume to continue it or --overwrite to start again", root)
    dev = resolve_device(config.device)
    with open_datacube(cube_path) as cube:
        groups = None
        if config.group_by:
            if config.group_by not in cube.table.colnames:
                raise OtrainError(f"no column '{config.group_by}' to group by; the table has "
                                  f"{', '.join(cube.table.colnames)}", cube_path)
            groups = np.asarray(cube.table[config.group_by])
        y_all = cube.labels
        split = split_indices(y_all, config.val_frac, config.test_frac, config.seed, groups)
        c, h, w = cube.image_shape
        torch.manual_seed(config.seed)
        model = build_model(config.arch, c, (h, w), config.dropout).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        y_train = y_all[split.train]
        weights = (y_train.size / (2.0 * np.bincount(y_train, minlength=2))
                   if config.class_weights else np.ones(2))
        weight = torch.tensor(weights, dtype=torch.float32)
        crit = nn.CrossEntropyLoss(weight=weight).to(dev)
        history: list[dict[str, float]] = []
        start, best_epoch, best_loss, bad = 0, 0, float("inf"), 0
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if config.resume:
            ckpt = _load_checkpoint(ckpt_path, config, split, dev)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            best_state = ckpt["best_model"]
            start, best_epoch = int(ckpt["epoch"]), int(ckpt["best_epoch"])
            best_loss, bad = float(ckpt["best_val_loss"]), int(ckpt["bad_epochs"])
            history = [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in ckpt["history"]]
            for row in history:
                row["epoch"] = int(row["epoch"])
            info(f"resuming after epoch {start} (best epoch {best_epoch})", quiet)
        source = SplitImages(cube, np.concatenate([split.train, split.val, split.test]),
                             config.normalise, config.memory_limit_gb * 1e9)
        info(f"{cube.summary()}\nsplit: {split.sizes()}; {config.arch} network, "
             f"{count_parameters(model):,} parameters, on {dev}; images "
             f"{'in memory' if source.data is not None else 'read lazily'}", quiet)
        n_codes = 8 if h == w else 4
        loader_gen = torch.Generator().manual_seed(config.seed)
        prev_det = (torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled())
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            for epoch in range(start + 1, config.epochs + 1):
                if config.patience is not None and bad >= config.patience:
                    break
                t0 = time.monotonic()
                torch.manual_seed(epoch_torch_seed(config.seed, epoch))
                batches, codes = epoch_plan(split.train, config.seed, epoch, config.batch_size,
                                            n_codes, config.augment)
                loader = DataLoader(EpochBatches(source, y_all, batches, codes), batch_size=None,
                                    shuffle=False, num_workers=config.workers,
                                    generator=loader_gen)
                with Progress(len(batches), f"epoch {epoch}/{config.epochs}", quiet,
                              unit="batch") as bar:
                    tr_loss, tr_acc = _train_epoch(model, loader, opt, crit, dev,
                                                   config.threshold, bar)
                val_logits = _predict(model, source, split.val, dev, config.batch_size)
                v_loss, v_acc, v_auc = _evaluate(val_logits, y_all[split.val], weight,
                                                 config.threshold)
                row = {"epoch": epoch, "train_loss": tr_loss, "train_acc": tr_acc,
                       "val_loss": v_loss, "val_acc": v_acc, "val_auc": v_auc,
                       "seconds": time.monotonic() - t0}
                history.append(row)
                if v_loss < best_loss:
                    best_loss, best_epoch, bad = v_loss, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
                _save_checkpoint(ckpt_path, {
                    "format": "otrain-checkpoint", "epoch": epoch, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "best_model": best_state,
                    "best_epoch": best_epoch, "best_val_loss": best_loss, "bad_epochs": bad,
                    "history": [[float(r[k]) for k in HISTORY_COLUMNS] for r in history],
                    "torch_rng_state": torch.get_rng_state(),
                    "config": json.dumps(asdict(config)),
                    "split": {n: torch.from_numpy(getattr(split, n)) for n in
                              ("train", "val", "test")}})
                info(f"epoch {epoch}/{config.epochs}: loss {tr_loss:.4f} acc {tr_acc:.4f} | "
                     f"val_loss {v_loss:.4f} val_acc {v_acc:.4f} val_auc {v_auc:.4f} "
                     f"({row['seconds']:.1f} s)", quiet)
                if config.patience is not None and bad >= config.patience:
                    info(f"early stopping: no better validation loss for {bad} epochs; keeping "
                         f"epoch {best_epoch}", quiet)
        finally:
            torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
        model.load_state_dict(best_state)
        result = _finish(cube, cube_path, root, model_name, model, source, split, config,
                         dev, history, best_epoch, quiet)
    return result


def _finish(cube: Datacube, cube_path: str | Path, root: Path, model_name: str,
            model: nn.Module, source: SplitImages, split: Split, config: TrainConfig,
            dev: torch.device, history: list[dict[str, float]],
            best_epoch: int, quiet: bool) -> TrainResult:
    """Evaluate the best model and write the model file, history, plots, metrics and cubes."""
    y_all = cube.labels
    metrics: dict[str, Any] = {"threshold": config.threshold, "best_epoch": best_epoch,
                               "epochs_run": len(history),
                               "sizes": {n: _class_sizes(y_all[rows]) for n, rows in (
                                   ("train", split.train), ("validation", split.val),
                                   ("test", split.test))}}
    for name, rows in (("validation", split.val), ("test", split.test)):
        if rows.size == 0:
            metrics[name] = None
            continue
        logits = _predict(model, source, rows, dev, config.batch_size)
        p = torch.softmax(logits, 1)[:, 1].numpy()
        metrics[name] = binary_metrics(y_all[rows], p, config.threshold)
    meta = {
        "architecture": config.arch, "in_channels": cube.image_shape[0],
        "channels": cube.channels, "input_size": list(cube.image_shape[1:]),
        "dropout": config.dropout, "normalisation": config.normalise,
        "threshold": config.threshold,
        "training": {
            "cube": str(Path(cube_path).resolve()), "cube_rows": len(cube),
            "split_sizes": split.sizes(), "seed": config.seed, "val_frac": config.val_frac,
            "test_frac": config.test_frac, "group_by": config.group_by,
            "epochs_requested": config.epochs, "epochs_run": len(history),
            "best_epoch": best_epoch, "config": asdict(config),
            "metrics": {"validation": metrics["validation"], "test": metrics["test"]},
        },
    }
    model_file = save_model(root / f"{model_name}.safetensors", model.cpu(), meta, overwrite=True)
    model.to(dev)
    history_csv = root / "history.csv"
    _write_history(history_csv, history)
    plots = [
        _plot_history(root / f"{model_name}_loss_vs_epochs.png", history, "loss",
                      "loss (cross-entropy)", f"{model_name}: loss", best_epoch),
        _plot_history(root / f"{model_name}_accuracy_vs_epochs.png", history, "acc",
                      f"accuracy (P(real) > {config.threshold:g})", f"{model_name}: accuracy",
                      best_epoch),
    ]
    metrics_json = write_text_atomic(root / "metrics.json",
                                     json.dumps(metrics, indent=2) + "\n", overwrite=True)
    prov = {"otrain_train": {"model": model_name, "seed": config.seed,
                             "source_cube": str(Path(cube_path).resolve())}}
    val_cube = write_subset(cube, split.val, root / "validation_set/datacube/cube_validation.h5",
                            overwrite=True, provenance={**prov, "split": "validation"})
    test_cube = None
    if split.test.size:
        test_cube = write_subset(cube, split.test, root / "test_set/datacube/cube_test.h5",
                                 overwrite=True, provenance={**prov, "split": "test"})
    info(f"model written to {model_file}", quiet)
    return TrainResult(folder=root, model_file=model_file, checkpoint=root / "checkpoint.pt",
                       history_csv=history_csv, metrics_json=metrics_json, plots=plots,
                       validation_cube=val_cube, test_cube=test_cube, metrics=metrics,
                       history=history, best_epoch=best_epoch, epochs_run=len(history))
