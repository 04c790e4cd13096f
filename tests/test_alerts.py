"""Tests of otrain.alerts on the shared real ZTF alerts, plus synthetic Rubin and broken inputs.

The real alerts are read from /work/shared/data/ztf (or $OTRAIN_ZTF_DATA); tests needing them
are skipped when the folder is absent. Nothing of that data is copied into the repository: the
synthetic files these tests write go to pytest's tmp_path.
"""

from __future__ import annotations

import copy
import csv
import gzip
import importlib.util
import io
import json
import math
import os
import sys
import warnings
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from otrain.alerts import (
    COLUMNS,
    AlertReport,
    LabelRule,
    decode_stamp,
    iter_alert_batches,
    iter_alerts,
    read_alerts,
)
from otrain.alerts.sources import rubin_schema
from otrain.convert.alerts import alerts_to_datacube
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError

ZTF_DIR = Path(os.environ.get("OTRAIN_ZTF_DATA", "/work/shared/data/ztf"))
ZTF_FILES = [
    "ztf_alerts_v1.8.avro", "ztf_alerts_v3.0.avro", "ztf_alerts_v3.2.avro",
    "ztf_alerts_v3.3.avro", "ztf_alerts_v4.01.avro", "ztf_alerts_v4.02_part1.avro",
    "ztf_alerts_v4.02_part2.avro", "ztf_alerts_v4.02_part3.avro",
]
#: An alert cut by the CCD edge (44x63 stamps, ypos 12.9) and its file.
EDGE_CANDID, EDGE_FILE = "2481126382415015000", "ztf_alerts_v4.02_part1.avro"
SMALL_FILE = "ztf_alerts_v4.01.avro"  # 24 alerts, original IPAC schema
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


def _has_lsst_packet() -> bool:
    try:
        return importlib.util.find_spec("lsst.alert.packet") is not None
    except ImportError:
        return False


def ztf(name: str) -> Path:
    """Path of a shared ZTF file, skipping the test when the data are absent."""
    path = ZTF_DIR / name
    if not path.is_file():
        pytest.skip(f"real ZTF alerts not available ({path} missing)")
    return path


@pytest.fixture(scope="module")
def manifest() -> dict[str, dict[str, str]]:
    path = ztf("MANIFEST.csv")
    with open(path, newline="") as fh:
        return {row["candid"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def all_diff():
    """Every shared alert, diff channel (read once for the module)."""
    ztf("MANIFEST.csv")
    return read_alerts([ZTF_DIR], quiet=True)


def raw_records(path: Path) -> tuple[dict, list[dict]]:
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        return reader.writer_schema, list(reader)


def raw_stamp(record: dict, field: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fits.getdata(io.BytesIO(gzip.decompress(record[field]["stampData"])))


# --------------------------------------------------------------------------------------------
# Real ZTF alerts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZTF_FILES)
def test_each_file_matches_manifest(name, manifest):
    path = ztf(name)
    images, table, report = read_alerts(path, quiet=True)
    expected = [c for c, row in manifest.items() if row["file"] == name]
    assert report.n_alerts == report.n_kept == len(expected) == len(table) == images.shape[0]
    assert report.n_unreadable == report.n_missing_stamp == 0
    assert images.dtype == np.float32 and images.shape[1:] == (1, 63, 63)
    assert table.colnames == list(COLUMNS)
    assert sorted(table["candid"]) == sorted(expected)
    for i, row in enumerate(table):
        m = manifest[row["candid"]]
        assert isinstance(row["candid"], str)
        assert row["objectId"] == m["objectId"]
        assert row["mag"] == pytest.approx(float(m["magpsf"]), rel=1e-12)
        assert row["filter"] == {"1": "g", "2": "r", "3": "i"}[m["fid"]]
        assert row["isdiffpos"] == m["isdiffpos"]
        assert row["jd"] == pytest.approx(float(m["jd"]), abs=1e-9)
        assert row["programid"] == int(m["programid"])
        if m["drb"]:
            assert row["drb"] == pytest.approx(float(m["drb"]), rel=1e-12)
        else:
            assert math.isnan(row["drb"])
        assert row["label"] == -1
        assert row["file"] == str(path) and row["source_file"] == f"{path}#{i}"
        assert math.isfinite(row["magerr"]) and math.isfinite(row["ra"])


def test_whole_set_counts(all_diff, manifest):
    _, table, report = all_diff
    assert len(table) == len(manifest) == 1485
    assert report.n_files == 8
    assert report.n_bad_size == 12  # README: 12 stamps smaller than 63x63
    assert report.n_with_nan == 206  # README: 206 alerts with NaN, always in the difference
    assert int(np.sum(table["n_nan"] > 0)) == 206
    assert int(np.sum(np.isnan(table["drb"]))) == 97
    small = {c for c, m in manifest.items() if m["stamp_shape"] != "63x63"}
    assert set(table["candid"][table["edge"]]) >= small
    assert "12 padded" in report.summary()


def test_nan_pixels_kept_and_counted(all_diff):
    images, table, _ = all_diff
    full = ~np.isin(table["candid"], [EDGE_CANDID])
    idx = np.where((table["n_nan"] > 0) & full)[0][:5]
    assert idx.size
    for i in idx:
        assert int(np.isnan(images[i]).sum()) >= table["n_nan"][i] > 0
        assert table["edge"][i]
    clean = np.where((table["n_nan"] == 0) & ~table["edge"])[0][:20]
    assert not np.isnan(images[clean]).any()


def test_small_stamp_padded_around_candidate(manifest):
    path = ztf(EDGE_FILE)
    assert manifest[EDGE_CANDID]["stamp_shape"] == "44x63"
    _, records = raw_records(path)
    rec = next(r for r in records if str(r["candid"]) == EDGE_CANDID)
    diff = raw_stamp(rec, "cutoutDifference")
    assert diff.shape == (44, 63)
    images, table, report = read_alerts(path, quiet=True)
    i = int(np.where(table["candid"] == EDGE_CANDID)[0][0])
    assert table["edge"][i]
    # ypos 12.9: the CCD edge cut the low rows, so 19 NaN rows are added below the stamp
    assert np.isnan(images[i, 0, :19]).all()
    np.testing.assert_array_equal(images[i, 0, 19:], diff.astype(np.float32))
    assert report.n_bad_size == sum(1 for m in manifest.values()
                                    if m["file"] == EDGE_FILE and m["stamp_shape"] != "63x63")


def test_channels_order_and_crop():
    path = ztf(SMALL_FILE)
    _, records = raw_records(path)
    images, table, _ = read_alerts(path, channels=("ref", "diff", "sci"), quiet=True)
    assert images.shape == (len(records), 3, 63, 63)
    for k in (0, len(records) - 1):
        assert table["candid"][k] == str(records[k]["candid"])
        for ch, field in enumerate(("cutoutTemplate", "cutoutDifference", "cutoutScience")):
            np.testing.assert_array_equal(images[k, ch], raw_stamp(records[k], field))
    cropped, _, _ = read_alerts(path, channels=("ref", "diff", "sci"), cutout_size=31,
                                quiet=True)
    np.testing.assert_array_equal(cropped, images[:, :, 16:47, 16:47])
    with pytest.raises(OtrainError, match="unknown channel"):
        read_alerts(path, channels=("diff", "mask"), quiet=True)


def test_fast_fits_decoder_matches_astropy():
    _, records = raw_records(ztf("ztf_alerts_v3.3.avro"))
    for rec in records[:20]:
        for field in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            np.testing.assert_array_equal(decode_stamp(rec[field]["stampData"]),
                                          raw_stamp(rec, field))


def test_iter_alerts_raw_records_and_batches(manifest):
    path = ztf(SMALL_FILE)
    seen = list(iter_alerts([path]))
    assert [i for _, i, _ in seen] == list(range(24))
    assert all(p == path and "candidate" in r for p, _, r in seen)
    report = AlertReport()
    sizes = [len(images) for images, cols in
             iter_alert_batches([path], ("diff",), 63, batch_size=10, report=report)]
    assert sizes == [10, 10, 4] and report.n_kept == 24


# --------------------------------------------------------------------------------------------
# Skipped and broken inputs
# --------------------------------------------------------------------------------------------
def test_missing_stamp_skipped_and_counted(tmp_path):
    schema, records = raw_records(ztf(SMALL_FILE))
    recs = copy.deepcopy(records[:3])
    recs[1]["cutoutDifference"] = None  # the v4.01 schema allows a null stamp
    out = tmp_path / "missing.avro"
    with open(out, "wb") as fh:
        fastavro.writer(fh, schema, recs)
    _, table, report = read_alerts(out, quiet=True)
    assert report.n_alerts == 3 and report.n_kept == 2 and report.n_missing_stamp == 1
    assert list(table["candid"]) == [str(recs[0]["candid"]), str(recs[2]["candid"])]
    assert report.problems[0].startswith(f"{out}#1: ")
    # the science stamp alone is still there
    _, table_sci, report_sci = read_alerts(out, channels=("sci",), quiet=True)
    assert len(table_sci) == 3 and report_sci.n_missing_stamp == 0


def test_corrupt_file_counted_or_raised(tmp_path):
    good = ztf(SMALL_FILE)
    bad = tmp_path / "garbage.avro"
    bad.write_bytes(b"\xff" + np.random.default_rng(0).bytes(5000))
    _, table, report = read_alerts([good, bad], quiet=True)
    assert len(table) == 24 and report.n_unreadable == 1
    assert any(line.startswith(f"{bad}: unreadable alert file") for line in report.problems)
    with pytest.raises(OtrainError) as err:
        read_alerts([good, bad], strict=True, quiet=True)
    assert str(bad) in str(err.value)
    # a file cut short: the records before the damage are kept, the file counted once
    cut = tmp_path / "truncated.avro"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _, table_cut, report_cut = read_alerts(cut, quiet=True)
    assert report_cut.n_unreadable == 1 and 0 < len(table_cut) < 24
    assert "after" in report_cut.problems[0]


def test_undecodable_stamp(tmp_path):
    schema, records = raw_records(ztf(SMALL_FILE))
    recs = copy.deepcopy(records[:2])
    recs[0]["cutoutDifference"]["stampData"] = gzip.compress(b"not a FITS file" * 20)
    recs[1]["cutoutDifference"]["stampData"] = b"\x1f\x8b broken gzip"
    out = tmp_path / "badstamp.avro"
    with open(out, "wb") as fh:
        fastavro.writer(fh, schema, recs)
    _, table, report = read_alerts(out, quiet=True)
    assert len(table) == 0 and report.n_unreadable == 2 and len(report.problems) == 2
    with pytest.raises(OtrainError, match="record 0"):
        read_alerts(out, strict=True, quiet=True)


def test_missing_paths(tmp_path):
    with pytest.raises(OtrainError, match="no such alert file"):
        read_alerts(tmp_path / "nope.avro", quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OtrainError, match=r"no \.avro or \.parquet"):
        read_alerts(tmp_path / "empty", quiet=True)


# --------------------------------------------------------------------------------------------
# Labels and datacubes
# --------------------------------------------------------------------------------------------
def test_label_rule_thresholds():
    cols = {"candid": np.array(["a", "b", "c", "d", "e"]),
            "drb": np.array([0.95, 0.6, 0.3, 0.05, np.nan])}
    np.testing.assert_array_equal(LabelRule().apply(cols), [1, 1, 0, 0, -1])
    band = LabelRule("drb", real_above=0.9, bogus_below=0.1)
    np.testing.assert_array_equal(band.apply(cols), [1, -1, -1, 0, -1])
    with pytest.raises(OtrainError, match="bogus_below"):
        LabelRule(real_above=0.5, bogus_below=0.8)
    with pytest.raises(OtrainError, match="no 'rb' column"):
        LabelRule("rb").apply(cols)


def test_label_rule_from_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("candid,label,comment\na,1,x\nc,bogus,y\nd,0,\n")
    rule = LabelRule(from_csv=path)
    cols = {"candid": np.array(["a", "b", "c", "d"]), "drb": np.array([0.0, 1.0, 1.0, 1.0])}
    np.testing.assert_array_equal(rule.apply(cols), [1, -1, 0, 0])
    (tmp_path / "bad.csv").write_text("candid,label\na,maybe\n")
    with pytest.raises(OtrainError, match="maybe"):
        LabelRule(from_csv=tmp_path / "bad.csv").apply(cols)


def test_label_rule_on_real_scores(all_diff):
    _, table, _ = all_diff
    labels = LabelRule().apply(table)
    assert (int(np.sum(labels == 1)), int(np.sum(labels == 0)), int(np.sum(labels == -1))) \
        == (1237, 151, 97)  # README counts: drb >= 0.5, drb < 0.5, drb missing


def test_alerts_to_datacube_round_trip(tmp_path):
    path = ztf(SMALL_FILE)
    images, table, _ = read_alerts(path, channels=("diff", "sci", "ref"), quiet=True)
    out, report = alerts_to_datacube(path, tmp_path / "cube.h5", ("diff", "sci", "ref"),
                                     label_rule=LabelRule("drb", 0.5), quiet=True)
    with open_datacube(out) as cube:
        assert cube.channels == ["diff", "sci", "ref"]
        assert cube.image_shape == (3, 63, 63) and len(cube) == report.n_kept == 24
        np.testing.assert_array_equal(cube.read(slice(None)), images)
        assert list(cube.table["candid"]) == list(table["candid"])
        np.testing.assert_array_equal(cube.labels, (np.asarray(table["drb"]) >= 0.5).astype(int))
        assert cube.attrs["alert_report"]["n_kept"] == 24
        assert "drb >= 0.5" in cube.attrs["label_rule"]
    with pytest.raises(OtrainError, match="already exists"):
        alerts_to_datacube(path, out, quiet=True)
    # no rule: everything kept with label -1; small batches give the same cube
    out2, _ = alerts_to_datacube(path, tmp_path / "cube2.h5", ("diff",), 31, quiet=True,
                                 batch_size=5)
    with open_datacube(out2) as cube:
        assert (cube.labels == -1).all()
        np.testing.assert_array_equal(cube.read(slice(None)), images[:, :1, 16:47, 16:47])


def test_datacube_with_no_labelled_alert(tmp_path):
    path = ztf("ztf_alerts_v1.8.avro")  # 2018: drb null everywhere
    with pytest.raises(OtrainError, match="no alert could be written"):
        alerts_to_datacube(path, tmp_path / "none.h5", label_rule=LabelRule(), quiet=True)
    assert not (tmp_path / "none.h5").exists()


# --------------------------------------------------------------------------------------------
# Parquet and Rubin
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_PYARROW, reason="pyarrow not installed (optional, for parquet)")
def test_parquet_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = ztf(SMALL_FILE)
    _, records = raw_records(path)
    keep = ("objectId", "candid", "candidate", "cutoutScience", "cutoutTemplate",
            "cutoutDifference")
    rows = [{k: r[k] for k in keep} for r in records[:6]]
    out = tmp_path / "export.parquet"
    pq.write_table(pa.Table.from_pylist(rows), out)
    images_pq, table_pq, report = read_alerts(out, channels=("diff", "sci"), quiet=True)
    images, table, _ = read_alerts(path, channels=("diff", "sci"), quiet=True)
    assert report.n_kept == 6
    np.testing.assert_array_equal(images_pq, images[:6])
    for col in ("candid", "objectId", "mag", "filter", "isdiffpos"):
        assert list(table_pq[col]) == list(table[col][:6])


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    out = tmp_path / "x.parquet"
    out.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(OtrainError, match="pip install pyarrow"):
        read_alerts(out, quiet=True)


def _rubin_fits(image: np.ndarray) -> bytes:
    """A Rubin-style cutout: astropy CCDData (image, mask, uncertainty) as plain FITS bytes."""
    from astropy.nddata import CCDData, StdDevUncertainty

    ccd = CCDData(image, unit="nJy", mask=np.isnan(image),
                  uncertainty=StdDevUncertainty(np.ones_like(image)))
    buf = io.BytesIO()
    ccd.write(buf, format="fits")
    return buf.getvalue()


def _rubin_images(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    out = {k: rng.normal(size=(size, size)).astype(np.float32) for k in ("diff", "sci", "ref")}
    out["diff"][0, :3] = np.nan
    return out


MINIMAL_RUBIN_SCHEMA = {
    "type": "record", "name": "alert", "namespace": "otrain.test.rubinlike", "fields": [
        {"name": "diaSourceId", "type": "long"},
        {"name": "diaSource", "type": {"type": "record", "name": "diaSource", "fields": [
            {"name": "diaSourceId", "type": "long"},
            {"name": "diaObjectId", "type": ["null", "long"]},
            {"name": "midpointMjdTai", "type": "double"},
            {"name": "ra", "type": "double"}, {"name": "dec", "type": "double"},
            {"name": "x", "type": "float"}, {"name": "y", "type": "float"},
            {"name": "psfFlux", "type": ["null", "float"]},
            {"name": "psfFluxErr", "type": ["null", "float"]},
            {"name": "band", "type": ["null", "string"]},
            {"name": "reliability", "type": ["null", "float"]}]}},
        {"name": "cutoutDifference", "type": ["null", "bytes"]},
        {"name": "cutoutScience", "type": ["null", "bytes"]},
        {"name": "cutoutTemplate", "type": ["null", "bytes"]},
    ]}


def test_rubin_like_record_hand_built(tmp_path):
    """Rubin layout (diaSource, plain FITS cutouts) with a minimal schema of our own."""
    imgs = _rubin_images(30)
    rec = {"diaSourceId": 170000000000000001,
           "diaSource": {"diaSourceId": 170000000000000001, "diaObjectId": 42,
                         "midpointMjdTai": 60900.25, "ra": 10.5, "dec": -20.25, "x": 100.0,
                         "y": 200.0, "psfFlux": -1000.0, "psfFluxErr": 50.0, "band": "i",
                         "reliability": 0.75},
           "cutoutDifference": _rubin_fits(imgs["diff"]),
           "cutoutScience": _rubin_fits(imgs["sci"]),
           "cutoutTemplate": _rubin_fits(imgs["ref"])}
    out = tmp_path / "rubin.avro"
    with open(out, "wb") as fh:
        fastavro.writer(fh, MINIMAL_RUBIN_SCHEMA, [rec])
    images, table, report = read_alerts(out, channels=("diff", "sci", "ref"),
                                        cutout_size=32, quiet=True)
    row = table[0]
    assert row["candid"] == "170000000000000001" and row["objectId"] == "42"
    assert row["mag"] == pytest.approx(31.4 - 2.5 * np.log10(1000.0))
    assert row["magerr"] == pytest.approx(1.0857 * 50 / 1000, rel=1e-3)
    assert (row["filter"], row["isdiffpos"]) == ("i", "f")
    assert row["jd"] == pytest.approx(60900.25 + 2400000.5)
    assert row["drb"] == pytest.approx(0.75) and math.isnan(row["rb"])
    # 30x30 stamps in a 32x32 window: one NaN row/column on each side, stamp centre kept
    assert report.n_bad_size == 1 and row["edge"] and row["n_nan"] == 3
    np.testing.assert_array_equal(images[0, 1, 1:31, 1:31], imgs["sci"])
    assert np.isnan(images[0, 1, 0]).all() and np.isnan(images[0, 1, :, 31]).all()


@pytest.mark.skipif(not _has_lsst_packet(), reason="lsst-alert-packet not installed")
def test_rubin_sample_packet_container_and_wire_format(tmp_path):
    spec = importlib.util.find_spec("lsst.alert.packet")
    root = Path(next(iter(spec.submodule_search_locations))) / "schema"
    major, minor = (int(v) for v in (root / "latest.txt").read_text().strip().split("."))
    sample = root / str(major) / str(minor) / "sample_data" / "fakeAlert.avro"
    with open(sample, "rb") as fh:
        record = next(iter(fastavro.reader(fh)))
    imgs = _rubin_images(30)
    record.update(cutoutDifference=_rubin_fits(imgs["diff"]),
                  cutoutScience=_rubin_fits(imgs["sci"]),
                  cutoutTemplate=_rubin_fits(imgs["ref"]))
    schema = rubin_schema(100 * major + minor)
    container = tmp_path / "rubin_container.avro"
    with open(container, "wb") as fh:
        fastavro.writer(fh, schema, [record])
    wire = tmp_path / "rubin_message.avro"
    unregistered = tmp_path / "rubin_message_id0.avro"
    for path, schema_id in ((wire, 100 * major + minor), (unregistered, 0)):
        buf = io.BytesIO()
        buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
        fastavro.schemaless_writer(buf, schema, record)
        path.write_bytes(buf.getvalue())
    images, table, report = read_alerts([container, wire, unregistered],
                                        channels=("diff", "sci", "ref"), cutout_size=30,
                                        quiet=True)
    assert report.n_kept == 3 and report.n_unreadable == 0
    src = record["diaSource"]
    assert set(table["candid"]) == {str(src["diaSourceId"])}
    assert table["filter"][0] == src["band"]
    assert table["mag"][0] == pytest.approx(31.4 - 2.5 * np.log10(abs(src["psfFlux"])))
    for k in range(3):
        np.testing.assert_array_equal(images[k, 2], imgs["ref"])
    bad_id = tmp_path / "rubin_bad_id.avro"
    bad_id.write_bytes(b"\x00" + (9999).to_bytes(4, "big") + b"\x00" * 20)
    _, _, report_bad = read_alerts(bad_id, quiet=True)
    assert report_bad.n_unreadable == 1 and "unknown Rubin alert schema id 9999" in \
        report_bad.problems[0]


def test_wire_format_without_lsst_packet(tmp_path, monkeypatch):
    msg = tmp_path / "msg.avro"
    msg.write_bytes(b"\x00" + (1101).to_bytes(4, "big") + b"\x00" * 10)
    rubin_schema.cache_clear()
    monkeypatch.setitem(sys.modules, "lsst.alert.packet", None)
    try:
        with pytest.raises(OtrainError, match="pip install lsst-alert-packet"):
            read_alerts(msg, quiet=True)
    finally:
        rubin_schema.cache_clear()


def test_report_summary_and_dict():
    report = AlertReport(n_files=1, n_alerts=3, n_kept=1, n_missing_stamp=1, n_unreadable=1)
    report.add_problem("a.avro#0", "no cutoutDifference stamp")
    report.add_problem("b.avro", "unreadable")
    text = report.summary(max_lines=1)
    assert "1 of 3 alerts kept" in text and "a.avro#0: no cutoutDifference" in text
    assert "1 more problem" in text
    assert json.loads(json.dumps(report.as_dict()))["n_problems"] == 2
