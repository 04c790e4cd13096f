"""Data that would give a silently wrong cube or model: duplicates, contradictory labels,
non-numeric keywords, broken links, one-sided or constant training data (issue 17 items 5-6)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_error, make_labelled_folder, run_cli, write_cutout
from otrain.convert.folders import ConvertConfig, convert_cutouts
from otrain.datacube.hdf5 import open_datacube, write_datacube
from otrain.errors import OtrainError
from otrain.training.sanity import training_data_notes
from otrain.training.splits import Split


def test_duplicates_and_contradictions_warned(tmp_path: Path) -> None:
    root = make_labelled_folder(tmp_path / "c", 4, 4)
    shutil.copy(root / "true" / "t_000.fits", root / "false" / "f_copy.fits")  # both classes
    rng = np.random.default_rng(5)
    write_cutout(root / "true" / "t_dup.fits", rng.normal(size=(16, 16)), CANDID="t_001")
    report = convert_cutouts(root, tmp_path / "cube.h5", ConvertConfig(frac_true=0.5, seed=1),
                             quiet=True)
    text = "\n".join(report.notes)
    assert "2 CANDID(s) appear more than once" in text
    assert "1 image(s) appear more than once" in text
    assert "1 candidate(s) are labelled both real and bogus" in text and "t_000" in text
    saved = json.loads((tmp_path / "cube.report.json").read_text())
    assert any("labelled both real and bogus" in n for n in saved["notes"])


def test_clean_folder_has_no_duplicate_warning(tmp_path: Path) -> None:
    root = make_labelled_folder(tmp_path / "c", 3, 3)
    report = convert_cutouts(root, tmp_path / "cube.h5", ConvertConfig(frac_true=0.5),
                             quiet=True)
    assert not [n for n in report.notes if "more than once" in n or "both real" in n]


def test_non_numeric_keywords_listed(tmp_path: Path) -> None:
    root = make_labelled_folder(tmp_path / "c", 2, 2)
    rng = np.random.default_rng(3)
    write_cutout(root / "true" / "t_abc.fits", rng.normal(size=(16, 16)), MAG="abc")
    write_cutout(root / "false" / "f_t.fits", rng.normal(size=(16, 16)), MAG=True)
    report = convert_cutouts(root, tmp_path / "cube.h5", ConvertConfig(frac_true=0.5),
                             quiet=True)
    listed = "\n".join(report.bad_keywords)
    assert "t_abc.fits: MAG='abc'" in listed and "f_t.fits: MAG=True" in listed
    assert "2 file(s) have header values that are not numbers" in report.summary()
    with open_datacube(tmp_path / "cube.h5") as cube:
        mags = dict(zip(np.asarray(cube.table["candid"]).astype(str),
                        np.asarray(cube.table["mag"]), strict=True))
    assert np.isnan(mags["f_t"])  # a logical T is not a magnitude of 1.0


def test_broken_symlinks_listed_and_strict(tmp_path: Path) -> None:
    root = make_labelled_folder(tmp_path / "c", 2, 2)
    os.symlink(tmp_path / "nowhere.fits", root / "true" / "dangling.fits")
    os.symlink(root / "true" / "loop.fits", root / "true" / "loop.fits")
    report = convert_cutouts(root, tmp_path / "cube.h5", ConvertConfig(frac_true=0.5),
                             quiet=True)
    problems = "\n".join(report.problems)
    assert "dangling.fits" in problems and "loop.fits" in problems
    proc = run_cli("otrain-convert", "--path", str(tmp_path / "o"), "--cube", "c", "--cutouts",
                   str(root), "--strict")
    assert_clean_error(proc, "dangling.fits")


def _cube(path: Path, images: np.ndarray, labels: np.ndarray, candid=None):
    n = len(labels)
    cand = np.arange(n).astype(str) if candid is None else np.asarray(candid)
    return open_datacube(write_datacube(path, images.astype(np.float32),
                                        {"candid": cand, "label": labels}, ["diff"]))


def test_training_notes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 1, 8, 8))
    images[3] = 7.0  # a constant image
    labels = np.array([0, 1] * 6)
    candid = [str(i) for i in range(11)] + ["0"]  # CANDID 0 twice, once real once bogus
    split = Split(train=np.arange(8), val=np.array([9, 11]), test=np.array([8, 10]))
    with _cube(tmp_path / "c.h5", images, labels, candid) as cube:
        notes = "\n".join(training_data_notes(cube, labels, split, batch_size=64))
    assert "1 CANDID(s) appear more than once" in notes
    assert "labelled both real and bogus" in notes
    assert "8 training rows, fewer than one batch (64)" in notes
    assert "1 of 8 training cutouts are constant" in notes
    assert "the validation part has no bogus row" in notes
    assert "the test part has no real row" in notes


def test_all_constant_training_images_refused(tmp_path: Path) -> None:
    labels = np.array([0, 1] * 5)
    split = Split(train=np.arange(6), val=np.array([6, 7]), test=np.array([8, 9]))
    with _cube(tmp_path / "c.h5", np.ones((10, 1, 8, 8)), labels) as cube, \
            pytest.raises(OtrainError, match="all 6 training cutouts are constant images"):
        training_data_notes(cube, labels, split, batch_size=4)
