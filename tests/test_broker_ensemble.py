"""The broker side on ensembles and calibrated models (issues 12 + 14): the ONNX graph and the
stream API give the calibrated, ensemble-averaged P(real) of otrain-infer and the members' spread.

The ensemble is trained by ``otrain.training.loop.train`` (2 members, 3 epochs on a 160-row
16x16 synthetic cube, ~7 s on one thread), so its temperature is a fitted one, not a made-up one.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import fastavro
import numpy as np
import pytest
import torch
from astropy.table import Table

import otrain
from conftest import run_cli
from otrain.datacube.hdf5 import open_datacube, write_datacube
from otrain.inference.alerts import iter_alert_scores
from otrain.models.ensemble import combine, member_probabilities
from otrain.models.modelfile import load_model, predict_with_spread
from otrain.models.normalise import normalise
from otrain.training.config import TrainConfig
from otrain.training.loop import train
from test_training import make_cube

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KERAS2 = Path(__file__).parent / "fixtures" / "keras" / "otrain_keras2.h5"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cube, model file) of a calibrated 2-member ensemble."""
    root = tmp_path_factory.mktemp("broker_ens")
    torch.set_num_threads(1)
    cube = make_cube(root / "cube.h5", n=160, groups=40)
    cfg = TrainConfig(epochs=3, seed=3, ensemble=2, group_by="objectId", batch_size=64,
                      patience=None)
    result = train(cube, root, "ens", cfg, quiet=True)
    loaded = load_model(result.model_file)
    assert loaded.is_ensemble and len(loaded.members) == 2
    assert abs(loaded.temperature - 1.0) > 0.05  # a real calibration, not the identity
    return cube, result.model_file


def _by_hand(loaded, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each member's sigmoid((z_real - z_bogus) / T + b), then mean and population std, in
    plain torch."""
    x = torch.from_numpy(normalise(images, loaded.normalisation))
    with torch.no_grad():
        p = np.stack([torch.sigmoid((net(x)[:, 1] - net(x)[:, 0]).double() / loaded.temperature
                                    + loaded.logit_bias).numpy()
                      for net in loaded.members])
    return p.mean(axis=0), p.std(axis=0)


def test_score_stamps_gives_the_calibrated_mean_and_the_members_spread(trained):
    cube, model_file = trained
    model = otrain.load_model(model_file)
    assert model.n_members == 2 and model.temperature == load_model(model_file).temperature
    with open_datacube(cube) as c:
        images = c.read(np.arange(48))
    out = otrain.score_stamps(images, model)
    p, spread = out["p_real"], out["p_real_spread"]
    # the ensemble module's numbers exactly, and an independent computation closely
    ens_p, ens_s = combine(member_probabilities(model.loaded, images))
    assert np.array_equal(p, ens_p) and np.array_equal(spread, ens_s)
    assert np.array_equal((p, spread), predict_with_spread(model.loaded, images))
    hand_p, hand_s = _by_hand(model.loaded, images)
    np.testing.assert_allclose(p, hand_p, atol=1e-6)
    np.testing.assert_allclose(spread, hand_s, atol=1e-6)
    assert spread.max() > 1e-3 and p.std() > 1e-2
    # the temperature is applied: the uncalibrated mean differs
    raw = member_probabilities(model.loaded, images, calibrated=False).mean(axis=0)
    assert np.abs(raw - p).max() > 1e-2
    np.testing.assert_array_equal(model.predict_proba(images), p)


def test_score_alerts_on_an_ensemble_matches_otrain_infer(trained, ztf_dir):
    _, model_file = trained
    path = ztf_dir / "ztf_alerts_v3.3.avro"
    with path.open("rb") as fh:
        records = list(islice(fastavro.reader(fh), 30))
    out = otrain.score_alerts(records, otrain.load_model(model_file))
    table = next(iter_alert_scores(path, load_model(model_file), batch_size=30, quiet=True))
    rows = {c: i for i, c in enumerate(table["candid"])}
    idx = [rows[str(r["candidate"]["candid"])] for r in records]
    np.testing.assert_allclose(out["p_real"], np.asarray(table["label1"])[idx], atol=1e-5)
    np.testing.assert_allclose(out["p_real_spread"], np.asarray(table["p_real_std"])[idx],
                               atol=1e-5)
    assert out["p_real_spread"].max() > 1e-4 and np.std(out["p_real"]) > 1e-4


def test_exported_ensemble_reproduces_otrain_infer(trained, tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    from otrain.broker.onnx_export import read_onnx_metadata, run_onnx, run_onnx_outputs

    cube, model_file = trained
    loaded = load_model(model_file)
    onnx_file = tmp_path / "ens.onnx"
    proc = run_cli("otrain-export", "--model", str(model_file), "--output", str(onnx_file),
                   check=True)
    assert "'p_real_std' (N,)" in proc.stdout and "2 networks" in proc.stdout
    # stamps with NaN pixels, scored by otrain-infer from a cube
    with open_datacube(cube) as c:
        stamps = c.read(np.arange(64)).astype(np.float32)
    stamps[3, 0, :4, :] = np.nan
    stamps[5] = np.nan
    scored = tmp_path / "cube.h5"
    write_datacube(scored, stamps, Table({"candid": [f"c{i}" for i in range(len(stamps))],
                                          "label": np.full(len(stamps), -1)}), ["diff"])
    table_file = tmp_path / "scores.csv"
    # the export is fp32; otrain-infer's default (auto) may score in bf16, within 1e-3
    run_cli("otrain-infer", "--cutouts", str(scored), "--model", str(model_file), "--output",
            str(table_file), "--quiet", "--precision", "fp32", check=True)
    table = Table.read(table_file, format="ascii.csv")
    outs = run_onnx_outputs(onnx_file, stamps)
    assert sorted(outs) == ["p_real", "p_real_std"]
    assert np.abs(outs["p_real"] - np.asarray(table["label1"])).max() <= 1e-5
    assert np.abs(outs["p_real_std"] - np.asarray(table["p_real_std"])).max() <= 1e-5
    assert np.std(table["label1"]) > 1e-2 and np.max(table["p_real_std"]) > 1e-3
    assert np.array_equal(run_onnx(onnx_file, stamps), outs["p_real"])
    # metadata round-trips: temperature, the members, the outputs
    props = read_onnx_metadata(onnx_file)
    assert float(props["temperature"]) == loaded.temperature
    assert props["n_members"] == "2" and props["outputs"] == "p_real,p_real_std"
    assert props["output"] == "p_real"
    meta = json.loads(props["otrain"])
    assert meta == json.loads(json.dumps(loaded.meta))
    assert meta["temperature"] == loaded.temperature and meta["ensemble"]["n_members"] == 2
    assert [m["seed"] for m in meta["ensemble"]["members"]] == [3, 4]


def test_export_check_catches_a_graph_without_the_temperature(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from otrain.broker import onnx_export
    from otrain.errors import OtrainError

    loaded = load_model(trained[1])
    real = onnx_export._CalibratedMean

    def uncalibrated(members, temperature, with_spread, bias=0.0):
        return real(members, 1.0, with_spread, bias)

    monkeypatch.setattr(onnx_export, "_CalibratedMean", uncalibrated)
    with pytest.raises(OtrainError, match="disagrees with otrain"):
        onnx_export.export_onnx(loaded, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_keras_import_is_one_uncalibrated_member(tmp_path):
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from otrain.broker.onnx_export import export_onnx, read_onnx_metadata, run_onnx_outputs

    loaded = load_model(KERAS2)
    assert loaded.temperature == 1.0 and len(loaded.members) == 1
    model = otrain.load_model(KERAS2)
    stamps = np.load(KERAS2.with_name("otrain_keras2_input.npy")).transpose(0, 3, 1, 2)
    assert np.all(otrain.score_stamps(stamps, model)["p_real_spread"] == 0)
    out, _ = export_onnx(loaded, tmp_path / "k.onnx")
    props = read_onnx_metadata(out)
    assert props["temperature"] == "1.0" and props["n_members"] == "1"
    assert list(run_onnx_outputs(out, stamps)) == ["p_real"]
