"""The fast FITS walk and astropy agree (issue 17, item 4): the damaged files that the mutation
fuzzing (benchmarks/fuzz.py) found read differently, each built by hand. Wherever astropy reads
a file otrain reads the same HDUs and pixels; wherever astropy fails otrain fails with one
error; and a damaged file read all the same says so in the cutout's notes."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from otrain.cutouts.fitsfile import FitsFormatError, parse_hdus
from otrain.cutouts.reading import read_cutout
from otrain.errors import CutoutError


def _astropy_images(raw: bytes) -> list[np.ndarray] | None:
    """What astropy reads: the data of every image HDU, or None when it fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                return [np.asarray(h.data, dtype=np.float32) for h in hdul
                        if h.is_image and h.data is not None]
    except Exception:
        return None


def _ours(raw: bytes) -> list[np.ndarray] | None:
    try:
        return [h.data for h in parse_hdus(raw) if h.data is not None]
    except FitsFormatError:
        return None


def _agree(raw: bytes) -> list[np.ndarray] | None:
    theirs, ours = _astropy_images(raw), _ours(raw)
    assert (theirs is None) == (ours is None), (theirs is None, ours is None)
    if theirs is not None:
        assert len(theirs) == len(ours)
        for a, b in zip(ours, theirs, strict=True):
            assert a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return ours


def _mef() -> bytes:
    image = np.arange(576, dtype=np.float32).reshape(24, 24)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(image * k, name=n) for k, n in
                                        ((1, "DIFF"), (2, "SCI"), (3, "REF"))]).writeto(buf)
    return buf.getvalue()


def _single() -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(np.arange(256, dtype=np.int16).reshape(16, 16)).writeto(buf)
    return buf.getvalue()


def _replace_card(raw: bytes, key: bytes, card: bytes) -> bytes:
    i = raw.index(key.ljust(8) + b"=")
    return raw[:i] + card.ljust(80)[:80] + raw[i + 80:]


def test_a_truncated_last_extension_is_read_as_astropy_reads_it_with_a_note(
        tmp_path: Path) -> None:
    raw = _mef()
    cut = raw[:len(raw) - 4000]  # the REF extension's header is whole, its data missing
    ours = _agree(cut)
    assert ours is not None and len(ours) == 2  # astropy leaves the damaged HDU out
    assert _agree(raw[:len(raw) - 1000]) is None  # its data cut short: both refuse
    assert len(_agree(raw[:len(raw) - 100])) == 3  # only the final padding missing: both read
    path = tmp_path / "cut.fits"
    path.write_bytes(cut)
    cutout = read_cutout(path, channels=["diff", "sci"])
    assert any("truncated data" in n and "astropy reads it (3 HDU(s))" in n
               for n in cutout.meta["notes"])
    with pytest.raises(CutoutError, match=r"REF|ref"):  # the lost channel is not invented
        read_cutout(path, channels=["diff", "sci", "ref"])


def test_standard_violations_astropy_refuses_are_refused() -> None:
    raw = _single()
    # a logical followed by garbage without a comment slash: astropy refuses the header
    bad_value = _replace_card(raw, b"EXTEND", b"EXTEND  =                    T      0")
    assert _agree(bad_value) is None
    # a control character in a card
    end = raw.index(b"END" + b" " * 77)
    assert _agree(raw[:end - 40] + b"\x01" + raw[end - 39:]) is None
    # bytes after the END card inside the header block: astropy reads them, so does otrain
    assert _agree(raw[:end + 200] + b"\0" + raw[end + 201:]) is not None


def test_an_unparsable_extname_or_comment_is_read_as_astropy_reads_it() -> None:
    raw = _mef()
    odd_name = _replace_card(raw, b"EXTNAME", b"EXTNAME = 'DIFF    '  junk")
    assert len(_agree(odd_name)) == 3
    odd_number = _replace_card(raw, b"NAXIS", b"NAXIS   =                    0")
    odd_number = odd_number.replace(b"BITPIX  =                    8",
                                    b"BITPIX  =                    8 x", 1)
    _agree(odd_number)


@pytest.mark.parametrize("text", ["nan", "inf", "1_000", "0x10"])
def test_python_only_numbers_are_not_fits_numbers(text: str) -> None:
    raw = _replace_card(_single(), b"NAXIS1", f"NAXIS1  = {text:>20}".encode())
    assert _agree(raw) is None


def test_trailing_garbage_is_read_as_astropy_reads_it(tmp_path: Path) -> None:
    raw = _single() + b"garbage after the end" * 10
    assert len(_agree(raw)) == 1
    path = tmp_path / "t.fits"
    path.write_bytes(raw)
    assert any("after the last HDU" in n for n in read_cutout(path).meta["notes"])
    # zero padding after the last HDU is not damage: read fast, no note
    path.write_bytes(_single() + b"\0" * 2880)
    assert not any("astropy" in n for n in read_cutout(path).meta["notes"])


def test_a_damaged_hdf5_chunk_is_one_error_naming_the_cube(tmp_path: Path) -> None:
    """h5py's OSError on reading a damaged chunk ("bad coordinate offset", found by the
    fuzzing) becomes one OtrainError naming the file, on every read path."""
    from otrain.datacube.hdf5 import open_datacube, write_datacube
    from otrain.errors import OtrainError

    path = write_datacube(tmp_path / "c.h5", np.zeros((6, 1, 8, 8), np.float32),
                          {"candid": np.arange(6).astype(str), "label": np.array([0, 1] * 3)},
                          ["diff"])

    class Damaged:
        shape, dtype = (6, 1, 8, 8), np.float32

        def __getitem__(self, item: object) -> np.ndarray:
            raise OSError("Can't synchronously read data (bad coordinate offset)")

    with open_datacube(path) as cube:
        cube.images = Damaged()
        for rows in (slice(None), [0, 5], [3, 1, 2]):
            with pytest.raises(OtrainError, match="images cannot be read") as info:
                cube.read(rows)
            assert str(path) in str(info.value) and "bad coordinate offset" in str(info.value)


def test_remembered_cards_keep_their_meaning() -> None:
    """The card cache (parse_cards): an odd value read leniently is still refused when strict,
    the first occurrence still wins, and the cache stays bounded."""
    from otrain.cutouts import fitsfile

    odd = b"MAG     =                  abc".ljust(80)
    good = b"MAG     =                 18.5".ljust(80)
    assert fitsfile.parse_cards(odd) == {"MAG": "abc"}
    with pytest.raises(fitsfile._Unsupported):
        fitsfile.parse_cards(odd, strict=True)
    assert fitsfile.parse_cards(good + odd, strict=True) == {"MAG": 18.5}  # second one unread
    assert fitsfile.parse_cards(odd + good) == {"MAG": "abc"}
    undefined = b"MAG     =".ljust(80)
    assert fitsfile.parse_cards(undefined + good) == {"MAG": 18.5}
    for i in range(fitsfile._CACHE_SIZE + 10):
        fitsfile.parse_cards(f"N{i:<7d}= {i:>20d}".encode().ljust(80))
    assert len(fitsfile._CARD_CACHE) <= fitsfile._CACHE_SIZE
    assert fitsfile.parse_cards(good) == {"MAG": 18.5}
    # and files read with a warm cache agree with astropy as they did cold
    _agree(_mef())
    _agree(_replace_card(_mef(), b"EXTNAME", b"EXTNAME = 'DIFF    '  junk"))
