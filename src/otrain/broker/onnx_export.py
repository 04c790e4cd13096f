"""Export a model as ONNX for alert brokers: raw stamps in, P(real) out, checked on export.

The graph has one input ``stamps``, float32 ``(N, C, H, W)`` of raw pixels (NaN and infinities
allowed, any batch size ``N``), and one output ``p_real``, float32 ``(N,)``. Inside the graph,
in this order, are the model's normalisation (:mod:`~otrain.models.normalise`, every method:
``zscore``'s
medians are computed exactly as numpy's, as the mean of the two middle finite values of a sort,
not torch's lower median), the NaN fill (non-finite pixels become 0), the network and the softmax
column of the real class. So a broker feeds the stamps as they come out of the alert.

The file's metadata properties: ``otrain`` (the model file's full JSON metadata), ``channels``
(comma-separated, in input order), ``input_size`` (``HxW``), ``normalisation``, ``threshold``,
``otrain_version``, plus ``input`` / ``output`` naming the tensors. :func:`export_onnx` checks
itself: onnxruntime's scores of a seeded batch of raw stamps (with NaN pixels, a constant and an
all-NaN stamp) must match :func:`otrain.broker.stream.model_scores` (otrain's own scoring path)
within ``1e-5`` (the batch at sky level 100 and divided by 100), else it fails and writes nothing.

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

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "TOLERANCE", "ScoringGraph", "export_onnx",
           "onnx_metadata", "run_onnx"]

INPUT_NAME = "stamps"
OUTPUT_NAME = "p_real"
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


def probability_module(loaded: LoadedModel) -> nn.Module:
    """The network as normalised stamps -> P(real) ``(N,)`` (calibrated, ensemble-averaged).

    This is the hook for ensembles and temperature calibration: a model file with several
    members (or a temperature) must return them here, averaged as
    :func:`otrain.broker.stream.model_scores` averages them; today a model is one network and its
    softmax column of the real class.
    """
    return _SoftmaxReal(copy.deepcopy(loaded.model).to("cpu").eval())


class _SoftmaxReal(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)[:, 1]


class ScoringGraph(nn.Module):
    """Raw stamps ``(N, C, H, W)`` -> P(real) ``(N,)``: normalisation, NaN fill, network."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__()
        self.normalise = Normalisation(loaded.normalisation)
        self.head = probability_module(loaded)

    def forward(self, stamps: torch.Tensor) -> torch.Tensor:
        """P(real) of raw stamps."""
        return self.head(self.normalise(stamps))


def onnx_metadata(loaded: LoadedModel) -> dict[str, str]:
    """The metadata properties written into the ONNX file (all strings)."""
    h, w = loaded.input_size
    return {"otrain": json.dumps(loaded.meta, sort_keys=True, default=str),
            "channels": ",".join(loaded.channels), "input_size": f"{h}x{w}",
            "normalisation": loaded.normalisation, "threshold": repr(loaded.threshold),
            "otrain_version": __version__, "input": INPUT_NAME, "output": OUTPUT_NAME}


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


def run_onnx(path: str | Path, stamps: np.ndarray) -> np.ndarray:
    """P(real) of raw stamps ``(N, C, H, W)`` by onnxruntime on an exported file (float64)."""
    _, ort = require_onnx()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(stamps, np.float32)})[0]
    return np.asarray(out, dtype=np.float64)


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
        Largest |onnxruntime - otrain| P(real) difference on the check batch.

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
                                            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
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
        ours, _ = model_scores(loaded, stamps)
        theirs = run_onnx(final, stamps)
        diff = float(np.max(np.abs(ours - theirs)))
        if not np.isfinite(theirs).all() or not diff <= TOLERANCE:
            raise OtrainError(f"exported graph disagrees with otrain: largest P(real) "
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
