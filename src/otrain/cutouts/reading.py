"""FITS cutouts in: file discovery, channels, header keywords and pixel policies.

Layouts read:

* **one image** (O'TRAIN/gmadet and most pipelines): the file's only image is the cutout, wherever
  it is: the primary HDU, extension 1 (named or not), or a tile-compressed ``CompImageHDU``
  (``.fits.fz``, decompressed by astropy); a 3-D image ``(C, H, W)`` gives ``C`` channels in the
  order asked for. Keywords come from every header (the primary's win).
* **multi-extension** (STDPipe and triplets): metadata in the primary header (falling back to the
  image extensions' headers), images in extensions named as in :data:`EXTENSION_NAMES`, or as a
  keyword map says (``DIFF=RESIDUAL``: :mod:`otrain.cutouts.keywords`).

Keywords (FITS is case-insensitive): ``CANDID`` (fallback ``NAME``), ``MAG`` (fallback
``MAG_CALIB``), ``MAGERR``, ``FILTER``, ``FWHM``, ``EDGE``, and for inference ``RA``, ``DEC``,
``FILE``, ``XPOS``, ``YPOS``, ``FWHMPSF``, or the user's names for them (``keywords``, e.g.
``{"MAG": "MAG_AUTO"}``). Training needs :data:`TRAINING_KEYWORDS`; inference
needs none (a missing value becomes NaN or an empty string). Magnitudes of ``99``/``-99`` (the
old sentinels) read as NaN.

``EDGE`` may be the string ``'True'``/``'False'`` (as gmadet writes it) or a FITS logical; both
mean the same. A multi-extension file without ``EDGE`` counts as an edge cutout when its images
hold non-finite pixels (STDPipe fills the part of a cutout outside the frame with NaN).

Non-finite pixels (NaN, inf) policy: they are counted (``n_nonfinite``) and replaced by the median
of the finite pixels of the same channel, i.e. the local background level, so that no NaN reaches
the network. A channel with no finite pixel at all makes the cutout unusable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from otrain.cutouts.fitsfile import FitsFormatError, ImageHDU, parse_hdus, read_bytes
from otrain.cutouts.keywords import channel_extensions
from otrain.errors import CutoutError, OtrainError
from otrain.outputs import is_temporary

#: File name endings recognised as FITS cutouts.
CUTOUT_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz",
                   ".fit.fz", ".fz")
#: Channel name -> accepted EXTNAMEs, in order of preference.
EXTENSION_NAMES: dict[str, tuple[str, ...]] = {
    "diff": ("DIFF", "DIFFERENCE", "SUB"),
    "sci": ("SCI", "IMAGE", "SCIENCE", "NEW"),
    "ref": ("REF", "TEMPLATE", "REFERENCE"),
}
DEFAULT_CHANNELS = ("diff",)
#: Keywords the O'TRAIN documentation makes mandatory for training cutouts.
TRAINING_KEYWORDS = ("CANDID", "MAG", "MAGERR", "FILTER", "FWHM", "EDGE")
#: Keywords read for the scores table of inference (all optional there).
INFERENCE_KEYWORDS = ("RA", "DEC", "FILE", "XPOS", "YPOS", "FWHMPSF")
_FALLBACKS = {"CANDID": ("NAME",), "MAG": ("MAG_CALIB",)}
_FLOAT_KEYS = {"MAG": "mag", "MAGERR": "magerr", "FWHM": "fwhm", "RA": "ra", "DEC": "dec",
               "XPOS": "xpos", "YPOS": "ypos", "FWHMPSF": "fwhmpsf"}
_STR_KEYS = {"CANDID": "candid", "FILTER": "filter", "FILE": "file"}
#: Magnitude sentinels of the original O'TRAIN / gmadet files, read as missing.
MAG_SENTINELS = (99.0, -99.0)
#: Table columns a cutout contributes, in order.
META_COLUMNS = ("candid", "mag", "magerr", "filter", "fwhm", "ra", "dec", "file", "xpos", "ypos",
                "fwhmpsf", "edge", "n_nonfinite", "source_file")


@dataclass
class Cutout:
    """One cutout read from a file.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``(C, H, W)``, non-finite pixels already replaced.
    meta : dict
        Values for :data:`META_COLUMNS`.
    """

    image: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def is_cutout_file(path: Path) -> bool:
    """True if ``path`` has one of :data:`CUTOUT_SUFFIXES` (case-insensitive)."""
    name = path.name.lower()
    return any(name.endswith(s) for s in CUTOUT_SUFFIXES)


def find_cutouts(folder: str | Path) -> list[Path]:
    """List the cutout files directly inside ``folder``, sorted by name.

    Parameters
    ----------
    folder : str or Path
        Folder to list (not recursive, like O'TRAIN).

    Returns
    -------
    list of Path
        Sorted cutout files.

    Raises
    ------
    OtrainError
        If the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OtrainError("no such folder", folder)
    names = []
    with os.scandir(folder) as entries:  # d_type, not a stat per file, and names sorted as str
        for entry in entries:
            name = entry.name
            if (name.lower().endswith(CUTOUT_SUFFIXES) and not is_temporary(name)
                    and (entry.is_symlink() or entry.is_file())):
                names.append(name)  # a dangling link is listed, then skipped as unreadable
    return [folder / name for name in sorted(names)]


def parse_channels(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Turn ``"diff,sci,ref"`` (or a sequence) into a validated tuple of channel names.

    Parameters
    ----------
    text : str or sequence of str or None
        Comma-separated names; None gives :data:`DEFAULT_CHANNELS`.

    Returns
    -------
    tuple of str
        Channel names, each a key of :data:`EXTENSION_NAMES`.
    """
    if text is None:
        return DEFAULT_CHANNELS
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    bad = [n for n in names if n not in EXTENSION_NAMES]
    if bad or not names:
        raise OtrainError(f"unknown channel(s) {', '.join(bad) or '(none)'}; "
                          f"choose from {', '.join(EXTENSION_NAMES)}")
    if len(set(names)) != len(names):
        raise OtrainError(f"channel listed twice in {','.join(names)}")
    return tuple(names)


def parse_edge(value: Any) -> bool | None:
    """Interpret an EDGE value: FITS logical, or the strings 'True'/'False' (also T/F, 1/0).

    Returns
    -------
    bool or None
        None when the value is not recognisable.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "t", "1", "yes"):
        return True
    if text in ("false", "f", "0", "no"):
        return False
    return None


def read_cutout(
    path: str | Path,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    cutout_size: int = -1,
    required: Iterable[str] = (),
    keywords: Mapping[str, str] | None = None,
) -> Cutout:
    """Read one cutout file.

    Parameters
    ----------
    path : str or Path
        FITS file (``.fits``, ``.fit``, ``.fts``, optionally gzipped).
    channels : sequence of str, default ("diff",)
        Channels to stack, see :data:`EXTENSION_NAMES`.
    cutout_size : int, default -1
        Centre-crop to ``cutout_size`` x ``cutout_size``; -1 keeps the full size.
    required : iterable of str
        Keywords that must be present (e.g. :data:`TRAINING_KEYWORDS`).
    keywords : mapping, optional
        Our keyword -> the file's (:func:`otrain.cutouts.keywords.parse_keyword_map`).

    Returns
    -------
    Cutout
        Image ``(C, H, W)`` and metadata; ``meta["notes"]`` lists the fallbacks taken (crop,
        keywords absent, EDGE absent).

    Raises
    ------
    CutoutError
        Unreadable file, missing keyword or extension, wrong dimensions, crop too large.
    """
    path = Path(path)
    notes: list[str] = []
    try:
        hdus = parse_hdus(read_bytes(path), notes)
    except (OSError, FitsFormatError, ValueError, EOFError) as exc:
        raise CutoutError(f"unreadable FITS file ({exc})", path) from None
    keywords = dict(keywords or {})
    header = _merged_header(hdus)
    image = _select_channels(hdus, channels, path, channel_extensions(keywords), notes)
    if cutout_size != -1:
        full = image.shape[1:]
        image = crop_center(image, cutout_size, path)
        if image.shape[1:] != full:
            notes.append(f"centre-cropped from {full[0]}x{full[1]} to "
                         f"{cutout_size}x{cutout_size}")
    values = {k: _lookup(header, k, keywords) for k in (*_STR_KEYS, *_FLOAT_KEYS, "EDGE",
                                                         *required)}
    meta = _read_keywords(values, required, path, keywords)
    absent = [k for k in (*_STR_KEYS, *_FLOAT_KEYS) if values[k] is None]
    notes += [f"no {_spelling(k, keywords)} keyword (NaN or empty in the table)" for k in absent]
    image, n_bad = _fill_nonfinite(image, path)
    meta["n_nonfinite"] = n_bad
    if meta["edge"] is None:
        meta["edge"] = len(hdus) > 1 and n_bad > 0
        notes.append("no EDGE keyword: edge taken as "
                     + ("True (non-finite pixels)" if meta["edge"] else "False"))
    meta["source_file"] = str(path)
    meta["notes"] = tuple(notes)
    return Cutout(image, meta)


def _spelling(key: str, keywords: Mapping[str, str]) -> str:
    return f"{keywords[key]} ({key})" if key in keywords else key


def crop_center(image: np.ndarray, size: int, path: Path | None = None) -> np.ndarray:
    """Centre-crop a ``(C, H, W)`` image to ``size`` x ``size``, keeping the candidate central.

    Raises
    ------
    CutoutError
        If ``size`` is not positive or larger than the image.
    """
    _, h, w = image.shape
    if size <= 0:
        raise CutoutError(f"cutout size must be positive or -1, got {size}", path)
    if size > h or size > w:
        raise CutoutError(f"cannot crop {h}x{w} cutout to {size}x{size}", path)
    y0, x0 = h // 2 - size // 2, w // 2 - size // 2
    return image[:, y0:y0 + size, x0:x0 + size]


def _merged_header(hdus: list[ImageHDU]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for hdu in reversed(hdus):  # primary wins over extensions
        merged.update(hdu.header)
    return merged


def _single_image(data: np.ndarray, channels: Sequence[str], path: Path) -> np.ndarray:
    if data.ndim == 2:
        if len(channels) != 1:
            raise CutoutError(f"single-image file cannot give channels {','.join(channels)} "
                              "(needs a multi-extension file with DIFF/SCI/REF)", path)
        return data[None]
    if data.ndim == 3:
        if data.shape[0] != len(channels):
            raise CutoutError(f"3-D image has {data.shape[0]} planes but "
                              f"{len(channels)} channel(s) were asked for", path)
        return np.ascontiguousarray(data)
    raise CutoutError(f"image has {data.ndim} dimensions, expected 2", path)


def _hdu_for(hdus: list[ImageHDU], name: str) -> ImageHDU | None:
    if name.isdigit():
        i = int(name)
        return hdus[i] if i < len(hdus) and hdus[i].data is not None else None
    return next((h for h in hdus if h.name == name and h.data is not None), None)


def _select_channels(hdus: list[ImageHDU], channels: Sequence[str], path: Path,
                     extensions: Mapping[str, str] | None = None,
                     notes: list[str] | None = None) -> np.ndarray:
    extensions = extensions or {}
    images = [(i, h) for i, h in enumerate(hdus) if h.data is not None]
    if not images:
        raise CutoutError(f"no image data in any of the {len(hdus)} HDU(s) (primary empty, no "
                          "image extension)", path)
    if len(images) == 1 and not extensions and (len(channels) == 1 or images[0][0] == 0
                                                or images[0][1].data.ndim == 3):
        i, hdu = images[0]
        other = _CHANNEL_OF.get(hdu.name) if i > 0 else None
        if other is not None and tuple(channels) != (other,) and \
                hdu.name == EXTENSION_NAMES[other][0]:  # DIFF, SCI or REF: unambiguous
            raise CutoutError(f"the only image is extension {hdu.name}; channel(s) "
                              f"{','.join(channels)} asked for", path)
        if other is not None and tuple(channels) != (other,) and notes is not None:
            notes.append(f"the only image, extension {hdu.name} (a {other} name), read as "
                         f"{','.join(channels)}")
        return _single_image(hdu.data, channels, path)
    if not extensions and not _has_named_images(hdus):
        if hdus[0].data is None:
            found = ", ".join(h.name or f"HDU {i}" for i, h in images)
            raise CutoutError(f"{len(images)} image extensions ({found}) but none named "
                              "DIFF/SCI/REF; name them with --keywords DIFF=EXTNAME", path)
        return _single_image(hdus[0].data, channels, path)
    planes = []
    for ch in channels:
        names = (extensions[ch],) if ch in extensions else EXTENSION_NAMES[ch]
        hdu = next((h for n in names if (h := _hdu_for(hdus, n)) is not None), None)
        if hdu is None:
            wanted = "/".join(names)
            found = ", ".join(sorted(h.name or str(i) for i, h in images[1:] or images))
            raise CutoutError(f"no {wanted} extension for channel '{ch}' (image extensions: "
                              f"{found or 'none'})", path)
        if hdu.data.ndim != 2:
            raise CutoutError(f"extension {hdu.name} has {hdu.data.ndim} dimensions, expected 2",
                              path)
        planes.append(hdu.data)
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise CutoutError(f"channel images differ in size: {sorted(shapes)}", path)
    return np.stack(planes)


def _has_named_images(hdus: list[ImageHDU]) -> bool:
    names = {n for names in EXTENSION_NAMES.values() for n in names}
    return any(h.name in names and h.data is not None for h in hdus[1:])


_CHANNEL_OF = {n: ch for ch, names in EXTENSION_NAMES.items() for n in names}


def _lookup(header: dict[str, Any], key: str, keywords: Mapping[str, str] | None = None) -> Any:
    mapped = (keywords[key],) if keywords and key in keywords else ()
    for k in (*mapped, key, *_FALLBACKS.get(key, ())):
        value = header.get(k)
        if value is not None:  # parse_hdus leaves undefined values out
            return value
    return None


def _read_keywords(values: dict[str, Any], required: Iterable[str], path: Path,
                   keywords: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Table values from the looked-up keywords (``values``: our name -> value or None)."""
    keywords = keywords or {}
    missing = [_spelling(k, keywords) for k in required if values[k] is None]
    if missing:
        hint = "" if keywords else " (map your own names with --keywords, e.g. MAG=MAG_AUTO)"
        raise CutoutError(f"missing header keyword(s) {', '.join(missing)}{hint}", path)
    meta: dict[str, Any] = {}
    for key, col in _STR_KEYS.items():
        value = values[key]
        meta[col] = "" if value is None else str(value).strip()
    bad = []
    for key, col in _FLOAT_KEYS.items():
        value = values[key]
        meta[col] = number = header_float(value, sentinel=key in ("MAG", "MAGERR"))
        if value is not None and math.isnan(number) and math.isnan(header_float(value, False)):
            bad.append(f"{key}={value!r}")  # present, but no number ('abc', T): stored as NaN
    meta["bad_keywords"] = bad
    edge_value = values["EDGE"]
    edge = None if edge_value is None else parse_edge(edge_value)
    if edge_value is not None and edge is None:
        raise CutoutError(f"EDGE must be True or False, got {edge_value!r}", path)
    meta["edge"] = edge
    return meta


def header_float(value: Any, sentinel: bool) -> float:
    """``value`` as a float; NaN when it is not a number or (``sentinel``) a 99/-99 magnitude."""
    if isinstance(value, bool | np.bool_):  # MAG = T is a logical, not 1.0
        return float("nan")
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    if sentinel and out in MAG_SENTINELS:
        return float("nan")
    return out


def _fill_nonfinite(image: np.ndarray, path: Path) -> tuple[np.ndarray, int]:
    finite = np.isfinite(image)
    n_bad = int(image.size - np.count_nonzero(finite))
    if n_bad == 0:
        return np.asarray(image, dtype=np.float32), 0
    image = np.array(image, dtype=np.float32)
    for c in range(image.shape[0]):
        ok = finite[c]
        if not ok.any():
            raise CutoutError(f"channel {c} has no finite pixel", path)
        image[c][~ok] = np.median(image[c][ok])
    return image, n_bad
