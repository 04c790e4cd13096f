"""The user's header spellings (``--keywords``) and the notes a cutout leaves in a run's report.

A keyword map renames our keywords to the user's: ``MAG=MAG_AUTO,FWHM=FWHM_IMAGE`` on the command
line, or the same pairs in a small TOML or JSON file (top level, or under ``[keywords]``)::

    # keywords.toml
    MAG = "MAG_AUTO"
    MAGERR = "MAGERR_AUTO"
    FWHM = "FWHM_IMAGE"
    DIFF = "RESIDUAL"       # channels too: the extension (EXTNAME, or HDU number) of diff/sci/ref

The mapped name is looked up first, then ours and its usual fallbacks. Channel entries (``DIFF``,
``SCI``, ``REF``) name the HDU holding that channel.

Notes: :func:`otrain.cutouts.reading.read_cutout` records in ``meta["notes"]`` every fallback it
took (a centre crop, a keyword absent so the table gets NaN or an empty string, ``EDGE`` absent so
the cutout counts as not on an edge); :func:`count_notes` and :func:`format_notes` turn them into
the counted lines of a run's report, so nothing is silent.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from otrain.errors import OtrainError

#: Our keywords that a map may rename (those read by training and inference).
KNOWN_KEYWORDS = ("CANDID", "MAG", "MAGERR", "FILTER", "FWHM", "EDGE", "RA", "DEC", "FILE",
                  "XPOS", "YPOS", "FWHMPSF")
#: Channel entries of a map: channel -> the HDU's EXTNAME (or number).
CHANNEL_KEYS = {"DIFF": "diff", "SCI": "sci", "REF": "ref"}


def parse_keyword_map(text: str | Path | Mapping[str, str] | None) -> dict[str, str]:
    """``KEY=VALUE,...``, a ``.toml``/``.json`` file of such pairs, or a mapping -> dict.

    Parameters
    ----------
    text : str, Path, mapping or None
        The ``--keywords`` value. A value naming an existing file ending in ``.toml`` or
        ``.json`` is read as that file.

    Returns
    -------
    dict
        Upper-case our-name -> upper-case user's name (empty for None).

    Raises
    ------
    OtrainError
        An unknown keyword, a malformed pair, or an unreadable file.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        pairs = dict(text)
        origin = "keyword map"
    elif str(text).lower().endswith((".toml", ".json")):
        path = Path(text)
        if not path.is_file():
            raise OtrainError("no such keyword-map file", path)
        try:
            raw = path.read_text()
            data = json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw)
        except (OSError, ValueError) as exc:
            raise OtrainError(f"unreadable keyword map ({exc})", path) from None
        pairs = data.get("keywords", data) if isinstance(data, dict) else None
        if not isinstance(pairs, dict):
            raise OtrainError("expected KEY = \"NAME\" pairs (top level or [keywords])", path)
        origin = str(path)
    else:
        pairs = {}
        for item in filter(None, (p.strip() for p in str(text).split(","))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise OtrainError(f"--keywords: expected OURS=THEIRS pairs, got {item!r}")
            pairs[key] = value
        origin = "--keywords"
    out: dict[str, str] = {}
    for key, value in pairs.items():
        ours = str(key).strip().upper()
        if ours not in KNOWN_KEYWORDS and ours not in CHANNEL_KEYS:
            raise OtrainError(f"{origin}: unknown keyword {key!r}; known: "
                              f"{', '.join((*KNOWN_KEYWORDS, *CHANNEL_KEYS))}")
        if not isinstance(value, str | int) or not str(value).strip():
            raise OtrainError(f"{origin}: {key} must name a header keyword, got {value!r}")
        out[ours] = str(value).strip().upper()
    return out


def channel_extensions(keywords: Mapping[str, str]) -> dict[str, str]:
    """The channel entries of a keyword map: ``{"diff": "RESIDUAL", ...}``."""
    return {CHANNEL_KEYS[k]: v for k, v in keywords.items() if k in CHANNEL_KEYS}


def count_notes(counter: Counter, metas: Iterable[Mapping[str, Any]]) -> Counter:
    """Add the ``notes`` of cutout metadata to ``counter`` (one count per cutout and note)."""
    for meta in metas:
        counter.update(meta.get("notes", ()))
    return counter


def format_notes(counter: Mapping[str, int], n: int | None = None) -> list[str]:
    """Report lines for counted notes, e.g. ``note: 40 of 40 cutouts: no RA keyword (NaN)``."""
    of = f" of {n}" if n is not None else ""
    return [f"note: {count}{of} cutout(s): {note}" for note, count in sorted(counter.items())]
