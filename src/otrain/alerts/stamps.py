"""Image stamps of alert packets: FITS bytes (gzipped or not) in, a fixed-size window out.

ZTF stamps are gzipped single-HDU FITS files (63x63 float32, big-endian); Rubin stamps are plain
FITS files written by astropy ``CCDData`` (image in the primary HDU, then mask and uncertainty
extensions). :func:`decode_stamp` reads both. The common case (image in the primary HDU, float
pixels, no scaling) is parsed directly from the header cards, about 30 times faster than
:func:`astropy.io.fits.open`; anything else goes through astropy, with its harmless
``VerifyWarning`` about the ZTF ``SIMPLE`` card silenced.

:func:`place_stamp` copies a stamp into a ``(size, size)`` window centred on the candidate:
larger stamps are centre-cropped, smaller ones (ZTF stamps cut by a CCD edge) are padded with NaN
on the side the CCD edge cut off, found from the candidate position, so that the candidate stays
at the centre pixel.
"""

from __future__ import annotations

import gzip
import io
import math
import warnings
import zlib

import numpy as np

#: First bytes of a gzip stream.
GZIP_MAGIC = b"\x1f\x8b"
_BLOCK = 2880
_CARD = 80
_MAX_HEADER_BYTES = 100 * _BLOCK
_FLOAT_TYPES = {-32: np.dtype(">f4"), -64: np.dtype(">f8")}
_INT_TYPES = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8")}
_WANTED = {b"BITPIX", b"NAXIS", b"NAXIS1", b"NAXIS2", b"BZERO", b"BSCALE", b"BLANK"}


class StampError(ValueError):
    """A stamp whose bytes are not a readable 2-D FITS image."""


def decode_stamp(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode one stamp (gzipped or plain FITS bytes) into a 2-D array.

    Parameters
    ----------
    data : bytes
        The stamp, as stored in the alert (``stampData`` for ZTF, the cutout bytes for Rubin).

    Returns
    -------
    numpy.ndarray
        2-D image ``(rows, columns)``; may be a read-only big-endian view of ``data``, so copy
        (or assign into a float32 array) before modifying it. NaN pixels are kept.

    Raises
    ------
    StampError
        If the bytes are not a gzip/FITS stream holding a 2-D image.
    """
    raw = bytes(data) if not isinstance(data, bytes) else data
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            raise StampError(f"stamp is not a valid gzip stream ({exc})") from None
    image = _fast_primary_image(raw)
    if image is None:
        image = _astropy_image(raw)
    return image


def _fast_primary_image(raw: bytes) -> np.ndarray | None:
    """Read a 2-D float image from the primary HDU without astropy, or None if unusual."""
    if not raw.startswith(b"SIMPLE  ="):
        return None
    cards: dict[bytes, bytes] = {}
    end = -1
    for off in range(0, min(len(raw), _MAX_HEADER_BYTES), _CARD):
        key = raw[off : off + 8].rstrip()
        if key == b"END":
            end = off + _CARD
            break
        if key in _WANTED and raw[off + 8 : off + 10] == b"= ":
            cards[key] = raw[off + 10 : off + _CARD].split(b"/", 1)[0].strip()
    if end < 0:
        return None
    try:
        bitpix = int(cards[b"BITPIX"])
        if int(cards[b"NAXIS"]) != 2:
            return None
        ncol, nrow = int(cards[b"NAXIS1"]), int(cards[b"NAXIS2"])
        if float(cards.get(b"BSCALE", b"1")) != 1.0 or float(cards.get(b"BZERO", b"0")) != 0.0:
            return None
    except (KeyError, ValueError):
        return None
    dtype = _FLOAT_TYPES.get(bitpix)
    if dtype is None:
        if bitpix not in _INT_TYPES or b"BLANK" in cards:
            return None
        dtype = _INT_TYPES[bitpix]
    start = -(-end // _BLOCK) * _BLOCK
    count = ncol * nrow
    if ncol <= 0 or nrow <= 0 or len(raw) < start + count * dtype.itemsize:
        raise StampError(f"FITS stamp truncated: {ncol}x{nrow} pixels announced, "
                         f"{max(0, len(raw) - start)} data bytes present")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(nrow, ncol)


def _astropy_image(raw: bytes) -> np.ndarray:
    """Read the first 2-D image HDU with astropy (any layout, scaling, extensions)."""
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                for hdu in hdul:
                    data = getattr(hdu, "data", None)
                    if data is None or not hasattr(data, "ndim"):
                        continue
                    image = np.asarray(data)
                    while image.ndim > 2 and image.shape[0] == 1:
                        image = image[0]
                    if image.ndim == 2:
                        return np.array(image, dtype=np.float32)
    except Exception as exc:  # astropy raises many types on garbage input
        raise StampError(f"stamp is not a readable FITS file ({exc.__class__.__name__}: "
                         f"{str(exc)[:120]})") from None
    raise StampError("stamp FITS file holds no 2-D image")


def _axis_window(size: int, target: int, native: int | None, pos: float) -> tuple[int, int, int]:
    """Source start/stop and destination start of one axis of the window.

    ``pos`` is the candidate's 1-based pixel coordinate on the detector along this axis (ZTF
    ``xpos``/``ypos``), used to tell which side of a stamp smaller than ``native`` the CCD edge
    cut off; NaN means unknown (the missing pixels are then split evenly).
    """
    full = native if native is not None and native > size else size
    missing = full - size
    if missing and math.isfinite(pos):
        # First detector pixel the full stamp would have covered; below 1 is off the CCD.
        low_edge = math.floor(pos + 0.5) - full // 2
        missing_low = min(missing, max(0, 1 - low_edge))
    else:
        missing_low = missing // 2
    centre = full // 2 - missing_low  # candidate index inside the stamp
    start = centre - target // 2
    src0, src1 = max(0, start), min(size, start + target)
    return src0, src1, src0 - start


def place_stamp(
    out: np.ndarray,
    stamp: np.ndarray,
    native: int | None = None,
    xpos: float = math.nan,
    ypos: float = math.nan,
) -> tuple[bool, bool, int]:
    """Copy ``stamp`` into the square window ``out`` centred on the candidate.

    Parameters
    ----------
    out : numpy.ndarray
        Float32 ``(size, size)`` destination, overwritten (NaN where the stamp does not reach).
    stamp : numpy.ndarray
        2-D stamp, candidate at its centre pixel (``shape // 2``) when full-size.
    native : int, optional
        Full size of the survey's stamps (63 for ZTF). A smaller stamp was cut by a CCD edge.
    xpos, ypos : float
        Candidate's 1-based detector position (columns, rows), to find the cut side.

    Returns
    -------
    truncated : bool
        The stamp was smaller than ``native`` (CCD edge).
    padded : bool
        Part of the window lay outside the stamp and was left NaN.
    n_nan : int
        NaN pixels of the stamp copied into the window (padding not counted).
    """
    size = out.shape[0]
    nrow, ncol = stamp.shape
    r0, r1, dr = _axis_window(nrow, size, native, ypos)
    c0, c1, dc = _axis_window(ncol, size, native, xpos)
    truncated = native is not None and (nrow < native or ncol < native)
    padded = r1 - r0 < size or c1 - c0 < size
    if padded:
        out.fill(np.nan)
    if r1 <= r0 or c1 <= c0:
        return truncated, True, 0
    region = out[dr : dr + r1 - r0, dc : dc + c1 - c0]
    region[...] = stamp[r0:r1, c0:c1]
    n_nan = int(np.count_nonzero(np.isnan(region)))
    return truncated, padded, n_nan
