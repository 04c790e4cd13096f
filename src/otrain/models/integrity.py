"""Integrity of model files: metadata checked field by field, a checksum of the tensors, and
weights that must be finite.

:func:`otrain.models.modelfile.save_model` records :func:`tensor_digest` under
:data:`DIGEST_KEY`; :func:`otrain.models.modelfile.load_model` checks it (files written before
the checksum existed load as before), rejects NaN or infinite weights, and
:func:`check_metadata` turns a bad field (``input_size: "abc"``, ``threshold: "high"``, no
``channels``) into one line naming the file and the field.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from otrain.errors import ModelFileError, OtrainError
from otrain.models.normalise import check_method

#: Metadata key of the SHA-256 of the tensors (names, dtypes, shapes and bytes).
DIGEST_KEY = "tensor_sha256"


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order.

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor
        A state dict (on the CPU).

    Returns
    -------
    str
        Hex digest.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _positive_int(meta: Mapping[str, Any], key: str, path: Path) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelFileError(f"model metadata '{key}' must be a positive whole number, got "
                             f"{value!r:.40}", path)
    return value


def check_metadata(meta: Mapping[str, Any], path: str | Path) -> None:
    """Check every field :func:`~otrain.models.modelfile.load_model` relies on.

    Raises
    ------
    ModelFileError
        Naming the file and the first bad field.
    """
    path = Path(path)
    for key in ("architecture", "in_channels", "input_size", "normalisation", "channels"):
        if key not in meta:
            raise ModelFileError(f"model metadata lacks '{key}'", path)
    if not isinstance(meta["architecture"], str):
        raise ModelFileError(f"model metadata 'architecture' must be a name, got "
                             f"{meta['architecture']!r:.40}", path)
    n_channels = _positive_int(meta, "in_channels", path)
    size = meta["input_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ModelFileError(f"model metadata 'input_size' must be [height, width] in pixels, "
                             f"got {size!r:.40}", path)
    channels = meta["channels"]
    if not (isinstance(channels, list) and all(isinstance(c, str) for c in channels)):
        raise ModelFileError(f"model metadata 'channels' must be a list of names, got "
                             f"{channels!r:.40}", path)
    if len(channels) != n_channels:
        raise ModelFileError(f"model metadata names {len(channels)} channels for "
                             f"in_channels {n_channels}", path)
    if not isinstance(meta["normalisation"], str):
        raise ModelFileError("model metadata 'normalisation' must be a name", path)
    try:
        check_method(meta["normalisation"])
    except OtrainError as exc:
        raise ModelFileError(exc.reason, path) from None
    for key, low, high in (("threshold", 0.0, 1.0), ("dropout", 0.0, 1.0)):
        if key in meta:
            value = meta[key]
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or not low <= value <= high):
                raise ModelFileError(f"model metadata '{key}' must be a number in "
                                     f"[{low:g}, {high:g}], got {value!r:.40}", path)
    try:
        calibration_format(meta)
    except OtrainError as exc:
        raise ModelFileError(f"model metadata: {exc.reason}", path) from None


def calibration_format(meta: Mapping[str, Any]) -> int:
    """The format version the calibration keys need (3: a logit bias, which a reader that
    ignored it would score wrongly; 2: an ensemble or a temperature; else 1).

    Raises
    ------
    OtrainError
        A temperature that is not a positive number or a logit bias that is not finite.
    """
    temperature, bias = meta.get("temperature", 1.0), meta.get("logit_bias", 0.0)
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
            or not math.isfinite(temperature) or temperature <= 0):
        raise OtrainError(f"temperature must be a positive number, got {temperature!r:.40}")
    if isinstance(bias, bool) or not isinstance(bias, int | float) or not math.isfinite(bias):
        raise OtrainError(f"logit bias must be a finite number, got {bias!r:.40}")
    return 3 if bias != 0 else 2 if ("ensemble" in meta or temperature != 1) else 1


def check_tensors(state: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                  path: str | Path) -> None:
    """The recorded checksum matches (when there is one) and every weight is finite.

    Raises
    ------
    ModelFileError
        A damaged file (checksum mismatch) or NaN / infinite weights.
    """
    recorded = meta.get(DIGEST_KEY)
    if recorded is not None and tensor_digest(state) != recorded:
        raise ModelFileError("the weights do not match the checksum recorded when the model "
                             "was saved: the file is damaged", path)
    bad = [name for name, t in state.items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelFileError(f"{len(bad)} weight tensor(s) hold NaN or infinite values (e.g. "
                             f"'{bad[0]}'): the model cannot score", path)
