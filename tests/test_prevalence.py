"""Prevalence-aware evaluation (issue 15, item 2): metrics at the user's share of real candidates.

Checked against scikit-learn on an explicitly re-sampled cube: replicating every bogus cutout
``k`` times gives a cube at prevalence ``1 / (1 + k)`` with the same TPR and FPR, so precision,
F1 and MCC there are what :func:`at_prevalence` must give.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import f1_score, matthews_corrcoef, precision_score

from conftest import run_cli
from otrain.cli import main as cli_main
from otrain.errors import OtrainError
from otrain.evaluation.prevalence import at_prevalence, reliability_weights
from otrain.metrics import binary_metrics
from test_diagnostics import make_eval_cube, make_model


def _scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    return y, p


@pytest.mark.parametrize("k", [1, 9, 99])
def test_formula_matches_a_resampled_cube(k: int) -> None:
    y, p = _scores()
    t = 0.5
    m = binary_metrics(y, p, t)
    at = at_prevalence(m["recall"], m["fpr"], 1 / (1 + k))
    yy = np.concatenate([y[y == 1], np.repeat(y[y == 0], k)])
    pp = np.concatenate([p[y == 1], np.repeat(p[y == 0], k)])
    pred = (pp > t).astype(int)
    assert at["precision"] == pytest.approx(precision_score(yy, pred), abs=1e-12)
    assert at["f1"] == pytest.approx(f1_score(yy, pred), abs=1e-12)
    assert at["mcc"] == pytest.approx(matthews_corrcoef(yy, pred), abs=1e-12)
    assert at["recall"] == pytest.approx(m["recall"]) and at["fpr"] == pytest.approx(m["fpr"])
    # reweighting == replicating, bin by bin (the reliability diagram at that prevalence)
    w = reliability_weights(y, 1 / (1 + k))
    ids = np.digitize(p, np.linspace(0, 1, 11)[1:-1])
    idd = np.digitize(pp, np.linspace(0, 1, 11)[1:-1])
    for b in np.unique(ids):
        frac_w = np.sum(w[(ids == b) & (y == 1)]) / np.sum(w[ids == b])
        assert frac_w == pytest.approx(np.mean(yy[idd == b] == 1), abs=1e-12)
    with pytest.raises(OtrainError, match=r"prevalence must be in \(0, 1\)"):
        at_prevalence(0.9, 0.1, 1.0)


def test_the_issues_example() -> None:
    """Precision 0.93 on a balanced cube is about 0.12 at 1 % real, same recall and FPR."""
    tpr, fpr = 0.93, 0.07
    assert at_prevalence(tpr, fpr, 0.5)["precision"] == pytest.approx(0.93)
    assert at_prevalence(tpr, fpr, 0.01)["precision"] == pytest.approx(0.118, abs=0.001)


def test_cli_diagnostics_plot_results_and_report(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    cube = make_eval_cube(tmp_path / "cube.h5", n=64)
    model = make_model(tmp_path / "m.safetensors")
    proc = run_cli("otrain-diagnostics", "--path-cube-validation", str(cube), "--model",
                   str(model), "--path-diagnostics", str(tmp_path / "d"), "--prevalence", "0.01",
                   "--n-examples", "2", check=True)
    summary = json.loads((tmp_path / "d" / "diagnostics.json").read_text())
    m, at = summary["metrics"], summary["at_prevalence"]
    tpr, fpr = m["recall"], m["fpr"]
    assert at["prevalence"] == 0.01 and at["cube_prevalence"] == 0.5
    assert at["precision"] == pytest.approx(tpr * 0.01 / (tpr * 0.01 + fpr * 0.99))
    assert "at a prevalence of 1% real (--prevalence; the cube has 50%)" in proc.stdout
    # default: the cube's own share, stated
    assert cli_main.main(["diagnostics", "--path-cube-validation", str(cube), "--model",
                          str(model), "--path-diagnostics", str(tmp_path / "d2"),
                          "--n-examples", "2", "-q"]) == 0
    own = json.loads((tmp_path / "d2" / "diagnostics.json").read_text())["at_prevalence"]
    assert own["source"] == "the labelled cube's own share" and own["prevalence"] == 0.5
    assert own["precision"] == pytest.approx(m["precision"])  # the cube's own: unchanged
    plots = tmp_path / "plots"
    assert cli_main.main(["plot-results", "--path-cube-validation", str(cube), "--model",
                          str(model), "--path-plots", str(plots), "--prevalence", "0.02"]) == 0
    assert "at a prevalence of 2% real" in capsys.readouterr().out
    assert imread(plots / "reliability_prevalence.png").shape[0] > 100
    html = tmp_path / "r.html"
    assert cli_main.main(["report", "--model", str(model), "--cube", str(cube), "--output",
                          str(html), "--prevalence", "0.01", "-q"]) == 0
    page = html.read_text()
    assert "At your share of real candidates" in page and "at 1% real" in page
    assert f"{at['precision']:.4f}" in page and "TPR&middot;&pi;" in page
