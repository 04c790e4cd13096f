"""``otrain import-keras``: an original O'TRAIN Keras model (read by
:mod:`otrain.models.keras_import`, no TensorFlow) written as an otrain model file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from otrain.errors import ModelFileError
from otrain.models.keras_import import read_keras
from otrain.models.modelfile import save_model
from otrain.models.networks import build_model
from otrain.outputs import check_writable


def import_keras(path: str | Path, output: str | Path, channels: Sequence[str] | None = None,
                 overwrite: bool = False) -> Path:
    """Convert an O'TRAIN Keras ``.h5`` into an otrain model file (``.safetensors``).

    Parameters
    ----------
    path : str or Path
        The Keras file.
    output : str or Path
        The otrain model file to write.
    channels : sequence of str, optional
        Names of the input channels (default ``diff`` for one channel, else ``ch0``, ``ch1``...).
    overwrite : bool, default False
        Whether ``output`` may be replaced.

    Returns
    -------
    Path
        The file written.
    """
    check_writable(output, overwrite)
    meta, state = read_keras(path)
    if channels is not None:
        if len(channels) != meta["in_channels"]:
            raise ModelFileError(f"{len(channels)} channel names given, the Keras model has "
                                 f"{meta['in_channels']} channels", path)
        meta["channels"] = [str(c) for c in channels]
    model = build_model("otrain", meta["in_channels"], meta["input_size"], meta["dropout"])
    model.load_state_dict(state, strict=True)
    return save_model(output, model, meta, overwrite=overwrite)
