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
import math
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def parse_hdus(raw: bytes, notes: list[str] | None = None) -> list[ImageHDU]:
    """Split FITS bytes into HDUs with parsed headers and image data.

    The fast walk reads only files in the plain form astropy writes (see
    :func:`_walk`); any other file, odd or damaged, is read by :func:`astropy.io.fits.open`
    instead, so the two never disagree: what astropy reads (every HDU it finds, with the data
    it gives) is what this returns, and where astropy fails this fails, with the fast walk's
    own diagnosis when it has one ("truncated data", ...).

    Parameters
    ----------
    raw : bytes
        A whole FITS file.
    notes : list of str, optional
        Receives a note when a damaged file was read by astropy all the same (e.g. a
        truncated last extension that astropy leaves out).

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
    except _Unsupported as exc:
        reason = str(exc)
    try:  # odd or damaged files, and what the fast walk does not cover (tile compression...)
        hdus = _walk_astropy(raw)
    except Exception as exc:
        if reason:
            raise FitsFormatError(reason) from None
        raise FitsFormatError(f"unreadable FITS ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:120]})") from None
    if reason and notes is not None:
        notes.append(f"{reason}: read as astropy reads it ({len(hdus)} HDU(s))")
    return hdus


class _Unsupported(Exception):
    """Hand the file to astropy; the message, if any, says what the fast walk found wrong."""


_PRINTABLE = bytes(range(0x20, 0x7f))  # translate() deletes these: what is left is not
_PADDING = re.compile(rb"[\x00 ]*")
_BLANKS = re.compile(rb" *")
_INT = re.compile(r"[+-]?[0-9]+")
_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([EeDd][+-]?[0-9]+)?")


def _walk(raw: bytes) -> list[ImageHDU]:
    """The fast walk over plain image HDUs, or :class:`_Unsupported`.

    Plain means: printable ASCII headers of standard cards, blank after their END card, with
    ``SIMPLE = T`` (or ``XTENSION = 'IMAGE'``, ``PCOUNT = 0``, ``GCOUNT = 1``) then
    ``BITPIX``, ``NAXIS`` and its ``NAXISn`` in the first cards, integer values, a standard
    ``BITPIX``, data of the size the header says, and nothing but zero or blank padding after
    the last HDU.
    """
    hdus: list[ImageHDU] = []
    pos, size = 0, len(raw)
    while pos < size:
        end = _find_end(raw, pos)
        if end < 0:
            if hdus and _PADDING.fullmatch(raw, pos):
                break  # zero or blank padding after the last HDU
            if hdus and not raw.startswith(b"XTENSION", pos):
                raise _Unsupported("unexpected bytes after the last HDU")  # astropy decides
            where = f"of extension {len(hdus)} " if hdus else ""
            raise _Unsupported(f"truncated header {where}(no END card)")
        data_start = pos + _blocks(end + _CARD - pos)
        if raw[pos:end].translate(None, _PRINTABLE) or not _BLANKS.fullmatch(raw, end + _CARD,
                                                                             data_start):
            raise _Unsupported  # the standard: printable cards, blanks after END
        header = parse_cards(raw[pos:end], strict=True)
        shape, bitpix = _structure(raw, pos, header, first=not hdus)
        nbytes = abs(bitpix) // 8 * math.prod(shape) if shape else 0
        if data_start + nbytes > size:
            raise _Unsupported("truncated data (file shorter than its header says)")
        data = None
        if nbytes:
            arr = np.frombuffer(raw, dtype=_DTYPES[bitpix], count=math.prod(shape),
                                offset=data_start).reshape(shape)
            data = _scale(arr, header)
        hdus.append(ImageHDU(header, data))
        pos = data_start + _blocks(nbytes)
    return hdus


def _structure(raw: bytes, pos: int, header: dict[str, Any],
               first: bool) -> tuple[tuple[int, ...], int]:
    """Shape (slowest axis first) and BITPIX of a plain image HDU, else :class:`_Unsupported`."""
    if first:
        if raw[pos:pos + 30] != b"SIMPLE  =" + b" " * 20 + b"T":
            raise _Unsupported
        lead = ["SIMPLE"]
    else:
        if str(header.get("XTENSION", "")).strip() != "IMAGE":
            raise _Unsupported  # tables, tile-compressed images, other extensions
        lead = ["XTENSION"]
    if header.get("GROUPS") or header.get("ZIMAGE"):
        raise _Unsupported
    bitpix, naxis = header.get("BITPIX"), header.get("NAXIS")
    if type(bitpix) is not int or type(naxis) is not int or not 0 <= naxis <= 999:
        raise _Unsupported("bad or missing structural keyword (BITPIX or NAXIS)")
    lead += ["BITPIX", "NAXIS"] + [f"NAXIS{i}" for i in range(1, naxis + 1)]
    if not first:
        lead += ["PCOUNT", "GCOUNT"]
        if header.get("PCOUNT") != 0 or header.get("GCOUNT") != 1:
            raise _Unsupported
    for i, key in enumerate(lead):  # the mandatory keywords, in the standard's order
        if raw[pos + i * _CARD:pos + i * _CARD + 8].rstrip(b" ") != key.encode():
            raise _Unsupported
    axes = [header.get(f"NAXIS{i}") for i in range(naxis, 0, -1)]
    if any(type(n) is not int or n < 0 for n in axes):
        raise _Unsupported("bad or missing structural keyword (NAXISn)")
    if bitpix not in _DTYPES:
        raise _Unsupported(f"unsupported BITPIX {bitpix}")
    for key in ("BSCALE", "BZERO"):
        if key in header and type(header[key]) not in (int, float):
            raise _Unsupported
    if "BLANK" in header and type(header["BLANK"]) is not int:
        raise _Unsupported
    return tuple(axes), bitpix


def _walk_astropy(raw: bytes) -> list[ImageHDU]:
    from astropy.io import fits  # here: plain files never need it (~0.13 s of import)

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damage is judged by what astropy reads, not its words
        with fits.open(io.BytesIO(raw), memmap=False) as hdul:
            for hdu in hdul:
                data = hdu.data if hdu.is_image else None
                arr = None if data is None else np.asarray(data, dtype=np.float32)
                header = {}
                for card in hdu.header.cards:
                    try:  # an unparsable card is left out, as the fast walk leaves odd ones
                        key, value = card.keyword, card.value
                    except Exception:
                        continue
                    if key and key.upper() not in header and not isinstance(
                            value, fits.card.Undefined):
                        header[key.upper()] = value
                try:
                    name = hdu.name
                except Exception:  # an unparsable EXTNAME card
                    name = ""
                if "EXTNAME" not in header and name and name != "PRIMARY":
                    header["EXTNAME"] = name  # e.g. COMPRESSED_IMAGE of a CompImageHDU
                out.append(ImageHDU(header, arr))
    return out


def parse_cards(block: bytes, strict: bool = False) -> dict[str, Any]:
    """Parse header cards (80-byte records before END) into ``{KEY: value}``.

    Values follow the FITS fixed/free format: quoted strings (``''`` escapes a quote, trailing
    blanks dropped), ``T``/``F`` logicals, integers, reals (``D`` exponents allowed). ``HIERARCH``
    cards give their long name. Commentary cards and undefined values are left out; a value that
    is none of these is kept as its text.

    Cards are parsed one by one and remembered (:data:`_CARD_CACHE`, bounded): cutouts of one
    pipeline repeat most of their cards byte for byte (structure, filter, exposure, software),
    and a repeated card costs one dictionary look-up instead of a parse.

    Parameters
    ----------
    block : bytes
        The header bytes up to (not including) the END card.
    strict : bool, default False
        Raise on a value that is none of these forms (the fast walk then hands the file to
        astropy) instead of keeping its text.

    Returns
    -------
    dict
        Upper-case keyword -> value; the first occurrence of a repeated keyword wins.
    """
    cards: dict[str, Any] = {}
    cache = _CARD_CACHE
    for start in range(0, len(block), _CARD):
        raw = block[start:start + _CARD]
        parsed = cache.get(raw)
        if parsed is None:
            parsed = _parse_card(raw)
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[raw] = parsed
        key, value, odd = parsed
        if key is None or key in cards:
            continue
        if odd and strict:
            raise _Unsupported
        cards[key] = value
    return cards


#: 80-byte card -> (key or None to skip the card, value, whether the value is odd); bounded by
#: :data:`_CACHE_SIZE` (cleared when full). The values are immutable (str, int, float, bool).
_CARD_CACHE: dict[bytes, tuple[str | None, Any, bool]] = {}
_CACHE_SIZE = 8192


def _parse_card(raw: bytes) -> tuple[str | None, Any, bool]:
    """One card: (key, value, odd); key None for commentary cards and undefined values."""
    card = raw.decode("ascii", "replace")
    if card[8:10] == "= ":
        key, rest = card[:8].strip().upper(), card[10:]
    elif card.startswith("HIERARCH ") and "=" in card:
        name, rest = card[9:].split("=", 1)
        key = name.strip().upper()
    else:
        return None, None, False
    if not key:
        return None, None, False
    value = _card_value(rest)
    if isinstance(value, _Odd):
        return key, value.text, True
    return (key, value, False) if value is not None else (None, None, False)


@dataclass
class _Odd:
    """A card value of none of the standard's forms (its text)."""

    text: str


def _card_value(rest: str) -> Any:
    rest = rest.strip()
    if rest.startswith("'"):
        end = rest.find("'", 1)
        while end != -1 and rest[end + 1:end + 2] == "'":  # '' is an escaped quote
            end = rest.find("'", end + 2)
        value = rest[1:end if end != -1 else None].replace("''", "'").rstrip()
        after = rest[end + 1:].strip() if end != -1 else "'"
        return value if not after or after.startswith("/") else _Odd(value)
    token = rest.split("/", 1)[0].strip()
    if not token:
        return None
    if token in ("T", "F"):
        return token == "T"
    if _INT.fullmatch(token):
        return int(token)
    if _REAL.fullmatch(token):
        return float(token.replace("D", "E").replace("d", "e"))
    return _Odd(token)  # e.g. "nan", "1_000", "0x10": Python reads them, FITS does not


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
