"""The networks (by name: ``otrain``, the O'TRAIN CNN, and ``vgg6``), the per-cutout
normalisations recorded in a model, and the model file (safetensors tensors + JSON metadata: loading
it runs no code).
"""

from otrain.models.ensemble import fit_temperature, member_probabilities
from otrain.models.modelfile import (
    LoadedModel,
    load_model,
    predict_proba,
    predict_with_spread,
    read_metadata,
    resolve_device,
    save_model,
)
from otrain.models.networks import (
    DEFAULT_ARCH,
    VGG6,
    Architecture,
    OTrainCNN,
    available_architectures,
    build_model,
    count_flops,
    count_parameters,
    register_architecture,
)
from otrain.models.normalise import METHODS, normalise, resolve_method

__all__ = [
    "DEFAULT_ARCH",
    "METHODS",
    "VGG6",
    "Architecture",
    "LoadedModel",
    "OTrainCNN",
    "available_architectures",
    "build_model",
    "count_flops",
    "count_parameters",
    "fit_temperature",
    "load_model",
    "member_probabilities",
    "normalise",
    "predict_proba",
    "predict_with_spread",
    "read_metadata",
    "register_architecture",
    "resolve_device",
    "resolve_method",
    "save_model",
]
