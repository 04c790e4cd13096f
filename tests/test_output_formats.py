"""Scores tables other tools read right (issue 15, item 3): a pandas round trip of every format.

``.dat`` keeps the O'TRAIN layout (commented header), ``.csv`` / ``.ecsv`` / ``.parquet`` carry
typed columns (``cand_ID`` int64 when every id is an integer), ECSV and Parquet the model file,
its version, the threshold and the precision; probabilities are never denormals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table

from conftest import run_cli
from otrain.datacube.hdf5 import write_datacube
from otrain.inference.core import infer
from otrain.inference.tables import typed_for_output
from otrain.models.modelfile import save_model
from otrain.models.networks import build_model

pd = pytest.importorskip("pandas", reason="pandas (dev extra) reads the tables back")
pytest.importorskip("pyarrow", reason="pyarrow (alerts/dev extra) writes parquet")

N = 24
CANDIDS = [1615400115215015000 + 7 * i for i in range(N)]  # 19 digits: beyond float precision


def read_dat(path: Path) -> pd.DataFrame:
    """The README's recipe: the names come from the commented header line."""
    with open(path) as f:
        names = f.readline().lstrip("#").split()
    return pd.read_csv(path, sep=r"\s+", skiprows=1, names=names)


def _model(path: Path, bogus_bias: float = 0.0) -> Path:
    torch.manual_seed(0)
    model = build_model("otrain", 1, (16, 16), dropout=0.0)
    if bogus_bias:
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.bias[0] += bogus_bias  # logit(bogus) - logit(real) ~ 720: P(real) ~ 1e-313
    return save_model(path, model, {"normalisation": "zscore", "threshold": 0.503})


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("fmt")
    model_file = _model(root / "m.safetensors")
    rng = np.random.default_rng(1)
    images = rng.normal(0, 1, (N, 1, 16, 16)).astype(np.float32)
    cube = write_datacube(root / "c.h5", images,
                          {"candid": np.array([str(c) for c in CANDIDS]),
                           "label": np.arange(N) % 2, "mag": rng.uniform(17, 21, N)}, ["diff"])
    ref = infer(cube, model_file, root / "ref.ecsv", threshold=0.503, quiet=True).table
    return {"root": root, "cube": cube, "model": model_file, "ref": ref}


def test_every_format_round_trips_through_pandas(scored: dict) -> None:
    root, ref = scored["root"], scored["ref"]
    frames = {}
    for suffix in (".dat", ".csv", ".ecsv", ".parquet"):
        out = root / f"scores{suffix}"
        run_cli("otrain-infer", "--cutouts", str(scored["cube"]), "--model", str(scored["model"]),
                "--output", str(out), "--threshold", "model", "--precision", "fp32", "-q",
                check=True) \
            if suffix == ".dat" else infer(scored["cube"], scored["model"], out, threshold=0.503,
                                           quiet=True)
        frames[suffix] = {".dat": read_dat, ".csv": pd.read_csv, ".parquet": pd.read_parquet,
                          ".ecsv": lambda p: Table.read(p).to_pandas()}[suffix](out)
    p_ref = np.asarray(ref["label1"])
    for suffix, df in frames.items():
        assert list(df.columns[:13]) == ["filename", "RA", "Dec", "originalFile", "Xpos", "Ypos",
                                         "mag", "magerr", "FWHM", "FWHMPSF", "cand_ID", "label0",
                                         "label1"], suffix
        assert len(df) == N
        np.testing.assert_allclose(df["label1"], p_ref, atol=1e-10, err_msg=suffix)
        np.testing.assert_allclose(df["mag"], np.asarray(ref["mag"]), rtol=1e-12)
        assert df["cand_ID"].dtype == np.int64, suffix  # pandas guesses int64 from .dat too
        assert df["cand_ID"].tolist() == CANDIDS, suffix  # no float round-off of 19 digits
        p = df[["label0", "label1"]].to_numpy()
        assert not np.any((p > 0) & (p < 1e-10)), suffix  # no denormals such as 5.87e-314
        assert df["class"].tolist() == (p_ref > 0.503).astype(int).tolist(), suffix
    assert 0 < np.sum(p_ref > 0.503) < N  # both classes called: the class column is tested
    # pandas' naive reading of the commented header shifts every column by one (hence the recipe)
    naive = pd.read_csv(root / "scores.dat", sep=r"\s+")
    assert naive.columns[0] == "#" and naive["filename"].isna().all()


def test_confident_scores_are_written_without_denormals(scored: dict) -> None:
    root = scored["root"]
    model = _model(root / "confident.safetensors", bogus_bias=720.0)
    # As in a fresh otrain-infer process (the default mode): training (otrain.training.loop)
    # turns on the process-wide flush-denormal mode, as an earlier test of this worker may have.
    torch.set_flush_denormal(False)
    raw = infer(scored["cube"], model, root / "confident.csv", quiet=True).table["label1"]
    assert np.any((np.asarray(raw) > 0) & (np.asarray(raw) < 1e-300))  # where they come from
    for out in (root / "confident.csv", root / "confident.parquet"):
        if out.suffix == ".parquet":
            infer(scored["cube"], model, out, quiet=True)
        df = pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(out)
        assert (df["label1"] == 0.0).all() and (df["label0"] == 1.0).all(), out
    assert "e-3" not in (root / "confident.csv").read_text()


def test_ecsv_and_parquet_say_which_model_made_them(scored: dict) -> None:
    import pyarrow.parquet as pq

    ecsv = Table.read(scored["root"] / "ref.ecsv")
    parquet = scored["root"] / "ref.parquet"
    infer(scored["cube"], scored["model"], parquet, threshold=0.503, quiet=True)
    for meta in (ecsv.meta, Table.read(parquet).meta):
        assert meta["model_file"] == str(scored["model"])
        assert meta["threshold"] == 0.503 and meta["model_threshold"] == 0.503
        assert meta["precision"] == "float32" and meta["model_otrain_version"]
    assert ecsv["cand_ID"].dtype == np.int64 and str(ecsv["mag"].unit) == "mag"
    schema = pq.read_schema(parquet)
    assert schema.field("cand_ID").type == "int64"
    assert b"model_file" in schema.metadata[b"table_meta_yaml"]


def test_rounding_and_ids_directly() -> None:
    t = Table({"cand_ID": ["12", "x3"], "candid": ["1", "2"], "label0": [1.0, 5.87e-314],
               "label1": [5.87e-314, 1.0]})
    out = typed_for_output(t, "ascii.csv")
    assert out["label1"].tolist() == [0.0, 1.0] and out["label0"].tolist() == [1.0, 0.0]
    assert out["cand_ID"].dtype.kind == "U" and out["candid"].dtype == np.int64
    assert t["label1"][0] == 5.87e-314  # the caller's table is left alone
    huge = typed_for_output(Table({"candid": ["99999999999999999999"]}), "ascii.csv")
    assert huge["candid"].dtype.kind == "U"  # wider than int64: kept as text
    dat = typed_for_output(t, "ascii.commented_header")
    assert dat["candid"].dtype.kind == "U"  # .dat: the O'TRAIN layout, untouched
