"""A user's own FITS cutouts (issue 15, item 1): any reasonable layout, their keyword names, and
every fallback counted in the run's report.

Layouts: the image in the primary HDU, in an unnamed extension 1, in a named extension, in a
tile-compressed ``CompImageHDU`` (``.fits`` and ``.fits.fz``). Keywords: SExtractor-style names
mapped with ``--keywords`` or a TOML / JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from conftest import assert_clean_error, run_cli, write_cutout
from otrain.cutouts.keywords import parse_keyword_map
from otrain.cutouts.reading import find_cutouts, read_cutout
from otrain.datacube.hdf5 import open_datacube
from otrain.errors import CutoutError, OtrainError
from test_diagnostics import make_model

SEX = {"MAG_AUTO": 19.25, "MAGERR_AUTO": 0.07, "FWHM_IMAGE": 3.1, "FILTER": "g",
       "CANDID": "x", "FLAGS_EDGE": "False"}
MAP = "MAG=MAG_AUTO,MAGERR=MAGERR_AUTO,FWHM=FWHM_IMAGE,EDGE=FLAGS_EDGE"


def _header(candid: str, keys: dict) -> fits.Header:
    h = fits.Header()
    for k, v in {**keys, "CANDID": candid}.items():
        h[k] = v
    return h


def write_layout(path: Path, kind: str, image: np.ndarray, keys: dict = SEX) -> Path:
    """One cutout in layout ``kind``, keywords in the header that holds the image."""
    h = _header(path.name.split(".")[0], keys)
    img = np.asarray(image, dtype=np.float32)
    hdus = {
        "primary": [fits.PrimaryHDU(img, h)],
        "ext1": [fits.PrimaryHDU(), fits.ImageHDU(img, h)],
        "named": [fits.PrimaryHDU(header=h), fits.ImageHDU(img, name="IMAGE")],
        "compressed": [fits.PrimaryHDU(), fits.CompImageHDU(img, h, quantize_level=0.0,
                                                            compression_type="GZIP_1")],
        "residual": [fits.PrimaryHDU(header=h), fits.ImageHDU(img * 0, name="NEW"),
                     fits.ImageHDU(img, name="RESIDUAL"), fits.ImageHDU(img * 0, name="REF")],
    }[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path)
    return path


LAYOUTS = [("primary", "p.fits"), ("ext1", "e.fits"), ("named", "n.fits"),
           ("compressed", "c.fits"), ("compressed", "z.fits.fz")]


def test_every_layout_reads_the_same_pixels_and_mapped_keywords(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(0, 1, (20, 20))
    keywords = parse_keyword_map(MAP)
    for kind, name in LAYOUTS:
        cut = read_cutout(write_layout(tmp_path / name, kind, image), keywords=keywords,
                          required=("MAG", "MAGERR", "FWHM", "EDGE", "FILTER", "CANDID"))
        np.testing.assert_array_equal(cut.image[0], image.astype(np.float32), err_msg=kind)
        assert cut.meta["mag"] == 19.25 and cut.meta["fwhm"] == 3.1, kind
        assert cut.meta["edge"] is False and "no EDGE" not in " ".join(cut.meta["notes"])
        named = [n for n in cut.meta["notes"] if "the only image" in n]
        assert named == (["the only image, extension IMAGE (a sci name), read as diff"]
                         if kind == "named" else []), kind
    assert [p.name for p in find_cutouts(tmp_path)] == sorted(n for _, n in LAYOUTS)
    with pytest.raises(CutoutError, match=r"missing header keyword\(s\) MAG, MAGERR, FWHM.*"
                                          r"--keywords"):
        read_cutout(tmp_path / "p.fits", required=("MAG", "MAGERR", "FWHM"))
    # A channel named by the map: DIFF is the RESIDUAL extension (by name or HDU number).
    res = write_layout(tmp_path / "r.fits", "residual", image)
    for value in ("RESIDUAL", "2"):
        cut = read_cutout(res, keywords=parse_keyword_map(f"DIFF={value}"))
        np.testing.assert_array_equal(cut.image[0], image.astype(np.float32))
    with pytest.raises(CutoutError, match="none named DIFF/SCI/REF"):
        _unnamed(tmp_path / "u2.fits", image)
    with pytest.raises(OtrainError, match="unknown keyword 'MAGG'"):
        parse_keyword_map("MAGG=MAG_AUTO")


def _unnamed(path: Path, image: np.ndarray) -> None:
    img = image.astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img), fits.ImageHDU(img)]).writeto(path)
    read_cutout(path)


def test_convert_with_a_keyword_map_on_the_command_line_and_in_a_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "cuts"
    for i, (kind, name) in enumerate(LAYOUTS * 2):
        folder = "true" if i % 2 else "false"
        write_layout(root / folder / f"{i}_{name}", kind, rng.normal(0, 1, (20, 20)))
    (tmp_path / "out").mkdir()
    proc = run_cli("otrain-convert", "--path", str(tmp_path / "out"), "--cube", "raw",
                   "--cutouts", str(root), "--workers", "1")
    assert_clean_error(proc, "no usable cutout", "10 unusable file(s)", "MAG, MAGERR, FWHM",
                       "... and 7 more")  # the first problems, then a count
    toml = tmp_path / "keys.toml"
    toml.write_text("[keywords]\n" + "\n".join(f'{k} = "{v}"' for k, v in
                                                (p.split("=") for p in MAP.split(","))))
    js = tmp_path / "keys.json"
    js.write_text(json.dumps(dict(p.split("=") for p in MAP.split(","))))
    for cube, spec in (("cli", MAP), ("toml", str(toml)), ("json", str(js))):
        proc = run_cli("otrain-convert", "--path", str(tmp_path / "out"), "--cube", cube,
                       "--cutouts", str(root), "--workers", "1", "--keywords", spec, check=True)
        assert "Ntrue = 5" in proc.stdout and "Nfalse = 5" in proc.stdout, proc.stdout
        assert "no RA keyword (NaN or empty in the table)" in proc.stdout  # counted, not silent
        with open_datacube(tmp_path / "out" / "datacube" / f"{cube}.h5") as c:
            assert np.all(np.asarray(c.table["mag"]) == 19.25)
    report = json.loads((tmp_path / "out" / "datacube" / "cli.report.json").read_text())
    assert report["note_counts"]["no RA keyword (NaN or empty in the table)"] == 10


def test_infer_counts_crops_and_missing_metadata(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m.safetensors", size=16)
    rng = np.random.default_rng(2)
    folder = tmp_path / "night"
    for i in range(6):  # 24x24 cutouts for a 16x16 model, without inference keywords nor EDGE
        write_cutout(folder / f"n{i}.fits", rng.normal(size=(24, 24)), RA=None, DEC=None,
                     FILE=None, XPOS=None, YPOS=None, FWHMPSF=None, EDGE=None, MAG=None,
                     MAG_AUTO=17.5)
    proc = run_cli("otrain-infer", "--cutouts", str(folder), "--model", str(model),
                   "--output", str(tmp_path / "s.csv"), "--workers", "1",
                   "--keywords", "MAG=MAG_AUTO", check=True)
    out = proc.stdout
    assert "note: 6 of 6 cutout(s): centre-cropped from 24x24 to 16x16" in out, out
    assert "note: 6 of 6 cutout(s): no EDGE keyword: edge taken as False" in out
    assert "note: 6 of 6 cutout(s): no RA keyword (NaN or empty in the table)" in out
    assert "no MAG_AUTO (MAG)" not in out and "no MAG " not in out
    import pandas as pd

    assert (pd.read_csv(tmp_path / "s.csv")["mag"] == 17.5).all()


def test_a_lone_extension_named_for_another_channel_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sci_only.fits"
    img = np.zeros((8, 8), np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img, name="SCI")]).writeto(path)
    with pytest.raises(CutoutError, match="the only image is extension SCI"):
        read_cutout(path, channels=("diff",))
    assert read_cutout(path, channels=("sci",)).image.shape == (1, 8, 8)
