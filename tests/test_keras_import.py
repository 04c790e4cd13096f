"""Keras import: O'TRAIN .h5 models made by real Keras (fixtures) scored by otrain, no TensorFlow.

The fixtures in tests/fixtures/keras/ were written by make_keras_fixtures.py (TensorFlow 2.21,
tf_keras 2.21 for the Keras 2 layout, Keras 3.15 for the Keras 3 one) with Keras's own
``predict`` outputs (plus a Keras 3 ``.keras`` archive); otrain must reproduce them to 1e-5.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table

from conftest import assert_clean_error, run_cli
from otrain.datacube.hdf5 import write_datacube
from otrain.errors import ModelFileError
from otrain.models.keras_convert import import_keras
from otrain.models.keras_import import is_keras_file, read_keras
from otrain.models.modelfile import load_model, predict_proba, read_metadata

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
#: name -> (H, W, C) of the fixture.
KERAS_FILES = {"otrain_keras2": (16, 16, 1), "otrain_keras3": (16, 24, 3),
               "otrain_keras3_archive": (8, 16, 2)}


def _fixture(name: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """The model file (.h5, or .keras for the archive), its input stamps as (N, C, H, W) and
    Keras's P(real)."""
    stamps = np.load(FIXTURES / f"{name}_input.npy")
    keras_out = np.load(FIXTURES / f"{name}_predict.npy")
    suffix = ".keras" if name.endswith("archive") else ".h5"
    return FIXTURES / f"{name}{suffix}", stamps.transpose(0, 3, 1, 2), keras_out[:, 1]


@pytest.mark.parametrize("name", sorted(KERAS_FILES))
def test_scores_match_keras_predict(name):
    path, stamps, keras_p = _fixture(name)
    loaded = load_model(path)
    h, w, c = KERAS_FILES[name]
    assert loaded.input_size == (h, w)
    assert len(loaded.channels) == c
    assert loaded.normalisation == "none"
    assert loaded.threshold == 0.5
    ours = predict_proba(loaded, stamps)
    assert np.abs(ours - keras_p).max() < 1e-5
    assert keras_p.std() > 0.05  # the fixture's scores vary, so the check has teeth


def test_fixture_layouts_are_the_ones_claimed():
    with h5py.File(FIXTURES / "otrain_keras2.h5") as f:
        assert "optimizer_weights" in f
        assert str(f.attrs["keras_version"]).startswith("2.")
    with h5py.File(FIXTURES / "otrain_keras3.h5") as f:
        assert str(f.attrs["keras_version"]).startswith("3.")
    meta, _ = read_keras(FIXTURES / "otrain_keras2.h5")
    assert meta["training"]["optimizer_state_ignored"] is True
    assert meta["training"]["keras_version"].startswith("2.")
    meta, _ = read_keras(FIXTURES / "otrain_keras3_archive.keras")
    assert meta["training"]["keras_format"] == "keras"
    assert meta["training"]["keras_version"].startswith("3.")


def test_import_keras_cli_writes_a_model_file_that_scores_the_same(tmp_path):
    path, stamps, keras_p = _fixture("otrain_keras3")
    out = tmp_path / "new.safetensors"
    proc = run_cli("otrain", "import-keras", str(path), "--output", str(out),
                   "--channels", "diff,sci,template", check=True)
    assert "Saved to" in proc.stdout
    meta = read_metadata(out)
    assert meta["architecture"] == "otrain"
    assert meta["channels"] == ["diff", "sci", "ref"]  # Rubin's template is our ref
    assert meta["input_size"] == [16, 24]
    assert meta["normalisation"] == "none"
    assert meta["threshold"] == 0.5
    assert meta["training"]["source"] == "keras"
    assert meta["training"]["imported_from"] == str(path.resolve())
    assert len(meta["training"]["sha256"]) == 64
    assert np.abs(predict_proba(load_model(out), stamps) - keras_p).max() < 1e-5
    again = run_cli("otrain-import-keras", str(path), "--output", str(out))
    assert_clean_error(again, "already exists")


def test_otrain_infer_scores_an_h5_model_like_keras(tmp_path):
    path, stamps, keras_p = _fixture("otrain_keras2")
    cube = tmp_path / "cube.h5"
    n = len(stamps)
    write_datacube(cube, stamps, Table({"candid": [f"c{i}" for i in range(n)],
                                        "label": np.full(n, -1)}), ["diff"])
    out = tmp_path / "scores.csv"
    # Keras scores in fp32; the default (auto) may score in bf16 where it agrees to 1e-3
    run_cli("otrain-infer", "--cutouts", str(cube), "--model", str(path), "--output", str(out),
            "--threshold", "model", "--quiet", "--precision", "fp32", check=True)
    table = Table.read(out, format="ascii.csv")
    assert np.abs(np.asarray(table["label1"]) - keras_p).max() < 1e-5
    assert list(table["class"]) == list((keras_p > 0.5).astype(int))


def test_keras_file_is_told_by_content_not_suffix(tmp_path):
    renamed = tmp_path / "old_model.bin"
    shutil.copy(FIXTURES / "otrain_keras2.h5", renamed)
    assert is_keras_file(renamed)
    _, stamps, keras_p = _fixture("otrain_keras2")
    assert np.abs(predict_proba(load_model(renamed), stamps) - keras_p).max() < 1e-5
    assert not is_keras_file(FIXTURES / "otrain_keras2_input.npy")


def test_other_architecture_is_refused_with_a_clear_message(tmp_path):
    other = FIXTURES / "other_arch.h5"
    with pytest.raises(ModelFileError, match="GlobalAveragePooling2D"):
        load_model(other)
    proc = run_cli("otrain-infer", "--cutouts", str(tmp_path), "--model", str(other))
    assert_clean_error(proc, "other_arch.h5", "not O'TRAIN's network")


def _edited(tmp_path: Path, edit) -> Path:
    """A copy of the Keras 2 fixture with its model_config changed by ``edit(config)``."""
    out = tmp_path / "edited.h5"
    shutil.copy(FIXTURES / "otrain_keras2.h5", out)
    with h5py.File(out, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config)
    return out


def _layer(config: dict, index: int) -> dict:
    return config["config"]["layers"][index]["config"]  # 0 is the InputLayer


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda c: _layer(c, 1).update(padding="valid"), "padding 'valid' instead of 'same'"),
    (lambda c: _layer(c, 2).update(activation="elu"), "before August 2021 used ELU"),
    (lambda c: _layer(c, 3).update(pool_size=[3, 3]), "pool_size [3, 3]"),
    (lambda c: c["config"]["layers"].__setitem__(
        3, {"class_name": "MaxPooling2D", "config": {"name": "p"}}),
     "MaxPooling2D) where O'TRAIN has AveragePooling2D"),
    (lambda c: c["config"]["layers"][5].update(class_name="MyCustomLayer"),
     "MyCustomLayer"),
    (lambda c: c.update(class_name="Functional"), "Functional, not O'TRAIN's Sequential"),
    (lambda c: _layer(c, 1).update(data_format="channels_first"), "channels_first"),
])
def test_changed_networks_are_refused_naming_what_was_found(tmp_path, edit, fragment):
    with pytest.raises(ModelFileError) as info:
        read_keras(_edited(tmp_path, edit))
    assert fragment in str(info.value)


def test_weights_only_file_and_datacube_are_refused(tmp_path):
    weights_only = tmp_path / "weights.h5"
    shutil.copy(FIXTURES / "otrain_keras2.h5", weights_only)
    with h5py.File(weights_only, "r+") as f:
        del f.attrs["model_config"]
    with pytest.raises(ModelFileError, match="without architecture"):
        load_model(weights_only)
    cube = tmp_path / "cube.h5"
    write_datacube(cube, np.zeros((2, 1, 16, 16), np.float32),
                   Table({"candid": ["a", "b"], "label": [0, 1]}), ["diff"])
    with pytest.raises(ModelFileError, match="not a model file"):
        load_model(cube)
    with pytest.raises(ModelFileError, match="a datacube"):
        read_keras(cube)


def test_import_api_checks_channel_count(tmp_path):
    with pytest.raises(ModelFileError, match="2 channel names given"):
        import_keras(FIXTURES / "otrain_keras2.h5", tmp_path / "m.safetensors",
                     channels=["diff", "sci"])
