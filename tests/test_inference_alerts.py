"""otrain-infer on survey alert packets: real ZTF alerts in, a table keyed by candid out."""

from __future__ import annotations

import csv

import numpy as np
import torch
from astropy.table import Table

from conftest import assert_clean_error, run_cli
from otrain.alerts import read_alerts
from otrain.inference.alerts import is_alert_source
from otrain.inference.core import infer
from otrain.models.modelfile import load_model, predict_proba, save_model
from otrain.models.networks import build_model

SIZE = 21


def _model(path, channels):
    torch.manual_seed(0)
    model = build_model("vgg6", len(channels), SIZE, 0.0)
    return save_model(path, model, {"normalisation": "l2", "channels": list(channels)})


def test_alert_sources_are_recognised(tmp_path, ztf_dir):
    assert is_alert_source(ztf_dir / "ztf_alerts_v3.0.avro")
    assert is_alert_source(ztf_dir)
    (tmp_path / "a.fits").write_bytes(b"")
    assert not is_alert_source(tmp_path)


def test_infer_on_alerts_matches_direct_scoring(tmp_path, ztf_dir):
    source = ztf_dir / "ztf_alerts_v3.0.avro"
    model = _model(tmp_path / "m.safetensors", ("diff", "sci", "ref"))
    result = infer(source, model, tmp_path / "scores.csv", threshold=0.5, quiet=True)
    table = Table.read(tmp_path / "scores.csv", format="ascii.csv")
    with open(ztf_dir / "MANIFEST.csv") as f:
        manifest = [r for r in csv.DictReader(f) if r["file"] == source.name]
    assert len(table) == len(manifest) == result.report.n_scored
    assert sorted(map(str, table["candid"])) == sorted(r["candid"] for r in manifest)
    assert table.colnames[:2] == ["candid", "objectId"]
    assert {"label0", "label1", "class", "edge", "drb"} <= set(table.colnames)
    images, meta, _ = read_alerts(source, ("diff", "sci", "ref"), SIZE)
    expected = predict_proba(load_model(model), images)
    order = {str(c): i for i, c in enumerate(meta["candid"])}
    got = np.array([table["label1"][order[str(c)]] for c in meta["candid"]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(table["label0"] + table["label1"], 1.0, atol=1e-9)


def test_cli_infer_alerts_and_channel_mismatch(tmp_path, ztf_dir):
    source = ztf_dir / "ztf_alerts_v3.0.avro"
    model = _model(tmp_path / "m.safetensors", ("diff",))
    proc = run_cli("otrain-infer", "--cutouts", str(source), "--model", str(model),
                   "--output", str(tmp_path / "s.dat"), check=True)
    assert "scored 30" in proc.stdout
    assert len(Table.read(tmp_path / "s.dat", format="ascii.commented_header")) == 30
    bad = _model(tmp_path / "bad.safetensors", ("diff", "sci", "ref"))
    tmp_path.joinpath("junk.avro").write_bytes(b"not avro at all")
    proc = run_cli("otrain-infer", "--cutouts", str(tmp_path / "junk.avro"), "--model", str(bad),
                   "--output", str(tmp_path / "j.csv"), "--strict")
    assert_clean_error(proc, "junk.avro")


def test_unreadable_alert_file_is_skipped_and_counted(tmp_path, ztf_dir):
    (tmp_path / "junk.avro").write_bytes(b"garbage")
    model = _model(tmp_path / "m.safetensors", ("diff",))
    result = infer([ztf_dir / "ztf_alerts_v3.0.avro", tmp_path / "junk.avro"], model,
                   tmp_path / "s.csv", quiet=True)
    assert result.report.n_scored == 30
    assert any("junk.avro" in path for path, _ in result.report.skipped)
