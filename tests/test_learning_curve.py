"""Learning curve (otrain.evaluation.learning_curve) and otrain-optimise-dataset-size."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from conftest import assert_clean_error, blob_cutouts, run_cli
from otrain.datacube.hdf5 import open_datacube, write_datacube
from otrain.errors import OtrainError
from otrain.evaluation.learning_curve import (
    CSV_COLUMNS,
    LearningCurveConfig,
    candid_hash,
    dataset_sizes,
    learning_curve,
    nested_subsets,
    summarise,
)
from otrain.models.modelfile import read_metadata
from otrain.training.splits import split_indices

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the tests share 2 cores


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 cutouts of 16x16: real = a blob, bogus = noise; 40% real."""
    rng = np.random.default_rng(0)
    n = 200
    images, labels = blob_cutouts(n, rng, SIZE, centre=(7.5, 7.5), amplitude=6.0, spread=4.0,
                                  labels=(np.arange(n) % 5 < 2).astype(np.int64))
    table = {"candid": np.array([f"c{i:04d}" for i in range(n)]), "label": labels}
    return write_datacube(tmp_path_factory.mktemp("cube") / "cube.h5", images, table, ["diff"])


def test_sizes_and_nested_stratified_subsets() -> None:
    assert dataset_sizes(170, 3) == [57, 113, 170]
    assert dataset_sizes(5, 20) == [1, 2, 3, 4, 5]
    labels = np.array([1] * 40 + [0] * 60 + [-1] * 5)
    pool = np.arange(0, 100, 1)
    subsets = nested_subsets(pool, labels, [10, 50, 100], np.random.default_rng(1))
    assert [s.size for s in subsets] == [10, 50, 100]
    assert set(subsets[0]) <= set(subsets[1]) <= set(subsets[2])
    assert [int(labels[s].sum()) for s in subsets] == [4, 20, 40]


def test_plateau_is_the_first_size_near_the_best() -> None:
    rows = [{"size": s, "test_mcc": m, "test_f1": 0.5, "test_auc": 0.5, "test_accuracy": 0.5,
             "acc_gap": 0.0, "final_epoch_acc_gap": 0.0}
            for s, m in ((10, 0.2), (10, 0.3), (20, 0.79), (20, 0.81), (40, 0.84), (40, 0.80))]
    summary = summarise(rows)
    assert [e["test_mcc_mean"] for e in summary["sizes"]] == pytest.approx([0.25, 0.8, 0.82])
    # best 0.82 +/- std(0.84, 0.80) = 0.0283 -> 0.80 at size 20 is within it
    assert summary["plateau"]["size"] == 20
    assert summary["plateau"]["tolerance"] == pytest.approx(np.std([0.84, 0.80], ddof=1))


def test_learning_curve_runs_share_one_test_set(cube: Path, tmp_path: Path) -> None:
    config = LearningCurveConfig(epochs=1, n_sections=3, repeats=2, dropout=0.25, seed=3,
                                 arch="vgg6", batch_size=32)
    out = tmp_path / "lc"
    res = learning_curve(cube, tmp_path / "models", "lc", out, config, quiet=True)
    with res.csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 3 and tuple(rows[0]) == CSV_COLUMNS
    sizes = sorted({int(r["size"]) for r in rows})
    assert len(sizes) == 3 and {r["repeat"] for r in rows} == {"0", "1"}
    assert {r["seed"] for r in rows} == {"3", "4"}
    # the same held-out test set everywhere, the one split_indices gives for the seed
    with open_datacube(cube) as c:
        split = split_indices(c.labels, 0.15, 0.15, 3)
        expected = candid_hash(np.asarray(c.table["candid"])[split.test])
    assert {r["test_hash"] for r in rows} == {expected}
    assert {r["n_test"] for r in rows} == {str(split.test.size)}
    assert sizes[-1] == 200 - split.test.size
    for r in rows:
        assert int(r["n_train"]) + int(r["n_val"]) == int(r["size"])
        model_file = Path(r["model_file"])
        assert model_file.parent.name == f"lc_size_{r['size']}_r{r['repeat']}"
        assert read_metadata(model_file)["dropout"] == 0.25  # --dropout honoured
        assert -1.0 <= float(r["test_mcc"]) <= 1.0
    assert not list(out.glob(".otrain-subsets-*"))  # temporary cubes removed
    summary = json.loads(res.json.read_text())
    assert summary["test_hash"] == expected and summary["plateau"]["size"] in sizes
    for png in res.plots:
        img = mpimg.imread(png)
        assert img.shape[0] > 300 and float(img.std()) > 0.05
    with pytest.raises(OtrainError, match="already exists"):
        learning_curve(cube, tmp_path / "models", "lc", out, config, quiet=True)


def test_too_many_sections_fail_before_training(cube: Path, tmp_path: Path) -> None:
    config = LearningCurveConfig(epochs=1, n_sections=100, repeats=1, arch="vgg6")
    with pytest.raises(OtrainError, match=r"too few|one class"):
        learning_curve(cube, tmp_path / "m", "x", tmp_path / "o", config, quiet=True)
    assert not (tmp_path / "m").exists()


def test_cli_lean_run_and_bad_input(cube: Path, tmp_path: Path) -> None:
    proc = run_cli("otrain-optimise-dataset-size", "--cube", str(cube), "--model-path",
                   str(tmp_path / "m"), "--model-name", "cli", "--outdir", str(tmp_path / "o"),
                   "--epochs", "1", "--n-sections", "2", "--repeats", "1", "--dropout", "0.1",
                   "--arch", "vgg6", "--lean", check=True)
    assert "flattens from" in proc.stdout
    folders = sorted((tmp_path / "m/CNN_training").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert (folder / f"{folder.name}.safetensors").is_file()
        assert not (folder / "checkpoint.pt").exists()
        assert read_metadata(folder / f"{folder.name}.safetensors")["dropout"] == 0.1
    proc = run_cli("otrain-optimise-dataset-size", "--cube", str(cube), "--model-path",
                   str(tmp_path / "m"), "--model-name", "bad", "--outdir", str(tmp_path / "o2"),
                   "--n_sections", "0")
    assert proc.returncode == 2
    assert_clean_error(proc, "--n_sections must be at least 1")


def test_group_by_keeps_objects_out_of_the_test_set(tmp_path: Path) -> None:
    """Every object has 4 alerts: none of them may be both held out and trained on."""
    rng = np.random.default_rng(5)
    n = 160
    labels = np.repeat(np.arange(n // 4) % 5 < 2, 4).astype(np.int64)
    images, labels = blob_cutouts(n, rng, SIZE, centre=(7.5, 7.5), amplitude=6.0, spread=4.0,
                                  labels=labels)
    objects = np.repeat([f"ZTF{i:04d}" for i in range(n // 4)], 4)
    cube = write_datacube(tmp_path / "alerts.h5", images, {
        "candid": np.array([f"c{i:04d}" for i in range(n)]), "label": labels,
        "objectId": objects}, ["diff"])
    config = LearningCurveConfig(epochs=1, n_sections=2, repeats=1, seed=2, arch="vgg6",
                                 batch_size=32, group_by="objectId")
    res = learning_curve(cube, tmp_path / "models", "g", tmp_path / "lc", config, quiet=True)
    grouped = split_indices(labels, 0.15, 0.15, 2, objects)
    assert {r["test_hash"] for r in res.rows} == {
        candid_hash(np.array([f"c{i:04d}" for i in range(n)])[grouped.test])}
    test_objects = set(objects[grouped.test])
    for row in res.rows:
        model_file = Path(row["model_file"])
        assert read_metadata(model_file)["training"]["group_by"] == "objectId"
        with open_datacube(model_file.parent / "validation_set/datacube/cube_validation.h5") as v:
            assert not set(np.asarray(v.table["objectId"]).astype(str)) & test_objects
    proc = run_cli("otrain-optimise-dataset-size", "--cube", str(cube), "--model-path",
                   str(tmp_path / "m"), "--model-name", "bad", "--outdir", str(tmp_path / "o"),
                   "--group-by", "fieldId")
    assert_clean_error(proc, "alerts.h5", "no column 'fieldId' to group by")
