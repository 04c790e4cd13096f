"""otrain-checkinfer (otrain.evaluation.checkinfer): matching, recovery numbers, plots, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from astropy.table import Table

from conftest import assert_clean_error, run_cli
from otrain.errors import OtrainError
from otrain.evaluation.checkinfer import (
    PLOT_NAMES,
    CheckInferConfig,
    check_inference,
    mag_bins,
    prob_bins,
    wilson_interval,
)

# Injected sources: (closest_candID, mag, Nmatches). s5 has no candidate, s7's is not scored.
INJECTED = [("c1", 11.0, 1), ("c2", 13.0, 1), ("c3", 15.0, 1), ("c4", 19.0, 1), ("c5", 19.5, 1),
            ("None", 20.0, 0), ("c6", 22.0, 1), ("c99", 22.5, 1), ("c7", 18.0, 1),
            ("c8", 21.0, 1)]
# Scored candidates: (cand_ID, label1, FWHM, FWHMPSF). c3 has FWHMPSF 0, o1 NaN.
SCORED = [("c1", 0.95, 2.0, 2.0), ("c2", 0.6, 4.0, 2.0), ("c3", 0.05, 3.0, 0.0),
          ("c4", 0.8, 10.0, 2.0), ("c5", 0.3, 0.8, 2.0), ("c6", 0.75, 3.0, 2.0),
          ("c7", 0.5, 8.4, 2.0), ("c8", 0.2, 1.0, 2.0), ("o1", 0.1, 2.0, np.nan),
          ("o2", 0.9, 20.0, 2.0), ("o3", 0.4, 2.0, 2.0), ("o4", 0.02, 6.0, 2.0)]


def write_crossmatch(folder: Path, rows: list[tuple] = INJECTED, drop: str | None = None) -> Path:
    n = len(rows)
    table = Table({"filename": [f"img_{i}.fits" for i in range(n)],
                   "Xpos": np.arange(n) * 10.0, "Ypos": np.arange(n) * 5.0,
                   "RA": np.full(n, 150.0), "Dec": np.full(n, 2.0),
                   "mag": [r[1] for r in rows], "Nmatches": [r[2] for r in rows],
                   "closest_candID": [r[0] for r in rows], "FWHM": np.full(n, 2.0),
                   "FWHMPSF": np.full(n, 2.0)})
    if drop:
        table.remove_column(drop)
    folder.mkdir(parents=True, exist_ok=True)
    table.write(folder / "crossmatch.dat", format="ascii.commented_header", overwrite=True)
    return folder / "crossmatch.dat"


def write_infer(folder: Path, rows: list[tuple] = SCORED, drop: str | None = None) -> Path:
    n = len(rows)
    p = np.array([r[1] for r in rows])
    table = Table({"filename": [f"cut_{r[0]}.fits" for r in rows], "RA": np.full(n, 150.0),
                   "Dec": np.full(n, 2.0), "originalFile": ["img.fits"] * n,
                   "Xpos": np.ones(n), "Ypos": np.ones(n), "mag": np.full(n, 18.0),
                   "magerr": np.full(n, 0.1), "FWHM": [r[2] for r in rows],
                   "FWHMPSF": [r[3] for r in rows], "cand_ID": [r[0] for r in rows],
                   "label0": 1 - p, "label1": p, "edge": [False] * n})
    if drop:
        table.remove_column(drop)
    folder.mkdir(parents=True, exist_ok=True)
    table.write(folder / "infer_results.dat", format="ascii.commented_header", overwrite=True)
    return folder / "infer_results.dat"


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    return write_crossmatch(tmp_path / "sim"), write_infer(tmp_path / "cutouts")


def _fractions(row: dict) -> list[float | None]:
    return [c["fraction"] for c in row["cuts"]]


def test_recovery_matches_hand_computed_values(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    res = check_inference(*inputs, tmp_path / "plots", quiet=True)
    s = res.summary
    assert s["counts"]["injected"] == 10
    assert s["counts"]["scored"] == 8
    assert s["counts"]["no_candidate"] == 1
    assert s["counts"]["candidate_not_scored"] == 1
    assert s["counts"]["infer_other"] == 4
    rec = {row["bin"]: row for row in s["recovery"]}
    assert list(rec) == ["all", "mag < 12", "12 <= mag < 18", "18 <= mag < 21", "mag >= 21"]
    assert [rec[b]["n_injected"] for b in rec] == [10, 1, 2, 4, 3]
    # cuts 0.1, 0.5, 0.7 with strict ">": 0.5 itself (c7) is not above 0.5
    assert [c["n_recovered"] for c in rec["all"]["cuts"]] == [7, 4, 3]
    assert _fractions(rec["all"]) == pytest.approx([0.7, 0.4, 0.3])
    assert [c["n_recovered"] for c in rec["mag < 12"]["cuts"]] == [1, 1, 1]
    assert [c["n_recovered"] for c in rec["12 <= mag < 18"]["cuts"]] == [1, 1, 0]
    assert [c["n_recovered"] for c in rec["18 <= mag < 21"]["cuts"]] == [3, 1, 1]
    assert [c["n_recovered"] for c in rec["mag >= 21"]["cuts"]] == [2, 1, 1]
    assert _fractions(rec["18 <= mag < 21"]) == pytest.approx([0.75, 0.25, 0.25])
    # Wilson (z = 1) for 1 of 2: 0.5 +/- sqrt(0.1875) / 1.5
    half = math.sqrt(0.1875) / 1.5
    cut = rec["12 <= mag < 18"]["cuts"][0]
    assert (cut["low"], cut["high"]) == pytest.approx((0.5 - half, 0.5 + half))
    # the fine curve sums to the injected sources with a known magnitude
    assert sum(r["n_injected"] for r in s["recovery_curve"]) == 10
    saved = json.loads((tmp_path / "plots/CheckInfer/checkinfer.json").read_text())
    assert saved["recovery"] == s["recovery"]


def test_fwhmpsf_zero_or_nan_is_excluded_and_counted(inputs: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    fw = check_inference(*inputs, tmp_path / "p", quiet=True).summary["fwhm_ratio"]
    assert fw["excluded_fwhmpsf_invalid"] == {"all": 2, "injected": 1, "other": 1}
    # injected ratios 1, 2, 5, 0.4, 1.5, 4.2, 0.5 (c3 excluded): bounds inclusive -> 5 of 7
    assert (fw["injected"]["n"], fw["injected"]["inside_bounds"]) == (7, 5)
    assert (fw["other"]["n"], fw["other"]["inside_bounds"]) == (3, 2)
    assert all(math.isfinite(v) for v in (fw["injected"]["fraction_inside"],
                                          fw["other"]["fraction_inside"]))


def test_folder_or_file_inputs_agree(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    by_file = check_inference(*inputs, tmp_path / "a", quiet=True).summary
    by_folder = check_inference(inputs[0].parent, inputs[1].parent, tmp_path / "b",
                                quiet=True).summary
    assert by_file["recovery"] == by_folder["recovery"]
    with pytest.raises(OtrainError, match=r"holds no infer_results\.dat"):
        check_inference(inputs[0], tmp_path, tmp_path / "c", quiet=True)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    cross = write_crossmatch(tmp_path / "sim")
    infer = write_infer(tmp_path / "cut", drop="label1")
    with pytest.raises(OtrainError, match="missing column 'label1'") as err:
        check_inference(cross, infer, tmp_path / "p", quiet=True)
    assert str(infer) in str(err.value)
    cross = write_crossmatch(tmp_path / "sim2", drop="closest_candID")
    with pytest.raises(OtrainError, match="closest_candID"):
        check_inference(cross, write_infer(tmp_path / "c2"), tmp_path / "p", quiet=True)


def test_ids_are_text_and_must_be_unique(tmp_path: Path) -> None:
    cross = write_crossmatch(tmp_path / "s", [("007", 18.5, 1)])
    infer = write_infer(tmp_path / "c", [("007", 0.9, 2.0, 2.0), ("7", 0.1, 2.0, 2.0)])
    s = check_inference(cross, infer, tmp_path / "p", quiet=True).summary
    assert s["recovery"][0]["cuts"][1]["n_recovered"] == 1  # matched "007", not "7"
    dup = write_infer(tmp_path / "d", [("a", 0.9, 2.0, 2.0), ("a", 0.1, 2.0, 2.0)])
    with pytest.raises(OtrainError, match="not unique"):
        check_inference(cross, dup, tmp_path / "q", quiet=True)


def test_bins_cover_everything_without_overlap() -> None:
    bins = mag_bins([12, 18, 21])
    assert [b[2] for b in bins] == ["mag < 12", "12 <= mag < 18", "18 <= mag < 21", "mag >= 21"]
    mags = np.array([5.0, 12.0, 17.99, 18.0, 21.0, 30.0])
    member = np.array([[(m >= lo) & (m < hi) for lo, hi, _ in bins] for m in mags])
    assert (member.sum(axis=1) == 1).all()
    assert [b[2] for b in prob_bins([0.5])] == ["P(real) <= 0.5", "P(real) > 0.5"]
    assert math.isnan(wilson_interval(0, 0)[0])
    f, lo, hi = wilson_interval(0, 5)
    assert f == 0 and lo == 0 and 0 < hi < 1
    with pytest.raises(OtrainError, match="increase"):
        CheckInferConfig(maglim=(18, 12)).validate()


def test_outputs_refuse_overwrite_and_plots_are_images(inputs: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    res = check_inference(*inputs, tmp_path / "p", quiet=True)
    assert {f.name for f in res.files} == {*PLOT_NAMES, "checkinfer.json"}
    for name in PLOT_NAMES:
        img = mpimg.imread(tmp_path / "p/CheckInfer" / name)
        assert img.shape[0] > 200 and img.shape[1] > 300 and float(img.std()) > 0.01
    with pytest.raises(OtrainError, match="already exists"):
        check_inference(*inputs, tmp_path / "p", quiet=True)
    check_inference(*inputs, tmp_path / "p", overwrite=True, quiet=True)


def test_cli_runs_and_reports_bad_input(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "plots"
    proc = run_cli("otrain-checkinfer", "--plots", str(out), "--crossmatch",
                   str(inputs[0].parent), "--infer", str(inputs[1]), "--mag-lim", "15", "20",
                   "--cnn-problim", "0.5", "--fwhm-ratio-lower", "0.3",
                   "--fwhm-ratio-upper", "5", check=True)
    assert "mag >= 20" in proc.stdout
    summary = json.loads((out / "CheckInfer/checkinfer.json").read_text())
    assert summary["config"]["maglim"] == [15.0, 20.0]
    assert summary["fwhm_ratio"]["upper"] == 5.0
    bad = write_infer(tmp_path / "bad", drop="FWHMPSF")
    proc = run_cli("otrain-checkinfer", "--plots", str(out), "--crossmatch", str(inputs[0]),
                   "--infer", str(bad), "--overwrite")
    assert proc.returncode == 2
    assert_clean_error(proc, "missing column 'FWHMPSF'", str(bad))


def test_scores_table_with_p_real_std_is_read(tmp_path: Path) -> None:
    """An ensemble's scores table (p_real_std after label1) checks as the plain one."""
    cross = write_crossmatch(tmp_path / "sim")
    plain = check_inference(cross, write_infer(tmp_path / "a"), tmp_path / "pa", quiet=True)
    path = write_infer(tmp_path / "b")
    table = Table.read(path, format="ascii.commented_header")
    table.add_column(np.full(len(table), 0.01), name="p_real_std",
                     index=table.colnames.index("label1") + 1)
    table.write(path, format="ascii.commented_header", overwrite=True)
    res = check_inference(cross, path, tmp_path / "pb", quiet=True)
    assert res.summary["counts"] == plain.summary["counts"]
    assert res.summary["recovery"] == plain.summary["recovery"]
