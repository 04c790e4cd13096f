"""The model file (otrain.models.modelfile): round trip, input checks, refusing non-models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from otrain.errors import ModelFileError, OtrainError
from otrain.models.modelfile import load_model, predict_proba, read_metadata, save_model
from otrain.models.networks import build_model
from otrain.models.normalise import normalise

META = {"channels": ["diff", "sci", "ref"], "normalisation": "zscore", "threshold": 0.6,
        "training": {"cube": "cube.h5", "epochs_run": 3}}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("otrain", 3, (16, 20), dropout=0.2)
    path = save_model(tmp_path / "m.safetensors", model, META)
    return path, model


def test_round_trip(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    loaded = load_model(path)
    assert not loaded.model.training
    ref = model.state_dict()
    got = loaded.model.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    meta = loaded.meta
    assert meta["architecture"] == "otrain" and meta["in_channels"] == 3
    assert meta["input_size"] == [16, 20] and meta["dropout"] == 0.2
    assert meta["class_names"] == ["bogus", "real"]
    assert meta["training"] == META["training"]
    assert meta["torch_version"] == torch.__version__ and "otrain_version" in meta
    assert loaded.channels == ["diff", "sci", "ref"]
    assert loaded.input_size == (16, 20) and loaded.threshold == 0.6
    assert loaded.normalisation == "zscore"
    assert read_metadata(path) == meta
    assert not list(path.parent.glob("*.part*"))  # atomic: no temporary left


def test_predict_proba_normalises_then_softmax(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    loaded = load_model(path)
    images = np.random.default_rng(1).normal(50, 3, size=(7, 3, 16, 20)).astype(np.float32)
    p = predict_proba(loaded, images, batch_size=3)
    assert p.shape == (7,) and ((p >= 0) & (p <= 1)).all()
    model.eval()
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(normalise(images, "zscore"))), 1)[:, 1]
    np.testing.assert_allclose(p, ref.numpy(), rtol=1e-5, atol=1e-7)


def test_check_input_messages(saved: tuple[Path, torch.nn.Module]) -> None:
    loaded = load_model(saved[0])
    loaded.check_input(["diff", "sci", "ref"], (16, 20))
    loaded.check_input(3, (16, 20))
    loaded.check_input(["ch0", "ch1", "ch2"], (16, 20))  # generic names match any
    with pytest.raises(ModelFileError,
                       match=r"model expects 3 channels \[diff, sci, ref\], data has 1 \[diff\]"):
        loaded.check_input(["diff"], (16, 20))
    with pytest.raises(ModelFileError, match=r"data has 1$"):
        loaded.check_input(1, (16, 20))
    with pytest.raises(ModelFileError, match=r"data has 3 \[sci, diff, ref\]"):
        loaded.check_input(["sci", "diff", "ref"], (16, 20))
    with pytest.raises(ModelFileError, match="model expects 16x20 pixel cutouts, data has 32x32"):
        loaded.check_input(3, (32, 32))
    with pytest.raises(ModelFileError, match="channels"):
        predict_proba(loaded, np.zeros((2, 1, 16, 20), np.float32))


def test_refuses_to_overwrite(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    with pytest.raises(OtrainError, match="overwrite"):
        save_model(path, model, META)
    save_model(path, model, {**META, "threshold": 0.4}, overwrite=True)
    assert load_model(path).threshold == 0.4


def test_save_needs_normalisation(tmp_path: Path) -> None:
    with pytest.raises(OtrainError, match="normalisation"):
        save_model(tmp_path / "m.safetensors", build_model("vgg6", 1, 16), {})
    assert not (tmp_path / "m.safetensors").exists()


def test_not_a_model(tmp_path: Path) -> None:
    text = tmp_path / "notes.safetensors"
    text.write_text("this is not a model\n")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"otrain": json.dumps({"a": 1})})
    cases = [(tmp_path / "missing.safetensors", "no such model file"),
             (tmp_path, "is a folder"),
             (text, "not a safetensors file"),
             (plain, "without 'otrain' metadata"),
             (other, "wrong 'otrain' metadata")]
    for path, fragment in cases:
        with pytest.raises(ModelFileError, match=fragment) as info:
            load_model(path)
        assert str(path) in str(info.value)


def test_weights_not_matching_architecture(tmp_path: Path) -> None:
    path = save_model(tmp_path / "m.safetensors", build_model("vgg6", 1, 16),
                      {"architecture": "otrain", "normalisation": "none"})
    with pytest.raises(ModelFileError, match="do not match architecture 'otrain'"):
        load_model(path)
