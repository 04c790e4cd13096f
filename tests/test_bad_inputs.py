"""Bad inputs from issue 17 that used to end in a traceback, a cut message or a wrong file:
each is now one line naming the file and the problem."""

from __future__ import annotations

import gzip
import json
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import assert_clean_error, make_labelled_folder, run_cli, write_cutout
from otrain.cli.main import _execute
from otrain.cutouts.reading import read_cutout
from otrain.datacube.hdf5 import open_datacube, write_datacube
from otrain.errors import CutoutError, ModelFileError, OtrainError
from otrain.models.integrity import DIGEST_KEY
from otrain.models.modelfile import METADATA_KEY, load_model, read_metadata, save_model
from otrain.models.networks import build_model
from otrain.training.config import TrainConfig
from otrain.training.loop import train
from otrain.training.outputs import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("m") / "m.safetensors",
                      build_model("otrain", 1, 16, 0.0),
                      {"normalisation": "zscore", "channels": ["diff"]})


def _rewrite(src: Path, dst: Path, meta_change: dict | None = None, drop: tuple = (),
             tensor_change=None) -> Path:
    """Copy a model file with changed metadata / tensors (written directly, as a tamperer)."""
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_change or {})
    for key in drop:
        meta.pop(key)
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, str(dst), metadata={METADATA_KEY: json.dumps(meta)})
    return dst


# --- cutouts ------------------------------------------------------------------------------
def test_gzip_with_corrupt_body(tmp_path: Path) -> None:
    good = write_cutout(tmp_path / "a.fits", np.ones((8, 8)))
    data = bytearray(gzip.compress(good.read_bytes()))
    data[30:60] = b"x" * 30
    bad = tmp_path / "b.fits.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CutoutError, match="corrupt gzip data") as info:
        read_cutout(bad)
    assert info.value.path == str(bad)


def test_trailing_bytes_and_naxis_zero_told_apart(tmp_path: Path) -> None:
    good = write_cutout(tmp_path / "a.fits", np.arange(64.0).reshape(8, 8))
    trailing = tmp_path / "t.fits"
    trailing.write_bytes(good.read_bytes() + b"garbage after the end" * 10)
    np.testing.assert_array_equal(read_cutout(trailing).image, read_cutout(good).image)
    with warnings.catch_warnings(), fits.open(trailing) as hdul:  # astropy reads it too
        warnings.simplefilter("ignore")
        assert hdul[0].data.shape == (8, 8)
    zero = tmp_path / "z.fits"
    raw = bytearray(good.read_bytes())
    i = raw.index(b"NAXIS1  =")
    raw[i:i + 80] = fits.Card("NAXIS1", 0).image.encode()
    zero.write_bytes(bytes(raw))
    with pytest.raises(CutoutError) as info:
        read_cutout(zero)
    assert "truncated" not in str(info.value)


# --- cubes --------------------------------------------------------------------------------
def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_crc_damage(tmp_path: Path) -> None:
    path = _npz(tmp_path / "c.npz", cube=np.ones((4, 8, 8, 1), np.float32),
                labels=np.array([0, 1, 0, 1]))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("cube.npy")
    start = info.header_offset + 30 + len(info.filename) + 200
    raw[start:start + 4] = b"\x07\x07\x07\x07"
    path.write_bytes(bytes(raw))
    with pytest.raises(OtrainError, match=r"damaged or unsupported \.npz") as exc:
        open_datacube(path)
    assert exc.value.path == str(path)


def test_npz_unknown_compression(tmp_path: Path) -> None:
    """Found by benchmarks/fuzz.py: zipfile's NotImplementedError escaped."""
    path = _npz(tmp_path / "c.npz", cube=np.ones((4, 8, 8, 1), np.float32),
                labels=np.array([0, 1, 0, 1]))
    raw = bytearray(path.read_bytes())
    for magic, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = 0
        while (start := raw.find(magic, start)) >= 0:
            raw[start + offset:start + offset + 2] = (99).to_bytes(2, "little")
            start += 4
    path.write_bytes(bytes(raw))
    with pytest.raises(OtrainError, match="NotImplementedError"):
        open_datacube(path)


@pytest.mark.parametrize(("labels", "message"), [
    (np.array(["a", "b", "a", "b"], dtype=object), "damaged or unsupported"),
    (np.array(["real", "bogus", "real", "bogus"]), "must be numbers"),
    (np.eye(3)[[0, 1, 2, 0]], "2 columns"),
    (np.array([0, 1, 2, 1]), "not 0 \\(bogus\\), 1 \\(real\\) or -1"),
])
def test_npz_bad_labels(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    path = tmp_path / "c.npz"
    np.savez(path, cube=np.ones((4, 8, 8, 1), np.float32), labels=labels)
    with pytest.raises(OtrainError, match=message):
        open_datacube(path)


def _cube(path: Path, labels=(0, 1, 0, 1)) -> Path:
    return write_datacube(path, np.ones((4, 1, 8, 8), np.float32),
                          {"candid": np.arange(4), "label": np.asarray(labels)}, ["diff"])


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: f.__delitem__("table"), "no 'table'"),
    (lambda f: f.attrs.__setitem__("channels", "[diff"), "'channels' is not valid JSON"),
    (lambda f: f.attrs.__setitem__("channels", "{}"), "'channels' must be a list"),
    (lambda f: f["table"].attrs.__setitem__("columns", "nope"), "'columns' is not valid JSON"),
    (lambda f: f["table"].attrs.__setitem__("columns", '["candid", "zz"]'), "'zz' is missing"),
])
def test_damaged_hdf5_cube(tmp_path: Path, damage, message: str) -> None:
    path = _cube(tmp_path / "c.h5")
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(OtrainError, match=message) as info:
        open_datacube(path)
    assert info.value.path == str(path)


def test_hdf5_labels_outside_classes(tmp_path: Path) -> None:
    with pytest.raises(OtrainError, match="1 label\\(s\\) are not 0"):
        open_datacube(_cube(tmp_path / "c.h5", labels=(0, 1, 7, 1)))


# --- model files --------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "drop", "message"), [
    ({"input_size": "abc"}, (), "'input_size' must be \\[height, width\\]"),
    ({"threshold": "high"}, (), "'threshold' must be a number in \\[0, 1\\]"),
    ({}, ("channels",), "lacks 'channels'"),
    ({"normalisation": "weird"}, (), "unknown normalisation 'weird'"),
    ({"in_channels": 0}, (), "'in_channels' must be a positive"),
])
def test_bad_model_metadata(model_file: Path, tmp_path: Path, change: dict, drop: tuple,
                            message: str) -> None:
    bad = _rewrite(model_file, tmp_path / "bad.safetensors", change, drop)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(bad)
    assert info.value.path == str(bad)


def test_state_dict_mismatch_says_what(model_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(model_file, tmp_path / "bad.safetensors", {DIGEST_KEY: None},
                   tensor_change=lambda t: t.pop(sorted(t)[0]))
    with pytest.raises(ModelFileError, match="Missing key") as info:
        load_model(bad)
    assert not str(info.value).rstrip().endswith(":")


def test_checksum_catches_a_flipped_bit(model_file: Path, tmp_path: Path) -> None:
    raw = bytearray(model_file.read_bytes())
    raw[-100] ^= 0x04  # a bit in the last tensor's bytes
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="do not match the checksum"):
        load_model(bad)
    assert DIGEST_KEY in read_metadata(model_file)


def test_model_without_checksum_still_loads(model_file: Path, tmp_path: Path) -> None:
    old = _rewrite(model_file, tmp_path / "old.safetensors", drop=(DIGEST_KEY,))
    loaded = load_model(old)
    for k, v in load_model(model_file).model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v)


def test_nan_weights_refused(model_file: Path, tmp_path: Path) -> None:
    def poison(t: dict) -> None:
        name = next(k for k in sorted(t) if t[k].is_floating_point())
        t[name] = torch.full_like(t[name], float("nan"))

    bad = _rewrite(model_file, tmp_path / "nan.safetensors", drop=(DIGEST_KEY,),
                   tensor_change=poison)
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        load_model(bad)
    proc = run_cli("otrain-infer", "--cutouts", str(tmp_path), "--model", str(bad))
    assert_clean_error(proc, "nan.safetensors", "NaN or infinite")


# --- training -----------------------------------------------------------------------------
def test_diverging_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cube = write_datacube(tmp_path / "c.h5", rng.normal(size=(80, 1, 16, 16)).astype(np.float32),
                          {"candid": np.arange(80), "label": np.arange(80) % 2}, ["diff"])
    with pytest.raises(OtrainError, match="training diverged at epoch 1"):
        train(cube, tmp_path / "out", "m", TrainConfig(epochs=2, lr=1e6, batch_size=16),
              quiet=True)
    assert not list((tmp_path / "out").rglob("*.safetensors"))


def test_checkpoint_without_expected_keys(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "epoch": 1}, path)
    with pytest.raises(OtrainError, match="not an otrain training checkpoint: no config"):
        read_checkpoint(path)


def test_train_workers_capped(tmp_path: Path) -> None:
    from otrain.training.checks import loader_workers

    assert loader_workers(1000, quiet=True) <= 64
    assert loader_workers(0, quiet=True) == 0


# --- command line -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", "../../x", ".hidden", "a/b"])
def test_convert_cube_name_must_be_plain(tmp_path: Path, name: str) -> None:
    make_labelled_folder(tmp_path / "c", 2, 2)
    proc = run_cli("otrain-convert", "--path", str(tmp_path / "out"), "--cube", name,
                   "--cutouts", str(tmp_path / "c"))
    assert_clean_error(proc, "is not a plain file name")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.h5").exists()


def test_infer_output_is_a_folder(model_file: Path, tmp_path: Path) -> None:
    make_labelled_folder(tmp_path / "c", 2, 0)
    proc = run_cli("otrain-infer", "--cutouts", str(tmp_path / "c" / "true"), "--model",
                   str(model_file), "--output", str(tmp_path))
    assert_clean_error(proc, str(tmp_path), "is a folder")


def test_missing_scheduler_file(model_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    make_labelled_folder(tmp_path / "c", 2, 0)
    proc = run_cli("otrain-infer", "--cutouts", str(tmp_path / "c" / "true"), "--model",
                   str(model_file), "--output", str(tmp_path / "o.dat"), "--scheduler",
                   str(tmp_path / "nosuch.json"))
    assert_clean_error(proc, "nosuch.json", "no such Dask scheduler file")


def test_warnings_are_one_line(capsys: pytest.CaptureFixture) -> None:
    def run(args: object) -> int:
        warnings.warn("something odd\nover two lines", UserWarning, stacklevel=1)
        return 0

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert _execute("otrain-x", run, None) == 0
    err = capsys.readouterr().err
    assert err == "otrain-x: warning: something odd over two lines (UserWarning)\n"


def test_non_finite_scores_are_an_error(model_file: Path, tmp_path: Path) -> None:
    """Finite but absurd weights overflow: every score NaN -> one line naming the model."""
    def blow_up(t: dict) -> None:
        for name in t:
            if t[name].is_floating_point() and "weight" in name:
                t[name] = t[name] * 1e30

    bad = _rewrite(model_file, tmp_path / "huge.safetensors", drop=(DIGEST_KEY,),
                   tensor_change=blow_up)
    make_labelled_folder(tmp_path / "c", 3, 0)
    out = tmp_path / "o.dat"
    proc = run_cli("otrain-infer", "--cutouts", str(tmp_path / "c" / "true"), "--model",
                   str(bad), "--output", str(out))
    assert_clean_error(proc, "huge.safetensors", "gives no finite score")
    assert not out.exists()


def test_some_non_finite_scores_counted() -> None:
    from astropy.table import Table

    from otrain.inference.scoring import InferReport, account

    report = InferReport()
    account(report, Table({"label1": [0.2, np.nan, 0.9], "edge": [False] * 3}), 0.5)
    assert report.n_nonfinite == 1
    assert "note: 1 of 3 scores are not finite" in report.summary()


@pytest.mark.parametrize("size", ["0", "-2"])
def test_impossible_cutout_size_is_refused_before_reading(tmp_path: Path, size: str) -> None:
    src = make_labelled_folder(tmp_path / "cut", 3, 3)
    proc = run_cli("otrain-convert", "--path", str(tmp_path / "out"), "--cube", "c",
                   "--cutouts", str(src), "--cutout-size", size)
    assert_clean_error(proc, "--cutout-size must be a positive number of pixels or -1")
    assert "reading" not in proc.stderr  # no file was read first
    from otrain.convert.folders import ConvertConfig

    with pytest.raises(OtrainError, match="cutout-size"):
        ConvertConfig(cutout_size=int(size))
