"""Defaults of issue 12: ``--epochs auto`` (a budget in optimiser steps with early stopping),
``--arch auto`` (vgg6 on alert cubes, O'TRAIN's network otherwise), an explicit ``--epochs N``
keeping its meaning, and ``otrain-convert --alerts`` keeping every labelled alert and the
central 41x41 by default.

Tiny synthetic cubes (tests/test_training.py's generator); the alert tests use a subset of the
shared real ZTF alerts (skipped when they are absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_labelled_folder, run_cli
from otrain.datacube.hdf5 import open_datacube, write_datacube
from otrain.errors import OtrainError
from otrain.inference.core import infer
from otrain.models.modelfile import read_metadata
from otrain.training import config as config_module
from otrain.training.config import TrainConfig, auto_schedule, resolve_for_cube, resolve_schedule
from otrain.training.loop import train
from test_training import synthetic_cutouts


def _cube(path: Path, n: int = 64, seed: int = 0, random_labels: bool = False,
          source: str | None = None) -> Path:
    images, labels = synthetic_cutouts(n, size=12, seed=seed)
    if random_labels:  # nothing to learn: the validation loss soon stops improving
        labels = np.random.default_rng(seed + 1).permutation(labels)
    table = {"candid": [f"c{i}" for i in range(n)], "label": labels}
    return write_datacube(path, images, table, ["diff"],
                          provenance={"source": source} if source else None)


def test_auto_schedule_counts_optimiser_steps():
    # ~830 ZTF training alerts in batches of 32: 26 steps per epoch
    assert auto_schedule(830, 32) == (116, 16)
    # the old default batch of 128 would give 7 steps per epoch: more epochs, capped at 200
    assert auto_schedule(830, 128) == (200, 58)
    # a large cube: O'TRAIN's 10 epochs at least, the patience at least 5
    assert auto_schedule(100_000, 128) == (10, 5)
    assert auto_schedule(20_000, 128) == (20, 5)
    # a tiny cube: the patience never exceeds the cap
    assert auto_schedule(10, 32) == (200, 200)
    cfg = resolve_schedule(TrainConfig(), 830)
    assert (cfg.epochs, cfg.patience) == (116, 16)
    # explicit epochs keep their meaning, the old patience of 5 unless given
    assert (resolve_schedule(TrainConfig(epochs=7), 830).epochs,
            resolve_schedule(TrainConfig(epochs=7), 830).patience) == (7, 5)
    assert resolve_schedule(TrainConfig(epochs=7, patience=None), 830).patience is None
    assert resolve_schedule(TrainConfig(patience=3), 830).patience == 3
    with pytest.raises(OtrainError, match="epochs"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(OtrainError, match="patience"):
        TrainConfig(patience="soon").validate()


def test_arch_auto_follows_the_cube():
    assert resolve_for_cube(TrainConfig(), ["diff"], "alerts").arch == "vgg6"
    assert resolve_for_cube(TrainConfig(), ["diff", "sci", "ref"], "alerts").normalise == "l2"
    assert resolve_for_cube(TrainConfig(), ["diff"], None).arch == "otrain"
    assert resolve_for_cube(TrainConfig(), ["diff"], None).normalise == "zscore"
    assert resolve_for_cube(TrainConfig(arch="otrain"), ["diff"], "alerts").arch == "otrain"


def test_auto_epochs_stop_early_and_respect_the_cap(tmp_path, monkeypatch):
    cube = _cube(tmp_path / "random.h5", random_labels=True)
    # 64 rows: 45 training rows, 2 steps per epoch; shrink the budget so the test stays fast
    monkeypatch.setattr(config_module, "AUTO_STEPS", 12)
    monkeypatch.setattr(config_module, "AUTO_MIN_EPOCHS", 2)
    monkeypatch.setattr(config_module, "AUTO_PATIENCE_STEPS", 4)
    capped = train(cube, tmp_path, "cap", TrainConfig(patience=None, batch_size=32, seed=1),
                   quiet=True)
    assert capped.epochs_run == 6  # 12 steps / 2 steps per epoch, no early stopping
    meta = read_metadata(capped.model_file)
    assert meta["training"]["epochs_requested"] == 6
    assert meta["architecture"] == "otrain"  # not an alert cube
    early = train(cube, tmp_path, "early", TrainConfig(batch_size=32, seed=1), quiet=True)
    # patience max(5, 4 / 2) = 5 epochs without a lower validation loss, within the cap of 6
    hist = [row["val_loss"] for row in early.history]
    assert early.epochs_run <= 6 and early.best_epoch == int(np.argmin(hist)) + 1
    monkeypatch.setattr(config_module, "AUTO_STEPS", 60)  # cap 30 epochs
    stopped = train(cube, tmp_path, "stop", TrainConfig(batch_size=32, seed=1), quiet=True)
    assert stopped.epochs_run < 30  # random labels: stopped early ...
    assert stopped.epochs_run == stopped.best_epoch + 5  # ... after 5 epochs without progress


def test_cli_explicit_epochs_and_alert_default_arch(tmp_path):
    cube = _cube(tmp_path / "alerts.h5", n=48, source="alerts")
    base = ["otrain-train", "--cube", str(cube), "--model-path", str(tmp_path), "--quiet"]
    run_cli(*base, "--model-name", "n3", "--epochs", "3", check=True)
    meta = read_metadata(tmp_path / "CNN_training" / "n3" / "n3.safetensors")
    assert meta["training"]["epochs_run"] == 3 and meta["training"]["epochs_requested"] == 3
    assert meta["architecture"] == "vgg6"  # --arch auto on an alert cube
    assert meta["training"]["config"]["batch_size"] == 32
    bad = run_cli(*base, "--model-name", "x", "--epochs", "soon")
    assert bad.returncode == 2 and "auto" in bad.stderr
    assert "optimiser steps" in run_cli("otrain-train", "-h", check=True).stdout


def test_convert_defaults_alerts_keep_all_cutouts_balance(tmp_path):
    from test_convert_alerts import write_subset

    drb = write_subset(tmp_path / "subset.avro")
    scores = np.array([s for s in drb.values() if s == s])
    run_cli("otrain-convert", "--alerts", str(tmp_path / "subset.avro"), "--path", str(tmp_path),
            "--cube", "a", "--label-column", "drb", "--quiet", check=True)
    with open_datacube(tmp_path / "datacube" / "a.h5") as cube:
        assert int(np.sum(cube.labels == 1)) == int(np.sum(scores >= 0.5))
        assert int(np.sum(cube.labels == 0)) == int(np.sum(scores < 0.5))
        assert len(cube) == scores.size  # every labelled alert, none sub-sampled
        assert cube.image_shape == (1, 41, 41)  # the central 41x41 of the 63x63 stamps
    # the default path end to end: a model of the 41x41 cube scores the 63x63 alert packets
    model = train(tmp_path / "datacube" / "a.h5", tmp_path, "m",
                  TrainConfig(epochs=1, group_by="objectId", test_frac=0.0), quiet=True)
    assert read_metadata(model.model_file)["input_size"] == [41, 41]
    table = infer(tmp_path / "subset.avro", model.model_file, quiet=True).table
    assert len(table) == len(drb) and np.isfinite(np.asarray(table["label1"])).all()
    report = json.loads((tmp_path / "datacube" / "a.report.json").read_text())
    assert report["frac_true"] is None
    # cutout folders keep O'TRAIN's 0.5
    make_labelled_folder(tmp_path / "cut", 10, 4, size=8)
    run_cli("otrain-convert", "--cutouts", str(tmp_path / "cut"), "--path", str(tmp_path), "--cube",
            "f", "--quiet", check=True)
    with open_datacube(tmp_path / "datacube" / "f.h5") as cube:
        assert int(np.sum(cube.labels == 1)) == int(np.sum(cube.labels == 0)) == 4
