"""Deep ensembles, temperature scaling, the operating point and MC-dropout (issue 12).

Tiny synthetic cubes (16x16), 1-2 epochs: these check the plumbing and the arithmetic, not the
quality (benchmarks/ztf.py measures that).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.table import Table
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import run_cli
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import OtrainError
from otrain.inference.core import score_datacube
from otrain.inference.scoring import Scorer
from otrain.metrics import (
    binary_metrics,
    brier_score,
    expected_calibration_error,
    threshold_for_target,
    wilson_interval,
)
from otrain.models.ensemble import (
    fit_temperature,
    logits_probabilities,
    member_state,
    prior_bias,
)
from otrain.models.modelfile import load_model, predict_proba, predict_with_spread, save_model
from otrain.models.networks import build_model
from otrain.models.normalise import normalise
from otrain.training.config import TrainConfig
from otrain.training.loop import HISTORY_COLUMNS, train
from test_training import make_cube

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FAST = {"batch_size": 64, "patience": None}


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cube(tmp_path_factory.mktemp("ens") / "cube.h5", n=240, groups=60)


@pytest.fixture(scope="module")
def ensemble(cube: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ens_model")
    cfg = TrainConfig(epochs=2, seed=3, ensemble=2, group_by="objectId", target_fnr=0.1,
                      **FAST)
    return train(cube, root, "ens", cfg, quiet=True)


# ------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------
def test_ece_brier_and_wilson() -> None:
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, [0.0, 0.0, 1.0, 1.0]) == 0.0
    assert brier_score(y, [0.0, 0.0, 1.0, 1.0]) == 0.0
    # all in one bin at 0.75, half real: ECE = |0.5 - 0.75|
    assert expected_calibration_error(y, [0.75] * 4) == pytest.approx(0.25)
    assert brier_score(y, [0.5] * 4) == pytest.approx(0.25)
    lo, hi = wilson_interval(0, 10)
    assert float(lo) == 0.0 and 0.25 < float(hi) < 0.35  # 95% Wilson upper bound 0.278
    lo, hi = wilson_interval(5, 10)
    assert float(lo) == pytest.approx(1 - float(hi))


def test_target_threshold_meets_the_rate() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.35 * y + 0.65 * rng.random(400), 0, 1)
    for target in (0.0, 0.02, 0.1, 0.3):
        t = threshold_for_target(y, p, target_fnr=target)
        m = binary_metrics(y, p, t)
        assert m["fnr"] <= target
        # the next higher score would break the target: the threshold is as high as allowed
        above = np.sort(p[p > t])
        assert above.size == 0 or binary_metrics(y, p, above[0])["fnr"] > target
        t = threshold_for_target(y, p, target_fpr=target)
        assert binary_metrics(y, p, t)["fpr"] <= target
    with pytest.raises(OtrainError, match="one of"):
        threshold_for_target(y, p)


def test_calibration_lowers_the_ece_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    # classes N(+-1, 1) in a score x: the calibrated log-odds are 2x, made over-confident 10x
    x = rng.normal(0.0, 1.0, n) + np.where(y == 1, 1.0, -1.0)
    logits = 10 * np.stack([-x, x], axis=1)
    before = expected_calibration_error(y, logits_probabilities(logits))
    t = fit_temperature(logits, y)
    after = expected_calibration_error(y, logits_probabilities(logits, t))
    assert 7 < t < 13  # recovers the factor 10
    assert after < before / 3 and after < 0.03
    assert brier_score(y, logits_probabilities(logits, t)) < \
        brier_score(y, logits_probabilities(logits))


def test_prior_correction_undoes_class_weights() -> None:
    """A balanced-weights network on a 9:1 real:bogus set: its P(real) is that of a 50/50 set.
    A temperature alone cannot fix it; log(n_real / n_bogus) then a temperature does."""
    rng = np.random.default_rng(1)
    n_real, n_bogus = 1800, 200
    y = np.r_[np.ones(n_real, int), np.zeros(n_bogus, int)]
    x = rng.normal(0.0, 1.0, y.size) + np.where(y == 1, 1.0, -1.0)
    logits = 3 * np.stack([-x, x], axis=1) / 2  # balanced log-odds 2x, over-confident 1.5x
    t_only = fit_temperature(logits, y)
    ece_t_only = expected_calibration_error(y, logits_probabilities(logits, t_only))
    bias = prior_bias(n_real, n_bogus)
    assert bias == pytest.approx(np.log(9.0))
    t = fit_temperature(logits, y, bias=bias)
    p = logits_probabilities(logits, t, bias)
    assert 1.3 < t < 1.7  # recovers the over-confidence once the prior is right
    assert expected_calibration_error(y, p) < 0.03 < ece_t_only
    # the same numbers as sigmoid(logit difference / T + b)
    d = logits[:, 1] - logits[:, 0]
    assert np.allclose(p, 1 / (1 + np.exp(-(d / t + bias))))
    assert prior_bias(10, 0) == 0.0 and prior_bias(0, 5) == 0.0


def test_default_threshold_is_the_best_mcc_within_the_fpr_budget() -> None:
    from otrain.training.config import AUTO_TARGET_FPR
    from otrain.training.ensemble import choose_threshold

    # overlapping classes: within the FPR budget, and no worse than its lowest threshold
    y = np.r_[np.zeros(40, int), np.ones(60, int)]
    p = np.r_[np.linspace(0.0, 0.8, 40), np.linspace(0.3, 1.0, 60)]
    thr, choice = choose_threshold(TrainConfig(), y, p, quiet=True)
    assert choice["method"] == "max_mcc_within_fpr" and choice["default"]
    assert choice["target"] == AUTO_TARGET_FPR
    assert binary_metrics(y, p, thr)["fpr"] <= AUTO_TARGET_FPR
    lowest = threshold_for_target(y, p, target_fpr=AUTO_TARGET_FPR)
    assert thr >= lowest
    assert binary_metrics(y, p, thr)["mcc"] >= binary_metrics(y, p, lowest)["mcc"]
    assert choice["n_rows_of_class"] == 40 and "note" not in choice  # 40 >= FEW_BOGUS
    few = choose_threshold(TrainConfig(), y[20:], p[20:], quiet=True)[1]
    assert few["n_rows_of_class"] == 20 and "chosen on 20 bogus" in few["note"]
    # a strong model: a balanced point well inside the budget, not the lowest threshold
    rng = np.random.default_rng(0)
    p2 = np.r_[rng.beta(2, 8, 200), rng.beta(8, 2, 200)]
    y2 = np.r_[np.zeros(200, int), np.ones(200, int)]
    thr2, _ = choose_threshold(TrainConfig(), y2, p2, quiet=True)
    lowest2 = threshold_for_target(y2, p2, target_fpr=AUTO_TARGET_FPR)
    at, low = binary_metrics(y2, p2, thr2), binary_metrics(y2, p2, lowest2)
    assert thr2 > lowest2 and at["mcc"] > low["mcc"] and at["fpr"] < AUTO_TARGET_FPR / 2
    grid = np.linspace(lowest2, 1.0, 400)  # no threshold within the budget does better
    assert at["mcc"] >= max(binary_metrics(y2, p2, t)["mcc"] for t in grid) - 1e-12
    # a weak model (bogus scores all over, the best MCC far outside the budget): the FPR budget
    # binds, the default is the lowest threshold meeting it
    y4 = np.r_[np.zeros(100, int), np.ones(100, int)]
    p4 = np.r_[np.linspace(0.0, 1.0, 100), np.linspace(0.5, 1.0, 100)]
    thr4, _ = choose_threshold(TrainConfig(), y4, p4, quiet=True)
    assert thr4 == threshold_for_target(y4, p4, target_fpr=AUTO_TARGET_FPR)
    # an explicit --target-fpr keeps its meaning: the lowest threshold meeting it
    thr3, c3 = choose_threshold(TrainConfig(target_fpr=0.1), y2, p2, quiet=True)
    assert thr3 == lowest2 and c3["method"] == "target_fpr" and not c3["default"]
    # a given threshold is kept; no bogus validation row: 0.5 with a recorded reason
    assert choose_threshold(TrainConfig(threshold=0.7), y, p, quiet=True)[0] == 0.7
    thr, choice = choose_threshold(TrainConfig(), np.ones(5, int), np.full(5, 0.9), quiet=True)
    assert thr == 0.5 and choice["method"] == "default" and "no bogus" in choice["reason"]
    with pytest.raises(OtrainError, match="not both"):
        TrainConfig(threshold=0.4, target_fpr=0.1).validate()


def test_logit_bias_survives_save_load_and_every_scoring_path(tmp_path: Path) -> None:
    torch.manual_seed(2)
    nets = [build_model("otrain", 1, (16, 16), 0.3) for _ in range(2)]
    meta = {"normalisation": "zscore", "threshold": 0.6, "temperature": 1.3,
            "logit_bias": 1.25}
    loaded = load_model(save_model(tmp_path / "b.safetensors", nets, meta))
    assert loaded.logit_bias == 1.25 and loaded.meta["format_version"] == 3
    images = np.random.default_rng(3).normal(size=(30, 1, 16, 16)).astype(np.float32)
    x = torch.from_numpy(normalise(images, "zscore"))
    with torch.no_grad():
        by_hand = np.mean([torch.sigmoid((n.eval()(x)[:, 1] - n(x)[:, 0]).double() / 1.3
                                         + 1.25).numpy() for n in nets], axis=0)
    p = predict_proba(loaded, images)
    assert np.allclose(p, by_hand, atol=1e-6)
    probs = Scorer(loaded, (1, 16, 16))(normalise(images, "zscore"))
    assert np.allclose(probs[:, 1], p, atol=1e-6)
    unbiased = load_model(save_model(tmp_path / "u.safetensors", nets,
                                     {**meta, "logit_bias": 0.0}))
    assert np.abs(predict_proba(unbiased, images) - p).max() > 0.05
    with pytest.raises(OtrainError, match="logit bias"):
        save_model(tmp_path / "n.safetensors", nets, {**meta, "logit_bias": float("nan")})


# ------------------------------------------------------------------------------------------
# ensemble file
# ------------------------------------------------------------------------------------------
def test_ensemble_file_is_the_mean_of_its_members(ensemble, cube: Path, tmp_path: Path) -> None:
    loaded = load_model(ensemble.model_file)
    assert loaded.is_ensemble and len(loaded.members) == 2
    assert loaded.model is loaded.members[0]
    meta = loaded.meta
    assert meta["ensemble"]["n_members"] == 2
    assert meta["format_version"] == (3 if loaded.logit_bias else 2)
    assert [m["seed"] for m in meta["ensemble"]["members"]] == [3, 4]
    assert all(m["split"] == "own" for m in meta["ensemble"]["members"])
    t = loaded.temperature
    assert t > 0 and t != 1.0 and meta["threshold_choice"]["method"] == "target_fnr"
    with open_datacube(cube) as c:
        images = c.read(np.arange(40))
    # each member as its own single-model file, scored one by one
    with safe_open(str(ensemble.model_file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    singles = []
    for i in range(2):
        net = build_model(meta["architecture"], meta["in_channels"], meta["input_size"])
        net.load_state_dict(member_state(tensors, i))
        single = {k: v for k, v in meta.items()
                  if k not in ("ensemble", "temperature", "logit_bias")}
        path = save_model(tmp_path / f"m{i}.safetensors", net, single)
        one = load_model(path)
        assert not one.is_ensemble and one.temperature == 1.0
        x = torch.from_numpy(normalise(images, one.normalisation))
        with torch.no_grad():
            singles.append(logits_probabilities(one.model(x), t, loaded.logit_bias))
    p, std = predict_with_spread(loaded, images)
    assert np.allclose(p, np.mean(singles, axis=0), atol=1e-6)
    assert np.allclose(std, np.std(singles, axis=0), atol=1e-6) and std.max() > 0
    assert np.array_equal(predict_proba(loaded, images), p)
    # the inference path (one frozen graph per member) agrees and adds p_real_std
    table = score_datacube(cube, loaded, quiet=True).table
    cols = table.colnames
    assert cols.index("p_real_std") == cols.index("label1") + 1
    full = predict_with_spread(loaded, open_datacube(cube).read(np.arange(len(table))))
    assert np.allclose(table["label1"], full[0], atol=1e-5)
    assert np.allclose(table["p_real_std"], full[1], atol=1e-5)


def test_training_outputs_of_an_ensemble(ensemble) -> None:
    root = ensemble.folder
    for i in range(2):
        assert (root / f"checkpoint_member{i}.pt").is_file()
    lines = (root / "history.csv").read_text().splitlines()
    assert lines[0] == ",".join(("member", *HISTORY_COLUMNS)) and len(lines) == 1 + 2 * 2
    metrics = json.loads((root / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["temperature"] == pytest.approx(load_model(ensemble.model_file).temperature)
    for part in ("validation", "test"):
        for when in ("before", "after"):
            assert 0 <= cal[part][when]["ece"] <= 1 and 0 <= cal[part][when]["brier"] <= 1
    # temperature fitted on the validation rows lowers (or keeps) their NLL, so Brier too
    # mostly; ECE is what the user reads: both are reported
    assert metrics["threshold_choice"]["validation_fnr"] <= 0.1
    assert metrics["validation"]["fnr"] <= 0.1
    rates = metrics["test_error_rates"]
    assert rates["fnr_low"] <= rates["fnr"] <= rates["fnr_high"]
    assert rates["fpr_low"] <= rates["fpr"] <= rates["fpr_high"]
    assert len(metrics["members"]) == 2
    # validation rows (shared) are held out from every member's own split
    assert sum(metrics["members"][0]["split_sizes"].values()) == metrics["sizes"]["train"]["n"]


def test_threshold_and_temperature_survive_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    nets = [build_model("otrain", 1, (16, 16), 0.3) for _ in range(3)]
    meta = {"normalisation": "zscore", "threshold": 0.37, "temperature": 1.7,
            "threshold_choice": {"method": "target_fpr", "target": 0.05},
            "ensemble": {"members": [{"seed": s} for s in range(3)]}}
    path = save_model(tmp_path / "e.safetensors", nets, meta)
    loaded = load_model(path)
    assert loaded.threshold == 0.37 and loaded.temperature == 1.7
    assert loaded.meta["threshold_choice"] == {"method": "target_fpr", "target": 0.05}
    assert len(loaded.members) == 3 and loaded.meta["ensemble"]["n_members"] == 3
    for net, back in zip(nets, loaded.members, strict=True):
        for k, v in net.state_dict().items():
            assert torch.equal(v, back.state_dict()[k])


def test_old_single_model_file_scores_as_before(tmp_path: Path) -> None:
    """A file as format 1 wrote it (hand-built metadata without the new keys)."""
    torch.manual_seed(1)
    net = build_model("otrain", 1, (16, 16), 0.3).eval()
    meta = {"format": "otrain-model", "format_version": 1, "architecture": "otrain",
            "in_channels": 1, "channels": ["diff"], "input_size": [16, 16], "dropout": 0.3,
            "normalisation": "zscore", "threshold": 0.5, "class_names": ["bogus", "real"]}
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"otrain": json.dumps(meta)})
    loaded = load_model(path)
    assert loaded.temperature == 1.0 and len(loaded.members) == 1
    images = np.random.default_rng(0).normal(size=(20, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():  # exactly the old predict_proba: float32 softmax column 1
        old = torch.softmax(net(torch.from_numpy(normalise(images, "zscore"))).float(),
                            dim=1)[:, 1].numpy().astype(np.float64)
    assert np.array_equal(predict_proba(loaded, images), old)
    probs = Scorer(loaded, (1, 16, 16))(normalise(images, "zscore"))
    assert probs.shape == (20, 2) and np.allclose(probs[:, 1], old, atol=1e-6)
    # a newly written plain single model is still format 1
    again = save_model(tmp_path / "new.safetensors", net, {"normalisation": "zscore"})
    assert load_model(again).meta["format_version"] == 1


def test_mc_dropout_spread_is_seeded(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = build_model("otrain", 1, (16, 16), 0.5)
    path = save_model(tmp_path / "one.safetensors", net, {"normalisation": "zscore"})
    loaded = load_model(path)
    images = np.random.default_rng(3).normal(size=(30, 1, 16, 16)).astype(np.float32)
    p0, s0 = predict_with_spread(loaded, images)
    assert np.all(s0 == 0)
    p1, s1 = predict_with_spread(loaded, images, mc_samples=8, seed=5)
    p2, s2 = predict_with_spread(loaded, images, mc_samples=8, seed=5)
    _, s3 = predict_with_spread(loaded, images, mc_samples=8, seed=6)
    assert s1.max() > 0 and np.array_equal(s1, s2) and np.array_equal(p1, p2)
    assert not np.array_equal(s1, s3)
    assert not loaded.model.training  # eval mode restored
    with pytest.raises(OtrainError, match="MC-dropout samples"):
        Scorer(loaded, (1, 16, 16), mc_samples=-1)
    # the inference scorer (eager networks with dropout on) is seeded the same way
    x = normalise(images, "zscore")
    a, b = Scorer(loaded, (1, 16, 16), mc_samples=4, seed=1)(x), \
        Scorer(loaded, (1, 16, 16), mc_samples=4, seed=1)(x)
    assert a.shape == (30, 3) and np.array_equal(a, b) and a[:, 2].max() > 0
    assert np.allclose(Scorer(loaded, (1, 16, 16))(x)[:, 1], p0, atol=1e-6)
    assert np.array_equal(predict_proba(loaded, images), p0)  # deterministic again


def test_bad_settings_are_refused(cube: Path, tmp_path: Path) -> None:
    for kwargs, fragment in (({"ensemble": 0}, "at least 1 member"),
                             ({"target_fnr": 0.1, "target_fpr": 0.1}, "not both"),
                             ({"target_fnr": 0.1, "threshold": 0.7}, "not both"),
                             ({"target_fpr": 1.5}, "target fpr")):
        with pytest.raises(OtrainError, match=fragment):
            train(cube, tmp_path, "bad", TrainConfig(epochs=1, **kwargs), quiet=True)


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------
def test_cli_train_ensemble_and_infer(cube: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    base = ["otrain-train", "--cube", str(cube), "--model-path", str(tmp_path), "--epochs", "1",
            "--batch-size", "64", "--group-by", "objectId"]
    proc = run_cli(*base, "--model-name", "e2", "--ensemble", "2", "--target-fpr", "0.2",
                   check=True)
    assert "temperature" in proc.stdout and "ECE" in proc.stdout
    assert "target fpr 0.2 on the validation rows" in proc.stdout and "95% Wilson" in proc.stdout
    model = tmp_path / "CNN_training" / "e2" / "e2.safetensors"
    assert len(load_model(model).members) == 2
    bad = run_cli(*base, "--model-name", "x", "--threshold", "0.3", "--target-fnr", "0.1")
    assert bad.returncode == 2 and "not allowed with argument" in bad.stderr
    out = tmp_path / "scores.dat"
    run_cli("otrain-infer", "--cutouts", str(cube), "--model", str(model), "--output", str(out),
            "--quiet", check=True)
    table = Table.read(out, format="ascii.commented_header")
    assert table.colnames[:14] == ["filename", "RA", "Dec", "originalFile", "Xpos", "Ypos",
                                   "mag", "magerr", "FWHM", "FWHMPSF", "cand_ID", "label0",
                                   "label1", "p_real_std"]
    assert len(table) == 240 and np.all(np.asarray(table["p_real_std"]) >= 0)
    # MC-dropout on one (untrained, dropout 0.5) model: p_real_std, reproducible with --seed
    torch.manual_seed(0)
    one = save_model(tmp_path / "one.safetensors", build_model("otrain", 1, (16, 16), 0.5),
                     {"normalisation": "zscore", "channels": ["diff"]})
    tabs = []
    for name in ("a.csv", "b.csv"):
        run_cli("otrain-infer", "--cutouts", str(cube), "--model", str(one), "--output",
                str(tmp_path / name), "--mc-samples", "4", "--seed", "4", "--quiet",
                check=True)
        tabs.append(Table.read(tmp_path / name))
    assert np.max(tabs[0]["p_real_std"]) > 0
    assert np.array_equal(tabs[0]["p_real_std"], tabs[1]["p_real_std"])
    assert np.array_equal(tabs[0]["label1"], tabs[1]["label1"])


# ------------------------------------------------------------------------------------------
# every consumer takes an ensemble file
# ------------------------------------------------------------------------------------------
def test_evaluation_commands_take_an_ensemble(ensemble, tmp_path: Path) -> None:
    from otrain.evaluation.diagnostics import format_diagnostics, run_diagnostics
    from otrain.evaluation.gradcam import compute_grad_cam, run_grad_cam
    from otrain.evaluation.plots import plot_results
    from otrain.evaluation.report import build_report

    model, test_cube = ensemble.model_file, ensemble.test_cube
    diag = run_diagnostics(test_cube, model, tmp_path / "diag", threshold=0.5, n_examples=2,
                           quiet=True)
    cal = diag.summary["calibration"]
    assert cal["before"] is not None and cal["n_members"] == 2
    assert cal["threshold_choice"]["method"] == "target_fnr"
    assert json.loads(diag.json_path.read_text())["calibration"]["after"]["ece"] >= 0
    text = format_diagnostics(diag.summary)
    assert "ECE" in text and "Wilson 95%" in text and "ensemble of 2" in text
    # same numbers as the training run measured on the test rows
    metrics = json.loads((ensemble.folder / "metrics.json").read_text())
    assert cal["after"]["ece"] == pytest.approx(metrics["calibration"]["test"]["after"]["ece"],
                                                abs=1e-6)
    plot_results(test_cube, model, tmp_path / "plots", quiet=True)
    assert (tmp_path / "plots").is_dir() and any((tmp_path / "plots").glob("*.png"))
    html = build_report(model_dir=ensemble.folder, output=tmp_path / "r.html",
                        quiet=True).read_text()
    for fragment in ("Calibration and operating point", "ECE before", "95% low",
                     "chosen at training on the validation rows", "Ensemble of 2 networks"):
        assert fragment in html, fragment
    loaded = load_model(model)
    with open_datacube(test_cube) as c:
        images = c.read(np.arange(6))
    res = compute_grad_cam(loaded, images)
    assert np.allclose(res.p_real, predict_proba(loaded, images))
    assert res.heatmaps.shape == (6, 16, 16) and res.heatmaps.max() <= 1.0
    run = run_grad_cam(test_cube, model, tmp_path / "cam", n_random=1, quiet=True)
    assert run.files


def test_ensemble_resumes_member_by_member(cube: Path, tmp_path: Path) -> None:
    cfg = {"seed": 1, "ensemble": 2, **FAST}
    full = train(cube, tmp_path, "full", TrainConfig(epochs=2, **cfg), quiet=True)
    train(cube, tmp_path, "res", TrainConfig(epochs=1, **cfg), quiet=True)
    res = train(cube, tmp_path, "res", TrainConfig(epochs=2, resume=True, **cfg), quiet=True)
    assert [(r["member"], r["epoch"]) for r in res.history] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    a, b = load_model(full.model_file), load_model(res.model_file)
    for ma, mb in zip(a.members, b.members, strict=True):
        assert all(torch.equal(v, mb.state_dict()[k]) for k, v in ma.state_dict().items())
    assert a.temperature == b.temperature
    # an ensemble's checkpoints also stop a fresh run without --overwrite
    res.model_file.unlink()
    with pytest.raises(OtrainError, match="checkpoint"):
        train(cube, tmp_path, "res", TrainConfig(epochs=1, seed=1, **FAST), quiet=True)
