"""The HTML report (otrain.evaluation.report) and ``otrain report``."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import run_cli
from otrain.errors import OtrainError
from otrain.evaluation.report import build_report
from otrain.training.config import TrainConfig
from otrain.training.loop import train
from test_diagnostics import make_eval_cube, make_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny) training folder: model file, metrics.json, history.csv, test cube."""
    root = tmp_path_factory.mktemp("report")
    cube = make_eval_cube(root / "cube.h5", n=96)
    cfg = TrainConfig(epochs=2, seed=0, batch_size=32, patience=None, test_frac=0.25)
    return train(cube, root / "models", "tiny", cfg, quiet=True).folder


def images_of(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_cli_report_of_a_training_folder(run_dir: Path) -> None:
    proc = run_cli("otrain", "report", "--model-dir", str(run_dir), "--device", "cpu", check=True)
    out = run_dir / "report.html"
    assert proc.stdout.strip() == f"Saved to {out}"
    page = out.read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    assert "test cube (this report)" in page and "cube_test.h5" in page
    for key in ("auc", "mcc", "average_precision", "recall"):
        assert page.count(f"{test[key]:.4f}") >= 2, key  # training run and this report agree
    assert f"{metrics['validation']['auc']:.4f}" in page
    (tn, fp), (fn, tp) = test["confusion_matrix"]
    for total in (tn + fp, fn + tp):  # the confusion matrix row totals
        assert f'<td class="n">{total}</td></tr>' in page
    for text in ("Model card", "architecture", "zscore", "Training history", "Misclassified",
                 "max MCC", "FNR &le; 1%", "average precision"):
        assert text in page, text
    text_only = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", page)
    assert not re.search(r"(https?:|//[a-z]|<script|<link|<iframe|@import|url\()", text_only,
                         re.I)
    pngs = images_of(page)
    assert len(pngs) == 8 + 1 + 2  # the plots (reliability also at prevalence), history, sheets
    for data in pngs:
        img = imread(io.BytesIO(data), format="png")
        assert img.std() > 0.01
    with pytest.raises(OtrainError, match="already exists; pass --overwrite"):
        build_report(model_dir=run_dir, quiet=True)
    with pytest.raises(OtrainError, match="no such training folder"):
        build_report(model_dir=run_dir / "nope", quiet=True)


def test_model_and_cube_without_folder(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m.safetensors")
    cube = make_eval_cube(tmp_path / "c.h5", n=24)
    npz = tmp_path / "cube_validation.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, cube=rng.normal(size=(10, 16, 16, 1)).astype(np.float32),
             labels=np.eye(2, dtype=np.float32)[np.arange(10) % 2])
    out = build_report(model=model, cube=cube, threshold=0.4, quiet=True)
    assert out == tmp_path / "m_report.html"
    page = out.read_text()
    assert "threshold 0.4" in page and "No history.csv" in page and "n/a" in page
    other = build_report(model=model, cube=npz, output=tmp_path / "r.html", quiet=True)
    assert "cube_validation.npz" in other.read_text()
    with pytest.raises(OtrainError, match="--cube"):
        build_report(model=model, quiet=True)
    with pytest.raises(OtrainError, match="already exists"):
        build_report(model=model, cube=cube, quiet=True)
