"""Shared test helpers: tiny FITS cutouts written on the fly, and running the console scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

BIN = Path(sys.executable).parent
ZTF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ztf"

DEFAULT_KEYS = {"MAG": 18.5, "MAGERR": 0.05, "FILTER": "r", "FWHM": 2.5, "EDGE": "False",
                "RA": 150.1, "DEC": 2.2, "FILE": "image_001.fits", "XPOS": 100.0, "YPOS": 200.0,
                "FWHMPSF": 2.4}


def write_cutout(path: Path, image: np.ndarray, **keys: object) -> Path:
    """Write a single-HDU cutout with O'TRAIN keywords (``None`` drops a keyword)."""
    header = fits.Header()
    values = {"CANDID": path.stem, **DEFAULT_KEYS, **keys}
    for key, value in values.items():
        if value is not None:
            header[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.writeto(path, np.asarray(image, dtype=np.float32), header)
    return path


def write_mef(path: Path, planes: dict[str, np.ndarray], **keys: object) -> Path:
    """Write a multi-extension cutout: metadata in the primary, images in named extensions."""
    header = fits.Header()
    for key, value in {"CANDID": path.stem, **DEFAULT_KEYS, **keys}.items():
        if value is not None:
            header[key] = value
    hdus = [fits.PrimaryHDU(header=header)]
    hdus += [fits.ImageHDU(np.asarray(d, dtype=np.float32), name=n) for n, d in planes.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path)
    return path


def make_labelled_folder(root: Path, n_true: int, n_false: int, size: int = 16,
                         seed: int = 0, **keys: object) -> Path:
    """A true/ + false/ folder of noise cutouts, named t_000.fits / f_000.fits."""
    rng = np.random.default_rng(seed)
    for prefix, folder, n in (("t", "true", n_true), ("f", "false", n_false)):
        for i in range(n):
            write_cutout(root / folder / f"{prefix}_{i:03d}.fits",
                         rng.normal(size=(size, size)), **keys)
    return root


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run a console script (``otrain``, ``otrain-convert``, ...) as a user would."""
    cmd = [str(BIN / args[0]), *args[1:]]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def ztf_dir() -> Path:
    """The shared real ZTF alerts; the test is skipped when they are not beside the repo."""
    if not ZTF_DIR.is_dir() or not any(ZTF_DIR.glob("*.avro")):
        pytest.skip(f"real ZTF alerts not found at {ZTF_DIR} (../shared/data/ztf)")
    return ZTF_DIR
