"""Fast reading of small FITS files (cutouts): header cards and pixels straight from bytes.

Opening a 32x32 cutout with :func:`astropy.io.fits.open` and reading its keywords costs about
300-350 microseconds on this project's 2-core machines, nearly all of it object set-up and card
parsing around a 6 kB file: reading the file itself takes about 13 (``benchmarks/convert.py``
measures both). Converting 20,000 cutouts is therefore header parsing. This module walks the HDUs
of a file held in memory, parses the fixed-format cards of the FITS standard (``KEY = value /
comment``: strings, logicals, integers, reals, and ``HIERARCH`` long names) into a plain dict and
views the image data in place with :func:`numpy.frombuffer`. Anything it does not cover (tables,
tile-compressed images, random groups) is handed to :func:`astropy.io.fits.open` whole, so odd
files are still read by the library.
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

BLOCK = 2880
_CARD = 80
_END = b"END" + b" " * 77
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class FitsFormatError(ValueError):
    """The bytes are not a FITS file this reader can parse."""


@dataclass
class ImageHDU:
    """One header-data unit: its parsed header and, for images, the pixel array (or None)."""

    header: dict[str, Any]
    data: np.ndarray | None

    @property
    def name(self) -> str:
        """EXTNAME, upper case ("PRIMARY" for the first HDU without one)."""
        return str(self.header.get("EXTNAME", "")).strip().upper()


def read_bytes(path: str | Path) -> bytes:
    """Read a file whole, decompressing ``.gz``.

    Parameters
    ----------
    path : str or Path
        File to read.

    Returns
    -------
    bytes
        The (decompressed) content.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # a damaged body or a cut-off file
            raise FitsFormatError(f"corrupt gzip data ({exc})") from None
    return raw


def parse_hdus(raw: bytes) -> list[ImageHDU]:
    """Split FITS bytes into HDUs with parsed headers and image data.

    Parameters
    ----------
    raw : bytes
        A whole FITS file.

    Returns
    -------
    list of ImageHDU
        Every HDU in order; ``data`` is a float32 array for image HDUs with pixels, else None.

    Raises
    ------
    FitsFormatError
        If the bytes are not FITS or are truncated.
    """
    if not raw.startswith(b"SIMPLE  ="):
        raise FitsFormatError("not a FITS file (no SIMPLE card at the start)")
    try:
        return _walk(raw)
    except _Unsupported:
        pass
    try:  # extensions astropy handles (tile compression, tables): any failure is one error
        return _walk_astropy(raw)
    except Exception as exc:
        raise FitsFormatError(f"unreadable FITS ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]})") from None


class _Unsupported(Exception):
    pass


def _walk(raw: bytes) -> list[ImageHDU]:
    hdus: list[ImageHDU] = []
    pos, size = 0, len(raw)
    while pos < size:
        end = _find_end(raw, pos)
        if end < 0:
            if hdus and not raw[pos:].startswith(b"XTENSION"):
                break  # padding or other bytes after the last HDU: ignored, as astropy does
            where = f"of extension {len(hdus)} " if hdus else ""
            raise FitsFormatError(f"truncated header {where}(no END card)")
        header = parse_cards(raw[pos:end])
        data_start = pos + _blocks(end + _CARD - pos)
        if pos > 0 and str(header.get("XTENSION", "")).strip() != "IMAGE":
            raise _Unsupported
        if header.get("GROUPS") or header.get("ZIMAGE"):
            raise _Unsupported
        try:
            bitpix = int(header["BITPIX"])
            naxis = int(header.get("NAXIS", 0))
            shape = tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
        except (KeyError, TypeError, ValueError) as exc:
            raise FitsFormatError(f"bad or missing structural keyword ({exc})") from None
        nbytes = abs(bitpix) // 8 * int(np.prod(shape)) if naxis else 0
        if data_start + nbytes > size:
            raise FitsFormatError("truncated data (file shorter than its header says)")
        data = None
        if nbytes:
            if bitpix not in _DTYPES:
                raise FitsFormatError(f"unsupported BITPIX {bitpix}")
            arr = np.frombuffer(raw, dtype=_DTYPES[bitpix], count=int(np.prod(shape)),
                                offset=data_start).reshape(shape)
            data = _scale(arr, header)
        hdus.append(ImageHDU(header, data))
        pos = data_start + _blocks(nbytes)
    return hdus


def _walk_astropy(raw: bytes) -> list[ImageHDU]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        with fits.open(io.BytesIO(raw), memmap=False) as hdul:
            for hdu in hdul:
                data = hdu.data if hdu.is_image else None
                arr = None if data is None else np.asarray(data, dtype=np.float32)
                header = {k.upper(): v for k, v in hdu.header.items() if k}
                if "EXTNAME" not in header and hdu.name and hdu.name != "PRIMARY":
                    header["EXTNAME"] = hdu.name  # e.g. COMPRESSED_IMAGE of a CompImageHDU
                out.append(ImageHDU(header, arr))
    return out


def parse_cards(block: bytes) -> dict[str, Any]:
    """Parse header cards (80-byte records before END) into ``{KEY: value}``.

    Values follow the FITS fixed/free format: quoted strings (``''`` escapes a quote, trailing
    blanks dropped), ``T``/``F`` logicals, integers, reals (``D`` exponents allowed). ``HIERARCH``
    cards give their long name. Commentary cards and undefined values are left out; a value that
    is none of these is kept as its text.

    Parameters
    ----------
    block : bytes
        The header bytes up to (not including) the END card.

    Returns
    -------
    dict
        Upper-case keyword -> value; the first occurrence of a repeated keyword wins.
    """
    cards: dict[str, Any] = {}
    text = block.decode("ascii", "replace")
    for start in range(0, len(text), _CARD):
        card = text[start:start + _CARD]
        if card[8:10] == "= ":
            key, rest = card[:8].strip().upper(), card[10:]
        elif card.startswith("HIERARCH ") and "=" in card:
            name, rest = card[9:].split("=", 1)
            key = name.strip().upper()
        else:
            continue
        if key and key not in cards:
            value = _card_value(rest)
            if value is not None:
                cards[key] = value
    return cards


def _card_value(rest: str) -> Any:
    rest = rest.strip()
    if rest.startswith("'"):
        end = rest.find("'", 1)
        while end != -1 and rest[end + 1:end + 2] == "'":  # '' is an escaped quote
            end = rest.find("'", end + 2)
        return rest[1:end if end != -1 else None].replace("''", "'").rstrip()
    token = rest.split("/", 1)[0].strip()
    if not token:
        return None
    if token in ("T", "F"):
        return token == "T"
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token.replace("D", "E"))
    except ValueError:
        return token


def _find_end(raw: bytes, start: int) -> int:
    """Offset of the END card of the header starting at ``start``, or -1."""
    pos = start
    while True:
        i = raw.find(b"END", pos)
        if i < 0:
            return -1
        if (i - start) % _CARD == 0 and raw[i:i + _CARD].rstrip(b" ") == b"END":
            return i
        pos = i + 1


def _blocks(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _scale(arr: np.ndarray, header: dict[str, Any]) -> np.ndarray:
    bscale = float(header.get("BSCALE", 1.0))
    bzero = float(header.get("BZERO", 0.0))
    out = arr.astype(np.float32)
    if bscale != 1.0:
        out *= np.float32(bscale)
    if bzero != 0.0:
        out += np.float32(bzero)
    blank = header.get("BLANK")
    if blank is not None and arr.dtype.kind in "iu":
        out[arr == blank] = np.nan
    return out
