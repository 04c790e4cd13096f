"""One CLI: every command spelled and behaving alike (issue 15, item 6).

``allow_abbrev=False``, ``--version``, ``--device auto``, an ``otrain-<name>`` script for every
``otrain <name>``, ``--model`` naming a model file, ``--threshold model|X`` defaulting to the
model's threshold, outputs that never create missing parent folders, and ``otrain
set-threshold``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import BIN, assert_clean_error, run_cli
from otrain._version import __version__
from otrain.cli import main as cli_main
from otrain.models.modelfile import read_metadata
from test_diagnostics import make_eval_cube, make_model

ROOT = Path(__file__).resolve().parents[1]


def _parser(name: str):
    return cli_main._build_command_parser(name, f"otrain-{name}")[0]


def test_every_command_has_its_script_and_version(capsys: pytest.CaptureFixture) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in cli_main.COMMANDS:
        attr = name.replace("-", "_")
        assert scripts[f"otrain-{name}"] == f"otrain.cli.main:{attr}", name
        assert callable(getattr(cli_main, attr)), name
        assert (BIN / f"otrain-{name}").is_file(), f"otrain-{name} not installed"
        with pytest.raises(SystemExit) as exc:
            cli_main.run_command(name, ["--version"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.strip() == f"otrain {__version__}"
        assert name in cli_main.OUTPUT_FLAGS, f"{name}: which output does it own?"
    proc = run_cli("otrain-report", "--version", check=True)  # the script a user runs
    assert proc.stdout.strip() == f"otrain {__version__}"


def test_no_abbreviations_device_auto_and_model_flag() -> None:
    for name in cli_main.COMMANDS:
        parser = _parser(name)
        assert parser.allow_abbrev is False, name
        for action in parser._actions:
            if action.dest == "device":
                assert action.default == "auto", name
            if action.dest == "threshold" and name not in ("train", "optimise-dataset-size",
                                                           "infer", "set-threshold"):
                assert action.default == "model", name
    for name in ("diagnostics", "plot-results", "grad-cam", "report"):
        flags = {s for a in _parser(name)._actions if a.dest == "model" for s in a.option_strings}
        assert "--model" in flags, name
        assert ("--model-path" in flags) == (name != "report"), name  # O'TRAIN's spelling kept
    proc = run_cli("otrain-diagnostics", "--path-cube-validation", "c.h5", "--model-pa", "m")
    assert proc.returncode == 2 and "required: --model/--model-path" in proc.stderr  # not taken


def test_no_missing_parents_created(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cube = make_eval_cube(tmp_path / "cube.h5", n=16)
    model = make_model(tmp_path / "m.safetensors")
    missing = tmp_path / "typo"
    proc = run_cli("otrain-infer", "--cutouts", str(cube), "--model", str(model), "--output",
                   str(missing / "out.csv"))
    assert_clean_error(proc, str(missing), "folder does not exist")
    runs = [  # the same path in-process (the dispatcher of every script), to keep the test fast
        ["diagnostics", "--path-cube-validation", str(cube), "--model", str(model),
         "--path-diagnostics", str(missing / "diag")],
        ["simulate", "--outdir", str(missing / "sim"), "--n-true", "2", "--n-false", "2"],
        ["report", "--model", str(model), "--cube", str(cube), "--output",
         str(missing / "r.html")],
        ["convert", "--path", str(missing / "cubes"), "--cube", "c", "--cutouts", str(tmp_path)],
    ]
    for args in runs:
        assert cli_main.main(args) == 2, args
        err = capsys.readouterr().err
        assert "folder does not exist" in err and str(missing) in err, err
    assert not missing.exists()


def test_threshold_default_is_the_models_everywhere(tmp_path: Path) -> None:
    cube = make_eval_cube(tmp_path / "cube.h5", n=32)
    model = make_model(tmp_path / "m.safetensors")
    proc = run_cli("otrain-set-threshold", str(model), "--threshold", "0.37")
    assert_clean_error(proc, str(model), "--overwrite")  # never edits in place silently
    assert read_metadata(model)["threshold"] == 0.5
    before = load_file(str(model))
    run_cli("otrain", "set-threshold", str(model), "--threshold", "0.37", "--overwrite",
            check=True)
    meta = read_metadata(model)
    assert meta["threshold"] == 0.37
    assert meta["threshold_choice"]["method"] == "manual"
    assert meta["threshold_choice"]["previous_threshold"] == 0.5
    after = load_file(str(model))
    assert after.keys() == before.keys()
    assert all(bool((after[k] == before[k]).all()) for k in before)  # weights untouched
    out = tmp_path / "diag"
    run_cli("otrain-diagnostics", "--path-cube-validation", str(cube), "--model-path", str(model),
            "--path-diagnostics", str(out), "--n-examples", "2", "-q", check=True)
    assert json.loads((out / "diagnostics.json").read_text())["threshold"] == 0.37
    out2 = tmp_path / "diag2"
    assert cli_main.main(["diagnostics", "--path-cube-validation", str(cube), "--model",
                          str(model), "--path-diagnostics", str(out2), "--threshold", "model",
                          "--n-examples", "2", "-q"]) == 0
    assert json.loads((out2 / "diagnostics.json").read_text())["threshold"] == 0.37
    with pytest.raises(SystemExit):
        cli_main.main(["grad-cam", "--cube", str(cube), "--model", str(model),
                       "--threshold", "1.5"])


def test_set_threshold_from_a_target_on_a_labelled_cube(tmp_path: Path) -> None:
    """--target-fnr and --max-fpr choose on a cube; --output leaves the original alone."""
    import numpy as np

    from otrain.evaluation.scores import score

    cube = make_eval_cube(tmp_path / "cube.h5", n=64)
    model = make_model(tmp_path / "m.safetensors")
    copy = tmp_path / "m_fnr.safetensors"
    proc = run_cli("otrain-set-threshold", str(model), "--target-fnr", "0.1", "--cube",
                   str(cube), "--output", str(copy), check=True)
    assert "target_fnr" in proc.stdout and str(copy) in proc.stdout
    assert read_metadata(model)["threshold"] == 0.5  # the original is left alone
    meta = read_metadata(copy)
    s = score(copy, cube)
    t, choice = meta["threshold"], meta["threshold_choice"]
    real = s.p_real[s.y_true == 1]
    assert np.mean(real <= t) <= 0.1 and np.mean(real <= choice["range"][1]) > 0.1
    assert choice["fnr"] == pytest.approx(np.mean(real <= t))
    fpr_copy = tmp_path / "m_fpr.safetensors"
    run_cli("otrain-set-threshold", str(model), "--max-fpr", "0.2", "--cube", str(cube),
            "--output", str(fpr_copy), check=True)
    t = read_metadata(fpr_copy)["threshold"]
    bogus = s.p_real[s.y_true == 0]
    lo = read_metadata(fpr_copy)["threshold_choice"]["range"][0]
    assert (np.mean(bogus > t) <= 0.2 and np.mean(bogus >= lo) > 0.2) or lo <= bogus.min()
    assert cli_main.main(["set-threshold", str(model), "--max-fpr", "0.2"]) == 2
    assert cli_main.main(["set-threshold", str(model), "--max-fpr", "0.2", "--cube", str(cube),
                          "--output", str(fpr_copy)]) == 2
    assert read_metadata(fpr_copy)["threshold"] == t
