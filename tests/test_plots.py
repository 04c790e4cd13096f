"""Evaluation plots (otrain.evaluation.plots) and ``otrain-plot-results``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from matplotlib.image import imread

from conftest import assert_clean_error, run_cli
from otrain.errors import OtrainError
from otrain.evaluation.plots import (
    PLOT_FILES,
    bin_edges,
    binned_figure,
    build_figures,
    plot_results,
    wilson_interval,
)
from otrain.evaluation.scores import Scores, score
from test_diagnostics import make_eval_cube, make_model


def assert_real_png(path: Path) -> None:
    """A PNG with content: not blank, several distinct colours."""
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, path
    assert img.std() > 0.01, path
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20, (path, len(colours))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plots")
    return {"root": root, "cube": make_eval_cube(root / "cube.h5", n_unlabelled=2),
            "model": make_model(root / "m.safetensors")}


def test_cli_writes_every_plot_and_deletes_nothing(files: dict[str, Path]) -> None:
    out = files["root"] / "plots"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "old_plot.png").write_bytes(b"not ours")
    args = ("otrain-plot-results", "--path-cube-validation", str(files["cube"]), "--model-path",
            str(files["model"]), "--path-plots", str(out), "--device", "cpu")
    proc = run_cli(*args, check=True)
    for name in PLOT_FILES.values():
        assert_real_png(out / name)
        assert f"Saved to {out / name}" in proc.stdout
    assert (out / "keep.txt").read_text() == "mine"
    assert (out / "old_plot.png").read_bytes() == b"not ours"
    before = (out / "roc.png").read_bytes()
    with pytest.raises(OtrainError, match=r"roc\.png: already exists; pass --overwrite"):
        plot_results(files["cube"], files["model"], out, quiet=True)
    assert (out / "roc.png").read_bytes() == before
    missing = run_cli("otrain-plot-results", "--path-cube-validation",
                      str(files["root"] / "nope.h5"), "--model-path", str(files["model"]),
                      "--path-plots", str(files["root"] / "p2"))
    assert missing.returncode == 2
    assert_clean_error(missing, "nope.h5", "no such datacube file")


def test_figures_labelled_and_coloured_by_truth(files: dict[str, Path]) -> None:
    scores = score(files["model"], files["cube"], quiet=True)
    figs, notes = build_figures(scores, threshold=0.5)
    assert list(figs) == list(PLOT_FILES)
    for name, fig in figs.items():
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert all(ax.get_ylabel() for ax in axes), name
        assert axes[-1].get_xlabel(), name
        assert all(ax.get_legend() is not None for ax in axes), name
    n_real, n_bogus = int(np.sum(scores.y_true == 1)), int(np.sum(scores.y_true == 0))
    labels = figs["score_distribution"].axes[0].get_legend_handles_labels()[1]
    assert f"true real (n = {n_real})" in labels and f"true bogus (n = {n_bogus})" in labels
    roc_labels = figs["roc"].axes[0].get_legend_handles_labels()[1]
    assert any("AUC = " in lab for lab in roc_labels)
    pr_labels = figs["precision_recall"].axes[0].get_legend_handles_labels()[1]
    assert any("average precision AP = " in lab for lab in pr_labels)
    # Excluded, among the scored (labelled, rows >= 2) cutouts: mag NaN in rows 4 and 7 and the
    # 99 sentinel of row 10; magerr NaN in rows 2 and 5.
    mag_note = next(n for n in notes if n.startswith("mag:"))
    assert "3 without a usable mag" in mag_note
    assert "2 without a usable magerr" in next(n for n in notes if n.startswith("magerr:"))


def test_bins_and_wilson() -> None:
    values = np.array([15.0, 15.5, 16.0, 17.0, 18.0, 19.0, 20.0, 21.0, np.nan, 99.0])
    e = bin_edges(values[:8], n_bins=4)
    assert np.all(np.diff(e) > 0) and e[0] == 15.0 and e[-1] == 21.0
    assert np.array_equal(bin_edges(values, edges=[15, 18, 22]), [15, 18, 22])
    with pytest.raises(OtrainError, match="increasing"):
        bin_edges(values, edges=[18, 15])
    assert bin_edges(np.array([17.0, 17.0]), 3).size == 2
    lo, hi = wilson_interval(np.array([0, 10, 5, 0]), np.array([10, 10, 10, 0]))
    assert lo[0] == 0 and hi[0] == pytest.approx(0.2775, abs=1e-4)
    assert hi[1] == 1 and lo[1] == pytest.approx(0.7225, abs=1e-4)
    assert lo[2] < 0.5 < hi[2] and np.isnan(lo[3])
    y = np.array([1, 0] * 5)
    p = np.linspace(0.1, 0.9, 10)
    fig, note = binned_figure(values, y, p, 0.5, "mag", edges=[15, 17, 19])
    assert fig is not None and note.startswith("6 cutouts in 2 bins")  # 19 is in [17, 19]
    assert "2 without a usable mag" in note and "2 outside" in note
    assert binned_figure(np.full(10, np.nan), y, p, 0.5, "mag")[0] is None
    assert binned_figure(None, y, p, 0.5, "mag")[0] is None


def test_one_class_npz_and_bad_inputs(files: dict[str, Path], tmp_path: Path) -> None:
    one = Scores(y_true=np.ones(6, np.int64), p_real=np.linspace(0.2, 0.9, 6),
                 table=Table({"candid": [str(i) for i in range(6)], "mag": np.arange(6.0)}),
                 rows=np.arange(6))
    figs, notes = build_figures(one, 0.5)
    assert "roc" not in figs and "score_distribution" in figs and "magerr" not in figs
    assert any("only one class" in n for n in notes)
    npz = tmp_path / "cube_validation.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, cube=rng.normal(size=(12, 16, 16, 1)).astype(np.float32),
             labels=np.eye(2, dtype=np.float32)[np.arange(12) % 2],
             mags=np.full(12, 18.0), errmags=np.full(12, 0.1))
    written = plot_results(npz, files["model"], tmp_path / "p", quiet=True)
    assert set(written) == set(PLOT_FILES)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OtrainError, match="expected a folder"):
        plot_results(npz, files["model"], tmp_path / "afile", quiet=True)
    with pytest.raises(OtrainError, match="threshold"):
        plot_results(npz, files["model"], tmp_path / "q", threshold=-0.1, quiet=True)
