"""Import the Keras ``.h5`` models of the original O'TRAIN, without TensorFlow.

The original ``otrain-train`` saved its network with ``model.save("<model-name>.h5")``: an HDF5
file holding the architecture as JSON (attribute ``model_config``) and the weights (group
``model_weights``, one sub-group per layer, its datasets listed by the ``weight_names``
attribute). Both layouts are read with h5py: Keras 2 (TensorFlow <= 2.15 or ``tf_keras``; names
such as ``conv2d/kernel:0``, optimizer state in ``optimizer_weights``, ignored) and Keras 3's
``.h5`` (names such as ``sequential/conv2d/kernel``). Keras 3's default ``.keras`` zip archive
(``config.json`` and ``model.weights.h5`` with ``layers/<name>/vars/0, 1``) is read too.

Only O'TRAIN's ``Sequential`` network is accepted (``original-otrain.md`` section 4: conv16,
conv32, 2x2 average pooling, dropout, conv64, 2x2 max pooling, dropout, conv128, conv256, 2x2 max
pooling, flatten, dense 512, dropout, dense 256, dense 2 softmax; 3x3 'same' ReLU convolutions),
at any input size and channel count. It maps exactly onto otrain's ``"otrain"`` architecture
(:class:`otrain.models.OTrainCNN`: same padding, pooling, flooring of odd sizes); the weights are
converted: convolution kernels HWIO -> OIHW, and the rows of the first dense kernel reordered
from Keras's channels-last Flatten ``(H, W, C)`` to torch's ``(C, H, W)``. Keras's softmax output
is otrain's softmax of the logits. Anything else (another architecture, a custom layer, ELU
activations of the O'TRAIN versions before August 2021, ``channels_first``) is refused with a
message naming what was found.

The imported model records normalisation ``"none"`` (the original fed raw pixels; NaN pixels,
which made Keras output NaN, become 0 as everywhere in otrain), threshold 0.5, the input size and
channels read from the file and, under ``training``, where it came from.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from otrain.errors import ModelFileError

__all__ = ["is_keras_file", "read_keras"]

#: The O'TRAIN Sequential network: (Keras class, filters/units, activation) per layer.
OTRAIN_LAYERS: tuple[tuple[str, int | None, str | None], ...] = (
    ("Conv2D", 16, "relu"), ("Conv2D", 32, "relu"), ("AveragePooling2D", None, None),
    ("Dropout", None, None), ("Conv2D", 64, "relu"), ("MaxPooling2D", None, None),
    ("Dropout", None, None), ("Conv2D", 128, "relu"), ("Conv2D", 256, "relu"),
    ("MaxPooling2D", None, None), ("Flatten", None, None), ("Dense", 512, "relu"),
    ("Dropout", None, None), ("Dense", 256, "relu"), ("Dense", 2, "softmax"),
)
ZIP_MAGIC = b"PK\x03\x04"
#: Layers with weights, in order, and the otrain (``OTrainCNN``) module each one becomes.
TORCH_NAMES = ("conv1", "conv2", "conv3", "conv4", "last_conv", "fc1", "fc2", "out")


def is_keras_file(path: str | Path) -> bool:
    """Whether ``path`` holds a Keras model (by content, not by suffix): an HDF5 file with a
    ``model_config`` or ``model_weights``, or a Keras 3 ``.keras`` zip archive."""
    path = Path(path)
    try:
        if not path.is_file():
            return False
        if _is_zip(path):
            with zipfile.ZipFile(path) as zf:
                return {"config.json", "model.weights.h5"} <= set(zf.namelist())
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs or "model_weights" in f
    except (OSError, zipfile.BadZipFile):
        return False


def _is_zip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == ZIP_MAGIC


def _text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    return str(value)


def _layer_list(config: Any, path: Path) -> tuple[list[dict[str, Any]], list[int] | None]:
    """The Sequential's layers (without InputLayer) and its input shape ``[H, W, C]``."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ModelFileError("Keras file with an unreadable model_config", path)
    kind = config["class_name"]
    if kind != "Sequential":
        raise ModelFileError(f"Keras model is a {kind}, not O'TRAIN's Sequential network", path)
    inner = config.get("config", {})
    layers = inner if isinstance(inner, list) else inner.get("layers", [])  # Keras < 2.2.3: list
    shape = None
    out = []
    for layer in layers:
        cfg = layer.get("config", {})
        for key in ("batch_shape", "batch_input_shape"):
            if shape is None and cfg.get(key) is not None:
                shape = list(cfg[key])[1:]
        if layer.get("class_name") != "InputLayer":
            out.append(layer)
    if shape is None and isinstance(inner, dict) and inner.get("build_input_shape"):
        shape = list(inner["build_input_shape"])[1:]
    if shape is not None and (len(shape) != 3 or any(s is None for s in shape)):
        raise ModelFileError(f"Keras model input shape {shape} is not (height, width, channels)",
                             path)
    return out, shape


def _activation(cfg: dict[str, Any]) -> str:
    act = cfg.get("activation", "linear")
    if isinstance(act, dict):  # serialised activation object
        act = act.get("config", {}).get("name", act.get("class_name", "?"))
    return str(act).lower()


def _check_layer(index: int, layer: dict[str, Any], expected: tuple[str, int | None, str | None],
                 path: Path) -> None:
    kind, size, activation = expected
    found = layer.get("class_name", "?")
    cfg = layer.get("config", {})
    where = f"layer {index + 1} ('{cfg.get('name', '?')}', {found})"
    if found != kind:
        raise ModelFileError(f"not O'TRAIN's network: {where} where O'TRAIN has {kind}"
                             + (f" {size}" if size else ""), path)
    problems = []
    if cfg.get("data_format", "channels_last") != "channels_last":
        problems.append(f"data_format {cfg.get('data_format')}")
    if kind == "Conv2D":
        if cfg.get("filters") != size:
            problems.append(f"{cfg.get('filters')} filters instead of {size}")
        for key, want in (("kernel_size", [3, 3]), ("strides", [1, 1]),
                          ("dilation_rate", [1, 1])):
            got = cfg.get(key, want)
            if list(got if isinstance(got, list | tuple) else [got, got]) != want:
                problems.append(f"{key} {got}")
        if str(cfg.get("padding", "valid")).lower() != "same":
            problems.append(f"padding '{cfg.get('padding', 'valid')}' instead of 'same'")
        if int(cfg.get("groups", 1)) != 1 or not cfg.get("use_bias", True):
            problems.append("grouped or bias-free convolution")
    elif kind in ("AveragePooling2D", "MaxPooling2D"):
        pool = cfg.get("pool_size", [2, 2])
        strides = cfg.get("strides") or pool
        if list(pool) != [2, 2] or list(strides) != [2, 2]:
            problems.append(f"pool_size {pool}, strides {strides} instead of 2x2")
        if str(cfg.get("padding", "valid")).lower() != "valid":
            problems.append(f"padding '{cfg.get('padding')}' instead of 'valid'")
    elif kind == "Dense":
        if cfg.get("units") != size:
            problems.append(f"{cfg.get('units')} units instead of {size}")
        if not cfg.get("use_bias", True):
            problems.append("no bias")
    if activation is not None and _activation(cfg) != activation:
        act = _activation(cfg)
        note = " (O'TRAIN before August 2021 used ELU; only the ReLU network is supported)" \
            if act == "elu" else ""
        problems.append(f"activation '{act}' instead of '{activation}'{note}")
    if problems:
        raise ModelFileError(f"not O'TRAIN's network: {where}: {'; '.join(problems)}", path)


def _layer_weights(group: h5py.Group, name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(kernel, bias) of one layer of ``model_weights``."""
    if name not in group:
        raise ModelFileError(f"Keras file has no weights for layer '{name}'", path)
    layer = group[name]
    names = [_text(n) for n in layer.attrs.get("weight_names", [])]
    if not names:  # some writers omit the attribute: take the datasets found under the group
        names = []
        layer.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    found: dict[str, np.ndarray] = {}
    for wname in names:
        leaf = wname.rsplit("/", 1)[-1].split(":", 1)[0]
        found[leaf] = np.asarray(layer[wname], dtype=np.float32)
    if set(found) != {"kernel", "bias"}:
        raise ModelFileError(f"layer '{name}' has weights {sorted(found)}, expected kernel and "
                             "bias", path)
    return found["kernel"], found["bias"]


_Read = tuple[list[dict[str, Any]], list[int] | None, list[tuple[np.ndarray, np.ndarray]],
              dict[str, Any]]


def _check_network(config: Any, path: Path) -> tuple[list[dict[str, Any]], list[int] | None,
                                                    list[str]]:
    """The checked layers, the input shape and the names of the layers with weights."""
    layers, shape = _layer_list(config, path)
    kinds = [layer.get("class_name", "?") for layer in layers]
    if len(layers) != len(OTRAIN_LAYERS):
        raise ModelFileError(f"not O'TRAIN's network: {len(layers)} layers "
                             f"({', '.join(kinds)}), O'TRAIN's Sequential has "
                             f"{len(OTRAIN_LAYERS)}", path)
    for i, (layer, expected) in enumerate(zip(layers, OTRAIN_LAYERS, strict=True)):
        _check_layer(i, layer, expected, path)
    weighted = [layer["config"]["name"] for layer in layers
                if layer["class_name"] in ("Conv2D", "Dense")]
    return layers, shape, weighted


def _read_h5(path: Path) -> _Read:
    """A Keras 2 / Keras 3 ``.h5``: ``model_config`` attribute and ``model_weights`` group."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ModelFileError(f"not a Keras .h5 model ({exc})", path) from None
    with f:
        if "model_config" not in f.attrs:
            what = "a model file without architecture (saved with save_weights?)" \
                if "model_weights" in f or "layer_names" in f.attrs else \
                "not a Keras model (an HDF5 file without 'model_config'; a datacube?)"
            raise ModelFileError(what, path)
        try:
            config = json.loads(_text(f.attrs["model_config"]))
        except json.JSONDecodeError:
            raise ModelFileError("Keras file with an unreadable model_config", path) from None
        layers, shape, weighted = _check_network(config, path)
        group = f["model_weights"] if "model_weights" in f else f
        weights = [_layer_weights(group, name, path) for name in weighted]
        info = {"keras_format": "h5",
                "keras_version": _text(f.attrs.get("keras_version",
                                                   group.attrs.get("keras_version", "?"))),
                "keras_backend": _text(f.attrs.get("backend", "?")),
                "optimizer_state_ignored": "optimizer_weights" in f}
    return layers, shape, weights, info


def _read_archive(path: Path) -> _Read:
    """A Keras 3 ``.keras`` zip: ``config.json``, ``metadata.json``, ``model.weights.h5``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not {"config.json", "model.weights.h5"} <= names:
                raise ModelFileError("a zip file that is not a Keras .keras model (no "
                                     "config.json / model.weights.h5)", path)
            config = json.loads(zf.read("config.json"))
            meta = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
            blob = zf.read("model.weights.h5")
    except (zipfile.BadZipFile, json.JSONDecodeError, OSError) as exc:
        raise ModelFileError(f"unreadable Keras .keras archive ({exc})", path) from None
    layers, shape, weighted = _check_network(config, path)
    # The archive keys layers by class, in order (conv2d, conv2d_1, ..., dense, dense_1, ...),
    # not by their names.
    keys = {"Conv2D": [f"conv2d_{i}" if i else "conv2d" for i in range(5)],
            "Dense": [f"dense_{i}" if i else "dense" for i in range(3)]}
    generic = keys["Conv2D"] + keys["Dense"]
    with h5py.File(io.BytesIO(blob), "r") as f:
        weights = []
        for key, name in zip(generic, weighted, strict=True):
            where = next((w for w in (f"layers/{key}/vars", f"layers/{name}/vars") if w in f),
                         None)
            if where is None or not {"0", "1"} <= set(f[where]):
                raise ModelFileError(f"Keras archive has no weights for layer '{name}'", path)
            weights.append((np.asarray(f[where]["0"], dtype=np.float32),
                            np.asarray(f[where]["1"], dtype=np.float32)))
        has_optimizer = "optimizer" in f
    info = {"keras_format": "keras", "keras_version": str(meta.get("keras_version", "?")),
            "keras_backend": "?", "optimizer_state_ignored": has_optimizer}
    return layers, shape, weights, info


def read_keras(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an O'TRAIN Keras ``.h5`` as otrain metadata and an ``OTrainCNN`` state dict.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` written by Keras ``model.save`` (Keras 2 or Keras 3 layout).

    Returns
    -------
    meta : dict
        otrain metadata (architecture ``"otrain"``, normalisation ``"none"``, threshold 0.5,
        input size and channels from the file, provenance under ``training``), completed as
        :func:`otrain.models.modelfile.save_model` does.
    state : dict of str to torch.Tensor
        Weights for :func:`otrain.models.build_model` ``("otrain", C, (H, W))``.

    Raises
    ------
    ModelFileError
        Not an HDF5 Keras file, another architecture, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("no such model file", path)
    reader = _read_archive if _is_zip(path) else _read_h5
    layers, shape, weights, info = reader(path)
    if shape is None:
        raise ModelFileError("Keras model without an input shape", path)
    h, w, c = (int(s) for s in shape)
    if weights[0][0].shape[2] != c:
        raise ModelFileError(f"first convolution takes {weights[0][0].shape[2]} channels, the "
                             f"input has {c}", path)
    dropouts = [float(layer["config"].get("rate", 0.0)) for layer in layers
                if layer["class_name"] == "Dropout"]
    state = _torch_state(weights, (h // 8, w // 8), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = {"architecture": "otrain", "in_channels": c, "input_size": [h, w],
            "dropout": dropouts[0] if dropouts else 0.0, "normalisation": "none",
            "threshold": 0.5,
            "training": {"source": "keras", "imported_from": str(path.resolve()),
                         "sha256": digest, **info, "dropout_rates": dropouts}}
    return meta, state


def _torch_state(weights: Sequence[tuple[np.ndarray, np.ndarray]], pooled: tuple[int, int],
                 path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    ph, pw = pooled
    for name, (kernel, bias) in zip(TORCH_NAMES, weights, strict=True):
        if kernel.ndim == 4:  # Conv2D: (kh, kw, in, out) -> (out, in, kh, kw)
            kernel = kernel.transpose(3, 2, 0, 1)
        elif name == "fc1":  # rows in Flatten order (h, w, c) -> torch's (c, h, w)
            units, chans = kernel.shape[1], 256
            if kernel.shape[0] != ph * pw * chans:
                raise ModelFileError(f"first dense layer takes {kernel.shape[0]} inputs, the "
                                     f"input size gives {ph}x{pw}x{chans}", path)
            kernel = kernel.reshape(ph, pw, chans, units).transpose(3, 2, 0, 1).reshape(units, -1)
        else:  # Dense: (in, out) -> (out, in)
            kernel = kernel.T
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return state
