"""Training (otrain.training): splits, metrics, determinism, resume, outputs, CLI, quality.

The cubes are synthetic: real = a Gaussian PSF blob, bogus = a hot pixel, a sharp line (cosmic
ray / satellite) or a dipole (subtraction residual), all on noise with a random background.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, run_cli
from otrain.datacube.hdf5 import open_datacube, write_datacube
from otrain.errors import OtrainError
from otrain.metrics import binary_metrics
from otrain.models.modelfile import load_model, predict_proba
from otrain.training.config import TrainConfig, epoch_lr
from otrain.training.loop import HISTORY_COLUMNS, train
from otrain.training.splits import augment, split_indices

FAST = {"batch_size": 64, "patience": None}


def synthetic_cutouts(n: int, size: int = 16, channels: int = 1, seed: int = 0,
                      frac_real: float = 0.5, width: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, channels, size, width)`` and labels (1 real blob, 0 bogus artefact)."""
    width = width or size
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < frac_real).astype(np.int64)
    yy, xx = np.mgrid[0:size, 0:width].astype(np.float64)
    images = np.empty((n, channels, size, width), np.float32)
    for i in range(n):
        x0 = (width - 1) / 2 + rng.uniform(-1.5, 1.5)
        y0 = (size - 1) / 2 + rng.uniform(-1.5, 1.5)
        amp = rng.uniform(3.0, 20.0)
        kind = 3 if labels[i] else rng.integers(0, 3)
        if kind == 0:  # hot pixel
            img = np.zeros((size, width))
            img[round(y0), round(x0)] = 2 * amp
        elif kind == 1:  # sharp line
            ang = rng.uniform(0, np.pi)
            dist = np.abs((xx - x0) * np.sin(ang) - (yy - y0) * np.cos(ang))
            img = amp * np.exp(-dist**2 / 0.32)
        else:  # PSF blob (real), or a dipole of two (bogus)
            s2 = 2 * rng.uniform(1.0, 2.0) ** 2
            img = amp * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / s2)
            if kind == 2:
                dx, dy = 1.5 * np.array([np.cos(a := rng.uniform(0, 2 * np.pi)), np.sin(a)])
                img = amp * (np.exp(-((xx - x0 - dx) ** 2 + (yy - y0 - dy) ** 2) / s2)
                             - np.exp(-((xx - x0 + dx) ** 2 + (yy - y0 + dy) ** 2) / s2))
        noise = rng.normal(0.0, 1.0, (channels, size, width)) + rng.normal(0.0, 5.0)
        images[i] = img[None] + noise
    return images, labels


def make_cube(path: Path, n: int = 300, groups: int | None = None, **kwargs: object) -> Path:
    images, labels = synthetic_cutouts(n, **kwargs)
    table = {"candid": np.array([f"c{i:05d}" for i in range(n)]), "label": labels,
             "mag": np.linspace(15.0, 21.0, n), "magerr": np.full(n, 0.05)}
    if groups:
        table["objectId"] = np.array([f"ZTF{i % groups:04d}" for i in range(n)])
    channels = ["diff", "sci", "ref"][: images.shape[1]]
    return write_datacube(path, images, table, channels)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the tests share 2 cores


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cube(tmp_path_factory.mktemp("cube") / "cube.h5", n=300, groups=60)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path).model.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------
# splits, augmentation, metrics
# ------------------------------------------------------------------------------------------
def test_stratified_split() -> None:
    labels = np.r_[np.ones(200, int), np.zeros(800, int), -np.ones(10, int)]
    s = split_indices(labels, 0.15, 0.15, seed=4)
    assert s.sizes() == {"train": 700, "val": 150, "test": 150}
    for part in (s.val, s.test):
        assert labels[part].mean() == pytest.approx(0.2)
    allrows = np.concatenate([s.train, s.val, s.test])
    assert np.array_equal(np.sort(allrows), np.arange(1000))  # each labelled row once, no -1
    again = split_indices(labels, 0.15, 0.15, seed=4)
    assert np.array_equal(again.val, s.val)
    assert not np.array_equal(split_indices(labels, 0.15, 0.15, seed=5).val, s.val)
    assert split_indices(labels, 0.2, 0.0, seed=0).test.size == 0


def test_grouped_split_keeps_groups_together() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 150, 1000).astype(str)
    groups[:30] = ""  # no group: each row its own
    labels = rng.integers(0, 2, 1000)
    s = split_indices(labels, 0.15, 0.15, seed=1, groups=groups)
    named = [set(groups[p]) - {""} for p in (s.train, s.val, s.test)]
    assert not (named[0] & named[1] or named[0] & named[2] or named[1] & named[2])
    sizes = s.sizes()
    assert abs(sizes["val"] - 150) < 25 and abs(sizes["test"] - 150) < 25
    assert abs(labels[s.val].mean() - labels.mean()) < 0.1


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"val_frac": 0.0}, "validation fraction"),
    ({"val_frac": 0.5, "test_frac": 0.5}, "leave no training"),
])
def test_split_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(OtrainError, match=fragment):
        split_indices(np.r_[np.ones(10, int), np.zeros(10, int)], **kwargs)
    with pytest.raises(OtrainError, match="both classes"):
        split_indices(np.ones(20, int))


def test_augment_is_the_dihedral_group() -> None:
    x = np.arange(2 * 16, dtype=np.float32).reshape(2, 1, 4, 4)
    np.testing.assert_array_equal(augment(x, np.array([0, 0])), x)
    np.testing.assert_array_equal(augment(x, np.array([1, 1])), np.rot90(x, 1, axes=(2, 3)))
    outs = {augment(x[:1], np.array([c])).tobytes() for c in range(8)}
    assert len(outs) == 8
    rect = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    assert augment(rect, np.array([3])).shape == rect.shape


def test_binary_metrics() -> None:
    m = binary_metrics([0, 0, 1, 1, 1], [0.1, 0.7, 0.8, 0.5, 0.9], threshold=0.5)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]  # 0.5 is not > 0.5
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(0.5) and m["fnr"] == pytest.approx(1 / 3)
    assert m["auc"] == pytest.approx(5 / 6)
    one = binary_metrics([1, 1], [0.9, 0.2])
    assert one["auc"] is None and one["mcc"] == 0.0
    json.dumps(m)


# ------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------
def test_outputs_determinism_and_resume(cube: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=3, seed=7, **FAST)
    fill_before = torch.utils.deterministic.fill_uninitialized_memory
    a = train(cube, tmp_path, "a", cfg, quiet=True)
    assert torch.utils.deterministic.fill_uninitialized_memory == fill_before  # restored
    root = tmp_path / "CNN_training" / "a"
    for name in ("a.safetensors", "checkpoint.pt", "history.csv", "metrics.json",
                 "a_loss_vs_epochs.png", "a_accuracy_vs_epochs.png",
                 "validation_set/datacube/cube_validation.h5", "test_set/datacube/cube_test.h5"):
        assert (root / name).is_file(), name
    assert (root / "a_loss_vs_epochs.png").read_bytes()[:4] == b"\x89PNG"
    lines = (root / "history.csv").read_text().splitlines()
    assert lines[0] == ",".join(HISTORY_COLUMNS) and len(lines) == 4
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["sizes"]["validation"]["n"] == 45 and metrics["sizes"]["test"]["n"] == 45
    assert set(metrics["test"]) >= {"auc", "accuracy", "precision", "recall", "f1", "mcc", "fpr",
                                    "fnr", "confusion_matrix", "average_precision"}
    with open_datacube(a.validation_cube) as val, open_datacube(a.test_cube) as test:
        assert len(val) == 45 and len(test) == 45
        assert not set(val.table["candid"]) & set(test.table["candid"])
    meta = load_model(a.model_file).meta
    assert meta["training"]["seed"] == 7 and meta["training"]["epochs_run"] == 3
    assert meta["channels"] == ["diff"] and meta["normalisation"] == "zscore"
    ckpt = torch.load(a.checkpoint, weights_only=True)  # safe to load
    assert ckpt["epoch"] == 3
    assert ckpt["optimizer"]["param_groups"][0]["fused"] is True  # one kernel per step

    # same seed -> same weights; other seed -> other weights
    b = train(cube, tmp_path, "b", cfg, quiet=True)
    assert _same(_weights(a.model_file), _weights(b.model_file))
    c = train(cube, tmp_path, "c", TrainConfig(epochs=1, seed=8, **FAST), quiet=True)
    assert not _same(_weights(a.model_file), _weights(c.model_file))

    # 2 epochs, then resume to 3 == 3 epochs straight
    train(cube, tmp_path, "r", TrainConfig(epochs=2, seed=7, **FAST), quiet=True)
    r = train(cube, tmp_path, "r", TrainConfig(epochs=3, seed=7, resume=True, **FAST),
              quiet=True)
    assert [row["epoch"] for row in r.history] == [1, 2, 3]
    assert torch.load(r.checkpoint, weights_only=True)["epoch"] == 3
    assert _same(_weights(a.model_file), _weights(r.model_file))
    for key in ("train_loss", "val_loss", "val_auc"):
        assert [row[key] for row in r.history] == pytest.approx([row[key] for row in a.history])


def test_cosine_schedule_resumes_exactly(cube: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(epochs=3, seed=3, lr_schedule="cosine", **FAST)
    assert [epoch_lr(cfg, e) for e in (1, 2, 3)] == pytest.approx([1e-3, 0.75e-3, 0.25e-3])
    assert epoch_lr(TrainConfig(epochs=3), 3) == 1e-3  # constant
    full = train(cube, tmp_path, "cos", cfg, quiet=True)
    flat = train(cube, tmp_path, "flat", TrainConfig(epochs=3, seed=3, **FAST), quiet=True)
    assert full.history[0]["train_loss"] == pytest.approx(flat.history[0]["train_loss"])
    assert not _same(_weights(full.model_file), _weights(flat.model_file))

    # interrupted after epoch 2 of 3, then resumed: the schedule goes on as if uninterrupted
    import otrain.training.loop as training_module

    real_checkpoint = training_module._checkpoint

    def interrupt_after_two(path: Path, st: object, epoch: int, *args: object) -> None:
        real_checkpoint(path, st, epoch, *args)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training_module, "_checkpoint", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(cube, tmp_path, "res", cfg, quiet=True)
    monkeypatch.setattr(training_module, "_checkpoint", real_checkpoint)
    res = train(cube, tmp_path, "res", TrainConfig(**{**cfg.__dict__, "resume": True}),
                quiet=True)
    assert _same(_weights(full.model_file), _weights(res.model_file))
    with pytest.raises(OtrainError, match="lr_schedule was 'cosine', now 'constant'"):
        train(cube, tmp_path, "res", TrainConfig(epochs=4, seed=3, resume=True, **FAST),
              quiet=True)
    with pytest.raises(OtrainError, match="unknown learning-rate schedule 'step'"):
        TrainConfig(lr_schedule="step").validate()


def test_init_from_starts_at_the_given_weights(cube: Path, tmp_path: Path) -> None:
    base = train(cube, tmp_path, "base", TrainConfig(epochs=2, seed=4, **FAST), quiet=True)
    # a learning rate of ~0 leaves the starting weights in place: they must be base's
    tuned = train(cube, tmp_path, "tuned", TrainConfig(epochs=1, seed=9, lr=1e-20,
                                                       init_from=str(base.model_file), **FAST),
                  quiet=True)
    a, b = _weights(base.model_file), _weights(tuned.model_file)
    assert all(torch.allclose(a[k], b[k], atol=1e-12) for k in a)
    meta = load_model(tuned.model_file).meta["training"]["config"]
    assert meta["init_from"] == str(base.model_file)
    fresh = train(cube, tmp_path, "fresh", TrainConfig(epochs=1, seed=9, lr=1e-20, **FAST),
                  quiet=True)
    assert not _same(a, _weights(fresh.model_file))
    with pytest.raises(OtrainError, match="'otrain' network, not the 'vgg6'"):
        train(cube, tmp_path, "x", TrainConfig(epochs=1, arch="vgg6",
                                               init_from=str(base.model_file)), quiet=True)
    other = make_cube(tmp_path / "big.h5", n=60, size=20)
    with pytest.raises(OtrainError, match="20x20"):
        train(other, tmp_path, "y", TrainConfig(epochs=1, init_from=str(base.model_file)),
              quiet=True)
    proc = run_cli("otrain-train", "--cube", str(cube), "--model-path", str(tmp_path),
                   "--model-name", "z", "--init-from", str(tmp_path / "missing.safetensors"))
    assert_clean_error(proc, "missing.safetensors")


def test_refusals(cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = TrainConfig(epochs=1, **FAST)
    train(cube, tmp_path, "m", cfg)
    # 300 cutouts of 60 objects, not grouped: the user is told how to keep objects together
    assert ("note: 240 cutouts share their objectId with another; --group-by objectId keeps"
            in capsys.readouterr().out)
    with pytest.raises(OtrainError, match="already exists"):
        train(cube, tmp_path, "m", cfg, quiet=True)
    train(cube, tmp_path, "m", cfg, overwrite=True, quiet=True)
    (tmp_path / "CNN_training" / "m" / "m.safetensors").unlink()  # as after an interruption
    with pytest.raises(OtrainError, match="--resume"):
        train(cube, tmp_path, "m", cfg, quiet=True)
    with pytest.raises(OtrainError, match="seed was 0, now 1"):
        train(cube, tmp_path, "m", TrainConfig(epochs=2, seed=1, resume=True, **FAST),
              quiet=True)
    with pytest.raises(OtrainError, match="nothing to resume"):
        train(cube, tmp_path, "new", TrainConfig(resume=True), quiet=True)
    with pytest.raises(OtrainError, match="no column 'field'"):
        train(cube, tmp_path, "g", TrainConfig(group_by="field"), quiet=True)
    with pytest.raises(OtrainError, match="epochs"):
        train(cube, tmp_path, "e", TrainConfig(epochs=0), quiet=True)


def test_grouped_training_and_lazy_reading(cube: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = TrainConfig(epochs=1, group_by="objectId", **FAST)
    mem = train(cube, tmp_path, "mem", cfg)
    assert "--group-by objectId keeps" not in capsys.readouterr().out
    with open_datacube(mem.validation_cube) as val, open_datacube(mem.test_cube) as test:
        assert not set(val.table["objectId"]) & set(test.table["objectId"])
    lazy_cfg = TrainConfig(epochs=1, group_by="objectId", memory_limit_gb=0.0, **FAST)
    lazy = train(cube, tmp_path, "lazy", lazy_cfg, quiet=True)
    assert _same(_weights(mem.model_file), _weights(lazy.model_file))
    assert load_model(lazy.model_file).meta["training"]["group_by"] == "objectId"


def test_vgg6_on_three_channel_rectangular_unbalanced_cube(tmp_path: Path) -> None:
    path = make_cube(tmp_path / "rgb.h5", n=160, channels=3, size=12, width=16, frac_real=0.2)
    cfg = TrainConfig(epochs=1, arch="vgg6", normalise="minmax", **FAST)
    res = train(path, tmp_path, "v", cfg, quiet=True)
    loaded = load_model(res.model_file)
    assert loaded.meta["architecture"] == "vgg6" and loaded.input_size == (12, 16)
    assert loaded.channels == ["diff", "sci", "ref"] and loaded.normalisation == "minmax"
    with open_datacube(res.test_cube) as test:
        p = predict_proba(loaded, test.read(slice(None)))
        assert p.shape == (len(test),)
        assert res.metrics["test"]["n_real"] == int(test.labels.sum())


def test_auto_normalisation_is_resolved_from_the_cube(tmp_path: Path) -> None:
    """The default ``auto`` becomes l2 for multi-channel cubes, zscore for one channel; the
    model file records the resolved name, and an explicit method wins."""
    assert TrainConfig().normalise == "auto"
    three = make_cube(tmp_path / "three.h5", n=60, channels=3, size=12)
    one = make_cube(tmp_path / "one.h5", n=60, size=12)
    cfg = TrainConfig(epochs=1, arch="vgg6", test_frac=0.0, val_frac=0.2, **FAST)
    for path, expected in ((three, "l2"), (one, "zscore")):
        res = train(path, tmp_path, path.stem, cfg, quiet=True)
        assert load_model(res.model_file).normalisation == expected
        assert json.loads((res.folder / "metrics.json").read_text())
    res = train(three, tmp_path, "explicit", TrainConfig(**{**cfg.__dict__, "normalise": "none"}),
                quiet=True)
    assert load_model(res.model_file).normalisation == "none"


@pytest.mark.slow
def test_cli_writes_everything(cube: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = ["otrain-train", "--cube", str(cube), "--model-path", str(tmp_path), "--model-name",
            "cli", "--epochs", "2", "--batch-size", "64", "--seed", "1", "--frac", "0.2",
            "--test-frac", "0.1", "--lr-schedule", "cosine"]
    proc = run_cli(*args, check=True)
    assert "test set" in proc.stdout and "auc=" in proc.stdout
    root = tmp_path / "CNN_training" / "cli"
    for name in ("cli.safetensors", "history.csv", "metrics.json", "cli_loss_vs_epochs.png",
                 "cli_accuracy_vs_epochs.png", "validation_set/datacube/cube_validation.h5",
                 "test_set/datacube/cube_test.h5", "checkpoint.pt"):
        assert (root / name).is_file(), name
    assert json.loads((root / "metrics.json").read_text())["sizes"]["validation"]["n"] == 60
    assert_clean_error(run_cli(*args), "already exists")
    # --resume takes seed and fractions from the checkpoint
    run_cli("otrain-train", "--cube", str(cube), "--model-path", str(tmp_path), "--model-name",
            "cli", "--epochs", "3", "--resume", "--quiet", check=True)
    assert len((root / "history.csv").read_text().splitlines()) == 4
    config = load_model(root / "cli.safetensors").meta["training"]["config"]
    assert config["lr_schedule"] == "cosine" and config["seed"] == 1  # kept from the checkpoint


@pytest.mark.slow
def test_quality_on_simulated_cube(tmp_path: Path) -> None:
    path = make_cube(tmp_path / "q.h5", n=800, seed=11)
    res = train(path, tmp_path, "q", TrainConfig(epochs=6, seed=0, batch_size=64), quiet=True)
    print("quality: validation AUC", res.metrics["validation"]["auc"],
          "test AUC", res.metrics["test"]["auc"], "test accuracy",
          res.metrics["test"]["accuracy"], "best epoch", res.best_epoch)
    assert res.metrics["test"]["auc"] >= 0.97
    assert res.metrics["test"]["accuracy"] >= 0.9
