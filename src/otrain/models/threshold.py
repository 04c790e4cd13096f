"""Writing an operating point (the P(real) threshold) into a model file.

Only the ``otrain`` metadata changes: the tensors are read with safetensors and written back
unchanged (bit for bit), the old threshold is kept in the record, and the file is replaced
atomically (:func:`otrain.outputs.atomic_output`). ``threshold_choice`` in the metadata says how
the value was chosen::

    {"method": "manual" | "target_fnr" | "max_fpr", "target": ..., "previous_threshold": ...,
     "cube": ..., "n_real": ..., "n_bogus": ..., "fnr": ..., "fpr": ..., "set_at": ISO time,
     "otrain_version": ...}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from otrain._version import __version__
from otrain.errors import OtrainError
from otrain.models.modelfile import METADATA_KEY, _json_default, read_metadata
from otrain.outputs import atomic_output


def write_threshold(model: str | Path, threshold: float, choice: Mapping[str, Any],
                    output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Record ``threshold`` (and how it was chosen) in a model file.

    Parameters
    ----------
    model : str or Path
        Model file (``.safetensors``) to read.
    threshold : float
        The new P(real) threshold, in ``[0, 1]``.
    choice : mapping
        How it was chosen (``method`` and its figures); stored as ``threshold_choice`` with the
        previous threshold, the time and the otrain version added.
    output : str or Path, optional
        File to write; default: ``model`` itself (then ``overwrite`` must be set, since the
        user's model is edited in place).
    overwrite : bool, default False
        Whether ``output`` (or ``model``, in place) may be replaced.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    OtrainError
        A threshold outside ``[0, 1]``, a file that is not a model, an in-place edit without
        ``overwrite``, or an existing ``output`` without ``overwrite``.
    """
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise OtrainError(f"threshold must be in [0, 1], got {threshold}")
    model = Path(model)
    meta = read_metadata(model)
    dest = model if output is None else Path(output)
    if output is None and not overwrite:
        raise OtrainError("would edit this model file in place; pass --overwrite to do so, "
                          "or --output NEW.safetensors for a copy", model)
    tensors = load_file(str(model))
    record = {**dict(choice), "previous_threshold": meta.get("threshold"),
              "set_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "otrain_version": __version__}
    meta["threshold"] = threshold
    meta["threshold_choice"] = record
    header = {METADATA_KEY: json.dumps(meta, default=_json_default)}
    with atomic_output(dest, overwrite or dest.resolve() == model.resolve()) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return dest
