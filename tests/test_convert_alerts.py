"""otrain-convert --alerts: label rules, CSV labels, middle band, balancing, bad files, CLI,
and a triplet cube from real alerts through otrain-train --group-by objectId.

The alerts are a small subset of the shared real ZTF alerts (../shared/data/ztf), rewritten with
fastavro into pytest's tmp folder (nothing is copied into the repository); the tests are
skipped when the shared data are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import numpy as np
import pytest

from conftest import ZTF_DIR, assert_clean_error, run_cli
from otrain.alerts import LabelRule
from otrain.convert.alerts import convert_alerts
from otrain.convert.folders import ConvertConfig, balanced_choice
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.models.modelfile import read_metadata

SOURCE = "ztf_alerts_v3.3.avro"  # 144 alerts, drb from 0 to 1, one stamp cut by a CCD edge
#: drb bands of the subset and how many alerts to take from each.
BANDS = ((0.0, 0.1, 10), (0.1, 0.5, 5), (0.5, 0.9, 5), (0.9, 1.01, 14))


def write_subset(out: Path) -> dict[str, float]:
    """Write ~34 real alerts of several drb bands (two with drb nulled) to ``out``.

    Returns candid -> drb (NaN for the nulled ones).
    """
    path = ZTF_DIR / SOURCE
    if not path.is_file():
        pytest.skip(f"real ZTF alerts not found at {ZTF_DIR}")
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        schema, records = reader.writer_schema, list(reader)
    chosen = []
    for low, high, n in BANDS:
        band = [r for r in records if low <= (r["candidate"]["drb"] or -1) < high]
        chosen += band[:n]
    for rec in chosen[-2:]:  # as the 2018 alerts: no drb
        rec["candidate"]["drb"] = None
    with open(out, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), chosen)
    return {str(r["candidate"]["candid"]): (np.nan if r["candidate"]["drb"] is None
                                            else float(r["candidate"]["drb"])) for r in chosen}


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    out = tmp_path_factory.mktemp("alerts") / "subset.avro"
    return out, write_subset(out)


def _cube(tmp_path: Path, name: str = "c") -> Path:
    return tmp_path / "datacube" / f"{name}.h5"


def test_rule_balancing_and_report(subset, tmp_path):
    path, drb = subset
    scores = np.array(list(drb.values()))
    n_real, n_bogus = int(np.sum(scores >= 0.5)), int(np.sum(scores < 0.5))
    out = _cube(tmp_path)
    report = convert_alerts(path, out, ConvertConfig(channels=("diff",), seed=4),
                            LabelRule("drb", 0.5), quiet=True)
    assert (report.n_real_labelled, report.n_bogus_labelled) == (n_real, n_bogus)
    assert report.n_real_kept == report.n_bogus_kept == min(n_real, n_bogus) == 15
    assert report.alerts.n_unlabelled == 2 and report.alerts.n_alerts == len(drb)
    assert "Ntrue = 15 and Nfalse = 15" in report.summary()
    with open_datacube(out) as cube:
        assert cube.image_shape == (1, 63, 63)  # -1: the full ZTF stamp
        assert cube.attrs["alert_report"]["n_unlabelled"] == 2
        assert cube.attrs["seed"] == 4 and cube.attrs["counts"]["real_kept"] == 15
        # the same seeded choice as the cutout converter
        labels = np.array([1 if s >= 0.5 else 0 for s in scores if s == s])
        chosen, _, _ = balanced_choice(np.flatnonzero(labels == 1), np.flatnonzero(labels == 0),
                                       0.5, 4)
        kept = [c for c, s in drb.items() if s == s]
        assert list(cube.table["candid"]) == [kept[i] for i in chosen]
        assert set(cube.table.colnames) >= {"objectId", "drb", "edge", "n_nan", "jd"}
    saved = json.loads(out.with_suffix(".report.json").read_text())
    assert saved["alerts"]["n_alerts"] == len(drb) and saved["n_bogus_kept"] == 15
    assert not list(out.parent.glob(".*"))  # the temporary cube is gone
    with pytest.raises(OtrainError, match="already exists"):
        convert_alerts(path, out, label_rule=LabelRule("drb"), quiet=True)


def test_middle_band_dropped_and_all_kept(subset, tmp_path):
    path, drb = subset
    scores = np.array(list(drb.values()))
    config = ConvertConfig(channels=("diff", "sci", "ref"), cutout_size=31, frac_true=None)
    report = convert_alerts(path, _cube(tmp_path), config, LabelRule("drb", 0.9, 0.1),
                            quiet=True)
    assert report.n_real_kept == int(np.sum(scores >= 0.9)) == 12
    assert report.n_bogus_kept == int(np.sum(scores < 0.1)) == 10
    assert report.alerts.n_unlabelled == len(drb) - 22
    with open_datacube(_cube(tmp_path)) as cube:
        assert cube.channels == ["diff", "sci", "ref"] and cube.image_shape == (3, 31, 31)
        drbs = np.asarray(cube.table["drb"])
        assert ((drbs >= 0.9) == (cube.labels == 1)).all() and ((drbs < 0.1) | (drbs >= 0.9)).all()


def test_csv_labels(subset, tmp_path):
    path, drb = subset
    ids = list(drb)
    csv = tmp_path / "labels.csv"
    csv.write_text("candid,label,comment\n" + "".join(
        f"{c},{'real' if i % 2 else 0},x\n" for i, c in enumerate(ids[:12])) + f"{ids[12]},-1,\n")
    config = ConvertConfig(frac_true=None)
    report = convert_alerts(path, _cube(tmp_path), config, LabelRule(None, from_csv=csv),
                            quiet=True)
    assert (report.n_real_kept, report.n_bogus_kept) == (6, 6)
    with open_datacube(_cube(tmp_path)) as cube:
        assert sorted(cube.table["candid"]) == sorted(ids[:12])
        assert "labels from" in cube.attrs["label_rule"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,1\n")
    with pytest.raises(OtrainError, match="candid"):
        convert_alerts(path, _cube(tmp_path, "b"), config, LabelRule(None, from_csv=bad),
                       quiet=True)


def test_unknown_column_fails_before_reading(tmp_path):
    with pytest.raises(OtrainError, match="no such alert file"):  # missing inputs first
        convert_alerts(tmp_path / "absent.avro", _cube(tmp_path), label_rule=LabelRule("score"),
                       quiet=True)
    (tmp_path / "a.avro").write_bytes(b"")  # unreadable: never opened
    with pytest.raises(OtrainError, match="unknown label column 'score'"):
        convert_alerts(tmp_path / "a.avro", _cube(tmp_path), label_rule=LabelRule("score"),
                       quiet=True)


def test_one_class_missing_for_balancing(subset, tmp_path):
    path, _ = subset
    with pytest.raises(OtrainError, match="no bogus alert"):
        convert_alerts(path, _cube(tmp_path), label_rule=LabelRule("drb", 0.0), quiet=True)
    assert not _cube(tmp_path).exists() and not list(tmp_path.rglob(".*h5"))


def test_corrupt_file_skipped_or_strict(subset, tmp_path):
    path, drb = subset
    bad = tmp_path / "garbage.avro"
    bad.write_bytes(b"Obj\x01" + np.random.default_rng(1).bytes(3000))
    report = convert_alerts([path, bad], _cube(tmp_path), ConvertConfig(frac_true=None),
                            LabelRule("drb"), quiet=True)
    assert report.alerts.n_unreadable == 1 and report.alerts.n_files == 2
    assert report.n_real_kept + report.n_bogus_kept == len(drb) - 2
    assert any("garbage.avro" in p for p in report.alerts.problems)
    with pytest.raises(OtrainError, match=r"garbage\.avro"):
        convert_alerts([path, bad], _cube(tmp_path, "s"), ConvertConfig(strict=True),
                       LabelRule("drb"), quiet=True)
    assert not _cube(tmp_path, "s").exists() and not list(tmp_path.rglob(".*h5"))


def test_unlabelled_cube_without_rule(subset, tmp_path):
    path, drb = subset
    report = convert_alerts(path, _cube(tmp_path), quiet=True)
    assert report.n_unlabelled_kept == len(drb) and "scored, not trained" in report.summary()
    with open_datacube(_cube(tmp_path)) as cube:
        assert (cube.labels == -1).all()


def test_cli_alerts(subset, tmp_path):
    path, _ = subset
    proc = run_cli("otrain-convert", "--path", str(tmp_path), "--cube", "c", "--alerts",
                   str(path), "--label-column", "drb", "--real-above", "0.9", "--bogus-below",
                   "0.1", "--channels", "diff,ref", "--cutout-size", "41", "--frac-true", "all",
                   check=True)
    assert "Ntrue = 12 and Nfalse = 10" in proc.stdout
    assert "left out: no label from the label rule" in proc.stdout
    with open_datacube(_cube(tmp_path)) as cube:
        assert cube.image_shape == (2, 41, 41) and cube.channels == ["diff", "ref"]
    assert _cube(tmp_path).with_suffix(".report.json").is_file()


def test_cli_errors_are_one_line(subset, tmp_path):
    path, _ = subset
    base = ("otrain-convert", "--path", str(tmp_path), "--cube", "c")
    assert_clean_error(run_cli(*base, "--alerts", str(tmp_path / "nope.avro"),
                               "--label-column", "drb"), "nope.avro", "no such alert file")
    assert_clean_error(run_cli(*base, "--alerts", str(path), "--label-column", "rbx"),
                       "unknown label column 'rbx'")
    assert_clean_error(run_cli(*base), "--cutouts", "--alerts")
    assert_clean_error(run_cli(*base, "--cutouts", str(tmp_path), "--alerts", str(path)),
                       "not allowed with")
    assert_clean_error(run_cli(*base, "--alerts", str(path), "--labels", "x.csv",
                               "--label-column", "drb"), "not both")
    assert_clean_error(run_cli(*base, "--cutouts", str(tmp_path), "--frac-true", "all"),
                       "--frac-true all")
    assert not _cube(tmp_path).exists()


@pytest.mark.slow
def test_triplet_cube_trains_grouped_by_object(subset, tmp_path):
    path, _ = subset
    run_cli("otrain-convert", "--path", str(tmp_path), "--cube", "t", "--alerts", str(path),
            "--label-column", "drb", "--channels", "diff,sci,ref", "--cutout-size", "31",
            "--frac-true", "all", "--quiet", check=True)
    proc = run_cli("otrain-train", "--cube", str(_cube(tmp_path, "t")), "--model-path",
                   str(tmp_path / "m"), "--model-name", "trip", "--epochs", "2", "--group-by",
                   "objectId", "--arch", "vgg6", "--frac", "0.25", "--test-frac", "0.25",
                   "--batch-size", "16", check=True)
    assert "epoch 2/2" in proc.stdout + proc.stderr
    folder = tmp_path / "m" / "CNN_training" / "trip"
    meta = read_metadata(folder / "trip.safetensors")
    assert meta["in_channels"] == 3 and meta["channels"] == ["diff", "sci", "ref"]
    assert meta["input_size"] == [31, 31] and meta["training"]["group_by"] == "objectId"
    assert meta["normalisation"] == "l2"  # the default 'auto' on an alert cube
    parts = {}
    for name, sub in (("val", "validation_set/datacube/cube_validation.h5"),
                      ("test", "test_set/datacube/cube_test.h5")):
        with open_datacube(folder / sub) as cube:
            parts[name] = set(cube.table["objectId"])
    assert not parts["val"] & parts["test"]
