"""Tests of the built-in simulator (otrain.simulate) and its command otrain-simulate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import ascii, fits

from otrain.errors import OtrainError
from otrain.simulate.core import KINDS, SimulationConfig, render_candidate, simulate_cutouts
from otrain.simulate.files import format_card, load_background

KEYWORDS = {"CANDID": str, "MAG": float, "MAGERR": float, "FILTER": str, "FWHM": float,
            "EDGE": str, "RA": float, "DEC": float, "FILE": str, "XPOS": float, "YPOS": float,
            "FWHMPSF": float}


def small(**kw) -> SimulationConfig:
    """A quick configuration: 20 + 20 cutouts unless told otherwise."""
    return SimulationConfig(**{"n_true": 20, "n_false": 20, **kw})


def fits_files(root: Path) -> list[Path]:
    return sorted(root.glob("true/*.fits")) + sorted(root.glob("false/*.fits"))


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def sharpness(diff: np.ndarray) -> float:
    """Brightest central pixel over the sum of its 8 neighbours (large for single-pixel hits)."""
    c = diff.shape[0] // 2
    box = diff[c - 2:c + 3, c - 2:c + 3]
    i, j = np.unravel_index(int(np.argmax(box)), box.shape)
    i, j = i + c - 2, j + c - 2
    around = diff[i - 1:i + 2, j - 1:j + 2].sum() - diff[i, j]
    return float(diff[i, j] / around) if around > 0 else 10.0


# ---------------------------------------------------------------- reproducibility, layout


def test_same_seed_gives_identical_files(tmp_path):
    simulate_cutouts(tmp_path / "a", small(seed=3), quiet=True)
    simulate_cutouts(tmp_path / "b", small(seed=3), quiet=True)
    a, b = all_bytes(tmp_path / "a"), all_bytes(tmp_path / "b")
    assert len(a) == 42 and a == b


def test_different_seed_gives_different_pixels(tmp_path):
    simulate_cutouts(tmp_path / "a", small(seed=1), quiet=True)
    simulate_cutouts(tmp_path / "b", small(seed=2), quiet=True)
    a, b = all_bytes(tmp_path / "a"), all_bytes(tmp_path / "b")
    assert a.keys() != b.keys() or any(a[k] != b[k] for k in a)
    def pixels(root: Path) -> np.ndarray:
        return np.concatenate([np.nan_to_num(fits.getdata(p)).ravel() for p in fits_files(root)])

    assert not np.array_equal(pixels(tmp_path / "a"), pixels(tmp_path / "b"))


def test_counts_folders_and_summary(tmp_path, capsys):
    summary = simulate_cutouts(tmp_path, small(n_true=100, n_false=60), quiet=False)
    true = sorted((tmp_path / "true").glob("*.fits"))
    false = sorted((tmp_path / "false").glob("*.fits"))
    assert (len(true), len(false)) == (100, 60)
    assert (summary.n_true, summary.n_false) == (100, 60)
    assert summary.n_edge == 3 + 2  # round(0.03 * 100) + round(0.03 * 60)
    assert summary.kinds["real"] == 100 and sum(summary.kinds.values()) == 160
    assert summary.kinds["cosmic_ray"] == 15 and summary.kinds["dipole"] == 15  # 25% of 60
    names = [p.stem for p in true + false]
    assert len(set(names)) == 160 and all(n.startswith("cand_") and len(n) == 11 for n in names)
    record = json.loads((tmp_path / "simulation.json").read_text())
    assert record["seed"] == 0 and record["n_true"] == 100 and record["size"] == 32
    assert "otrain_version" in record and record["kinds"] == summary.kinds
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("simulated 160 cutouts (100 true, 60 false, 5 flagged EDGE)")


def test_quiet_prints_nothing(tmp_path, capsys):
    simulate_cutouts(tmp_path, small(n_true=3, n_false=3), quiet=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_header_keywords_and_images(tmp_path):
    simulate_cutouts(tmp_path, small(n_true=40, n_false=40, edge_fraction=0.1), quiet=True)
    n_edge = 0
    for path in fits_files(tmp_path):
        with fits.open(path) as hdul:
            assert len(hdul) == 1
            header, data = hdul[0].header, hdul[0].data
        for key, kind in KEYWORDS.items():
            assert isinstance(header[key], kind), (path.name, key, header[key])
        assert header["CANDID"] == path.stem
        assert header["EDGE"] in ("True", "False")
        assert header["FILTER"] in ("g", "r", "i")
        assert data.dtype.name == "float32" and data.shape == (32, 32)
        assert 0 < header["FWHM"] < 16 and 1.5 <= header["FWHMPSF"] <= 4.0
        assert 0 < header["MAGERR"] < 1.1 and 5 < header["MAG"] < 30
        assert 0 <= header["RA"] < 360 and -90 <= header["DEC"] <= 90
        assert (header["SIMKIND"] == "real") == (path.parent.name == "true")
        if header["EDGE"] == "True":
            n_edge += 1
            nan = np.isnan(data)
            assert nan.any() and np.isfinite(data[16, 16])
            rows, cols = nan.all(axis=1), nan.all(axis=0)  # a full band on one side
            assert rows[0] or rows[-1] or cols[0] or cols[-1]
        else:
            assert np.isfinite(data).all()
    assert n_edge == 8


def test_logical_edge(tmp_path):
    simulate_cutouts(tmp_path, small(logical_edge=True, edge_fraction=0.1), quiet=True)
    values = [fits.getheader(p)["EDGE"] for p in fits_files(tmp_path)]
    assert all(isinstance(v, bool) for v in values)
    assert sum(values) == 4


def test_triplets_extensions_and_difference(tmp_path):
    simulate_cutouts(tmp_path, small(triplets=True, edge_fraction=0.1), quiet=True)
    for path in fits_files(tmp_path):
        with fits.open(path) as hdul:
            hdul.verify("exception")
            assert [h.name for h in hdul] == ["PRIMARY", "DIFF", "SCI", "REF"]
            assert hdul[0].data is None and hdul[0].header["CANDID"] == path.stem
            for key, kind in KEYWORDS.items():
                assert isinstance(hdul[0].header[key], kind)
            diff, sci, ref = (hdul[n].data for n in ("DIFF", "SCI", "REF"))
        assert diff.shape == sci.shape == ref.shape == (32, 32)
        assert np.array_equal(diff, sci - ref, equal_nan=True)


def test_crossmatch_matches_true_candidates(tmp_path):
    simulate_cutouts(tmp_path, small(n_true=30, n_false=10), quiet=True)
    table = ascii.read(tmp_path / "crossmatch.dat", format="commented_header")
    for col in ("filename", "Xpos", "Ypos", "RA", "Dec", "mag", "closest_candID", "FWHM",
                "FWHMPSF"):
        assert col in table.colnames
    assert len(table) == 30
    headers = {p.stem: fits.getheader(p) for p in sorted((tmp_path / "true").glob("*.fits"))}
    assert set(table["closest_candID"]) == set(headers)
    for row in table:
        header = headers[row["closest_candID"]]
        assert row["mag"] == pytest.approx(header["SIMMAG"])
        assert row["filename"] == header["FILE"] and row["Xpos"] == pytest.approx(header["XPOS"])
    # also readable with format guessing, as otrain-checkinfer does
    assert len(ascii.read(tmp_path / "crossmatch.dat")) == 30


# ---------------------------------------------------------------- background image


def write_background(path: Path, shape=(120, 150), level=1000.0, sigma=10.0) -> Path:
    rng = np.random.default_rng(42)
    image = rng.normal(level, sigma, shape).astype(np.float32)
    image[:, :10] = np.nan  # an off-detector strip that cutouts must avoid
    fits.PrimaryHDU(image).writeto(path)
    return path


def test_background_from_real_image(tmp_path):
    bg = write_background(tmp_path / "sky.fits")
    simulate_cutouts(tmp_path / "out", small(triplets=True, background=str(bg), edge_fraction=0),
                     quiet=True)
    noise, level = [], []
    for path in fits_files(tmp_path / "out"):
        with fits.open(path) as hdul:
            assert hdul[0].header["FILE"] == "sky.fits"
            assert 1 <= hdul[0].header["XPOS"] <= 150 and 1 <= hdul[0].header["YPOS"] <= 120
            sci, diff = hdul["SCI"].data, hdul["DIFF"].data
        assert np.isfinite(sci).all()
        level.append(np.median(sci))
        noise.append(np.std(diff[:8, :8]))
    assert np.median(level) == pytest.approx(1000.0, abs=2.0)
    assert np.median(noise) == pytest.approx(np.sqrt(2) * 10.0, rel=0.15)


@pytest.mark.parametrize("case", ["missing", "not_fits", "table", "too_small", "constant"])
def test_background_errors(tmp_path, case):
    path = tmp_path / "bg.fits"
    if case == "not_fits":
        path.write_text("not a FITS file\n")
    elif case == "table":
        fits.HDUList([fits.PrimaryHDU(),
                      fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]
                     ).writeto(path)
    elif case == "too_small":
        fits.PrimaryHDU(np.zeros((20, 50), np.float32) + np.arange(50)).writeto(path)
    elif case == "constant":
        fits.PrimaryHDU(np.ones((64, 64), np.float32)).writeto(path)
    with pytest.raises(OtrainError) as err:
        simulate_cutouts(tmp_path / "out", small(background=str(path)), quiet=True)
    assert str(path) in str(err.value)
    assert not (tmp_path / "out" / "true").exists()
    if case == "too_small":
        assert "smaller than the 32x32" in str(err.value)
    with pytest.raises(OtrainError):
        load_background(path, 32)


# ---------------------------------------------------------------- overwriting, failures


def test_refuses_to_overwrite_then_replaces(tmp_path):
    simulate_cutouts(tmp_path, small(), quiet=True)
    before = all_bytes(tmp_path)
    with pytest.raises(OtrainError, match="--overwrite"):
        simulate_cutouts(tmp_path, small(seed=9), quiet=True)
    assert all_bytes(tmp_path) == before
    simulate_cutouts(tmp_path, small(n_true=5, n_false=4, seed=9), overwrite=True, quiet=True)
    assert len(fits_files(tmp_path)) == 9  # the previous 40 cutouts are gone, not mixed in
    assert json.loads((tmp_path / "simulation.json").read_text())["seed"] == 9


def test_overwrite_keeps_foreign_files(tmp_path):
    (tmp_path / "false").mkdir()
    fits.PrimaryHDU(np.zeros((32, 32), np.float32)).writeto(tmp_path / "false" / "mine.fits")
    with pytest.raises(OtrainError, match="not written by otrain-simulate"):
        simulate_cutouts(tmp_path, small(), overwrite=True, quiet=True)
    assert (tmp_path / "false" / "mine.fits").exists()


def test_failure_leaves_no_half_folder(tmp_path, monkeypatch):
    import otrain.simulate.core as sim

    calls = {"n": 0}
    real_bytes = sim.cutout_bytes

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError("disk full")
        return real_bytes(*args, **kwargs)

    monkeypatch.setattr(sim, "cutout_bytes", failing)
    with pytest.raises(OSError):
        simulate_cutouts(tmp_path, small(), quiet=True)
    assert fits_files(tmp_path) == [] and not (tmp_path / "crossmatch.dat").exists()


@pytest.mark.parametrize("bad", [dict(size=4), dict(n_true=0, n_false=0), dict(edge_fraction=2),
                                 dict(fwhm_range=(3.0, 2.0)), dict(artefact_mix={"ufo": 1.0}),
                                 dict(artefact_mix={"noise": 0.0}), dict(gain=0.0)])
def test_invalid_config(tmp_path, bad):
    with pytest.raises(OtrainError, match="simulation: "):
        simulate_cutouts(tmp_path, small(**bad), quiet=True)


# ---------------------------------------------------------------- physics


def render_many(kind: str, n: int = 60, seed: int = 7) -> list[tuple]:
    rng = np.random.default_rng(seed)
    config = SimulationConfig()
    return [render_candidate(rng, kind, config) for _ in range(n)]


def test_render_candidate_in_memory():
    rng = np.random.default_rng(0)
    for kind in KINDS:
        sci, ref, diff, meta = render_candidate(rng, kind, SimulationConfig(size=24))
        assert sci.shape == ref.shape == diff.shape == (24, 24) and diff.dtype == np.float32
        assert np.array_equal(diff, sci - ref) and meta["SIMKIND"] == kind
    with pytest.raises(OtrainError, match="unknown candidate kind"):
        render_candidate(rng, "ufo", SimulationConfig())


def test_difference_noise_is_sqrt2_sky_noise():
    config = SimulationConfig()
    diffs = np.stack([c[2] for c in render_many("noise", 40)])
    assert np.std(diffs) == pytest.approx(np.sqrt(2) * config.sky_noise, rel=0.05)


def test_real_sources_are_positive_psfs_down_to_the_limit():
    cands = render_many("real", 80)
    fluxes = np.array([c[2][13:20, 13:20].sum() for c in cands])
    assert (fluxes > 0).mean() > 0.95
    mags = np.array([c[3]["SIMMAG"] for c in cands])
    assert mags.min() >= 16.0 and mags.max() <= 21.5 and mags.max() > 20.0
    assert np.all(np.array([c[3]["MAGERR"] for c in cands]) < 0.4)  # S/N >= 3
    ratio = np.array([c[3]["FWHM"] / c[3]["FWHMPSF"] for c in cands])
    assert 0.8 < np.median(ratio) < 1.2


def test_artefacts_are_physically_distinguishable():
    real = render_many("real")
    crs, hot, dipoles = render_many("cosmic_ray"), render_many("hot_pixel"), render_many("dipole")
    sharp_real = np.median([sharpness(c[2]) for c in real])
    assert np.median([sharpness(c[2]) for c in crs]) > 3 * sharp_real
    assert np.median([sharpness(c[2]) for c in hot]) > 10 * sharp_real
    assert np.median([c[3]["FWHM"] for c in hot]) < 0.6 * np.median([c[3]["FWHM"] for c in real])
    sigma = np.sqrt(2) * SimulationConfig().sky_noise
    negative = lambda cands: np.mean([np.nanmin(c[2]) < -6 * sigma for c in cands])  # noqa: E731
    assert negative(dipoles) > 0.8 and negative(real) < 0.1
    assert negative(render_many("star_residual", 20)) > 0.8
    lines = render_many("bad_line", 20)
    assert all((np.abs(np.median(c[2], axis=0)) > 2 * sigma).any()
               or (np.abs(np.median(c[2], axis=1)) > 2 * sigma).any() for c in lines)


def test_format_card_matches_astropy():
    for value in ["", "g", "cand_000001", "it's", "x" * 70, True, False, 0, -7, 1.0, 0.1,
                  -2.5e-8, 1e20, 123.4567891, 1 / 3, np.float32(2.5)]:
        assert format_card("KEY", value) == str(fits.Card("KEY", value))


# ---------------------------------------------------------------- command line


def cli() -> list[str]:
    script = Path(sys.executable).parent / "otrain-simulate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "otrain.cli.main",
                                                  "simulate"]


def test_cli_writes_a_simulation(tmp_path):
    out = tmp_path / "sim"
    proc = subprocess.run([*cli(), "--outdir", str(out), "--n-true", "6", "--n-false", "4",
                           "--seed", "5", "--triplets", "--logical-edge"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "simulated 10 cutouts (6 true, 4 false" in proc.stdout
    assert len(fits_files(out)) == 10
    assert isinstance(fits.getheader(fits_files(out)[0])["EDGE"], bool)
    assert json.loads((out / "simulation.json").read_text())["config"]["triplets"] is True


@pytest.mark.parametrize("extra", [["--size", "4"], ["--background", "nowhere.fits"],
                                   ["--artefact-mix", "cosmic_ray"]])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, extra):
    proc = subprocess.run([*cli(), "--outdir", str(tmp_path / "sim"), "--quiet", *extra],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in proc.stderr


def test_cli_refuses_existing_output(tmp_path):
    simulate_cutouts(tmp_path, small(n_true=2, n_false=2), quiet=True)
    proc = subprocess.run([*cli(), "--outdir", str(tmp_path), "--n-true", "2", "--n-false", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
