"""Multi-process (DDP, gloo on CPU) training: sharding, API ``nproc=2``, CLI ``--nproc 2``, resume.

What holds (2 processes x 1 thread against 1 process x 1 thread, same seed and split):
without dropout the weights agree to float precision (max abs difference ~1e-5 after 3 epochs,
asserted < 1e-3) and so do the losses; with dropout the ranks draw other masks than one process,
so only the quality is compared (test AUC within 0.05).

Each run of 2 processes costs a few seconds of process start (torch imports), so the file runs
four of them (~45-60 s on 2 shared cores).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BIN, assert_clean_error, run_cli
from otrain.models.modelfile import load_model
from otrain.training.config import TrainConfig
from otrain.training.ddp import shard_plan, shard_slice
from otrain.training.loop import train
from otrain.training.splits import epoch_plan
from test_training import make_cube

BASE = {"batch_size": 64, "patience": None}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # as in each of the 2 processes


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cube(tmp_path_factory.mktemp("cube") / "cube.h5", n=300)


def _files(root: Path, name: str) -> set[str]:
    """Every file under the model folder (hidden and partial ones too), the name replaced."""
    return {str(p.relative_to(root)).replace(name, "NAME") for p in root.rglob("*")
            if p.is_file()}


def test_shard_plan_splits_every_batch_once() -> None:
    batches, codes = epoch_plan(np.arange(0, 301, 3), seed=1, epoch=2, batch_size=16,
                                n_codes=8, augmenting=True)
    batches.append(np.array([5]))  # a batch smaller than the number of ranks
    codes.append(np.array([3]))
    parts = [shard_plan(batches, codes, rank, 3) for rank in range(3)]
    for i, (batch, code) in enumerate(zip(batches, codes, strict=True)):
        rows = [p[0][i] for p in parts]
        assert np.array_equal(np.concatenate(rows), batch)  # in order, each row once
        assert np.array_equal(np.concatenate([p[1][i] for p in parts]), code)
        assert max(r.size for r in rows) - min(r.size for r in rows) <= 1
        assert all(np.all(np.diff(r) > 0) for r in rows)  # still sorted
    assert [shard_slice(1, r, 3) for r in range(3)] == [slice(0, 1), slice(1, 1), slice(1, 1)]
    assert shard_plan(batches, None, 0, 2)[1] is None


def test_two_processes_match_one_and_resume(cube: Path, tmp_path: Path) -> None:
    cfg = {"seed": 3, "dropout": 0.0, **BASE}
    one = train(cube, tmp_path, "one", TrainConfig(epochs=3, **cfg), quiet=True)
    # 2 epochs on 2 processes reading their sub-batches lazily, then resumed to 3 in memory
    first = train(cube, tmp_path, "two",
                  TrainConfig(epochs=2, nproc=2, memory_limit_gb=0.0, **cfg), quiet=True)
    assert torch.load(first.checkpoint, weights_only=True)["world_size"] == 2
    two = train(cube, tmp_path, "two", TrainConfig(epochs=3, nproc=2, resume=True, **cfg),
                quiet=True)
    assert [row["epoch"] for row in two.history] == [1, 2, 3]
    assert two.history[:2] == first.history  # the resumed run kept the checkpoint's history
    assert torch.load(two.checkpoint, weights_only=True)["epoch"] == 3

    # same outputs, written once by rank 0 (no partial or extra files)
    assert _files(two.folder, "two") == _files(one.folder, "one")
    assert not [p for p in two.folder.rglob("*") if p.name.startswith(".")]
    assert len(two.history_csv.read_text().splitlines()) == 4
    metrics = json.loads(two.metrics_json.read_text())
    assert metrics["sizes"] == one.metrics["sizes"]  # same split on every rank

    # exact sharding: the same optimisation up to float summation order
    a, b = load_model(one.model_file), load_model(two.model_file)
    assert b.meta["training"]["world_size"] == 2 and a.meta["training"]["world_size"] == 1
    wa, wb = a.model.state_dict(), b.model.state_dict()
    # Adam moves every weight by ~lr a step whatever the gradient size, so weights whose
    # gradient is all rounding noise may drift apart by a few lr over the run
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 0.02
    # the first epoch agrees closely; rounding differences then grow a little with every step
    # (oneDNN's summation order depends on the batch shape, and each rank sees half a batch)
    for key in ("train_loss", "train_acc", "val_loss", "val_auc"):
        got, want = [r[key] for r in two.history], [r[key] for r in one.history]
        assert got[0] == pytest.approx(want[0], rel=1e-3, abs=1e-4)
        assert got == pytest.approx(want, rel=2e-2, abs=1e-3)
    assert metrics["test"]["auc"] == pytest.approx(one.metrics["test"]["auc"], abs=0.05)


@pytest.mark.slow
def test_cli_nproc(cube: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["otrain-train", "--cube", str(cube), "--model-path", str(tmp_path),
              "--model-name", "cli", "--nproc", "2", "--device", "cpu"]
    proc = run_cli(*common, "--epochs", "2", "--batch-size", "64", "--seed", "1", check=True)
    out = proc.stdout + proc.stderr
    assert out.count("epoch 2/2: loss") == 1 and out.count("Saved to") == 1  # rank 0 prints
    assert "2 processes (gloo)" in proc.stdout and "auc=" in proc.stdout
    root = tmp_path / "CNN_training" / "cli"
    one = train(cube, tmp_path, "one", TrainConfig(epochs=2, seed=1, **BASE), quiet=True)
    assert _files(root, "cli") == _files(one.folder, "one")
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["test"]["auc"] == pytest.approx(one.metrics["test"]["auc"], abs=0.05)
    # a user error met inside the ranks: one line, no traceback, nothing written
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert_clean_error(run_cli(*common, "--epochs", "3", "--resume", "--seed", "9"),
                       "cannot resume", "seed was 1, now 9")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


@pytest.mark.slow
def test_torchrun_runs_the_module(cube: Path, tmp_path: Path) -> None:
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m",
           "otrain.cli.train", "--cube", str(cube), "--model-path", str(tmp_path),
           "--model-name", "tr", "--epochs", "1", "--batch-size", "64", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Saved to") == 1 and "2 processes (gloo)" in proc.stdout
    meta = load_model(tmp_path / "CNN_training" / "tr" / "tr.safetensors").meta
    assert meta["training"]["world_size"] == 2


def test_ensemble_members_train_one_after_another_with_ddp(cube: Path, tmp_path: Path) -> None:
    cfg = {"seed": 5, "dropout": 0.0, "ensemble": 2, "epochs": 1, **BASE}
    one = train(cube, tmp_path, "e1", TrainConfig(**cfg), quiet=True)
    two = train(cube, tmp_path, "e2", TrainConfig(nproc=2, **cfg), quiet=True)
    a, b = load_model(one.model_file), load_model(two.model_file)
    assert len(b.members) == 2 and b.meta["training"]["world_size"] == 2
    assert [m["seed"] for m in b.meta["ensemble"]["members"]] == [5, 6]
    for ma, mb in zip(a.meta["ensemble"]["members"], b.meta["ensemble"]["members"],
                      strict=True):  # same member splits on every rank
        assert ma["split_sizes"] == mb["split_sizes"]
        assert mb["validation_auc"] == pytest.approx(ma["validation_auc"], abs=0.05)
    for ma, mb in zip(a.members, b.members, strict=True):
        wa, wb = ma.state_dict(), mb.state_dict()
        assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 0.02
    assert b.temperature == pytest.approx(a.temperature, rel=0.05)
    assert [r["member"] for r in two.history] == [0, 1]
