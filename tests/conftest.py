"""Shared test helpers: tiny FITS cutouts and blob cutouts written on the fly, one torch thread,
and running the console scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
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


def blob_cutouts(n: int, rng: np.random.Generator, size: int, channels: int = 1,
                 centre: tuple[float, float] | None = None, amplitude: float = 8.0,
                 spread: float = 3.0, labels: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Noise cutouts ``(n, channels, size, size)``; the label 1 ones hold a Gaussian blob
    ``amplitude * exp(-r**2 / spread)`` at a random (or the given) centre.

    ``labels`` defaults to alternating 0, 1, ... The noise is drawn first, then one random centre
    per label 1 cutout in order (none when ``centre`` is given), so a seed gives fixed data.
    """
    labels = (np.arange(n) % 2).astype(np.int64) if labels is None else labels
    yy, xx = np.mgrid[0:size, 0:size]
    images = rng.normal(0.0, 1.0, (n, channels, size, size)).astype(np.float32)
    for i in np.flatnonzero(labels):
        y0, x0 = centre if centre is not None else rng.uniform(3, size - 4, 2)
        images[i] += (amplitude * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / spread))[None]
    return images, labels


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
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test (the tests share 2 cores, where 2 spinning threads slow
    down 5x); use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ztf_dir() -> Path:
    """The shared real ZTF alerts; the test is skipped when they are not beside the repo."""
    if not ZTF_DIR.is_dir() or not any(ZTF_DIR.glob("*.avro")):
        pytest.skip(f"real ZTF alerts not found at {ZTF_DIR} (../shared/data/ztf)")
    return ZTF_DIR
