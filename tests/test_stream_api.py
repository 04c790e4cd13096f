"""The stream-step API: otrain.load_model / score_stamps / score_alerts on numpy stamps, real ZTF
alert records (fastavro dicts, as a broker holds them) and Rubin-like records."""

from __future__ import annotations

import io
import subprocess
import sys
from itertools import islice
from pathlib import Path

import fastavro
import numpy as np
import pytest
import torch

import otrain
from otrain.errors import OtrainError
from otrain.inference.alerts import iter_alert_scores
from otrain.models.modelfile import load_model as load_file
from otrain.models.modelfile import predict_proba, save_model
from otrain.models.networks import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KERAS2 = Path(__file__).parent / "fixtures" / "keras" / "otrain_keras2.h5"


def _model(tmp_path: Path, channels=("diff", "sci", "ref"), size: int = 24,
           method: str = "l2") -> Path:
    torch.manual_seed(5)
    out = tmp_path / "m.safetensors"
    save_model(out, build_model("otrain", len(channels), size),
               {"normalisation": method, "channels": list(channels)})
    return out


def _stamps(n: int, c: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, size=(n, c, size, size)).astype(np.float32)
    x[:, :, size // 2 - 2:size // 2 + 2, size // 2 - 2:size // 2 + 2] += \
        rng.uniform(0, 10, size=(n, c, 1, 1)).astype(np.float32)
    x[1, 0, :2] = np.nan
    return x


def test_import_otrain_stays_cheap_and_exposes_the_api_lazily():
    code = ("import sys, otrain; assert 'torch' not in sys.modules; "
            "f = otrain.score_stamps; assert 'torch' in sys.modules; "
            "print(f.__module__, otrain.load_model.__module__, otrain.score_alerts.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["otrain.broker.stream", "otrain.broker.stream", "score_alerts"]
    with pytest.raises(AttributeError):
        otrain.no_such_thing  # noqa: B018


def test_score_stamps_matches_predict_proba_in_input_order(tmp_path):
    path = _model(tmp_path)
    model = otrain.load_model(path)
    x = _stamps(9, 3, 24)
    scores = otrain.score_stamps(x, model)
    expected = predict_proba(load_file(path), x)
    assert set(scores) == {"p_real", "p_real_spread"}
    np.testing.assert_allclose(scores["p_real"], expected, atol=1e-7)
    assert scores["p_real"].std() > 1e-4
    np.testing.assert_array_equal(scores["p_real_spread"], np.zeros(9))  # one network
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=1e-7)
    reversed_scores = otrain.score_stamps(x[::-1], model)["p_real"]
    np.testing.assert_allclose(reversed_scores, expected[::-1], atol=1e-7)


def test_rubin_channel_order_layout_crop_and_column_name(tmp_path):
    path = _model(tmp_path)
    model = otrain.load_model(path)
    x = _stamps(5, 3, 24)
    ref = otrain.score_stamps(x, model)["p_real"]
    rubin_order = x[:, [2, 0, 1]]  # template, diff, sci
    got = otrain.score_stamps(rubin_order, model, channels=("template", "diff", "sci"),
                              column="reliability")
    assert set(got) == {"reliability", "reliability_spread"}
    np.testing.assert_allclose(got["reliability"], ref, atol=1e-7)
    nhwc = otrain.score_stamps(x.transpose(0, 2, 3, 1), model, layout="NHWC")["p_real"]
    np.testing.assert_allclose(nhwc, ref, atol=1e-7)
    bigger = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)), constant_values=99.0)
    np.testing.assert_allclose(otrain.score_stamps(bigger, model)["p_real"], ref, atol=1e-7)
    with pytest.raises(OtrainError, match="model needs channels diff, sci, ref"):
        otrain.score_stamps(x, model, channels=("diff", "sci", "mask"))
    with pytest.raises(OtrainError, match="the model needs 24x24"):
        otrain.score_stamps(x[:, :, :20, :20], model)
    with pytest.raises(OtrainError, match="load the model once"):
        otrain.score_stamps(x, str(path))


def test_keras_model_through_the_stream_api():
    model = otrain.load_model(KERAS2)
    stamps = np.load(KERAS2.with_name("otrain_keras2_input.npy"))  # (N, H, W, C) as Keras
    keras_p = np.load(KERAS2.with_name("otrain_keras2_predict.npy"))[:, 1]
    got = otrain.score_stamps(stamps, model, layout="NHWC")["p_real"]
    assert np.abs(got - keras_p).max() < 1e-5


def _ztf_records(ztf_dir: Path, n: int) -> tuple[Path, list[dict]]:
    path = ztf_dir / "ztf_alerts_v3.3.avro"
    with path.open("rb") as fh:
        return path, list(islice(fastavro.reader(fh), n))


def test_score_alerts_on_real_ztf_records_matches_otrain_infer(tmp_path, ztf_dir):
    model_path = _model(tmp_path)
    path, records = _ztf_records(ztf_dir, 40)
    model = otrain.load_model(model_path)
    scores = otrain.score_alerts(records, model)
    assert scores["p_real"].shape == (40,)
    assert np.isfinite(scores["p_real"]).all()
    table = next(iter_alert_scores(path, load_file(model_path), batch_size=40, quiet=True))
    by_candid = dict(zip(table["candid"], table["label1"], strict=True))
    expected = [by_candid[str(r["candidate"]["candid"])] for r in records]
    np.testing.assert_allclose(scores["p_real"], expected, atol=1e-7)
    assert np.std(expected) > 1e-4


def test_score_alerts_gives_nan_for_unusable_alerts_in_place(tmp_path, ztf_dir):
    model = otrain.load_model(_model(tmp_path, channels=("diff",), size=32, method="zscore"))
    _, records = _ztf_records(ztf_dir, 5)
    good = otrain.score_alerts(records, model)["p_real"]
    broken = [dict(r) for r in records]
    broken[1]["cutoutDifference"] = None
    broken[3]["cutoutDifference"] = {"stampData": b"not a fits file"}
    got = otrain.score_alerts([*broken, "junk"], model)
    assert np.isnan(got["p_real"][[1, 3, 5]]).all()
    assert np.isnan(got["p_real_spread"][[1, 3, 5]]).all()
    np.testing.assert_allclose(got["p_real"][[0, 2, 4]], good[[0, 2, 4]], atol=1e-7)
    with pytest.raises(OtrainError, match=r"alert 1: .*no cutoutDifference"):
        otrain.score_alerts(broken, model, errors="raise")
    with pytest.raises(OtrainError, match=r"record 3: .*not a"):
        otrain.score_alerts([broken[0], broken[2], broken[4], broken[3]], model,
                            errors="raise")
    assert otrain.score_alerts([], model)["p_real"].shape == (0,)


def test_flat_broker_dicts_and_a_fink_style_pandas_udf(tmp_path, ztf_dir):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    model = otrain.load_model(_model(tmp_path, channels=("diff", "sci", "ref"), size=24))
    _, records = _ztf_records(ztf_dir, 6)
    expected = otrain.score_alerts(records, model)["p_real"]
    diff = pd.Series([r["cutoutDifference"]["stampData"] for r in records])
    sci = pd.Series([r["cutoutScience"]["stampData"] for r in records])
    ref = pd.Series([r["cutoutTemplate"]["stampData"] for r in records])
    candid = pd.Series([r["candidate"]["candid"] for r in records])

    def rb_otrain(candid, diff, sci, ref):  # the body of the README's @pandas_udf
        alerts = [{"candid": c, "cutoutDifference": d, "cutoutScience": s,
                   "cutoutTemplate": t} for c, d, s, t in zip(candid, diff, sci, ref, strict=True)]
        return pd.Series(otrain.score_alerts(alerts, model)["p_real"])

    np.testing.assert_allclose(rb_otrain(candid, diff, sci, ref).to_numpy(), expected,
                               atol=1e-7)


def _rubin_fits(image: np.ndarray) -> bytes:
    from astropy.nddata import CCDData, StdDevUncertainty

    ccd = CCDData(image, unit="nJy", mask=np.isnan(image),
                  uncertainty=StdDevUncertainty(np.ones_like(image)))
    buf = io.BytesIO()
    ccd.write(buf, format="fits")
    return buf.getvalue()


def test_rubin_records_score_like_their_stamps(tmp_path):
    model = otrain.load_model(_model(tmp_path, size=16, method="zscore"))
    x = _stamps(4, 3, 30, seed=2)  # Rubin cutouts vary in size: centre-cropped to 16
    records = [{"diaSource": {"diaSourceId": 1000 + i, "ra": 1.0, "dec": 2.0,
                              "psfFlux": 100.0, "psfFluxErr": 1.0, "midpointMjdTai": 60000.0},
                "cutoutDifference": _rubin_fits(x[i, 0]),
                "cutoutScience": _rubin_fits(x[i, 1]),
                "cutoutTemplate": _rubin_fits(x[i, 2])} for i in range(4)]
    got = otrain.score_alerts(records, model, column="reliability")["reliability"]
    from_stamps = otrain.score_stamps(x, model, channels=("diff", "sci", "template"))["p_real"]
    np.testing.assert_allclose(got, from_stamps, atol=1e-7)
    swapped = otrain.score_alerts(records, model, channels=("diff", "template", "sci"))
    assert np.abs(swapped["p_real"] - got).max() > 1e-6  # the channels asked for are fed


def test_generic_channel_model_scores_alerts_when_channels_are_named(tmp_path):
    model = otrain.load_model(_model(tmp_path, channels=("ch0", "ch1", "ch2"), size=16))
    x = _stamps(3, 3, 16, seed=4)
    records = [{"diaSource": {"diaSourceId": i}, "cutoutDifference": _rubin_fits(x[i, 0]),
                "cutoutScience": _rubin_fits(x[i, 1]), "cutoutTemplate": _rubin_fits(x[i, 2])}
               for i in range(3)]
    with pytest.raises(OtrainError, match="not alert stamps"):
        otrain.score_alerts(records, model)
    got = otrain.score_alerts(records, model, channels=("diff", "sci", "template"))["p_real"]
    np.testing.assert_allclose(got, otrain.score_stamps(x, model)["p_real"], atol=1e-7)
    with pytest.raises(OtrainError, match="unknown channel"):
        otrain.score_alerts(records, model, channels=("diff", "sci", "mask"))
