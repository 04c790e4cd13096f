"""Alerts -> O'TRAIN-style FITS cutout files, for those who work with folders of cutouts.

Each alert becomes one file ``<candid>.fits`` holding the same window as
:func:`otrain.alerts.read_alerts` gives (``cutout_size`` pixels centred on the candidate, NaN
kept, NaN padding beyond a CCD edge), so that ``otrain-convert --cutouts`` reads the images back
unchanged (NaN pixels excepted: the cutout reader fills them with the channel median, and marks
the alert ``EDGE = 'True'``, which ``otrain-convert`` excludes).

Layouts:

``single``
    The O'TRAIN / gmadet layout: the image in the primary HDU with every keyword; one channel
    (normally ``diff``) is a 2-D image, several channels a 3-D ``(C, H, W)`` cube in the order
    of the ``CHANNELS`` keyword (read back with the same ``--channels``).
``mef``
    Multi-extension: the keywords in an image-less primary HDU, one image extension per
    channel named ``DIFF``, ``SCI``, ``REF``.

Keywords: ``CANDID``, ``MAG`` (``magpsf``), ``MAGERR`` (``sigmapsf``), ``FILTER``, ``FWHM``,
``EDGE`` (the string ``'True'``/``'False'``, as gmadet writes it), ``RA``, ``DEC``, ``FILE``
(name of the alert file), ``XPOS``, ``YPOS``; and from the alert ``OBJECTID``, ``JD``,
``ISDIFPOS``, ``RB``, ``DRB``, ``PROGID``, ``NNAN`` (NaN pixels in the window), ``SRCREC``
(record number in the alert file), ``LABEL`` (1/0, when a label rule is given). A missing
magnitude is written as the O'TRAIN sentinel 99 (read back as NaN), a missing ``FWHM`` as the
string ``'NaN'`` (it is required for training); other missing numbers are left out. ZTF alerts
carry no PSF FWHM of the image, so ``FWHMPSF`` is not written.

With a label rule the files go into ``<outdir>/true/`` (real) and ``<outdir>/false/`` (bogus),
alerts the rule leaves unknown are skipped; without one they go straight into ``<outdir>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from otrain._version import __version__
from otrain.alerts.labels import BOGUS, REAL, LabelRule
from otrain.alerts.reading import check_channels, iter_alert_batches
from otrain.alerts.report import AlertReport
from otrain.alerts.sources import find_alert_files
from otrain.cutouts.reading import EXTENSION_NAMES, find_cutouts
from otrain.errors import OtrainError
from otrain.outputs import atomic_output
from otrain.progress import info

PathsLike = Sequence[str | Path] | str | Path
#: Output layouts.
LAYOUTS = ("single", "mef")
#: Magnitude sentinel of O'TRAIN / gmadet for a missing value (read back as NaN).
MAG_SENTINEL = 99.0
_FOLDERS = {REAL: "true", BOGUS: "false"}


@dataclass
class FitsExportReport:
    """What :func:`alerts_to_fits` wrote.

    Attributes
    ----------
    outdir : str
        Output folder.
    layout : str
        ``single`` or ``mef``.
    channels : list of str
        Channels written, in order.
    label_rule : str or None
        How alerts were labelled; None: no labels, files written flat.
    n_written, n_real, n_bogus : int
        Files written, and how many went to ``true/`` and ``false/``.
    alerts : AlertReport
        Decoding counts (padded stamps, NaN, missing stamps, unreadable, left unlabelled).
    """

    outdir: str = ""
    layout: str = "mef"
    channels: list[str] = field(default_factory=list)
    label_rule: str | None = None
    n_written: int = 0
    n_real: int = 0
    n_bogus: int = 0
    alerts: AlertReport = field(default_factory=AlertReport)

    def summary(self) -> str:
        """Lines describing what was written."""
        where = (f"true/ {self.n_real}, false/ {self.n_bogus}" if self.label_rule
                 else "no label rule, written flat")
        return (f"{self.n_written} FITS cutouts ({self.layout}, {','.join(self.channels)}) "
                f"written to {self.outdir}: {where}\nalerts: {self.alerts.summary()}")

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dictionary."""
        return asdict(self)


def resolve_layout(layout: str | None, channels: Sequence[str] | str | None
                   ) -> tuple[str, tuple[str, ...]]:
    """Layout and channels, filling in defaults.

    Parameters
    ----------
    layout : {"single", "mef"} or None
        None: ``single`` for one channel, else ``mef``.
    channels : sequence of str, or None
        None: ``diff`` for ``single``, ``diff,sci,ref`` for ``mef`` (and when both are None).

    Returns
    -------
    tuple
        ``(layout, channels)``.
    """
    if layout is not None and layout not in LAYOUTS:
        raise OtrainError(f"unknown layout '{layout}'; choose from {', '.join(LAYOUTS)}")
    if channels is None:
        chans = ("diff",) if layout == "single" else ("diff", "sci", "ref")
    else:
        chans = check_channels(channels)
    if layout is None:
        layout = "single" if len(chans) == 1 else "mef"
    return layout, chans


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def cutout_header(row: dict[str, Any], label: int | None = None) -> fits.Header:
    """The O'TRAIN keywords (and alert extras) of one alert table row.

    Parameters
    ----------
    row : dict
        Values of the alert table columns (see :data:`otrain.alerts.COLUMNS`).
    label : int, optional
        1 real, 0 bogus; written as ``LABEL``.

    Returns
    -------
    astropy.io.fits.Header
    """
    h = fits.Header()
    h["CANDID"] = (str(row["candid"]), "alert candidate id")
    for key, col, text in (("MAG", "mag", "PSF-fit magnitude (99: unknown)"),
                           ("MAGERR", "magerr", "magnitude error (99: unknown)")):
        value = _number(row[col])
        h[key] = (MAG_SENTINEL if value is None else value, text)
    h["FILTER"] = (str(row["filter"]), "filter")
    fwhm = _number(row["fwhm"])
    h["FWHM"] = ("NaN" if fwhm is None else fwhm, "source FWHM [pixels]")
    h["EDGE"] = ("True" if bool(row["edge"]) else "False", "CCD edge or NaN pixels in window")
    for key, col, text in (("RA", "ra", "[deg]"), ("DEC", "dec", "[deg]"),
                           ("XPOS", "xpos", "candidate x on the CCD [pixels]"),
                           ("YPOS", "ypos", "candidate y on the CCD [pixels]"),
                           ("JD", "jd", "observation Julian date"),
                           ("RB", "rb", "survey real/bogus score (machine)"),
                           ("DRB", "drb", "survey deep real/bogus score (machine)")):
        value = _number(row[col])
        if value is not None:
            h[key] = (value, text)
    source = str(row["source_file"])
    h["FILE"] = (Path(str(row["file"])).name, "alert file")
    h["SRCREC"] = (int(source.rsplit("#", 1)[1]) if "#" in source else -1,
                   "record number in the alert file")
    h["OBJECTID"] = (str(row["objectId"]), "survey object id")
    h["ISDIFPOS"] = (str(row["isdiffpos"]), "t: positive subtraction, f: negative")
    h["PROGID"] = (int(row["programid"]), "survey programme id (-1: unknown)")
    h["NNAN"] = (int(row["n_nan"]), "NaN pixels in the window")
    if label is not None:
        h["LABEL"] = (int(label), "1 real, 0 bogus (from the label rule)")
    h["ORIGIN"] = (f"otrain {__version__} alerts-to-fits", "")
    return h


def _hdus(image: np.ndarray, header: fits.Header, layout: str,
          channels: Sequence[str]) -> fits.HDUList:
    if layout == "single":
        header = header.copy()
        header["CHANNELS"] = (",".join(channels), "image planes, in order")
        data = image[0] if image.shape[0] == 1 else image
        return fits.HDUList([fits.PrimaryHDU(np.ascontiguousarray(data), header)])
    hdus: list[Any] = [fits.PrimaryHDU(header=header)]
    for plane, ch in zip(image, channels, strict=True):
        hdus.append(fits.ImageHDU(np.ascontiguousarray(plane), name=EXTENSION_NAMES[ch][0]))
    return fits.HDUList(hdus)


def _check_outdir(outdir: Path, labelled: bool, overwrite: bool) -> None:
    if outdir.exists() and not outdir.is_dir():
        raise OtrainError("is a file, expected an output folder", outdir)
    if overwrite:
        return
    for folder in ([outdir / "true", outdir / "false"] if labelled else [outdir]):
        if folder.is_dir() and find_cutouts(folder):
            raise OtrainError("already holds FITS cutouts; pass --overwrite to replace those "
                              "of the same name", folder)


def alerts_to_fits(
    paths: PathsLike,
    outdir: str | Path,
    channels: Sequence[str] | str | None = None,
    label_rule: LabelRule | None = None,
    layout: str | None = None,
    cutout_size: int = 63,
    overwrite: bool = False,
    quiet: bool = False,
    strict: bool = False,
) -> FitsExportReport:
    """Write one FITS cutout per alert, into ``true/`` and ``false/`` when labelled.

    Parameters
    ----------
    paths : path or sequence of paths
        Alert files and folders.
    outdir : str or Path
        Output folder (created).
    channels : sequence of str, optional
        Channels from ``diff``, ``sci``, ``ref``; default ``diff`` for ``single``,
        ``diff,sci,ref`` otherwise.
    label_rule : LabelRule, optional
        Labels: real alerts go to ``true/``, bogus to ``false/``, unknown ones are skipped.
        Without a rule every alert is written to ``outdir`` itself.
    layout : {"single", "mef"}, optional
        File layout (see the module documentation); default ``single`` for one channel, ``mef``
        for several.
    cutout_size : int, default 63
        Side of the window centred on the candidate.
    overwrite : bool, default False
        Replace files of the same name; without it a target folder already holding FITS
        cutouts is refused.
    quiet : bool, default False
        Print nothing.
    strict : bool, default False
        Stop at the first unreadable alert file or record instead of skipping it.

    Returns
    -------
    FitsExportReport
        Files written and decoding counts.

    Raises
    ------
    OtrainError
        Missing inputs, a non-empty output folder without ``overwrite``, an unusable label
        rule, or no alert written.
    """
    from otrain.convert.alerts import check_label_rule  # the cube converter imports us

    layout, chans = resolve_layout(layout, channels)
    outdir = Path(outdir)
    find_alert_files(paths)
    check_label_rule(label_rule)
    _check_outdir(outdir, label_rule is not None, overwrite)
    report = FitsExportReport(outdir=str(outdir), layout=layout, channels=list(chans),
                              label_rule=label_rule.describe() if label_rule else None)
    used: set[Path] = set()
    for images, columns in iter_alert_batches(paths, chans, cutout_size, 256, strict,
                                              report.alerts, quiet):
        labels = (label_rule.apply(columns) if label_rule is not None
                  else np.full(images.shape[0], -1, dtype=np.int64))
        for i in range(images.shape[0]):
            label = int(labels[i])
            if label_rule is not None and label not in _FOLDERS:
                report.alerts.n_unlabelled += 1
                continue
            row = {name: values[i] for name, values in columns.items()}
            folder = outdir / _FOLDERS[label] if label_rule is not None else outdir
            path = _unique_path(folder, str(row["candid"]), used)
            header = cutout_header(row, label if label_rule is not None else None)
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_output(path, overwrite) as tmp:
                _hdus(images[i], header, layout, chans).writeto(tmp, overwrite=True)
            report.n_written += 1
            report.n_real += label == REAL
            report.n_bogus += label == BOGUS
    if report.n_written == 0:
        raise OtrainError("no alert written: " + report.alerts.summary(3).replace("\n", " "))
    info(report.summary(), quiet)
    return report


def _unique_path(folder: Path, candid: str, used: set[Path]) -> Path:
    """``folder/<candid>.fits``, with ``_1``, ``_2``... for a candid met twice in one run."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in candid) or "alert"
    path, n = folder / f"{stem}.fits", 0
    while path in used:
        n += 1
        path = folder / f"{stem}_{n}.fits"
    used.add(path)
    return path
