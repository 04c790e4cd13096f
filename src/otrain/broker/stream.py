"""Scoring inside a broker's stream step: alert dicts or numpy stamps in, P(real) out.

::

    import otrain
    model = otrain.load_model("model.safetensors")      # once, at start-up (or an O'TRAIN .h5)
    scores = otrain.score_alerts(alerts, model)          # alerts: list of dicts (ZTF or Rubin)
    scores["p_real"], scores["p_real_spread"]            # numpy (N,), in input order

Nothing touches the disk after :func:`load_model`. Alerts are the dicts a broker holds: fastavro
records, ``Row.asDict(recursive=True)`` of Fink/Spark rows, flat dicts holding ``candid`` and
the stamp bytes (``cutoutDifference`` etc., as ``{"stampData": bytes}`` or bytes). Their stamps
are decoded and windowed on the candidate exactly as ``otrain-infer`` does for alert files
(:mod:`otrain.alerts`); an alert without the stamps the model needs, or with an undecodable
stamp, gets NaN (``errors="raise"`` raises instead).

Channels: the model's names are ``diff``, ``sci``, ``ref``; Rubin's names (meas_transiNet orders
its input ``diff, sci, template``), ``difference``/``science``/``template`` and the alert field
names (``cutoutDifference``...) are accepted wherever channels are named, and stamps are
reordered to the model's order. ``column="reliability"`` names the output as Rubin does.

P(real) is the calibrated score ``otrain-infer`` writes as ``label1``: each member's
``softmax(logits / T)`` (``T`` the model's temperature, 1 for uncalibrated files and Keras
imports), averaged over the members of an ensemble. Spread: the population standard deviation of
those member probabilities (``otrain-infer``'s ``p_real_std``); 0.0 for a single network (and NaN
where the P(real) is NaN). Both come from :mod:`otrain.models.ensemble`; no MC-dropout here (a
stream step is deterministic).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from otrain.errors import OtrainError
from otrain.models.ensemble import combine, member_probabilities
from otrain.models.modelfile import LoadedModel
from otrain.models.modelfile import load_model as _load_file

__all__ = ["CHANNEL_ALIASES", "RUBIN_CHANNELS", "StreamModel", "canonical_channels",
           "load_model", "model_scores", "score_alerts", "score_stamps"]

#: Rubin cutout order (lsst meas_transiNet input), in otrain's names: diff, sci, ref.
RUBIN_CHANNELS = ("diff", "sci", "template")
#: Other channel names -> otrain's ``diff``, ``sci``, ``ref``.
CHANNEL_ALIASES = {"diff": "diff", "difference": "diff", "cutoutdifference": "diff",
                   "sci": "sci", "science": "sci", "cutoutscience": "sci",
                   "ref": "ref", "template": "ref", "reference": "ref", "cutouttemplate": "ref"}


def canonical_channels(names: Sequence[str] | str) -> tuple[str, ...]:
    """Channel names in otrain's vocabulary (``template`` -> ``ref``, ...); others kept."""
    items = names.split(",") if isinstance(names, str) else list(names)
    return tuple(CHANNEL_ALIASES.get(str(n).strip().lower(), str(n).strip()) for n in items)


def model_scores(loaded: LoadedModel, stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(real) and its spread for raw stamps ``(N, C, H, W)`` in the model's channel order.

    The one predict path of the stream API and of the ONNX export check: the members'
    calibrated probabilities (:func:`otrain.models.ensemble.member_probabilities`, temperature
    applied) combined into their mean and population standard deviation
    (:func:`otrain.models.ensemble.combine`), as ``otrain-infer``'s ``label1`` and
    ``p_real_std``. One network: its calibrated P(real) and a spread of 0.
    """
    return combine(member_probabilities(loaded, stamps))


@dataclass
class StreamModel:
    """A model loaded once for a stream step.

    Attributes
    ----------
    loaded : LoadedModel
        The network and its metadata (:func:`otrain.models.modelfile.load_model`).
    """

    loaded: LoadedModel

    @property
    def channels(self) -> list[str]:
        """The model's channels, in input order."""
        return self.loaded.channels

    @property
    def input_size(self) -> tuple[int, int]:
        """Stamp ``(H, W)`` the network takes."""
        return self.loaded.input_size

    @property
    def threshold(self) -> float:
        """P(real) above which a candidate is called real."""
        return self.loaded.threshold

    @property
    def temperature(self) -> float:
        """Calibration temperature the logits are divided by (1: uncalibrated)."""
        return self.loaded.temperature

    @property
    def logit_bias(self) -> float:
        """Offset added to the real-class logit after the temperature (0: none)."""
        return self.loaded.logit_bias

    @property
    def n_members(self) -> int:
        """Networks averaged (1 unless the model is an ensemble)."""
        return len(self.loaded.members)

    @property
    def meta(self) -> dict[str, Any]:
        """The model file's metadata."""
        return self.loaded.meta

    def predict(self, stamps: np.ndarray, channels: Sequence[str] | None = None,
                layout: str = "NCHW") -> tuple[np.ndarray, np.ndarray]:
        """P(real) and spread ``(N,)`` of raw stamps (see :func:`score_stamps`)."""
        images = _prepare(self.loaded, stamps, channels, layout)
        return model_scores(self.loaded, images)

    def predict_proba(self, stamps: np.ndarray, channels: Sequence[str] | None = None,
                      layout: str = "NCHW") -> np.ndarray:
        """P(real) ``(N,)`` of raw stamps (see :func:`score_stamps`)."""
        return self.predict(stamps, channels, layout)[0]


def load_model(path: str | Path, device: str = "cpu") -> StreamModel:
    """Load a model file (``.safetensors``, or an original O'TRAIN Keras ``.h5``) once."""
    return StreamModel(_load_file(path, device))


def _as_loaded(model: StreamModel | LoadedModel) -> LoadedModel:
    if isinstance(model, StreamModel):
        return model.loaded
    if isinstance(model, LoadedModel):
        return model
    raise OtrainError(f"expected a model from otrain.load_model, got {type(model).__name__} "
                      "(load the model once, then pass it to every call)")


def _centre_crop(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = images.shape[2:]
    eh, ew = size
    if h < eh or w < ew:
        raise OtrainError(f"stamps are {h}x{w} pixels, the model needs {eh}x{ew}")
    top, left = (h - eh) // 2, (w - ew) // 2
    return images[:, :, top:top + eh, left:left + ew]


def _prepare(loaded: LoadedModel, stamps: np.ndarray, channels: Sequence[str] | None,
             layout: str) -> np.ndarray:
    """Stamps as ``(N, C, H, W)`` float32 in the model's channel order and input size."""
    images = np.asarray(stamps)
    if images.ndim == 3:
        images = images[:, None] if layout.upper() == "NCHW" else images[..., None]
    if images.ndim != 4:
        raise OtrainError(f"stamps must be (N, C, H, W) or (N, H, W), got shape {images.shape}")
    if layout.upper() == "NHWC":
        images = images.transpose(0, 3, 1, 2)
    elif layout.upper() != "NCHW":
        raise OtrainError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if channels is not None:
        given = canonical_channels(channels)
        if len(given) != images.shape[1]:
            raise OtrainError(f"{len(given)} channel names for stamps of {images.shape[1]} "
                              "channels")
        wanted = canonical_channels(loaded.channels)
        if set(wanted) <= set(given):
            images = images[:, [given.index(c) for c in wanted]]
        elif len(given) != len(wanted) or not all(g == w or w.startswith("ch")
                                                  for g, w in zip(given, wanted, strict=True)):
            raise OtrainError(f"model needs channels {', '.join(wanted)}, stamps have "
                              f"{', '.join(given)}")
    if tuple(images.shape[2:]) != loaded.input_size:
        images = _centre_crop(images, loaded.input_size)
    return np.ascontiguousarray(images, dtype=np.float32)


def _result(p_real: np.ndarray, spread: np.ndarray, column: str) -> dict[str, np.ndarray]:
    return {column: p_real, f"{column}_spread": spread}


def score_stamps(stamps: np.ndarray, model: StreamModel | LoadedModel,
                 channels: Sequence[str] | None = None, layout: str = "NCHW",
                 column: str = "p_real") -> dict[str, np.ndarray]:
    """Score numpy stamps.

    Parameters
    ----------
    stamps : numpy.ndarray
        Raw (un-normalised) stamps ``(N, C, H, W)`` (or ``(N, H, W)`` for one channel); NaN
        allowed. Larger stamps are centre-cropped to the model's input size.
    model : StreamModel or LoadedModel
        From :func:`load_model`.
    channels : sequence of str, optional
        Names of the stamps' channels in their order (e.g. Rubin's ``("diff", "sci",
        "template")``); they are reordered to the model's. Default: already in the model's order.
    layout : {"NCHW", "NHWC"}, default "NCHW"
        ``"NHWC"`` for channels-last stamps (Keras, the original O'TRAIN cubes).
    column : str, default "p_real"
        Output name; ``"reliability"`` as Rubin.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{column: P(real), column + "_spread": spread}``, float64 ``(N,)``, in input order.
    """
    loaded = _as_loaded(model)
    p_real, spread = model_scores(loaded, _prepare(loaded, stamps, channels, layout))
    return _result(p_real, spread, column)


def _alert_channels(loaded: LoadedModel, channels: Sequence[str] | None
                    ) -> tuple[tuple[str, ...], int]:
    """The stamps to feed and the window side (the model's square input)."""
    from otrain.alerts.reading import check_channels
    from otrain.inference.alerts import check_alert_model

    if channels is None:
        return check_alert_model(loaded)
    chans = check_channels(canonical_channels(channels))
    if len(chans) != len(loaded.channels):
        raise OtrainError(f"{len(chans)} channels asked for, the model takes "
                          f"{len(loaded.channels)}", loaded.path)
    h, w = loaded.input_size
    if h != w:
        raise OtrainError(f"model input {h}x{w} is not square: alert windows are square",
                          loaded.path)
    return chans, h


def score_alerts(alerts: Iterable[Mapping[str, Any]], model: StreamModel | LoadedModel,
                 channels: Sequence[str] | None = None, column: str = "p_real",
                 errors: str = "nan") -> dict[str, np.ndarray]:
    """Score alert packets held in memory (ZTF or Rubin records as dicts).

    Parameters
    ----------
    alerts : iterable of dict
        fastavro records, ``Row.asDict(recursive=True)`` of Spark rows, or flat dicts with
        ``candid`` (ZTF) / ``diaSource`` (Rubin) and the ``cutout*`` stamps.
    model : StreamModel or LoadedModel
        From :func:`load_model`; its input must be square.
    channels : sequence of str, optional
        Stamps to feed, in the model's input order (default: the model's channels, which must
        then be alert stamps; needed for models with generic ``ch0``... channels, such as a
        multi-channel Keras import). Rubin names accepted.
    column : str, default "p_real"
        Output name; ``"reliability"`` as Rubin.
    errors : {"nan", "raise"}, default "nan"
        What an alert without usable stamps gets: NaN, or an :class:`OtrainError`.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{column: P(real), column + "_spread": spread}``, float64 ``(N,)``, in input order.
    """
    from otrain.alerts.reading import _add_alert, _Batch
    from otrain.alerts.report import AlertReport

    if errors not in ("nan", "raise"):
        raise OtrainError(f"errors must be 'nan' or 'raise', got {errors!r}")
    loaded = _as_loaded(model)
    chans, size = _alert_channels(loaded, channels)
    records = list(alerts)
    batch = _Batch(max(1, len(records)), len(chans), size)
    report = AlertReport()
    slots = np.full(len(records), -1, dtype=np.int64)
    where = Path("<alerts>")
    for i, record in enumerate(records):
        before = batch.n
        if not isinstance(record, Mapping):
            problem = f"record {i} is a {type(record).__name__}, not a dict"
        else:
            _add_alert(batch, dict(record), where, i, chans, report, strict=errors == "raise")
            problem = report.problems[-1] if report.problems else "unusable alert"
        if batch.n > before:
            slots[i] = before
        elif errors == "raise":
            raise OtrainError(f"alert {i}: {problem}")
    p_real = np.full(len(records), np.nan)
    spread = np.full(len(records), np.nan)
    if batch.n:
        images, _ = batch.arrays()
        p, s = model_scores(loaded, images)
        ok = slots >= 0
        p_real[ok], spread[ok] = p[slots[ok]], s[slots[ok]]
    return _result(p_real, spread, column)
