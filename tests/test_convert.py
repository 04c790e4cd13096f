"""otrain-convert: balancing, edge exclusion, cropping, sizes, bad files; API and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_clean_error, make_labelled_folder, run_cli, write_cutout
from otrain.convert.folders import ConvertConfig, class_counts, convert_cutouts
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError


def _convert(src, tmp_path, name="cube", **kw):
    out = tmp_path / "out" / f"{name}.h5"
    report = convert_cutouts(src, out, ConvertConfig(**kw), quiet=True)
    return report, open_datacube(out)


@pytest.mark.parametrize("frac, expected", [(0.5, (20, 20)), (0.3, (20, 46)), (1.0, (20, 0))])
def test_frac_true(tmp_path, frac, expected):
    src = make_labelled_folder(tmp_path / "cut", 20, 60)
    report, cube = _convert(src, tmp_path, frac_true=frac)
    n_true, n_false = int((cube.labels == 1).sum()), int((cube.labels == 0).sum())
    assert (n_true, n_false) == expected == (report.n_true_kept, report.n_false_kept)
    assert len(cube) == sum(expected)


def test_class_counts_rules():
    assert class_counts(1000, 5000, 0.5) == (1000, 1000)
    assert class_counts(1000, 5000, 0.7) == (1000, 428)  # cannot reach 1400 true: keep ratio
    assert class_counts(5000, 1000, 0.0) == (0, 1000)
    with pytest.raises(OtrainError, match="between 0 and 1"):
        class_counts(10, 10, 1.5)


def test_random_choice_is_seeded(tmp_path):
    src = make_labelled_folder(tmp_path / "cut", 10, 40)
    picks = []
    for seed in (1, 1, 2):
        out = tmp_path / f"c{len(picks)}.h5"
        convert_cutouts(src, out, ConvertConfig(seed=seed), quiet=True)
        picks.append(list(open_datacube(out).table["candid"]))
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert sum(c.startswith("f_") for c in picks[0]) == 10


def test_edge_cutouts_excluded_and_counts_honest(tmp_path):
    src = make_labelled_folder(tmp_path / "cut", 7, 10)
    for i, value in enumerate(["True", True, "true"]):  # string and logical spellings
        write_cutout(src / "true" / f"edge_{i}.fits", np.zeros((16, 16)), EDGE=value)
    report, cube = _convert(src, tmp_path)
    assert report.n_true_edge == 3 and report.n_true_usable == 7
    assert (report.n_true_kept, report.n_false_kept) == (7, 7)
    assert not any(str(c).startswith("edge") for c in cube.table["candid"])
    assert "Ntrue = 7 and Nfalse = 7" in report.summary()


def test_crop_and_mixed_sizes(tmp_path):
    src = make_labelled_folder(tmp_path / "cut", 4, 4, size=16)
    write_cutout(src / "false" / "big.fits", np.zeros((20, 20)))
    with pytest.raises(OtrainError) as err:
        _convert(src, tmp_path, name="a", frac_true=0.0)
    assert "t_000.fits is 16x16" in str(err.value) and "big.fits is 20x20" in str(err.value)
    _, cube = _convert(src, tmp_path, name="b", cutout_size=12)
    assert cube.image_shape == (1, 12, 12)


def test_crop_larger_than_cutout_is_reported(tmp_path):
    src = make_labelled_folder(tmp_path / "cut", 3, 3, size=16)
    write_cutout(src / "true" / "small.fits", np.zeros((8, 8)))
    report, cube = _convert(src, tmp_path, cutout_size=10)
    assert len(report.problems) == 1 and "small.fits" in report.problems[0]
    assert len(cube) == 6


def test_bad_files_skipped_and_listed_or_fatal_with_strict(tmp_path):
    src = make_labelled_folder(tmp_path / "cut", 5, 5)
    (src / "false" / "broken.fits").write_bytes(b"\0" * 100)
    write_cutout(src / "true" / "nokey.fits", np.zeros((16, 16)), FWHM=None)
    report, cube = _convert(src, tmp_path)
    assert len(report.problems) == 2 and len(cube) == 10
    saved = json.loads((tmp_path / "out" / "cube.report.json").read_text())
    assert any("broken.fits" in p for p in saved["problems"])
    assert any("nokey.fits" in p and "FWHM" in p for p in saved["problems"])
    (src / "true" / "nokey.fits").unlink()
    with pytest.raises(OtrainError, match=r"broken\.fits"):
        _convert(src, tmp_path, name="strict", strict=True)


def test_missing_class_folder(tmp_path):
    make_labelled_folder(tmp_path / "cut", 3, 0)
    with pytest.raises(OtrainError, match="no 'false/' folder"):
        _convert(tmp_path / "cut", tmp_path)


def test_workers_give_the_same_cube(tmp_path):
    src = make_labelled_folder(tmp_path / "cut", 300, 300, size=8)
    _, one = _convert(src, tmp_path, name="one", workers=1)
    _, two = _convert(src, tmp_path, name="two", workers=2)
    assert list(one.table["candid"]) == list(two.table["candid"])
    np.testing.assert_array_equal(one.read(slice(None)), two.read(slice(None)))


def test_cli_convert(tmp_path):
    src = make_labelled_folder(tmp_path / "cut", 6, 9)
    proc = run_cli("otrain-convert", "--path", str(tmp_path / "o"), "--cube", "c", "--cutouts",
                   str(src), "--frac-true", "0.5", "--seed", "3", check=True)
    assert "The datacube contains 12 candidates with Ntrue = 6 and Nfalse = 6" in proc.stdout
    cube = open_datacube(tmp_path / "o" / "datacube" / "c.h5")
    assert len(cube) == 12 and cube.attrs["seed"] == 3
    again = run_cli("otrain", "convert", "--path-datacube", str(tmp_path / "o"), "--cube", "c",
                    "--cutouts", str(src))
    assert_clean_error(again, "c.h5", "--overwrite")
    run_cli("otrain", "convert", "--path-datacube", str(tmp_path / "o"), "--cube", "c",
            "--cutouts", str(src), "--overwrite", "--quiet", check=True)


def test_cli_bad_input_is_one_line(tmp_path):
    proc = run_cli("otrain-convert", "--path", str(tmp_path), "--cube", "c", "--cutouts",
                   str(tmp_path / "nowhere"))
    assert_clean_error(proc, "nowhere", "no 'true/' folder")
    src = make_labelled_folder(tmp_path / "cut", 2, 2)
    (src / "true" / "bad.fits").write_text("hello")
    proc = run_cli("otrain-convert", "--path", str(tmp_path), "--cube", "c", "--cutouts",
                   str(src), "--strict")
    assert_clean_error(proc, "bad.fits", "unreadable")
    assert not (tmp_path / "datacube" / "c.h5").exists()


def test_cli_version():
    proc = run_cli("otrain", "--version", check=True)
    assert proc.stdout.startswith("otrain ")


def test_the_cutout_converter_loads_no_alert_reader_and_its_names_resolve() -> None:
    """otrain-convert --cutouts starts without the alert readers (otrain.convert's names are
    imported on first use); every public name still resolves."""
    import subprocess
    import sys

    code = ("import sys, otrain.cli.convert; "
            "print(sorted(m for m in ('otrain.alerts', 'otrain.convert.alerts', 'fastavro', "
            "'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
    import otrain.convert as conv

    for name in conv.__all__:
        value = getattr(conv, name)
        assert not isinstance(value, type(conv)), name  # a class or function, not a module
        assert value.__module__.startswith("otrain.convert."), name
    with pytest.raises(AttributeError):
        conv.no_such_name  # noqa: B018
