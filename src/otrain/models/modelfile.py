"""The model file: safetensors weights plus JSON metadata, safe to load from strangers.

A model is one ``.safetensors`` file. The tensors are the network's ``state_dict``; the
safetensors header metadata holds, under the key ``"otrain"``, a JSON object::

    format            "otrain-model"            format_version   1
    architecture      registry name (otrain.models), e.g. "otrain"
    in_channels       int                       channels         e.g. ["diff", "sci", "ref"]
    input_size        [H, W]                    dropout          float
    normalisation     otrain.models.normalise method   threshold        P(real) above which "real"
    class_names       ["bogus", "real"]         training         provenance (cube, splits, metrics)
    otrain_version, torch_version               temperature      logits / it (absent = 1)
    logit_bias        then added to the real-class logit (prior correction; absent = 0)
    threshold_choice  how ``threshold`` was chosen ({"method": "given" | "target_fnr" | ...})
    calibration       ECE / Brier before and after, and the rows the temperature was fitted on
    ensemble          only for ensembles: {"n_members": M, "members": [{seed, split, metrics}...]}

An ensemble keeps each member's tensors under ``member<i>.``; a single network's tensors have
no prefix (as in format 1). Files with a logit bias are format 3, with an ensemble or a
temperature format 2, others format 1 (:func:`~otrain.models.integrity.calibration_format`);
an older otrain refuses a newer format rather than score it wrongly. Scoring: :mod:`otrain.
models.ensemble`.

Loading never unpickles anything: the network is rebuilt from the registry by name and the
tensors are copied in, so a model file cannot run code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from otrain._version import __version__
from otrain.errors import ModelFileError, OtrainError
from otrain.models.device import resolve_device
from otrain.models.ensemble import member_probabilities, member_state, prefixed_state
from otrain.models.integrity import (
    DIGEST_KEY,
    calibration_format,
    check_metadata,
    check_tensors,
    tensor_digest,
)
from otrain.models.networks import build_model
from otrain.models.normalise import check_method
from otrain.outputs import atomic_output

FORMAT_NAME = "otrain-model"
#: Newest format read and written (3: logit bias; 2: ensembles/temperature; 1: plain models).
FORMAT_VERSION = 3
METADATA_KEY = "otrain"
CLASS_NAMES = ["bogus", "real"]
_GENERIC_PREFIX = "ch"


def default_channel_names(count: int) -> list[str]:
    """Channel names used when none are known: ``["diff"]`` or ``["ch0", "ch1", ...]``."""
    return ["diff"] if count == 1 else [f"{_GENERIC_PREFIX}{i}" for i in range(count)]


@dataclass
class LoadedModel:
    """A network (or ensemble) in eval mode and the metadata it was saved with.

    Attributes
    ----------
    model : torch.nn.Module
        The network, on :attr:`device`, in eval mode (member 0 of an ensemble).
    meta : dict
        The file's ``otrain`` metadata (see the module documentation).
    path : Path or None
        The file it was read from.
    device : torch.device
        Where the network lives.
    members : list of torch.nn.Module
        All networks (``[model]`` for a single model).
    """

    model: nn.Module
    meta: dict[str, Any]
    path: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    members: list[nn.Module] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.members:
            self.members = [self.model]

    @property
    def temperature(self) -> float:
        """Calibration temperature (1 for uncalibrated / old files)."""
        return float(self.meta.get("temperature", 1.0))

    @property
    def logit_bias(self) -> float:
        """Added to the real-class logit after the temperature (0 for older files)."""
        return float(self.meta.get("logit_bias", 0.0))

    @property
    def is_ensemble(self) -> bool:
        """Whether the file holds more than one network."""
        return len(self.members) > 1

    @property
    def channels(self) -> list[str]:
        """Channel names the model was trained on."""
        return list(self.meta["channels"])

    @property
    def input_size(self) -> tuple[int, int]:
        """Cutout ``(H, W)`` the model expects."""
        h, w = self.meta["input_size"]
        return int(h), int(w)

    @property
    def normalisation(self) -> str:
        """Name of the per-cutout scaling applied before the network."""
        return str(self.meta["normalisation"])

    @property
    def threshold(self) -> float:
        """P(real) above which a candidate is called real."""
        return float(self.meta["threshold"])

    def check_input(self, channels_or_count: int | Sequence[str], size: Sequence[int]) -> None:
        """Check that data of these channels and cutout size fits the model.

        Parameters
        ----------
        channels_or_count : int or sequence of str
            The data's channel names (compared by name when both sides have real names such as
            ``diff``/``sci``/``ref``; generic ``ch0``... names match any name) or only their number.
        size : (int, int)
            The data's cutout ``(H, W)``.

        Raises
        ------
        ModelFileError
            With a message saying what the model expects and what the data has.
        """
        mine = self.channels
        desc = f"{len(mine)} channel{'s' if len(mine) != 1 else ''} [{', '.join(mine)}]"
        if isinstance(channels_or_count, int | np.integer):
            count, theirs = int(channels_or_count), None
        else:
            theirs = [str(c) for c in channels_or_count]
            count = len(theirs)
        if count != len(mine) or (theirs is not None and not _names_compatible(mine, theirs)):
            have = f"{count}" + (f" [{', '.join(theirs)}]" if theirs is not None else "")
            raise ModelFileError(f"model expects {desc}, data has {have}", self.path)
        h, w = (int(s) for s in size)
        eh, ew = self.input_size
        if (h, w) != (eh, ew):
            raise ModelFileError(f"model expects {eh}x{ew} pixel cutouts, data has {h}x{w} "
                                 f"(crop the cutouts to {eh}x{ew})", self.path)


def _names_compatible(mine: Sequence[str], theirs: Sequence[str]) -> bool:
    for a, b in zip(mine, theirs, strict=True):
        if a != b and not (a.startswith(_GENERIC_PREFIX) or b.startswith(_GENERIC_PREFIX)):
            return False
    return True


def _complete_meta(model: nn.Module, meta: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(meta)
    config = getattr(model, "config", {}) or {}
    for key, ckey in (("architecture", "arch"), ("in_channels", "in_channels"),
                      ("input_size", "size"), ("dropout", "dropout")):
        if key not in out and ckey in config:
            out[key] = config[ckey]
    missing = [k for k in ("architecture", "in_channels", "input_size", "normalisation")
               if k not in out]
    if missing:
        raise OtrainError(f"model metadata lacks {', '.join(missing)}")
    check_method(out["normalisation"])
    out["in_channels"] = int(out["in_channels"])
    out["input_size"] = [int(s) for s in out["input_size"]]
    out.setdefault("channels", default_channel_names(out["in_channels"]))
    if len(out["channels"]) != out["in_channels"]:
        raise OtrainError(f"{len(out['channels'])} channel names for {out['in_channels']} channels")
    out.setdefault("dropout", 0.0)
    out.setdefault("threshold", 0.5)
    out["class_names"] = list(CLASS_NAMES)
    out["format"] = FORMAT_NAME
    out["format_version"] = calibration_format(out)
    out["otrain_version"] = __version__
    out["torch_version"] = torch.__version__
    return out


def save_model(path: str | Path, model: nn.Module | Sequence[nn.Module], meta: Mapping[str, Any],
               overwrite: bool = False) -> Path:
    """Write ``model`` (or an ensemble) and its metadata as one safetensors file, atomically.

    Parameters
    ----------
    path : str or Path
        Destination (``.safetensors``).
    model : torch.nn.Module or sequence of them
        A network from :func:`otrain.models.build_model` (its ``config`` fills ``architecture``,
        ``in_channels``, ``input_size`` and ``dropout`` when ``meta`` lacks them), or the
        members of an ensemble (same architecture; two or more are stored under ``member<i>.``
        and ``meta["ensemble"]`` gains ``n_members``; one is stored as a single model).
    meta : mapping
        JSON-serialisable metadata; must give ``normalisation``; ``channels``, ``threshold``
        (0.5) and ``training`` are recommended. Versions and class names are added.
    overwrite : bool, default False
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        The file written.
    """
    members = [model] if isinstance(model, nn.Module) else list(model)
    if not members:
        raise OtrainError("no network to save")
    meta = dict(meta)
    if len(members) > 1:
        meta["ensemble"] = {**dict(meta.get("ensemble") or {}), "n_members": len(members)}
        tensors = prefixed_state(members)
    else:
        meta.pop("ensemble", None)
        tensors = {k: v.detach().to("cpu").contiguous().clone()
                   for k, v in members[0].state_dict().items()}
    full = _complete_meta(members[0], meta)
    full[DIGEST_KEY] = tensor_digest(tensors)
    header = {METADATA_KEY: json.dumps(full, default=_json_default)}
    with atomic_output(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return Path(path)


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Read only the ``otrain`` metadata of a model file (no weights).

    Raises
    ------
    ModelFileError
        If the file is missing, not safetensors, or not an otrain model.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError("no such model file", path)
    if path.is_dir():
        raise ModelFileError("is a folder, expected a model file (.safetensors)", path)
    keras = _read_keras(path)
    if keras is not None:
        return keras[0]
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"not a model file: not a safetensors file ({exc})", path) from None
    if METADATA_KEY not in header:
        raise ModelFileError("not an otrain model: safetensors file without 'otrain' metadata",
                             path)
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError:
        raise ModelFileError("not an otrain model: unreadable 'otrain' metadata", path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError("not an otrain model: wrong 'otrain' metadata", path)
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"model file format {meta['format_version']} is newer than this "
                             f"otrain ({__version__}) understands; upgrade otrain", path)
    check_metadata(meta, path)
    return meta


def _read_keras(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """Metadata and weights of an original O'TRAIN Keras ``.h5`` (by content), else None."""
    from otrain.models.keras_import import is_keras_file, read_keras  # h5py only when needed

    if not is_keras_file(path):
        return None
    meta, state = read_keras(path)
    return _complete_meta(None, meta), state


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file.

    Parameters
    ----------
    path : str or Path
        A ``.safetensors`` file written by :func:`save_model`, or an original O'TRAIN Keras
        ``.h5`` (converted on the fly by :mod:`otrain.models.keras_import`).
    device : str or torch.device, default "cpu"
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    LoadedModel
        Network in eval mode and metadata.

    Raises
    ------
    ModelFileError
        Missing file, not safetensors, no ``otrain`` metadata, or weights that do not match the
        recorded architecture.
    """
    path = Path(path)
    keras = _read_keras(path) if path.is_file() else None
    meta = read_metadata(path) if keras is None else keras[0]
    dev = resolve_device(device)
    ensemble = meta.get("ensemble")
    try:
        n_members = int(ensemble["n_members"]) if ensemble else 1
    except (KeyError, TypeError, ValueError):
        raise ModelFileError("unreadable 'ensemble' metadata (no n_members)", path) from None
    if n_members < 1:
        raise ModelFileError(f"ensemble of {n_members} members", path)
    if keras is not None:
        tensors = keras[1]
    else:
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"unreadable weights ({exc})", path) from None
        check_tensors(tensors, meta, path)
    members = []
    for i in range(n_members):
        state = member_state(tensors, i) if ensemble else tensors
        members.append(_rebuild(meta, state, path, f" (member {i})" if ensemble else "").to(dev))
    return LoadedModel(model=members[0], meta=meta, path=path, device=dev, members=members)


def _rebuild(meta: dict[str, Any], state: dict[str, torch.Tensor], path: Path,
             which: str) -> nn.Module:
    """A network of the recorded architecture with ``state`` loaded, in eval mode."""
    try:
        model = build_model(meta["architecture"], meta["in_channels"], meta["input_size"],
                            meta.get("dropout", 0.0))
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"model metadata lacks {exc}", path) from None
    except OtrainError as exc:
        raise ModelFileError(f"cannot rebuild the network: {exc.reason}", path) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        first = " ".join(lines[1:3] if len(lines) > 1 else lines)[:300]
        raise ModelFileError(f"weights{which} do not match architecture "
                             f"'{meta['architecture']}': {first}", path) from None
    return model.eval()


def predict_proba(loaded: LoadedModel, images: np.ndarray, batch_size: int = 512,
                  mc_samples: int = 0, seed: int = 0) -> np.ndarray:
    """Calibrated P(real) for raw cutouts: the mean over the members (and MC-dropout passes).

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`load_model`.
    images : numpy.ndarray
        Raw (un-normalised) cutouts ``(N, C, H, W)``; ``(N, H, W)`` is accepted for 1 channel.
    batch_size : int, default 512
        Cutouts per forward pass.
    mc_samples, seed : int, default 0
        MC-dropout passes per member (0: none) and their seed (:mod:`otrain.models.ensemble`).

    Returns
    -------
    numpy.ndarray
        float64 ``(N,)``: the mean of the members' calibrated P(real).

    Raises
    ------
    ModelFileError
        If the images' channels or size do not fit the model.
    """
    return predict_with_spread(loaded, images, batch_size, mc_samples, seed)[0]


def predict_with_spread(loaded: LoadedModel, images: np.ndarray, batch_size: int = 512,
                        mc_samples: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(p_real, p_real_std)``: :func:`predict_proba` and the members' / passes' spread."""
    p = member_probabilities(loaded, images, batch_size, mc_samples, seed)
    return p.mean(axis=0), p.std(axis=0)
