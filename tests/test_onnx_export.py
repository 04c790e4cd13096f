"""ONNX export: onnxruntime on the exported file reproduces otrain's scores (and otrain-infer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table

from conftest import assert_clean_error, run_cli
from otrain.datacube.hdf5 import write_datacube
from otrain.errors import OtrainError
from otrain.models.modelfile import load_model, predict_proba, save_model
from otrain.models.networks import build_model
from otrain.models.normalise import METHODS, normalise

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed")

from otrain.broker import onnx_export  # noqa: E402
from otrain.broker.onnx_export import (  # noqa: E402
    Normalisation,
    check_batch,
    export_onnx,
    read_onnx_metadata,
    run_onnx,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KERAS2 = Path(__file__).parent / "fixtures" / "keras" / "otrain_keras2.h5"


def _model_file(tmp_path: Path, method: str, arch: str = "otrain", channels=("diff",),
                size=(16, 16), seed: int = 3) -> Path:
    torch.manual_seed(seed)
    net = build_model(arch, len(channels), size)
    out = tmp_path / f"{arch}_{method}.safetensors"
    save_model(out, net, {"normalisation": method, "channels": list(channels),
                          "threshold": 0.42})
    return out


def _stamps(loaded, n: int = 24, seed: int = 9) -> np.ndarray:
    x = check_batch(loaded, n, seed)
    x[7, 0, 3:6, 3:6] = np.nan
    return x


@pytest.mark.parametrize("method", METHODS)
def test_normalisation_in_torch_matches_numpy(method):
    rng = np.random.default_rng(0)
    x = rng.normal(50.0, 3.0, size=(6, 2, 9, 8)).astype(np.float32)  # 72 pixels: even count
    x[0, 0, :2] = np.nan
    x[1, 1] = np.nan
    x[2, 0, 0, 0] = np.inf
    x[3] = 7.0
    x[4, 0, :, :3] = np.nan  # 48 finite: even, the median averages the two middle values
    x[5, 1, 0, :1] = np.nan  # 71 finite: odd
    ours = Normalisation(method)(torch.from_numpy(x)).numpy()
    ref = normalise(x, method)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_onnxruntime_matches_otrain_for_every_normalisation(tmp_path, method):
    loaded = load_model(_model_file(tmp_path, method, channels=("diff", "sci"), size=(16, 20)))
    out, diff = export_onnx(loaded, tmp_path / "m.onnx")
    assert diff <= 1e-5
    stamps = _stamps(loaded)
    assert np.isnan(stamps).any()
    ours = predict_proba(loaded, stamps)
    assert ours.std() > 1e-4  # the scores vary: the comparison is not between constants
    theirs = run_onnx(out, stamps)
    assert theirs.shape == (len(stamps),)
    assert np.abs(theirs - ours).max() <= 1e-5
    assert np.abs(run_onnx(out, stamps[:1]) - ours[:1]).max() <= 1e-5  # dynamic batch


def test_graph_has_one_input_and_output_with_a_dynamic_batch(tmp_path):
    loaded = load_model(_model_file(tmp_path, "zscore", arch="vgg6"))
    out, _ = export_onnx(loaded, tmp_path / "m.onnx")
    proto = onnx.load(str(out))
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert inp.name == "stamps" and outp.name == "p_real"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [1, 16, 16]
    assert len(outp.type.tensor_type.shape.dim) == 1


def test_metadata_round_trips(tmp_path):
    loaded = load_model(_model_file(tmp_path, "l2", channels=("diff", "sci", "ref")))
    out, _ = export_onnx(loaded, tmp_path / "m.onnx")
    props = read_onnx_metadata(out)
    assert json.loads(props["otrain"]) == json.loads(json.dumps(loaded.meta))
    assert props["channels"] == "diff,sci,ref"
    assert props["input_size"] == "16x16"
    assert props["normalisation"] == "l2"
    assert float(props["threshold"]) == 0.42
    assert props["otrain_version"] == loaded.meta["otrain_version"]


def test_export_fails_and_writes_nothing_when_the_graph_disagrees(tmp_path, monkeypatch):
    loaded = load_model(_model_file(tmp_path, "zscore"))
    def lower_median(values, finite):  # torch.nanmedian's convention, not numpy's
        count = finite.sum(dim=-1, keepdim=True)
        ordered = torch.sort(torch.where(finite, values, torch.inf), dim=-1).values
        return torch.gather(ordered, -1, torch.clamp(torch.div(count - 1, 2,
                                                                rounding_mode="floor"), 0))

    monkeypatch.setattr(onnx_export, "_masked_median", lower_median)
    with pytest.raises(OtrainError, match="disagrees with otrain"):
        export_onnx(loaded, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_cli_export_of_a_keras_model_reproduces_otrain_infer(tmp_path):
    out = tmp_path / "old.onnx"
    proc = run_cli("otrain-export", "--model", str(KERAS2), "--output", str(out), check=True)
    assert "Saved to" in proc.stdout
    stamps = np.load(KERAS2.with_name("otrain_keras2_input.npy")).transpose(0, 3, 1, 2)
    stamps[2, 0, :3, :] = np.nan  # NaN pixels are filled inside the graph as otrain does
    cube = tmp_path / "cube.h5"
    write_datacube(cube, stamps, Table({"candid": [f"c{i}" for i in range(len(stamps))],
                                        "label": np.full(len(stamps), -1)}), ["diff"])
    scores = tmp_path / "scores.csv"
    run_cli("otrain-infer", "--cutouts", str(cube), "--model", str(KERAS2), "--output",
            str(scores), "--quiet", "--precision", "fp32", check=True)  # the export is fp32
    infer_p = np.asarray(Table.read(scores, format="ascii.csv")["label1"])
    assert np.abs(run_onnx(out, stamps) - infer_p).max() <= 1e-5
    assert read_onnx_metadata(out)["normalisation"] == "none"
    again = run_cli("otrain", "export", "--model", str(KERAS2), "--output", str(out))
    assert_clean_error(again, "already exists")


def test_missing_extra_is_named(monkeypatch):
    real = onnx_export.importlib.import_module

    def fake(name, *args):
        if name == "onnxruntime":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(onnx_export.importlib, "import_module", fake)
    with pytest.raises(OtrainError, match=r"needs onnxruntime: pip install 'otrain\[onnx\]'"):
        onnx_export.require_onnx()
