"""Reading FITS cutouts: layouts, keywords, channels, NaN policy and bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits

from conftest import write_cutout, write_mef
from otrain.cutouts.fitsfile import parse_hdus, read_bytes
from otrain.cutouts.reading import (
    TRAINING_KEYWORDS,
    crop_center,
    find_cutouts,
    parse_channels,
    parse_edge,
    read_cutout,
)
from otrain.errors import CutoutError, OtrainError


def test_single_hdu_pixels_and_keywords(tmp_path):
    img = np.arange(100, dtype=np.float32).reshape(10, 10)
    path = write_cutout(tmp_path / "a.fits", img, CANDID="cand42", MAG=19.25, FILTER="g")
    cut = read_cutout(path, required=TRAINING_KEYWORDS)
    assert cut.image.shape == (1, 10, 10) and cut.image.dtype == np.float32
    np.testing.assert_array_equal(cut.image[0], img)
    assert cut.meta["candid"] == "cand42"
    assert cut.meta["mag"] == pytest.approx(19.25)
    assert cut.meta["filter"] == "g"
    assert cut.meta["edge"] is False
    assert cut.meta["fwhmpsf"] == pytest.approx(2.4)
    assert cut.meta["source_file"] == str(path)


@pytest.mark.parametrize("value, expected", [("True", True), ("False", False), (True, True),
                                             (False, False)])
def test_edge_string_and_logical_mean_the_same(tmp_path, value, expected):
    path = write_cutout(tmp_path / "e.fits", np.zeros((8, 8)), EDGE=value)
    assert read_cutout(path).meta["edge"] is expected
    assert parse_edge(value) is expected


def test_bad_edge_value_is_an_error(tmp_path):
    path = write_cutout(tmp_path / "e.fits", np.zeros((8, 8)), EDGE="maybe")
    with pytest.raises(CutoutError, match="EDGE"):
        read_cutout(path)


def test_fast_reader_matches_astropy_for_scaled_integers(tmp_path):
    data = np.arange(64, dtype=np.int16).reshape(8, 8)
    hdu = fits.PrimaryHDU(data)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 100.0
    hdu.header["CANDID"] = "x"
    hdu.writeto(tmp_path / "s.fits")
    ours = parse_hdus(read_bytes(tmp_path / "s.fits"))[0].data
    theirs = fits.getdata(tmp_path / "s.fits")
    np.testing.assert_allclose(ours, theirs)


def test_multi_extension_channels_and_metadata(tmp_path):
    planes = {"DIFF": np.full((12, 12), 1.0), "SCI": np.full((12, 12), 2.0),
              "REF": np.full((12, 12), 3.0)}
    path = write_mef(tmp_path / "m.fits", planes, FILTER=None, CANDID="mef1")
    with fits.open(path, mode="update") as hdul:  # FILTER only in the DIFF extension header
        hdul["DIFF"].header["FILTER"] = "i"
    cut = read_cutout(path, channels=parse_channels("sci,ref,diff"))
    assert cut.image.shape == (3, 12, 12)
    assert list(cut.image[:, 0, 0]) == [2.0, 3.0, 1.0]
    assert cut.meta["candid"] == "mef1" and cut.meta["filter"] == "i"
    assert read_cutout(path).image.shape == (1, 12, 12)  # default: difference only


def test_stdpipe_names_and_fallback_keywords(tmp_path):
    planes = {"IMAGE": np.ones((9, 9)), "TEMPLATE": np.zeros((9, 9)), "DIFF": np.ones((9, 9))}
    path = write_mef(tmp_path / "stdpipe.fits", planes, CANDID=None, MAG=None, EDGE=None,
                     NAME="J1234", MAG_CALIB=17.5)
    cut = read_cutout(path, channels=("diff", "sci", "ref"), required=("CANDID", "MAG"))
    assert cut.meta["candid"] == "J1234" and cut.meta["mag"] == pytest.approx(17.5)
    assert cut.meta["edge"] is False


def test_mef_without_edge_and_with_nan_counts_as_edge(tmp_path):
    diff = np.ones((9, 9))
    diff[:, :3] = np.nan
    path = write_mef(tmp_path / "nan.fits", {"DIFF": diff}, EDGE=None)
    cut = read_cutout(path)
    assert cut.meta["edge"] is True and cut.meta["n_nonfinite"] == 27


def test_nan_pixels_filled_with_channel_median_and_counted(tmp_path):
    img = np.full((8, 8), 5.0)
    img[0, 0] = np.nan
    img[1, 1] = np.inf
    cut = read_cutout(write_cutout(tmp_path / "n.fits", img))
    assert np.isfinite(cut.image).all()
    assert cut.image[0, 0, 0] == 5.0 and cut.meta["n_nonfinite"] == 2


def test_all_nan_channel_is_unusable(tmp_path):
    path = write_cutout(tmp_path / "n.fits", np.full((8, 8), np.nan))
    with pytest.raises(CutoutError, match="no finite pixel"):
        read_cutout(path)


def test_missing_keyword_names_file_and_keyword(tmp_path):
    path = write_cutout(tmp_path / "k.fits", np.zeros((8, 8)), MAGERR=None)
    with pytest.raises(CutoutError) as err:
        read_cutout(path, required=TRAINING_KEYWORDS)
    assert "k.fits" in str(err.value) and "MAGERR" in str(err.value)
    assert np.isnan(read_cutout(path).meta["magerr"])  # optional when not required


def test_missing_extension(tmp_path):
    path = write_mef(tmp_path / "m.fits", {"DIFF": np.zeros((8, 8))})
    with pytest.raises(CutoutError, match="channel 'ref'"):
        read_cutout(path, channels=("diff", "ref"))


def test_single_hdu_cannot_give_three_channels(tmp_path):
    path = write_cutout(tmp_path / "s.fits", np.zeros((8, 8)))
    with pytest.raises(CutoutError, match="multi-extension"):
        read_cutout(path, channels=("diff", "sci", "ref"))


def test_non_2d_image(tmp_path):
    path = write_cutout(tmp_path / "cube.fits", np.zeros((2, 3, 8, 8)))
    with pytest.raises(CutoutError, match="4 dimensions"):
        read_cutout(path)


def test_three_d_primary_gives_channels(tmp_path):
    data = np.stack([np.full((8, 8), v) for v in (1.0, 2.0, 3.0)])
    cut = read_cutout(write_cutout(tmp_path / "c.fits", data), channels=("diff", "sci", "ref"))
    assert cut.image.shape == (3, 8, 8)


@pytest.mark.parametrize("content", [b"not a fits file at all" * 10, b""])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(CutoutError, match=r"bad\.fits: unreadable"):
        read_cutout(path)


def test_truncated_file(tmp_path):
    path = write_cutout(tmp_path / "t.fits", np.zeros((40, 40)))
    path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(CutoutError, match="truncated"):
        read_cutout(path)


def test_suffixes_and_gzip(tmp_path):
    img = np.random.default_rng(0).normal(size=(8, 8))
    for name in ("a.fits", "b.fit", "c.fts", "z.txt"):
        write_cutout(tmp_path / name, img)
    raw = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "d.fits.gz").write_bytes(gzip.compress(raw))
    names = [p.name for p in find_cutouts(tmp_path)]
    assert names == ["a.fits", "b.fit", "c.fts", "d.fits.gz"]
    np.testing.assert_array_equal(read_cutout(tmp_path / "d.fits.gz").image,
                                  read_cutout(tmp_path / "a.fits").image)


def test_crop_keeps_centre_and_checks_bounds(tmp_path):
    img = np.zeros((1, 9, 9), dtype=np.float32)
    img[0, 4, 4] = 1.0
    out = crop_center(img, 5)
    assert out.shape == (1, 5, 5) and out[0, 2, 2] == 1.0
    with pytest.raises(CutoutError, match="cannot crop 9x9"):
        crop_center(img, 11)
    path = write_cutout(tmp_path / "c.fits", img[0])
    assert read_cutout(path, cutout_size=3).image.shape == (1, 3, 3)


def test_parse_channels():
    assert parse_channels("diff, sci,REF") == ("diff", "sci", "ref")
    with pytest.raises(OtrainError, match="unknown channel"):
        parse_channels("diff,foo")
    with pytest.raises(OtrainError, match="twice"):
        parse_channels("diff,diff")


def test_card_parser_value_types():
    from otrain.cutouts.fitsfile import parse_cards

    cards = b"".join(c.ljust(80) for c in (
        b"A       = 'it''s  '           / quoted, escaped quote, trailing blanks",
        b"B       = 1.5D2",
        b"HIERARCH mag_calib = -3 / long name",
        b"C       = T",
        b"COMMENT   not a value",
        b"D       =                    / undefined value",
    ))
    assert parse_cards(cards) == {"A": "it's", "B": 150.0, "MAG_CALIB": -3, "C": True}
