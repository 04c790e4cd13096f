"""Tests of otrain.inference and otrain-infer: folders, cubes, output formats, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import ascii
from astropy.table import Table

from conftest import assert_clean_error, make_labelled_folder, run_cli, write_cutout, write_mef
from otrain.convert.folders import ConvertConfig, convert_cutouts
from otrain.errors import OtrainError
from otrain.inference.core import (
    ORIGINAL_COLUMNS,
    infer,
    score_cutouts,
    score_datacube,
    write_scores,
)
from otrain.models.modelfile import load_model, predict_proba, save_model
from otrain.models.networks import build_model

SIZE = 16


def _save(path: Path, channels: list[str], seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = build_model("otrain", len(channels), SIZE, 0.0)
    return save_model(path, model, {"normalisation": "zscore", "channels": channels})


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("model") / "m.safetensors", ["diff"])


@pytest.fixture(scope="module")
def loaded(model_file: Path):
    return load_model(model_file)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Twelve 20x20 cutouts (cropped to the model's 16x16), with a bright source in some."""
    rng = np.random.default_rng(1)
    root = tmp_path / "cutouts"
    for i in range(12):
        image = rng.normal(size=(20, 20))
        image[8:12, 8:12] += 10.0 * (i % 3)
        write_cutout(root / f"c_{i:03d}.fits", image)
    return root


def test_folder_and_datacube_agree(tmp_path: Path, loaded) -> None:
    root = make_labelled_folder(tmp_path / "labelled", 6, 6, size=20, seed=3)
    cube = tmp_path / "cube.h5"
    convert_cutouts(root, cube, ConvertConfig(workers=1), quiet=True)
    files = sorted(root.glob("*/*.fits"))
    by_files = score_cutouts(files, loaded, workers=1, quiet=True).table
    by_cube = score_datacube(cube, loaded, quiet=True).table
    assert len(by_cube) == len(by_files) == 12
    assert list(by_cube.colnames) == [*ORIGINAL_COLUMNS, "edge", "label"]
    scores = dict(zip(by_files["filename"], by_files["label1"], strict=True))
    for name, p, label in by_cube.iterrows("filename", "label1", "label"):
        assert abs(scores[name] - p) < 1e-6
        assert label == (1 if "/true/" in name else 0)
    # The scores are those of the plain predict_proba on the cropped images.
    from otrain.cutouts.reading import read_cutout
    images = np.stack([read_cutout(f, ("diff",), SIZE).image for f in files])
    np.testing.assert_allclose(by_files["label1"], predict_proba(loaded, images), atol=1e-6)
    np.testing.assert_allclose(by_files["label0"] + by_files["label1"], 1.0, atol=1e-12)


def test_npz_cube_uses_candid_as_filename(tmp_path: Path, loaded) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cube.npz", cube=rng.normal(size=(5, SIZE, SIZE, 1)).astype(np.float32),
             labels=np.array([1, 0, 1, 0, 1]), candids=np.array([f"cand{i}" for i in range(5)]))
    table = score_datacube(tmp_path / "cube.npz", loaded, threshold=0.5, quiet=True).table
    assert list(table["filename"]) == [f"cand{i}" for i in range(5)]
    assert list(table["label"]) == [1, 0, 1, 0, 1]
    assert np.all(np.isnan(table["RA"]))
    assert list(table["class"]) == [int(p > 0.5) for p in table["label1"]]


def test_dat_layout_reads_back(folder: Path, model_file: Path) -> None:
    result = infer(folder, model_file, workers=1, quiet=True)
    out = folder / "infer_results.dat"
    assert result.report.output == str(out)
    first = out.read_text().splitlines()[0]
    assert first == "# " + " ".join([*ORIGINAL_COLUMNS, "edge"])
    for back in (ascii.read(out), Table.read(out, format="ascii.commented_header")):
        assert back.colnames == [*ORIGINAL_COLUMNS, "edge"]
        assert len(back) == 12
        # probabilities are written with 10 decimals (otrain.inference.tables)
        np.testing.assert_allclose(back["label1"], result.table["label1"], rtol=0, atol=1e-10)
    assert list(back["filename"]) == [str(folder / f"c_{i:03d}.fits") for i in range(12)]
    assert list(back["cand_ID"]) == [f"c_{i:03d}" for i in range(12)]


def test_missing_keywords_and_edge(tmp_path: Path, loaded) -> None:
    root = tmp_path / "cut"
    rng = np.random.default_rng(2)
    write_cutout(root / "a.fits", rng.normal(size=(SIZE, SIZE)))
    write_cutout(root / "b.fits", rng.normal(size=(SIZE, SIZE)), RA=None, DEC=None, FILE=None,
                 CANDID=None, MAG=None, FWHMPSF=None, EDGE=None)
    write_cutout(root / "c.fits", rng.normal(size=(SIZE, SIZE)), EDGE="True")
    write_mef(root / "d.fits", {"DIFF": rng.normal(size=(SIZE, SIZE))}, EDGE=True)
    result = score_cutouts(root, loaded, workers=1, threshold=0.5, quiet=True)
    t = result.table
    assert len(t) == 4 and result.report.n_edge == 2
    assert list(t["edge"]) == [False, False, True, True]
    assert np.isnan(t["RA"][1]) and np.isnan(t["Dec"][1]) and np.isnan(t["mag"][1])
    assert t["originalFile"][1] == "" and t["cand_ID"][1] == ""
    for name in ("x.dat", "x.csv", "x.ecsv"):
        write_scores(t, tmp_path / name)
        back = Table.read(tmp_path / name, format={"dat": "ascii.commented_header",
                                                   "csv": "ascii.csv",
                                                   "ecsv": "ascii.ecsv"}[name[2:]])
        assert back.colnames == [*ORIGINAL_COLUMNS, "edge", "class"], name
        assert len(back) == 4
        assert not back["originalFile"][1], name  # empty (masked) string, not a shifted column
        assert np.isnan(back["RA"][1]) and back["Xpos"][1] == 100.0
        np.testing.assert_allclose(back["label1"], t["label1"], rtol=0, atol=1e-10)
    ecsv = Table.read(tmp_path / "x.ecsv")
    assert ecsv["edge"].dtype == bool and list(ecsv["edge"]) == [False, False, True, True]


def test_unreadable_skipped_and_listed(folder: Path, loaded) -> None:
    (folder / "broken.fits").write_bytes(b"not a fits file")
    result = score_cutouts(folder, loaded, workers=1, quiet=True)
    assert len(result.table) == 12 and result.report.n_skipped == 1
    assert result.report.skipped[0][0] == str(folder / "broken.fits")
    assert "skipped" in result.report.summary() and "broken.fits" in result.report.summary()
    with pytest.raises(OtrainError, match=r"broken\.fits"):
        score_cutouts(folder, loaded, workers=1, strict=True, quiet=True)


def test_workers_give_identical_tables(tmp_path: Path, loaded) -> None:
    root = make_labelled_folder(tmp_path / "many", 20, 20, size=SIZE, seed=5)
    files = sorted(root.glob("*/*.fits"))
    (root / "true" / "t_007.fits").write_bytes(b"broken")
    one = score_cutouts(files, loaded, workers=1, batch_size=8, quiet=True)
    two = score_cutouts(files, loaded, workers=2, batch_size=8, quiet=True)
    assert one.report.n_skipped == two.report.n_skipped == 1
    assert len(one.table) == 39
    for name in one.table.colnames:
        assert np.array_equal(np.asarray(one.table[name]), np.asarray(two.table[name]),
                              equal_nan=one.table[name].dtype.kind == "f"), name


def test_api_errors(tmp_path: Path, folder: Path, model_file: Path, loaded) -> None:
    with pytest.raises(OtrainError, match="unknown output format"):
        infer(folder, model_file, tmp_path / "out.txt", quiet=True)
    with pytest.raises(OtrainError, match="no such folder or file"):
        infer(tmp_path / "nowhere", model_file, tmp_path / "o.dat", quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OtrainError, match="no cutout files"):
        score_cutouts(tmp_path / "empty", loaded, quiet=True)
    with pytest.raises(OtrainError, match="model expects 1 channel"):
        score_cutouts(folder, loaded, channels=("sci",), quiet=True)


# -- command line ---------------------------------------------------------------------------
def test_cli_scores_folder_and_refuses_overwrite(folder: Path, model_file: Path) -> None:
    (folder / "broken.fits").write_bytes(b"junk")
    proc = run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(model_file),
                   "--prob-ratio", "0.01", "--threshold", "model", "--workers", "1", check=True)
    out = folder / "infer_results.dat"
    assert "scored 12 of 13" in proc.stdout and "skipped: 1" in proc.stdout
    assert str(out) in proc.stdout
    table = ascii.read(out)
    assert table.colnames == [*ORIGINAL_COLUMNS, "edge", "class"]
    before = out.read_text()
    proc = run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(model_file))
    assert_clean_error(proc, "already exists", "--overwrite")
    assert out.read_text() == before
    proc = run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(model_file),
                   "--overwrite", "--strict", "-q")
    assert_clean_error(proc, "broken.fits", "--strict")
    assert proc.returncode == 2
    csv = folder / "scores.csv"
    run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(model_file),
            "--output", str(csv), "-q", check=True)
    assert Table.read(csv, format="ascii.csv").colnames == [*ORIGINAL_COLUMNS, "edge"]


def test_cli_wrong_channels_and_not_a_model(tmp_path: Path, folder: Path) -> None:
    three = _save(tmp_path / "three.safetensors", ["diff", "sci", "ref"])
    proc = run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(three))
    assert_clean_error(proc, "single-image file cannot give channels diff,sci,ref")
    assert proc.returncode == 2
    assert not (folder / "infer_results.dat").exists()
    fake = tmp_path / "fake.safetensors"
    fake.write_text("hello")
    proc = run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(fake))
    assert_clean_error(proc, "not a model file")
    assert proc.returncode == 2


def test_three_channel_mef(tmp_path: Path) -> None:
    loaded3 = load_model(_save(tmp_path / "m3.safetensors", ["diff", "sci", "ref"]))
    rng = np.random.default_rng(4)
    for i in range(3):
        write_mef(tmp_path / "mef" / f"m{i}.fits",
                  {n: rng.normal(size=(SIZE, SIZE)) for n in ("SCI", "REF", "DIFF")})
    result = score_cutouts(tmp_path / "mef", loaded3, workers=1, quiet=True)
    assert len(result.table) == 3 and result.report.n_skipped == 0
    images = np.stack([np.stack([fits_plane(tmp_path / "mef" / f"m{i}.fits", n)
                                 for n in ("DIFF", "SCI", "REF")]) for i in range(3)])
    np.testing.assert_allclose(result.table["label1"], predict_proba(loaded3, images), atol=1e-6)


def fits_plane(path: Path, name: str) -> np.ndarray:
    from astropy.io import fits

    with fits.open(path) as hdus:
        return np.asarray(hdus[name].data, dtype=np.float32)
