"""What a training writes and reads back: checkpoint, history, plots, metrics, split cubes.

The layout is described in :mod:`otrain.training`. In a multi-process run only rank 0 calls the
writing functions here; every rank reads the checkpoint on resume.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import nn

from otrain.datacube.cube import Datacube
from otrain.datacube.hdf5 import write_subset
from otrain.errors import OtrainError
from otrain.models.modelfile import save_model
from otrain.outputs import atomic_output, write_text_atomic
from otrain.training.config import epoch_threshold
from otrain.training.splits import Split

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "seconds")
#: Settings that must not change when a training is resumed.
RESUME_KEYS = ("val_frac", "test_frac", "seed", "group_by", "arch", "dropout", "normalise",
                "batch_size", "lr", "lr_schedule", "augment", "class_weights")


@dataclass
class TrainResult:
    """What :func:`otrain.training.train` wrote and measured."""

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
# Checkpoint
# ------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with :func:`torch.save`, atomically."""
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(state, tmp)


#: What a checkpoint written by otrain-train holds (and --resume needs).
CHECKPOINT_KEYS = ("config", "split", "model", "optimizer", "best_model", "epoch", "best_epoch",
                   "best_val_loss", "bad_epochs", "history")


def read_checkpoint(path: Path, dev: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint (tensors only: ``weights_only``) onto ``dev``.

    Raises
    ------
    OtrainError
        If it is missing or unreadable.
    """
    if not path.exists():
        raise OtrainError("nothing to resume: no checkpoint.pt in this model folder", path.parent)
    try:
        ckpt = torch.load(path, map_location=dev, weights_only=True)
    except Exception as exc:
        raise OtrainError(f"unreadable checkpoint ({exc.__class__.__name__})", path) from None
    missing = ([k for k in CHECKPOINT_KEYS if k not in ckpt] if isinstance(ckpt, dict)
               else list(CHECKPOINT_KEYS))
    if missing:
        raise OtrainError(f"not an otrain training checkpoint: no {', '.join(missing)}; "
                          "start again with --overwrite instead of --resume", path)
    try:
        json.loads(ckpt["config"])
    except (TypeError, ValueError):
        raise OtrainError("damaged checkpoint: its 'config' is not JSON; start again with "
                          "--overwrite", path) from None
    return ckpt


def resumable_settings(model_path: str | Path, model_name: str) -> dict[str, Any]:
    """The settings a resumed training must keep, as saved in the model's checkpoint.

    Returns
    -------
    dict
        :class:`~otrain.training.TrainConfig` field -> value, for the fields that cannot
        change on resume.

    Raises
    ------
    OtrainError
        If there is no readable checkpoint.
    """
    ckpt = read_checkpoint(Path(model_path) / "CNN_training" / model_name / "checkpoint.pt")
    saved = json.loads(ckpt["config"])
    return {k: saved[k] for k in RESUME_KEYS if k in saved}


def load_checkpoint(path: Path, config: dict[str, Any], split: Split,
                    dev: torch.device) -> dict[str, Any]:
    """Read the checkpoint to resume and check it belongs to this run.

    Parameters
    ----------
    path : Path
        ``checkpoint.pt``.
    config : dict
        The settings of this run (``dataclasses.asdict`` of the TrainConfig).
    split : Split
        This run's split, which must be the checkpoint's.
    dev : torch.device
        Where to load the tensors.

    Raises
    ------
    OtrainError
        Missing or unreadable checkpoint, changed settings, or other cube rows.
    """
    ckpt = read_checkpoint(path, dev)
    saved = json.loads(ckpt["config"])
    changed = [k for k in RESUME_KEYS if saved.get(k) != config[k]]
    if changed:
        raise OtrainError("cannot resume with different settings: " + ", ".join(
            f"{k} was {saved.get(k)!r}, now {config[k]!r}" for k in changed), path)
    for name in ("train", "val", "test"):
        if not np.array_equal(ckpt["split"][name].cpu().numpy(), getattr(split, name)):
            raise OtrainError("cannot resume: the cube's rows differ from the earlier run", path)
    return ckpt


# ------------------------------------------------------------------------------------------
# History, plots, final outputs
# ------------------------------------------------------------------------------------------
def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """Write ``history.csv`` (:data:`HISTORY_COLUMNS`, after a ``member`` column for the rows
    of an ensemble)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    member = bool(history) and "member" in history[0]
    writer.writerow((("member",) if member else ()) + HISTORY_COLUMNS)
    for row in history:
        writer.writerow(([int(row["member"])] if member else []) + [int(row["epoch"])] +
                        [f"{row[k]:.6g}" for k in HISTORY_COLUMNS[1:]])
    write_text_atomic(path, buf.getvalue(), overwrite=True)


def plot_history(path: Path, history: list[dict[str, float]], key: str, ylabel: str,
                 title: str, best_epoch: int) -> Path:
    """Plot ``train_<key>`` and ``val_<key>`` against the epoch into a PNG."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    members = sorted({int(row.get("member", 0)) for row in history})
    for m in members:  # one pair of curves per ensemble member
        rows = [row for row in history if int(row.get("member", 0)) == m]
        epochs = [row["epoch"] for row in rows]
        tag = f" (member {m})" if len(members) > 1 else ""
        ax.plot(epochs, [row[f"train_{key}"] for row in rows], "o-", label=f"train{tag}")
        ax.plot(epochs, [row[f"val_{key}"] for row in rows], "s-",
                label=f"validation{tag}")
    if best_epoch:
        ax.axvline(best_epoch, color="gray", ls=":", label=f"best epoch ({best_epoch})"
                   + (" of member 0" if len(members) > 1 else ""))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def class_sizes(y: np.ndarray) -> dict[str, int]:
    """Number of rows, real and bogus labels."""
    return {"n": int(y.size), "real": int(np.sum(y == 1)), "bogus": int(np.sum(y == 0))}


def write_outputs(cube: Datacube, cube_path: str | Path, root: Path, model_name: str,
                  model: nn.Module | list[nn.Module], split: Split, config: dict[str, Any],
                  history: list[dict[str, float]], best_epoch: int, metrics: dict[str, Any],
                  world_size: int = 1, write: bool = True,
                  extra_meta: dict[str, Any] | None = None) -> TrainResult:
    """Write the model file, history, plots, metrics and the validation / test cubes.

    Parameters
    ----------
    cube, cube_path
        The training cube and its path (recorded).
    root : Path
        The model folder.
    model_name : str
        Name of the model.
    model : nn.Module or list of them
        The network (or ensemble members) with the weights to save (moved to the CPU and
        back).
    split : Split
        The split of the run.
    config : dict
        The run's settings (``dataclasses.asdict`` of the TrainConfig).
    history, best_epoch, metrics
        Per-epoch history, best epoch and the ``metrics.json`` content.
    world_size : int, default 1
        Number of training processes (recorded).
    write : bool, default True
        False on ranks other than 0: only the paths are returned.
    extra_meta : dict, optional
        Model-file metadata to add (temperature, threshold and its choice, calibration,
        ensemble members: :func:`otrain.training.ensemble.calibrate_and_measure`).

    Returns
    -------
    TrainResult
        The paths (written when ``write``) and the metrics.
    """
    model_file = root / f"{model_name}.safetensors"
    history_csv, metrics_json = root / "history.csv", root / "metrics.json"
    plots = [root / f"{model_name}_loss_vs_epochs.png",
             root / f"{model_name}_accuracy_vs_epochs.png"]
    val_cube = root / "validation_set/datacube/cube_validation.h5"
    test_cube = root / "test_set/datacube/cube_test.h5" if split.test.size else None
    nets = [model] if isinstance(model, nn.Module) else list(model)
    if write:
        _write_files(cube, cube_path, root, model_name, nets, split, config, history,
                     best_epoch, metrics, world_size, extra_meta or {})
    ckpt = root / ("checkpoint.pt" if len(nets) == 1 else "checkpoint_member0.pt")
    return TrainResult(folder=root, model_file=model_file, checkpoint=ckpt,
                       history_csv=history_csv, metrics_json=metrics_json, plots=plots,
                       validation_cube=val_cube, test_cube=test_cube, metrics=metrics,
                       history=history, best_epoch=best_epoch, epochs_run=len(history))


def _write_files(cube: Datacube, cube_path: str | Path, root: Path, model_name: str,
                 nets: list[nn.Module], split: Split, config: dict[str, Any],
                 history: list[dict[str, float]], best_epoch: int, metrics: dict[str, Any],
                 world_size: int, extra_meta: dict[str, Any]) -> None:
    dev = next(nets[0].parameters()).device
    meta = {
        "architecture": config["arch"], "in_channels": cube.image_shape[0],
        "channels": cube.channels, "input_size": list(cube.image_shape[1:]),
        "dropout": config["dropout"], "normalisation": config["normalise"],
        "threshold": config["threshold"],
        "training": {
            "cube": str(Path(cube_path).resolve()), "cube_rows": len(cube),
            "split_sizes": split.sizes(), "seed": config["seed"], "val_frac": config["val_frac"],
            "test_frac": config["test_frac"], "group_by": config["group_by"],
            "epochs_requested": config["epochs"], "epochs_run": len(history),
            "best_epoch": best_epoch, "world_size": world_size, "config": config,
            "precision": config.get("precision_used"),
            "metrics": {"validation": metrics["validation"], "test": metrics["test"]},
        },
        **extra_meta,
    }
    save_model(root / f"{model_name}.safetensors", [net.cpu() for net in nets], meta,
               overwrite=True)
    for net in nets:
        net.to(dev)
    write_history(root / "history.csv", history)
    plot_history(root / f"{model_name}_loss_vs_epochs.png", history, "loss",
                 "loss (cross-entropy)", f"{model_name}: loss", best_epoch)
    plot_history(root / f"{model_name}_accuracy_vs_epochs.png", history, "acc",
                 f"accuracy (P(real) > {epoch_threshold(config['threshold']):g})",
                 f"{model_name}: accuracy", best_epoch)
    write_text_atomic(root / "metrics.json", json.dumps(metrics, indent=2) + "\n",
                      overwrite=True)
    prov = {"otrain_train": {"model": model_name, "seed": config["seed"],
                             "source_cube": str(Path(cube_path).resolve())}}
    write_subset(cube, split.val, root / "validation_set/datacube/cube_validation.h5",
                 overwrite=True, provenance={**prov, "split": "validation"})
    if split.test.size:
        write_subset(cube, split.test, root / "test_set/datacube/cube_test.h5",
                     overwrite=True, provenance={**prov, "split": "test"})

