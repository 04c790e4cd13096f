"""``--precision``: hardware detection and choice, the first-batch fp32 guard, bf16 scores of a
trained model against fp32, the choice recorded in the model file and the inference report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_clean_error, run_cli, write_cutout
from otrain.datacube.hdf5 import write_datacube
from otrain.errors import OtrainError
from otrain.inference.core import infer
from otrain.inference.scoring import Scorer
from otrain.models import precision as prec
from otrain.models.modelfile import LoadedModel, load_model
from otrain.models.normalise import normalise
from otrain.training.config import TrainConfig
from otrain.training.loop import train
from test_training import synthetic_cutouts

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the tests share 2 cores

CPU = {"device": "cpu", "flags": [], "torch_capability": "AVX2", "bf16_native": False,
       "fp16_native": False}


def _cpu(*flags: str) -> dict:
    return {**CPU, "flags": list(flags), "bf16_native": any(f in prec.BF16_CPU_FLAGS
                                                            for f in flags)}


def _gpu(major: int) -> dict:
    return {"device": "cuda", "name": "test GPU", "compute_capability": f"{major}.0",
            "bf16_native": major >= 8, "fp16_native": major >= 7}


@pytest.mark.parametrize(("hw", "expected"), [
    (_cpu("avx512f", "avx512_bf16"), "bf16"),       # AMD Zen 4 (this machine)
    (_cpu("avx512f", "amx_bf16", "amx_tile"), "bf16"),  # Intel Sapphire Rapids
    (_cpu("avx512f"), "fp32"),                      # AVX512 without bf16
    (_cpu(), "fp32"),
    (_gpu(8), "bf16"), (_gpu(7), "fp16"), (_gpu(6), "fp32"),
])
def test_auto_resolves_per_hardware(hw: dict, expected: str) -> None:
    choice = prec.resolve_precision("auto", hw["device"], hw)
    assert choice.name == expected and choice.requested == "auto"
    assert choice.reason  # says why, e.g. "CPU has avx512_bf16"
    assert prec.resolve_precision("fp32", hw["device"], hw).name == "fp32"
    scoring = prec.resolve_precision("auto", hw["device"], hw, inference=True)
    assert scoring.name == expected  # as the issue asks: bf16 wherever it is native, guarded
    if expected == "bf16" and hw["device"] == "cpu":
        assert "checked against fp32" in scoring.reason


def test_explicit_choices_and_refusals() -> None:
    emulated = prec.resolve_precision("bf16", "cpu", _cpu("avx512f"))
    assert emulated.name == "bf16" and "emulated" in emulated.reason
    assert prec.resolve_precision("fp16", "cuda", _gpu(7)).dtype is torch.float16
    with pytest.raises(OtrainError, match="CUDA"):
        prec.resolve_precision("fp16", "cpu", _cpu("avx512_bf16"))
    with pytest.raises(OtrainError, match="no bfloat16"):
        prec.resolve_precision("bf16", "cuda", _gpu(7))
    with pytest.raises(OtrainError, match="unknown precision"):
        prec.resolve_precision("int8", "cpu", CPU)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert prec.cpu_flags(str(info)) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert prec.cpu_flags(str(tmp_path / "missing")) == frozenset()
    hw = prec.hardware("cpu")  # the real machine: consistent with its own flags
    assert hw["bf16_native"] == any(f in prec.cpu_flags() for f in prec.BF16_CPU_FLAGS)


class _Skewed(nn.Module):
    """A network that disagrees with itself in reduced precision (bf16 inputs or autocast)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.flatten = nn.Flatten()
        self.out = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.flatten(torch.relu(self.conv(x)))
        if h.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
            h = h + 3.0  # a "kernel" that is wrong in low precision
        return self.out(h)


def _skewed_loaded() -> LoadedModel:
    torch.manual_seed(0)
    return LoadedModel(_Skewed().eval(), {"channels": ["diff"], "input_size": [8, 8],
                                          "normalisation": "zscore", "threshold": 0.5})


def test_inference_guard_falls_back_to_fp32() -> None:
    loaded = _skewed_loaded()
    x = np.random.default_rng(0).normal(size=(10, 1, 8, 8)).astype(np.float32)
    fp32 = Scorer(loaded, (1, 8, 8), "fp32")(x)
    scorer = Scorer(loaded, (1, 8, 8), "bf16")
    assert scorer.precision.name == "bf16"
    got = scorer(x)
    assert scorer.precision.name == "fp32" and "differed from fp32" in scorer.precision.note
    assert scorer.forward.difference is not None and scorer.forward.difference > 1e-3
    np.testing.assert_array_equal(got, fp32)  # the fallback's scores are the fp32 ones
    np.testing.assert_array_equal(scorer(x), fp32)  # and stay so


def test_ensemble_falls_back_as_one() -> None:
    """One member that disagrees in bf16 puts the whole ensemble in fp32 before any score is
    made: member 0, which agrees, must not have scored the first batch in bf16 already."""
    torch.manual_seed(0)
    agreeing = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        agreeing[1].weight.mul_(0.01)
    meta = {"channels": ["diff"], "input_size": [8, 8], "normalisation": "zscore",
            "threshold": 0.5}
    loaded = LoadedModel(agreeing, meta, members=[agreeing, _Skewed().eval()])
    x = np.random.default_rng(1).normal(size=(300, 1, 8, 8)).astype(np.float32)
    fp32 = Scorer(loaded, (1, 8, 8), "fp32")(x)
    scorer = Scorer(loaded, (1, 8, 8), "bf16")
    got = scorer(x)
    assert scorer.precision.name == "fp32" and "differed from fp32" in scorer.precision.note
    np.testing.assert_array_equal(got, fp32)
    np.testing.assert_array_equal(scorer(x), fp32)
    alone = Scorer(LoadedModel(agreeing, meta), (1, 8, 8), "bf16")
    alone(x)
    assert alone.precision.name == "bf16"  # the agreeing member alone stays in bf16


def test_training_guard_falls_back_to_fp32() -> None:
    model = _Skewed().train()
    tp = prec.TrainPrecision(prec.resolve_precision("bf16", "cpu", _cpu("avx512_bf16")), "cpu")
    diff = tp.guard(model, torch.randn(16, 1, 8, 8))
    assert diff > prec.TRAIN_TOLERANCE and model.training  # training mode restored
    assert tp.precision.name == "fp32" and "training in fp32" in tp.precision.note
    with tp.autocast():
        assert not torch.is_autocast_enabled("cpu")
    ok = prec.TrainPrecision(prec.resolve_precision("bf16", "cpu", _cpu("avx512_bf16")), "cpu")
    ok.guard(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), torch.randn(16, 1, 8, 8))
    assert ok.precision.name == "bf16" and not ok.precision.note


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("prec")
    images, labels = synthetic_cutouts(300, size=16, seed=3)
    cube = write_datacube(root / "cube.h5", images, {"candid": [f"c{i}" for i in range(300)],
                                                     "label": labels}, ["diff"])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(cube, root, "fp32model", TrainConfig(epochs=3, batch_size=64, seed=0,
                                                            precision="fp32"), quiet=True)
    finally:
        torch.set_num_threads(before)
    return result.model_file, images, labels


def test_bf16_scores_of_a_trained_model_against_fp32(trained: tuple[Path, np.ndarray,
                                                                     np.ndarray]) -> None:
    model_file, images, _ = trained
    loaded = load_model(model_file)
    x = normalise(images, loaded.normalisation)
    fp32 = Scorer(loaded, x.shape[1:], "fp32")(x)
    guarded = Scorer(loaded, x.shape[1:], "bf16")
    got = guarded(x)
    # the promise: the first batch is within 1e-3 of fp32, or the run fell back to fp32
    if guarded.precision.name == "bf16":
        assert np.abs(got[:128] - fp32[:128]).max() <= prec.INFER_TOLERANCE
    else:
        assert "differed from fp32" in guarded.precision.note
        np.testing.assert_allclose(got, fp32, atol=1e-6)
    # the bf16 network itself: rounding the activations (the input included) to bf16's 8 bits
    # moves P(real) of this model by ~1e-4 typically, up to a few 1e-3 (see the module notes)
    raw = Scorer(loaded, x.shape[1:], "bf16")
    raw.forward.tolerance = float("inf")
    low = raw(x)
    diff = np.abs(low - fp32)[:, 1]
    assert raw.precision.name == "bf16" and 0 < np.median(diff) <= 1e-3 and diff.max() < 5e-3
    # scores do not depend on how the cutouts were batched, in bf16 as in fp32
    parts = np.concatenate([raw(x[i:i + 7]) for i in range(0, len(x), 7)])
    np.testing.assert_array_equal(parts, low)


def test_fallback_scores_with_the_fp32_graph(trained: tuple[Path, np.ndarray,
                                                             np.ndarray]) -> None:
    """A run that falls back to fp32 scores exactly as an fp32 run: the same frozen graph, not
    the slower eager network (whose sums differ in the last bits)."""
    model_file, images, _ = trained
    loaded = load_model(model_file)
    x = normalise(images, loaded.normalisation)
    fp32 = Scorer(loaded, x.shape[1:], "fp32")
    assert isinstance(fp32.members[0], torch.jit.ScriptModule)  # frozen on this CPU
    forced = Scorer(loaded, x.shape[1:], "bf16")
    forced.forward.tolerance = 0.0  # any difference trips the guard
    got = forced(x)
    assert forced.precision.name == "fp32" and "differed from fp32" in forced.precision.note
    np.testing.assert_array_equal(got, fp32(x))


def test_bf16_training_records_its_precision(trained: tuple[Path, np.ndarray, np.ndarray],
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model_file, images, labels = trained
    cube = write_datacube(tmp_path / "c.h5", images[:200], {"candid": [f"c{i}" for i in range(200)],
                                                             "label": labels[:200]}, ["diff"])
    monkeypatch.setattr(prec, "hardware", lambda device="cpu": _cpu("avx512_bf16"))
    res = train(cube, tmp_path, "auto", TrainConfig(epochs=2, batch_size=64, precision="auto",
                                                     patience=None), quiet=True)
    record = load_model(res.model_file).meta["training"]["precision"]
    assert record["precision"] == "bf16" and record["requested"] == "auto"
    assert "avx512_bf16" in record["reason"]
    assert all(np.isfinite(r["train_loss"]) for r in res.history)
    monkeypatch.setattr(prec, "hardware", lambda device="cpu": _cpu())
    res = train(cube, tmp_path, "old", TrainConfig(epochs=1, batch_size=64, precision="auto"),
                quiet=True)
    assert load_model(res.model_file).meta["training"]["precision"]["precision"] == "fp32"
    assert load_model(model_file).meta["training"]["precision"]["requested"] == "fp32"


def test_infer_reports_precision(trained: tuple[Path, np.ndarray, np.ndarray],
                                 tmp_path: Path) -> None:
    model_file, images, _ = trained
    folder = tmp_path / "cut"
    for i in range(6):
        write_cutout(folder / f"c{i}.fits", images[i, 0])
    result = infer(folder, model_file, tmp_path / "a.dat", workers=1, quiet=True,
                   precision="bf16")
    assert result.report.precision["precision"] == "bf16"
    assert "precision bf16" in result.report.summary()
    ref = infer(folder, model_file, tmp_path / "b.dat", workers=1, quiet=True)
    assert ref.report.precision["precision"] == "fp32"
    assert np.abs(np.asarray(result.table["label1"]) - np.asarray(ref.table["label1"])).max() \
        <= prec.INFER_TOLERANCE
    proc = run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(model_file),
                   "--output", str(tmp_path / "c.dat"), "--workers", "1", "--precision", "fp16")
    assert_clean_error(proc, "fp16 is for CUDA")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_autocast_paths(trained: tuple[Path, np.ndarray, np.ndarray]) -> None:
    model_file, images, _ = trained
    loaded = load_model(model_file, "cuda")
    x = normalise(images, loaded.normalisation)
    fp32 = Scorer(loaded, x.shape[1:], "fp32")(x)
    for name in ("fp16", "bf16"):
        if name == "bf16" and not torch.cuda.is_bf16_supported():
            continue
        scorer = Scorer(loaded, x.shape[1:], name)
        assert np.abs(scorer(x) - fp32).max() <= prec.INFER_TOLERANCE, scorer.precision.note


def test_infer_help_needs_no_torch() -> None:
    import subprocess
    import sys

    import otrain.cli.infer as cli_infer
    from otrain.inference import core

    assert cli_infer.DEFAULT_OUTPUT_NAME == core.DEFAULT_OUTPUT_NAME
    assert cli_infer.FORMATS == tuple(core.FORMATS)
    code = ("import sys, contextlib, io\nfrom otrain.cli.main import run_command\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    run_command('infer', ['-h'])\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
