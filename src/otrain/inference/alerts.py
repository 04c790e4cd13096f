"""Score survey alert packets (ZTF/Rubin Avro, broker parquet) with a trained model.

Alerts are decoded batch by batch with :func:`otrain.alerts.iter_alert_batches`, using the model's
channels (``diff`` = cutoutDifference, ``sci`` = cutoutScience, ``ref`` = cutoutTemplate) and a
window of the model's input size centred on the candidate, then scored; only the per-alert rows
are kept. The table is keyed by ``candid`` and ``objectId``:

    candid objectId ra dec jd mag magerr filter fwhm isdiffpos rb drb edge n_nan source_file
    label0 label1 [class]

``label0`` = P(bogus), ``label1`` = P(real) (as in ``infer_results.dat``); ``class`` (1 real /
0 bogus, ``label1 > threshold``) only when a threshold is given. Alert NaN pixels (CCD edges)
become 0 in the network's normalisation; such alerts are flagged in ``edge``. Corrupt records and
alerts without the stamps asked for are skipped and counted (``strict`` makes them fatal).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table

from otrain.alerts import AlertReport, iter_alert_batches
from otrain.errors import OtrainError
from otrain.inference.scoring import InferReport, Scorer
from otrain.models.modelfile import LoadedModel, predict_with_spread
from otrain.models.normalise import normalise
from otrain.progress import Progress

#: File endings of alert packets.
ALERT_SUFFIXES = (".avro", ".parquet", ".pq")
#: Alert metadata columns of the scores table, in order (those present are kept).
ALERT_COLUMNS = ("candid", "objectId", "ra", "dec", "jd", "mag", "magerr", "filter", "fwhm",
                 "isdiffpos", "rb", "drb", "edge", "n_nan", "source_file")


def is_alert_source(source: str | Path | Sequence[str | Path]) -> bool:
    """True when ``source`` names alert files, or folders holding alert files and no FITS."""
    items = [source] if isinstance(source, str | Path) else list(source)
    if not items:
        return False
    for item in items:
        path = Path(item)
        if path.is_dir():
            names = [p.name.lower() for p in path.iterdir() if p.is_file()]
            if not any(n.endswith(ALERT_SUFFIXES) for n in names):
                return False
        elif not path.name.lower().endswith(ALERT_SUFFIXES):
            return False
    return True


def check_alert_model(loaded: LoadedModel) -> tuple[tuple[str, ...], int]:
    """The model's channels and window side, after checking it can score alerts.

    Raises
    ------
    OtrainError
        Channels other than alert stamps (``diff``, ``sci``, ``ref``), or a non-square input.
    """
    channels = tuple(loaded.channels)
    unknown = [c for c in channels if c not in ("diff", "sci", "ref")]
    if unknown:
        raise OtrainError(f"model channels {', '.join(channels)} are not alert stamps "
                          "(diff, sci, ref)", loaded.path)
    h, w = loaded.input_size
    if h != w:
        raise OtrainError(f"model input {h}x{w} is not square: alert windows are square",
                          loaded.path)
    return channels, h


def skipped_alerts(alert_report: AlertReport, keep: int = 20) -> list[tuple[str, str]]:
    """The first ``keep`` problems of an alert report as (where, reason) pairs."""
    return [tuple(line.split(": ", 1)) if ": " in line else (line, "problem")  # type: ignore[misc]
            for line in alert_report.problems[:keep]]


def iter_alert_scores(
    paths: str | Path | Sequence[str | Path],
    loaded: LoadedModel,
    batch_size: int = 1024,
    threshold: float | None = None,
    strict: bool = False,
    quiet: bool = False,
    report: InferReport | None = None,
    alert_report: AlertReport | None = None,
    precision: str = "fp32",
    mc_samples: int = 0,
    seed: int = 0,
) -> Iterator[Table]:
    """Yield the scores of alert batches as tables (see the module documentation).

    Parameters
    ----------
    paths : path or sequence of paths
        Alert files and folders.
    loaded : LoadedModel
        The model; its channels must be a subset of ``diff``, ``sci``, ``ref``.
    batch_size : int, default 1024
        Alerts decoded and scored per batch.
    threshold : float, optional
        Adds the ``class`` column.
    strict : bool, default False
        Stop at the first corrupt record or file.
    quiet : bool, default False
        No progress output.
    report, alert_report : optional
        Filled in while scoring.
    precision : str, default "fp32"
        Scored by :class:`otrain.inference.scoring.Scorer` in that precision
        (:mod:`otrain.models.precision`), as cutout files and datacubes are; with MC-dropout
        the eager networks run the passes in fp32
        (:func:`otrain.models.modelfile.predict_with_spread`).
    mc_samples, seed : int, default 0
        MC-dropout passes per member and their seed; with them or an ensemble the table
        has ``p_real_std``.

    Yields
    ------
    astropy.table.Table
        One row per scored alert.
    """
    report = report if report is not None else InferReport()
    alert_report = alert_report if alert_report is not None else AlertReport()
    channels, h = check_alert_model(loaded)
    report.source = str(paths) if isinstance(paths, str | Path) else f"{len(paths)} path(s)"
    report.threshold = float(threshold if threshold is not None else loaded.threshold)
    start = time.perf_counter()
    batches = iter_alert_batches(paths, channels, h, batch_size, strict, alert_report)
    scorer = None
    if not mc_samples:  # the Scorer, in every precision: a fallback equals fp32 exactly
        scorer = Scorer(loaded, (len(channels), *loaded.input_size), precision)
        report.precision = scorer.precision.record()
    n_batches = 0
    with Progress(None, "scoring alerts", quiet=quiet, unit="alert") as bar:
        for images, columns in batches:
            if scorer is None:
                p_real, p_std = predict_with_spread(loaded, images, min(batch_size, 512),
                                                    mc_samples, seed + n_batches)
            else:
                probs = scorer(normalise(images, loaded.normalisation))
                p_real = probs[:, 1]
                p_std = probs[:, 2] if scorer.spread else np.zeros_like(p_real)
                report.precision = scorer.precision.record()
            n_batches += 1
            rows = {name: np.asarray(columns[name]) for name in ALERT_COLUMNS if name in columns}
            rows["label0"] = 1.0 - p_real
            rows["label1"] = p_real
            if loaded.is_ensemble or mc_samples:
                rows["p_real_std"] = p_std
            if threshold is not None:
                rows["class"] = (p_real > threshold).astype(np.int64)
            table = Table(rows)
            report.n_scored += len(table)
            report.n_real += int(np.sum(p_real > report.threshold))
            if "edge" in table.colnames:
                report.n_edge += int(np.sum(table["edge"]))
            bar.update(len(table))
            yield table
    report.n_inputs = alert_report.n_alerts
    report.n_skipped = alert_report.n_alerts - alert_report.n_kept
    report.skipped = skipped_alerts(alert_report)
    report.seconds = time.perf_counter() - start
    if report.n_scored == 0:
        raise OtrainError(f"no alert could be scored ({alert_report.summary()})")
