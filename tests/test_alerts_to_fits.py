"""otrain alerts-to-fits: O'TRAIN-style FITS cutouts from real alerts, read back by
otrain-convert --cutouts to the same images (single-HDU and multi-extension layouts).

Uses a small subset of the shared real ZTF alerts written to pytest's tmp folder; skipped when
../shared/data/ztf is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from conftest import ZTF_DIR, assert_clean_error, run_cli
from otrain.alerts import LabelRule, read_alerts
from otrain.convert.fits_export import alerts_to_fits, cutout_header, resolve_layout
from otrain.convert.folders import ConvertConfig, convert_cutouts
from otrain.cutouts.reading import TRAINING_KEYWORDS, read_cutout
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError

SOURCE = "ztf_alerts_v3.3.avro"
EDGE_CANDID = "975188145315010003"  # stamps 55x63: cut by a CCD edge
NAN_CANDID = "1095578115815010052"  # 233 NaN pixels in its difference stamp


@pytest.fixture(scope="module")
def alerts(tmp_path_factory) -> Path:
    """20 real alerts (a CCD-edge one and one with NaN among them), drb spread over [0, 1]."""
    path = ZTF_DIR / SOURCE
    if not path.is_file():
        pytest.skip(f"real ZTF alerts not found at {ZTF_DIR}")
    with open(path, "rb") as fh:
        reader = fastavro.reader(fh)
        schema, records = reader.writer_schema, list(reader)
    records.sort(key=lambda r: r["candidate"]["drb"])
    chosen = records[::8]
    chosen += [r for r in records if str(r["candidate"]["candid"]) in (EDGE_CANDID, NAN_CANDID)
               and r not in chosen]
    out = tmp_path_factory.mktemp("alerts") / "subset.avro"
    with open(out, "wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(schema), chosen)
    return out


def _by_candid(table) -> dict[str, int]:
    return {str(c): i for i, c in enumerate(table["candid"])}


@pytest.mark.parametrize("layout, channels", [("mef", ("diff", "sci", "ref")),
                                              ("single", ("diff",))])
def test_round_trip_through_convert(alerts, tmp_path, layout, channels):
    rule = LabelRule("drb", 0.5)
    images, table, _ = read_alerts(alerts, channels, quiet=True)
    report = alerts_to_fits(alerts, tmp_path / "fits", channels, rule, layout, quiet=True)
    labels = rule.apply(table)
    assert report.n_real == int(np.sum(labels == 1)) and report.n_bogus == int(np.sum(labels == 0))
    assert report.n_written == len(table) and report.alerts.n_bad_size == 1
    n_real, n_edge = report.n_real, int(np.sum(table["edge"]))
    assert n_edge >= 2
    edge_real = int(np.sum(np.asarray(table["edge"]) & (labels == 1)))
    frac = (n_real - edge_real) / (len(table) - n_edge)
    out = tmp_path / "cube.h5"
    conv = convert_cutouts(tmp_path / "fits", out, ConvertConfig(frac_true=frac,
                                                                 channels=channels), quiet=True)
    assert conv.n_true_edge + conv.n_false_edge == n_edge  # EDGE 'True' read and excluded
    assert not conv.problems
    rows = _by_candid(table)
    with open_datacube(out) as cube:
        assert len(cube) == len(table) - n_edge
        got = cube.read(slice(None))
        for k, candid in enumerate(cube.table["candid"]):
            i = rows[str(candid)]
            np.testing.assert_array_equal(got[k], images[i])
            assert cube.table["label"][k] == labels[i]
            for col in ("mag", "magerr", "fwhm", "ra", "dec", "xpos", "ypos"):
                assert cube.table[col][k] == pytest.approx(table[col][i], rel=1e-12)
            assert cube.table["filter"][k] == table["filter"][i]
    # the edge alert: NaN kept in the file, EDGE the string 'True'
    edge_file = next((tmp_path / "fits").rglob(f"{EDGE_CANDID}.fits"))
    with fits.open(edge_file) as hdul:
        assert hdul[0].header["EDGE"] == "True"
        data = hdul[1].data if layout == "mef" else hdul[0].data
        assert np.isnan(data).any()
    cut = read_cutout(edge_file, channels, required=TRAINING_KEYWORDS)
    assert cut.meta["edge"] is True and cut.meta["n_nonfinite"] > 0


def test_layouts_and_headers(alerts, tmp_path):
    alerts_to_fits(alerts, tmp_path / "flat", layout="single", channels=("diff", "sci", "ref"),
                   quiet=True)
    files = sorted((tmp_path / "flat").glob("*.fits"))
    assert len(files) == 20 and not (tmp_path / "flat" / "true").exists()
    with fits.open(files[0]) as hdul:
        assert len(hdul) == 1 and hdul[0].data.shape == (3, 63, 63)
        h = hdul[0].header
        assert h["CHANNELS"] == "diff,sci,ref" and h["EDGE"] in ("True", "False")
        assert "LABEL" not in h and h["OBJECTID"].startswith("ZTF")
        assert {"CANDID", "MAG", "MAGERR", "FILTER", "FWHM", "RA", "DEC", "FILE", "XPOS",
                "YPOS", "DRB", "RB", "JD"} <= set(h)
    cut = read_cutout(files[0], ("diff", "sci", "ref"), required=TRAINING_KEYWORDS)
    assert cut.image.shape == (3, 63, 63)
    assert resolve_layout(None, None) == ("mef", ("diff", "sci", "ref"))
    assert resolve_layout(None, ("diff",)) == ("single", ("diff",))
    assert resolve_layout("single", None) == ("single", ("diff",))
    with pytest.raises(OtrainError, match="unknown layout"):
        resolve_layout("cube", None)


def test_missing_values_in_header():
    row = {"candid": "42", "mag": math.nan, "magerr": math.nan, "filter": "", "fwhm": math.nan,
           "edge": True, "ra": 1.0, "dec": math.nan, "xpos": math.nan, "ypos": 3.0,
           "jd": math.nan, "rb": math.nan, "drb": 0.2, "file": "/a/b/x.avro",
           "source_file": "/a/b/x.avro#7", "objectId": "", "isdiffpos": "t", "programid": -1,
           "n_nan": 5}
    h = cutout_header(row, 0)
    assert h["MAG"] == 99.0 and h["FWHM"] == "NaN" and h["EDGE"] == "True"
    assert "DEC" not in h and "RB" not in h and h["FILE"] == "x.avro" and h["SRCREC"] == 7
    assert h["LABEL"] == 0


def test_overwrite_and_errors(alerts, tmp_path):
    out = tmp_path / "o"
    proc = run_cli("otrain", "alerts-to-fits", "--alerts", str(alerts), "--outdir", str(out),
                   "--label-column", "drb", "--real-above", "0.9", "--bogus-below", "0.1",
                   check=True)
    assert "written to" in proc.stdout and "left out: no label" in proc.stdout
    n_true, n_false = len(list((out / "true").glob("*"))), len(list((out / "false").glob("*")))
    assert n_true and n_false
    with fits.open(next((out / "true").glob("*.fits"))) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DIFF", "SCI", "REF"]
        assert hdul[0].header["LABEL"] == 1 and hdul[0].header["DRB"] >= 0.9
    again = run_cli("otrain", "alerts-to-fits", "--alerts", str(alerts), "--outdir", str(out),
                    "--label-column", "drb")
    assert_clean_error(again, "already holds FITS cutouts", "--overwrite")
    run_cli("otrain", "alerts-to-fits", "--alerts", str(alerts), "--outdir", str(out),
            "--label-column", "drb", "--overwrite", "--quiet", check=True)
    assert len(list((out / "true").glob("*"))) > n_true  # drb 0.5-0.9 added, none deleted
    assert_clean_error(run_cli("otrain", "alerts-to-fits", "--alerts", str(tmp_path / "x"),
                               "--outdir", str(out)), "no such alert file")
    assert_clean_error(run_cli("otrain", "alerts-to-fits", "--alerts", str(alerts), "--outdir",
                               str(tmp_path / "p"), "--label-column", "nope"),
                       "unknown label column")
    assert not (tmp_path / "p").exists()
