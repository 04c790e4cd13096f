"""Files of the simulator: FITS cutouts, ``crossmatch.dat``, and the optional real background image.

Cutout files are assembled directly as FITS bytes (header cards formatted by astropy, big-endian
float32 data in 2880-byte blocks): about four times faster than ``HDUList.writeto`` for 32x32
cutouts, and byte-for-byte reproducible (no date or checksum cards).
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from otrain.errors import OtrainError
from otrain.outputs import atomic_output, check_writable

_BLOCK = 2880
_KEY = re.compile(r"[A-Z0-9_-]{1,8}")
#: Extension names of a triplet file, in file order.
EXTNAMES = ("DIFF", "SCI", "REF")
#: Columns of ``crossmatch.dat``, in file order.
CROSSMATCH_COLUMNS = ("idx", "filename", "Xpos", "Ypos", "RA", "Dec", "mag", "filter", "FWHM",
                      "FWHMPSF", "Nmatches", "closest_candID", "cutout")


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % _BLOCK)


@functools.lru_cache(maxsize=8)
def _layout(size: int, triplets: bool) -> tuple[str, tuple[bytes, ...]]:
    """Cards fixed by the layout: primary structure cards (no END) and full extension headers."""
    zeros = np.zeros((size, size), dtype=np.float32)
    if not triplets:
        return "".join(str(c) for c in fits.PrimaryHDU(zeros).header.cards), ()
    primary = "".join(str(c) for c in fits.PrimaryHDU().header.cards)
    exts = tuple(fits.ImageHDU(zeros, name=n).header.tostring().encode("ascii") for n in EXTNAMES)
    return primary, exts


def format_card(key: str, value: object) -> str:
    """One 80-character header card, exactly as :class:`astropy.io.fits.Card` would format it.

    Short keys with str/bool/int/finite float values are formatted here (astropy's ``Card`` costs
    about 70 microseconds a card); anything else is passed to astropy.
    """
    text: str | None = None
    if _KEY.fullmatch(key):
        if isinstance(value, str) and value.isascii() and value.isprintable() and len(value) <= 60:
            quoted = "'" + value.replace("'", "''").ljust(8) + "'" if value else "''"
            text = f"{quoted:20}"
        elif isinstance(value, bool | np.bool_):
            text = f"{'T' if value else 'F':>20}"
        elif isinstance(value, int | np.integer):
            text = f"{int(value):>20d}"
        elif isinstance(value, float | np.float64) and math.isfinite(value):
            number = str(float(value)).replace("e", "E")
            text = f"{number:>20}" if len(number) <= 20 else None
    if text is None:
        return str(fits.Card(key, value))
    return f"{key:8}= {text}".ljust(80)


def _data_bytes(image: np.ndarray) -> bytes:
    return _pad(np.ascontiguousarray(image, dtype=">f4").tobytes(), b"\0")


def cutout_bytes(meta: dict, diff: np.ndarray, sci: np.ndarray | None = None,
                 ref: np.ndarray | None = None) -> bytes:
    """Encode one cutout as a FITS file.

    Parameters
    ----------
    meta : dict
        Header keywords (str, float, int or bool values; no NaN) of the primary HDU.
    diff : numpy.ndarray
        Difference image (square).
    sci, ref : numpy.ndarray, optional
        Science and reference images: if given, a multi-extension file is written (empty primary
        with ``meta``, then ``DIFF``, ``SCI``, ``REF``); otherwise ``diff`` is the primary HDU.

    Returns
    -------
    bytes
        The file content.
    """
    triplets = sci is not None and ref is not None
    structure, ext_headers = _layout(diff.shape[0], triplets)
    cards = structure + "".join(format_card(k, v) for k, v in meta.items()) + "END"
    out = [_pad(cards.encode("ascii"), b" ")]
    if not triplets:
        out.append(_data_bytes(diff))
    else:
        for header, image in zip(ext_headers, (diff, sci, ref), strict=True):
            out += [header, _data_bytes(image)]
    return b"".join(out)


def prepare_outdir(outdir: Path, overwrite: bool, name_pattern: str) -> list[Path]:
    """Check that a simulation may be written into ``outdir``.

    Parameters
    ----------
    outdir : Path
        Destination folder (may not exist yet).
    overwrite : bool
        Whether a previous simulation there may be replaced.
    name_pattern : str
        Regular expression of the cutout file names this simulator writes.

    Returns
    -------
    list of Path
        Previous simulated cutouts to delete before writing (only with ``overwrite``).

    Raises
    ------
    OtrainError
        If ``true/`` or ``false/`` already holds FITS files and ``overwrite`` is false, if they
        hold FITS files this simulator did not write, or if an output is not writable.
    """
    if outdir.exists() and not outdir.is_dir():
        raise OtrainError("exists and is not a folder", outdir)
    stale: list[Path] = []
    pattern = re.compile(name_pattern)
    for sub in ("true", "false"):
        folder = outdir / sub
        if folder.exists() and not folder.is_dir():
            raise OtrainError("exists and is not a folder", folder)
        found = sorted(folder.glob("*.fits")) if folder.is_dir() else []
        if found and not overwrite:
            raise OtrainError(f"already holds {len(found)} FITS cutouts; pass --overwrite to "
                              "replace them or choose another --outdir", folder)
        foreign = [f for f in found if not pattern.fullmatch(f.name)]
        if foreign:
            raise OtrainError(f"holds FITS files not written by otrain-simulate (e.g. "
                              f"{foreign[0].name}); remove them or choose another --outdir", folder)
        stale += found
    for name in ("crossmatch.dat", "simulation.json"):
        check_writable(outdir / name, overwrite)
    return stale


def write_crossmatch(path: Path, rows: list[dict], overwrite: bool) -> Path:
    """Write ``crossmatch.dat``: one row per injected real source (``ascii.commented_header``).

    Parameters
    ----------
    path : Path
        Destination.
    rows : list of dict
        One dict per source with the keys of :data:`CROSSMATCH_COLUMNS`.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        The destination.
    """
    from astropy.table import Table

    dtypes = (int, str, float, float, float, float, float, str, float, float, int, str, str)
    table = Table([np.array([row[c] for row in rows], dtype=t)
                   for c, t in zip(CROSSMATCH_COLUMNS, dtypes, strict=True)],
                  names=CROSSMATCH_COLUMNS)
    for col, fmt in (("Xpos", ".3f"), ("Ypos", ".3f"), ("RA", ".7f"), ("Dec", ".7f"),
                     ("mag", ".4f"), ("FWHM", ".3f"), ("FWHMPSF", ".3f")):
        table[col].info.format = fmt
    with atomic_output(path, overwrite) as tmp:
        table.write(tmp, format="ascii.commented_header", overwrite=True)
    return path


@dataclass
class Background:
    """A real image that provides the background of every cutout.

    Attributes
    ----------
    path : Path
        The FITS file.
    data : numpy.ndarray
        The 2-D image (float32).
    level : float
        Median pixel value.
    noise : float
        Robust per-pixel noise (1.4826 x median absolute deviation).
    wcs : astropy.wcs.WCS or None
        Its celestial WCS, if it has one.
    """

    path: Path
    data: np.ndarray
    level: float
    noise: float
    wcs: object | None = None

    def pick(self, rng: np.random.Generator, size: int) -> tuple[int, int, np.ndarray]:
        """A random NaN-free ``size x size`` region: ``(x0, y0, pixels)`` (0-based corner)."""
        ny, nx = self.data.shape
        for _ in range(100):
            x0, y0 = int(rng.integers(0, nx - size + 1)), int(rng.integers(0, ny - size + 1))
            cut = self.data[y0:y0 + size, x0:x0 + size]
            if np.isfinite(cut).all():
                return x0, y0, cut.astype(np.float64)
        raise OtrainError(f"no NaN-free {size}x{size} region found in 100 random tries", self.path)

    def radec(self, x: float, y: float) -> tuple[float, float] | None:
        """Sky position of 1-based pixel ``(x, y)`` from the WCS, or None without one."""
        if self.wcs is None:
            return None
        ra, dec = self.wcs.all_pix2world(x, y, 1)  # type: ignore[attr-defined]
        return float(ra), float(dec)


def load_background(path: str | Path, size: int) -> Background:
    """Read a real image to take cutout backgrounds from.

    Parameters
    ----------
    path : str or Path
        A FITS file; the first HDU holding a 2-D image is used.
    size : int
        Cutout side: the image must be at least this large.

    Returns
    -------
    Background

    Raises
    ------
    OtrainError
        If the file is missing, not FITS, has no 2-D image, is smaller than the cutout, or has no
        measurable noise.
    """
    path = Path(path)
    if not path.is_file():
        raise OtrainError("background image not found", path)
    data = header = None
    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.is_image and hdu.data is not None and np.squeeze(hdu.data).ndim == 2:
                    data = np.squeeze(hdu.data).astype(np.float32)
                    header = hdu.header
                    break
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError... on bad files
        raise OtrainError(f"cannot read as a FITS image ({exc})", path) from exc
    if data is None:
        raise OtrainError("holds no 2-D image to use as background", path)
    ny, nx = data.shape
    if ny < size or nx < size:
        raise OtrainError(f"image is {nx}x{ny} pixels, smaller than the {size}x{size} cutouts",
                          path)
    finite = data[np.isfinite(data)]
    if finite.size < size * size:
        raise OtrainError("has too few finite (non-NaN) pixels", path)
    sample = finite[:: max(1, finite.size // 1_000_000)].astype(np.float64)
    level = float(np.median(sample))
    noise = 1.4826 * float(np.median(np.abs(sample - level))) or float(np.std(sample))
    if not noise > 0:
        raise OtrainError("is constant: no noise to measure", path)
    wcs = None
    try:
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = WCS(header)
        if full.has_celestial:
            wcs = full.celestial
    except Exception:  # a broken WCS only costs the sky coordinates
        wcs = None
    return Background(path, data, level, noise, wcs)
