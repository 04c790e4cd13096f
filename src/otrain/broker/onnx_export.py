"""Export a model as ONNX for alert brokers: raw stamps in, P(real) out, checked on export.

The graph has one input ``stamps``, float32 ``(N, C, H, W)`` of raw pixels (NaN and infinities
allowed, any batch size ``N``), and the output ``p_real``, float32 ``(N,)``: the calibrated,
ensemble-averaged P(real) that ``otrain-infer`` writes as ``label1``. Inside the graph, in this
order, are the model's normalisation (:mod:`~otrain.models.normalise`, every method: ``zscore``'s
medians are computed exactly as numpy's, as the mean of the two middle finite values of a sort,
not torch's lower median), the NaN fill (non-finite pixels become 0), every member's network,
``logits / T + [0, b]`` (the model's temperature and logit bias; skipped for ``T = 1, b =
0``), the softmax column of the real class and the mean over the members. So a broker feeds
the stamps as they come out of the alert.

An ensemble's graph has a second output, ``p_real_std`` ``(N,)``: the population standard
deviation of the members' calibrated P(real), as ``otrain-infer``'s ``p_real_std`` column and
the stream API's spread. A single network's graph keeps the one output (its spread would be 0),
exactly as ``otrain-infer`` adds the column only for ensembles. MC-dropout is not exported (the
graph is deterministic).

The file's metadata properties: ``otrain`` (the model file's full JSON metadata, with the
``ensemble`` members and ``temperature`` when it has them), ``channels`` (comma-separated, in input
order), ``input_size`` (``HxW``), ``normalisation``, ``threshold``, ``temperature``,
``logit_bias``, ``n_members``, ``otrain_version``, plus ``input`` / ``output`` naming the tensors
(``output`` is ``p_real``; ``outputs`` lists all, comma-separated). :func:`export_onnx` checks
itself: onnxruntime's scores (and spread) of a seeded batch of raw stamps (with NaN pixels, a
constant and an all-NaN stamp) must match :func:`otrain.broker.stream.model_scores` (otrain's own
scoring path, :mod:`otrain.models.ensemble`) within ``1e-5`` (the batch at sky level 100 and
divided by 100), else it fails and writes nothing.

Needs the ``onnx`` extra (``pip install 'otrain[onnx]'``: onnx, onnxruntime and onnxscript, which
torch's exporter uses).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from otrain._version import __version__
from otrain.errors import OtrainError
from otrain.models.modelfile import LoadedModel
from otrain.models.normalise import ABSOLUTE_FLOOR, MAD_TO_STD, RELATIVE_FLOOR, check_method
from otrain.outputs import atomic_output, check_writable

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "SPREAD_NAME", "TOLERANCE", "ScoringGraph",
           "export_onnx", "onnx_metadata", "output_names", "run_onnx", "run_onnx_outputs"]

INPUT_NAME = "stamps"
OUTPUT_NAME = "p_real"
#: Second output of an ensemble's graph: the members' standard deviation.
SPREAD_NAME = "p_real_std"
#: Largest |onnxruntime - otrain| P(real) difference export accepts.
TOLERANCE = 1e-5
OPSET = 18


def require_onnx() -> tuple[Any, Any]:
    """Import ``onnx`` and ``onnxruntime``, or say which extra to install."""
    missing = []
    mods = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise OtrainError(f"ONNX export needs {', '.join(missing)}: "
                          "pip install 'otrain[onnx]'")
    return mods[0], mods[1]


def _finite(x: torch.Tensor) -> torch.Tensor:
    return ~(torch.isnan(x) | torch.isinf(x))


def _masked_median(values: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
    """numpy's ``nanmedian`` over the last axis (mean of the two middle finite values)."""
    count = finite.sum(dim=-1, keepdim=True)
    ordered = torch.sort(torch.where(finite, values, torch.inf), dim=-1).values
    last = values.shape[-1] - 1
    lo = torch.clamp(torch.div(count - 1, 2, rounding_mode="floor"), 0, last)
    hi = torch.clamp(torch.div(count, 2, rounding_mode="floor"), 0, last)
    return (torch.gather(ordered, -1, lo) + torch.gather(ordered, -1, hi)) / 2


class Normalisation(nn.Module):
    """:func:`~otrain.models.normalise.normalise` (with its NaN fill) as torch operations ONNX
    can hold.

    Parameters
    ----------
    method : str
        One of :data:`otrain.models.normalise.METHODS`.
    """

    def __init__(self, method: str) -> None:
        super().__init__()
        self.method = check_method(method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled stamps, finite everywhere (non-finite pixels and results become 0)."""
        finite = _finite(x)
        if self.method == "none":
            return torch.where(finite, x, 0.0)
        if self.method == "l2":
            x0 = torch.where(finite, x, 0.0)
            rms = torch.sqrt(torch.mean(x0 * x0, dim=(2, 3), keepdim=True))
            return x0 / torch.where(rms > 0, rms, 1.0)
        flat = torch.flatten(x, start_dim=2)
        fin = torch.flatten(finite, start_dim=2)
        if self.method == "minmax":
            lo = torch.amin(torch.where(fin, flat, torch.inf), dim=-1, keepdim=True)
            hi = torch.amax(torch.where(fin, flat, -torch.inf), dim=-1, keepdim=True)
            span = hi - lo
            out = (flat - lo) / torch.where(span > 0, span, torch.inf)
        else:  # zscore
            med = _masked_median(flat, fin)
            dev = torch.abs(flat - med)
            scale = MAD_TO_STD * _masked_median(dev, fin)
            top = torch.amax(torch.where(fin, dev, -torch.inf), dim=-1, keepdim=True)
            scale = torch.maximum(scale, RELATIVE_FLOOR * top)
            scale = torch.clamp(torch.where(torch.isnan(scale), 1.0, scale), min=ABSOLUTE_FLOOR)
            out = (flat - med) / scale
        out = torch.where(fin & _finite(out), out, 0.0)
        return out.reshape(x.shape)


def output_names(loaded: LoadedModel) -> list[str]:
    """``["p_real"]``, plus ``"p_real_std"`` for an ensemble."""
    return [OUTPUT_NAME, SPREAD_NAME] if loaded.is_ensemble else [OUTPUT_NAME]


def probability_module(loaded: LoadedModel) -> nn.Module:
    """Normalised stamps -> calibrated, ensemble-averaged P(real) ``(N,)`` (and, for an
    ensemble, the members' spread): the torch form of
    :func:`otrain.broker.stream.model_scores` that ONNX can hold.

    Every member's network (copied to CPU, eval mode), ``logits / T``, the softmax column of the
    real class, then the mean (and population std) over the members. A Keras import or any
    single-network file is one member; ``T`` is 1 unless the model was calibrated.
    """
    members = [copy.deepcopy(net).to("cpu").eval() for net in loaded.members]
    return _CalibratedMean(members, loaded.temperature, with_spread=loaded.is_ensemble,
                           bias=loaded.logit_bias)


class _CalibratedMean(nn.Module):
    def __init__(self, members: list[nn.Module], temperature: float, with_spread: bool,
                 bias: float = 0.0) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperature = float(temperature)
        self.bias = float(bias)
        self.with_spread = with_spread

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = torch.stack([net(x).float() for net in self.members])  # (M, N, 2)
        if self.temperature != 1.0:  # as otrain.models.ensemble.logits_probabilities
            logits = logits / self.temperature
        if self.bias != 0.0:  # then the logit bias on the real class
            logits = logits + torch.tensor([0.0, self.bias])
        p = torch.softmax(logits, dim=-1)[..., 1]  # (M, N)
        mean = p.mean(dim=0)
        if not self.with_spread:
            return mean
        return mean, torch.sqrt(torch.mean((p - mean) ** 2, dim=0))


class ScoringGraph(nn.Module):
    """Raw stamps ``(N, C, H, W)`` -> P(real) ``(N,)`` (and an ensemble's spread):
    normalisation, NaN fill, the members, temperature, mean."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.normalise = Normalisation(loaded.normalisation)
        self.head = probability_module(loaded)

    def forward(self, stamps: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """P(real) of raw stamps (ensembles: and its spread)."""
        return self.head(self.normalise(stamps))


def onnx_metadata(loaded: LoadedModel) -> dict[str, str]:
    """The metadata properties written into the ONNX file (all strings)."""
    h, w = loaded.input_size
    return {"otrain": json.dumps(loaded.meta, sort_keys=True, default=str),
            "channels": ",".join(loaded.channels), "input_size": f"{h}x{w}",
            "normalisation": loaded.normalisation, "threshold": repr(loaded.threshold),
            "temperature": repr(loaded.temperature),
            "logit_bias": repr(loaded.logit_bias), "n_members": str(len(loaded.members)),
            "otrain_version": __version__, "input": INPUT_NAME, "output": OUTPUT_NAME,
            "outputs": ",".join(output_names(loaded))}


def check_batch(loaded: LoadedModel, n: int = 16, seed: int = 0) -> np.ndarray:
    """A seeded batch of raw stamps: sky with sources, NaN pixels, a constant and an all-NaN one."""
    rng = np.random.default_rng(seed)
    c = len(loaded.channels)
    h, w = loaded.input_size
    x = rng.normal(100.0, 10.0, size=(n, c, h, w)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((yy - h // 2) ** 2 + (xx - w // 2) ** 2) / 4.0).astype(np.float32)
    x += rng.uniform(0.0, 300.0, size=(n, c, 1, 1)).astype(np.float32) * blob
    if n >= 6:
        x[1, :, :2, :] = np.nan  # an edge stamp
        x[2].flat[rng.choice(x[2].size, size=max(1, x[2].size // 10), replace=False)] = np.nan
        x[3] = 42.0  # constant
        x[4] = np.nan  # nothing finite
        x[5, 0, 0, 0] = np.inf
    return x


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Silence torch's exporter chatter (e.g. "torchvision is not installed")."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return (text.splitlines() or [""])[0][:200]


def run_onnx_outputs(path: str | Path, stamps: np.ndarray) -> dict[str, np.ndarray]:
    """Every output (``p_real``, and ``p_real_std`` for an ensemble) of raw stamps
    ``(N, C, H, W)`` by onnxruntime on an exported file (float64)."""
    _, ort = require_onnx()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outs = session.run(names, {INPUT_NAME: np.ascontiguousarray(stamps, np.float32)})
    return {n: np.asarray(o, dtype=np.float64) for n, o in zip(names, outs, strict=True)}


def run_onnx(path: str | Path, stamps: np.ndarray) -> np.ndarray:
    """P(real) of raw stamps ``(N, C, H, W)`` by onnxruntime on an exported file (float64)."""
    return run_onnx_outputs(path, stamps)[OUTPUT_NAME]


def export_onnx(loaded: LoadedModel, output: str | Path, overwrite: bool = False,
                check_size: int = 16, seed: int = 0) -> tuple[Path, float]:
    """Write ``loaded`` as an ONNX file and check it against otrain's scores.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`otrain.models.modelfile.load_model` (a ``.safetensors`` or an O'TRAIN ``.h5``).
    output : str or Path
        The ``.onnx`` file.
    overwrite : bool, default False
        Whether an existing file may be replaced.
    check_size : int, default 16
        Stamps in the check batch (:func:`check_batch`).
    seed : int, default 0
        Seed of the check batch.

    Returns
    -------
    path : Path
        The file written.
    max_diff : float
        Largest |onnxruntime - otrain| difference on the check batch (P(real), and for an
        ensemble also its spread).

    Raises
    ------
    OtrainError
        Missing ``onnx`` extra, a failed export, or scores differing by more than
        :data:`TOLERANCE` (nothing is written then).
    """
    onnx, _ = require_onnx()
    from otrain.broker.stream import model_scores

    check_writable(output, overwrite)

    graph = ScoringGraph(loaded).eval()
    c = len(loaded.channels)
    h, w = loaded.input_size
    example = torch.from_numpy(check_batch(loaded, 3, seed))
    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "graph.onnx"
        try:
            with warnings.catch_warnings(), torch.no_grad(), _quiet_logs():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=OPSET,
                                            input_names=[INPUT_NAME],
                                            output_names=output_names(loaded),
                                            dynamic_shapes=({0: batch},), external_data=False,
                                            verbose=False, report=False)
            program.save(str(raw), external_data=False)
        except Exception as exc:  # torch's exporter raises many kinds
            raise OtrainError(f"ONNX export of a {c}x{h}x{w} '{loaded.meta['architecture']}' "
                              f"model with normalisation '{loaded.normalisation}' failed: "
                              f"{exc.__class__.__name__}: {_first_line(exc)}",
                              loaded.path) from None
        proto = onnx.load(str(raw))
        del proto.metadata_props[:]
        for key, value in onnx_metadata(loaded).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "otrain"
        proto.producer_version = __version__
        onnx.checker.check_model(proto)
        final = Path(tmp) / "final.onnx"
        onnx.save(proto, str(final))
        raw_batch = check_batch(loaded, check_size, seed)
        stamps = np.concatenate([raw_batch, raw_batch / 100.0])  # two pixel scales
        ours = dict(zip((OUTPUT_NAME, SPREAD_NAME), model_scores(loaded, stamps), strict=True))
        theirs = run_onnx_outputs(final, stamps)
        if sorted(theirs) != sorted(output_names(loaded)):
            raise OtrainError(f"exported graph has outputs {', '.join(theirs)}, expected "
                              f"{', '.join(output_names(loaded))}; nothing written", loaded.path)
        diffs = {k: float(np.max(np.abs(ours[k] - v))) for k, v in theirs.items()}
        diff = max(diffs.values())
        if not all(np.isfinite(v).all() for v in theirs.values()) or not diff <= TOLERANCE:
            worst = max(diffs, key=diffs.get)
            raise OtrainError(f"exported graph disagrees with otrain: largest {worst} "
                              f"difference {diff:.3g} > {TOLERANCE:g} on the check batch; "
                              "nothing written", loaded.path)
        with atomic_output(output, overwrite) as dest:
            dest.write_bytes(final.read_bytes())
    return Path(output), diff


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata properties of an ONNX file (``otrain`` stays a JSON string)."""
    onnx, _ = require_onnx()
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
