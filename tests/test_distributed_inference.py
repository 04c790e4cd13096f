"""Scoring and conversion on Dask: same table / cube as one process, dead workers, bad schedulers.

One 2-worker LocalCluster serves the module. The single-process references run with one torch
thread (as every Dask task does), so the written files must be byte-identical.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import ascii

from conftest import assert_clean_error, make_labelled_folder, run_cli, write_cutout
from otrain.convert.folders import ConvertConfig, convert_cutouts
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import CutoutError, OtrainError
from otrain.inference.core import infer
from otrain.models.modelfile import save_model
from otrain.models.networks import build_model

distributed = pytest.importorskip("distributed")

from otrain.cluster import dask_client, require_dask  # noqa: E402
from otrain.convert.dask import convert_distributed  # noqa: E402
from otrain.inference.dask.client import infer_distributed, score_distributed  # noqa: E402

SIZE = 16


@pytest.fixture(scope="module")
def client():
    with dask_client("local", workers=2, quiet=True) as c:
        yield c


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    return save_model(path, build_model("otrain", 1, SIZE, 0.0),
                      {"normalisation": "zscore", "channels": ["diff"]})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 cutouts of 20x20 (cropped to 16x16): one edge cutout, one unreadable file."""
    root = tmp_path_factory.mktemp("cutouts")
    rng = np.random.default_rng(1)
    for i in range(40):
        image = rng.normal(size=(20, 20))
        image[8:12, 8:12] += 6.0 * (i % 3)
        write_cutout(root / f"c_{i:03d}.fits", image, EDGE="True" if i == 5 else "False",
                     FILTER="r band" if i % 2 else "")
    (root / "c_017b.fits").write_bytes(b"not a FITS file")
    return root


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The single-process path with one torch thread, as a Dask task."""
    import otrain.inference.stream as stream

    monkeypatch.setattr(stream, "_cpu_count", lambda: 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_files_same_table_as_one_process(client, folder, model_file, tmp_path, one_thread):
    ref = infer(folder, model_file, tmp_path / "one.dat", workers=1, quiet=True)
    out = tmp_path / "dask.dat"
    res = infer_distributed(folder, model_file, out, chunk_size=6, client=client, quiet=True)
    assert out.read_bytes() == (tmp_path / "one.dat").read_bytes()
    assert (res.report.n_inputs, res.report.n_scored, res.report.n_skipped) == (41, 40, 1)
    assert res.report.n_edge == ref.report.n_edge == 1
    assert res.report.skipped[0][0].endswith("c_017b.fits")
    table = score_distributed(folder, model_file, client, chunk_size=9, quiet=True).table
    assert list(table["filename"]) == list(ref.table["filename"])
    np.testing.assert_allclose(table["label1"], ref.table["label1"], atol=1e-6, rtol=0)


def test_datacube_same_table_as_one_process(client, tmp_path, model_file, one_thread):
    cube = tmp_path / "cube.h5"
    convert_cutouts(make_labelled_folder(tmp_path / "lab", 9, 14, size=20, seed=2), cube,
                    ConvertConfig(workers=1, frac_true=0.4), quiet=True)
    infer(cube, model_file, tmp_path / "one.ecsv", threshold=0.3, quiet=True)
    res = infer_distributed(cube, model_file, tmp_path / "dask.ecsv", threshold=0.3,
                            chunk_size=4, batch_size=3, client=client, quiet=True)
    assert (tmp_path / "dask.ecsv").read_bytes() == (tmp_path / "one.ecsv").read_bytes()
    table = ascii.read(tmp_path / "dask.ecsv")
    assert {"class", "label"} <= set(table.colnames) and len(table) == res.report.n_scored


def _alert_model(path: Path) -> Path:
    torch.manual_seed(0)
    return save_model(path, build_model("vgg6", 3, 21, 0.0),
                      {"normalisation": "l2", "channels": ["diff", "sci", "ref"]})


def test_alerts_same_table_as_one_process(client, tmp_path, ztf_dir):
    """Real ZTF alert files, one task each, plus a corrupt one: same rows, same counts."""
    (tmp_path / "junk.avro").write_bytes(b"not avro")
    files = [ztf_dir / "ztf_alerts_v3.0.avro", tmp_path / "junk.avro",
             ztf_dir / "ztf_alerts_v4.01.avro"]
    model = _alert_model(tmp_path / "m.safetensors")
    ref = infer(files, model, tmp_path / "one.csv", threshold=0.5, quiet=True)
    res = infer_distributed(files, model, tmp_path / "dask.csv", threshold=0.5, client=client,
                            quiet=True)
    one, dask = (ascii.read(tmp_path / n, format="csv") for n in ("one.csv", "dask.csv"))
    assert len(dask) == 54 and dask.colnames == one.colnames
    assert dask.colnames[:2] == ["candid", "objectId"] and "class" in dask.colnames
    assert list(dask["candid"]) == list(one["candid"])
    np.testing.assert_allclose(dask["label1"], one["label1"], atol=1e-6, rtol=0)
    assert list(dask["class"]) == list(one["class"])
    for key in ("n_inputs", "n_scored", "n_skipped", "n_edge", "n_real"):
        assert getattr(res.report, key) == getattr(ref.report, key), key
    assert any("junk.avro" in where for where, _ in res.report.skipped)
    with pytest.raises(CutoutError, match=r"junk\.avro"):
        infer_distributed(files, model, tmp_path / "strict.csv", client=client, strict=True,
                          quiet=True)
    assert not (tmp_path / "strict.csv").exists()
    with pytest.raises(OtrainError, match=r"none of the 1 alert file\(s\) could be read"):
        infer_distributed(tmp_path / "junk.avro", model, tmp_path / "j.csv", client=client,
                          quiet=True)


def test_convert_same_cube_as_one_process(client, tmp_path):
    src = make_labelled_folder(tmp_path / "lab", 13, 21, size=20, seed=4)
    write_cutout(src / "true" / "t_edge.fits", np.zeros((20, 20)), EDGE="True")
    (src / "false" / "f_bad.fits").write_bytes(b"broken")
    config = ConvertConfig(frac_true=0.45, cutout_size=16, seed=3, workers=1)
    convert_cutouts(src, tmp_path / "one.h5", config, quiet=True)
    rep = convert_distributed(src, tmp_path / "dask.h5", config, chunk_size=5, client=client,
                              quiet=True)
    with open_datacube(tmp_path / "one.h5") as a, open_datacube(tmp_path / "dask.h5") as b:
        np.testing.assert_array_equal(a.read(slice(None)), b.read(slice(None)))
        assert a.table.colnames == b.table.colnames
        for name in a.table.colnames:
            np.testing.assert_array_equal(a.table[name], b.table[name])
        assert {k: v for k, v in a.attrs.items() if k != "cutouts"} == \
            {k: v for k, v in b.attrs.items() if k != "cutouts"}
    one = json.loads((tmp_path / "one.report.json").read_text())
    two = json.loads((tmp_path / "dask.report.json").read_text())
    assert {**one, "cube": ""} == {**two, "cube": ""}
    assert rep.n_true_edge == 1 and len(rep.problems) == 1


def test_strict_and_unreadable_first_chunk(client, folder, model_file, tmp_path):
    with pytest.raises(CutoutError, match=r"c_017b\.fits"):
        score_distributed(folder, model_file, client, strict=True, chunk_size=8, quiet=True)
    bad = [tmp_path / f"bad{i}.fits" for i in range(4)]
    for path in bad:
        path.write_bytes(b"junk")
    files = [*bad, *sorted(folder.glob("c_0[0-3]*.fits"))]
    with pytest.raises(OtrainError, match="none of the first 4 files"):
        score_distributed(files, model_file, client, chunk_size=4, quiet=True)
    with pytest.raises(OtrainError, match="chunk size"):
        infer_distributed(folder, model_file, tmp_path / "x.dat", chunk_size=0, client=client)


class KillFirstTask(distributed.WorkerPlugin):
    """Kill the worker process that starts the first otrain task (once: a marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing" and "otrain-score" in str(key):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os._exit(1)


def test_killed_worker_loses_and_doubles_nothing(client, folder, model_file, tmp_path,
                                                 one_thread):
    ref = infer(folder, model_file, tmp_path / "one.dat", workers=1, quiet=True)
    marker = tmp_path / "killed"
    client.register_plugin(KillFirstTask(str(marker)), name="kill-first")
    try:
        res = infer_distributed(folder, model_file, tmp_path / "dask.dat", chunk_size=4,
                                client=client, quiet=True)
    finally:
        client.unregister_worker_plugin("kill-first")
    assert marker.exists()  # a worker did die
    assert (tmp_path / "dask.dat").read_bytes() == (tmp_path / "one.dat").read_bytes()
    assert res.report.n_scored == ref.report.n_scored == 40


def test_bad_scheduler_and_missing_dask(monkeypatch, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(OtrainError, match="cannot connect to the Dask scheduler"):
        with dask_client(address, timeout=1):
            pass
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(OtrainError, match=r"otrain\[dask\]"):
        require_dask()


def test_cli_local_cluster_and_bad_scheduler(folder, model_file, tmp_path, monkeypatch):
    out = tmp_path / "cli.dat"
    run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(model_file), "--output",
            str(out), "--scheduler", "local", "--workers", "2", "--chunk-size", "7", "--quiet",
            "--precision", "fp32", check=True)  # the API's default (the CLI's is auto)
    ref = infer(folder, model_file, tmp_path / "one.dat", workers=1, quiet=True).table
    table = ascii.read(out, format="commented_header")
    assert list(table["filename"]) == list(ref["filename"])
    np.testing.assert_allclose(table["label1"], ref["label1"], atol=1e-6, rtol=0)
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "1s")
    address = f"tcp://127.0.0.1:{_free_port()}"
    proc = run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(model_file),
                   "--output", str(tmp_path / "x.dat"), "--scheduler", address)
    assert_clean_error(proc, "cannot connect to the Dask scheduler", address)
    assert proc.returncode == 2 and not (tmp_path / "x.dat").exists()
    proc = run_cli("otrain-convert", "--cutouts", str(folder), "--path", str(tmp_path),
                   "--cube", "c", "--scheduler", address)
    assert_clean_error(proc, "cannot connect to the Dask scheduler")


def test_cli_alerts_on_local_cluster(tmp_path, ztf_dir):
    model = _alert_model(tmp_path / "m.safetensors")
    out = tmp_path / "alerts.csv"
    proc = run_cli("otrain-infer", "--cutouts", str(ztf_dir / "ztf_alerts_v3.0.avro"),
                   "--model", str(model), "--output", str(out), "--scheduler", "local",
                   "--workers", "1", check=True)
    assert "scored 30" in proc.stdout
    table = ascii.read(out, format="csv")
    assert len(table) == 30 and table.colnames[:2] == ["candid", "objectId"]


def test_ensemble_same_table_as_one_process(client, folder, tmp_path, one_thread):
    """An ensemble file with a temperature: the Dask workers score it as one process does
    (p_real_std included); MC-dropout is refused on Dask with a clear message."""
    torch.manual_seed(3)
    nets = [build_model("otrain", 1, SIZE, 0.3) for _ in range(3)]
    model = save_model(tmp_path / "ens.safetensors", nets,
                       {"normalisation": "zscore", "channels": ["diff"], "temperature": 1.6})
    ref = infer(folder, model, tmp_path / "one.dat", workers=1, quiet=True)
    assert "p_real_std" in ref.table.colnames
    out = tmp_path / "dask.dat"
    infer_distributed(folder, model, out, chunk_size=6, client=client, quiet=True)
    assert out.read_bytes() == (tmp_path / "one.dat").read_bytes()
    with pytest.raises(OtrainError, match="mc-samples is not available with --scheduler"):
        infer_distributed(folder, model, tmp_path / "mc.dat", client=client, quiet=True,
                          mc_samples=2)
