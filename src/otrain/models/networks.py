"""Networks by name: the O'TRAIN CNN (``"otrain"``, the default) and a braai-style VGG (``"vgg6"``).

Every network takes images ``(N, C, H, W)`` (float32, already normalised,
see :mod:`~otrain.models.normalise`)
and returns two logits per cutout; ``softmax(logits)[:, 1]`` is P(real).
Each network has a module attribute ``last_conv`` (its last convolution layer, the usual target of
Grad-CAM) and records how it was built in ``model.config`` (``arch``, ``in_channels``, ``size``,
``dropout``), which is what :mod:`otrain.models.modelfile` stores.

Weights start as in Keras (the original O'TRAIN): Glorot-uniform kernels and zero biases, drawn
from the torch global generator, so ``torch.manual_seed`` before :func:`build_model` fixes them.

New architectures register with :func:`register_architecture`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from otrain.errors import OtrainError
from otrain.models.dropout import Dropout

#: Smallest cutout side the registered networks accept (three 2x2 poolings).
MIN_SIZE = 8


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)  # 3x3 'same'


class OTrainCNN(nn.Module):
    """The O'TRAIN CNN (Makhlouf et al. 2022), ReLU version (after August 2021).

    conv16, conv32, avgpool2, dropout, conv64, maxpool2, dropout, conv128, conv256 (``last_conv``),
    maxpool2, flatten, dense512, dropout, dense256, dense2. All convolutions are 3x3 'same' with
    ReLU; pooling floors odd sizes as Keras does. For 32x32x1 inputs it has 2,621,826 parameters,
    like the original Keras model.

    Parameters
    ----------
    in_channels : int
        Number of image channels.
    size : tuple of int
        Input ``(H, W)``, each at least 8.
    dropout : float
        Rate of the three dropout layers.
    """

    #: Grad-CAM target (otrain.evaluation.gradcam): last_conv works at 1/4 of the resolution.
    cam_layer = "conv3"

    def __init__(self, in_channels: int, size: tuple[int, int], dropout: float) -> None:
        super().__init__()
        h, w = size
        self.conv1 = _conv(in_channels, 16)
        self.conv2 = _conv(16, 32)
        self.pool1 = nn.AvgPool2d(2)
        self.drop1 = Dropout(dropout)
        self.conv3 = _conv(32, 64)
        self.pool2 = nn.MaxPool2d(2)
        self.drop2 = Dropout(dropout)
        self.conv4 = _conv(64, 128)
        self.last_conv = _conv(128, 256)
        self.pool3 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(256 * (h // 8) * (w // 8), 512)
        self.drop3 = Dropout(dropout)
        self.fc2 = nn.Linear(512, 256)
        self.out = nn.Linear(256, 2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, 2)`` for images ``(N, C, H, W)``."""
        a = self.act
        x = self.drop1(self.pool1(a(self.conv2(a(self.conv1(x))))))
        x = self.drop2(self.pool2(a(self.conv3(x))))
        x = self.pool3(a(self.last_conv(a(self.conv4(x)))))
        x = self.drop3(a(self.fc1(self.flatten(x))))
        return self.out(a(self.fc2(x)))


class VGG6(nn.Module):
    """A small VGG in the style of braai (Duev et al. 2019, ZTF real/bogus).

    conv16, conv16, maxpool2, dropout, conv32, conv32 (``last_conv``), maxpool2, dropout, flatten,
    dense256, dropout, dense2; 3x3 'same' convolutions with ReLU. braai used dropout rates
    0.25/0.25/0.5; here all three take ``dropout``.

    Parameters
    ----------
    in_channels : int
        Number of image channels.
    size : tuple of int
        Input ``(H, W)``, each at least 8.
    dropout : float
        Rate of the three dropout layers.
    """

    def __init__(self, in_channels: int, size: tuple[int, int], dropout: float) -> None:
        super().__init__()
        h, w = size
        self.conv1 = _conv(in_channels, 16)
        self.conv2 = _conv(16, 16)
        self.pool1 = nn.MaxPool2d(2)
        self.drop1 = Dropout(dropout)
        self.conv3 = _conv(16, 32)
        self.last_conv = _conv(32, 32)
        self.pool2 = nn.MaxPool2d(2)
        self.drop2 = Dropout(dropout)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * (h // 4) * (w // 4), 256)
        self.drop3 = Dropout(dropout)
        self.out = nn.Linear(256, 2)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, 2)`` for images ``(N, C, H, W)``."""
        a = self.act
        x = self.drop1(self.pool1(a(self.conv2(a(self.conv1(x))))))
        x = self.drop2(self.pool2(a(self.last_conv(a(self.conv3(x))))))
        x = self.drop3(a(self.fc1(self.flatten(x))))
        return self.out(x)


@dataclass(frozen=True)
class Architecture:
    """A registered network: its constructor and a one-line description."""

    name: str
    factory: Callable[[int, tuple[int, int], float], nn.Module]
    description: str


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(
    name: str, factory: Callable[[int, tuple[int, int], float], nn.Module], description: str
) -> None:
    """Make a network available by name.

    Parameters
    ----------
    name : str
        Registry key (stored in model files).
    factory : callable
        ``factory(in_channels, (H, W), dropout) -> nn.Module`` returning 2 logits per cutout and
        having a ``last_conv`` module.
    description : str
        One line for help texts.
    """
    _REGISTRY[name] = Architecture(name, factory, description)


register_architecture("otrain", OTrainCNN, "the O'TRAIN CNN (5 convolutions, dense 512/256)")
register_architecture("vgg6", VGG6, "small braai-style VGG (4 convolutions, dense 256)")

#: Name of the default network.
DEFAULT_ARCH = "otrain"


def available_architectures() -> list[str]:
    """Names of the registered networks, the default first."""
    return sorted(_REGISTRY, key=lambda n: (n != DEFAULT_ARCH, n))


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    dims = tuple(int(s) for s in size)
    if len(dims) != 2:
        raise OtrainError(f"input size must be one number or (H, W), got {size!r}")
    return dims  # type: ignore[return-value]


def _keras_init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(
    arch: str = DEFAULT_ARCH,
    in_channels: int = 1,
    size: int | Sequence[int] = 32,
    dropout: float = 0.3,
) -> nn.Module:
    """Build a network by name.

    Parameters
    ----------
    arch : str, default "otrain"
        One of :func:`available_architectures`.
    in_channels : int, default 1
        Number of image channels.
    size : int or (int, int), default 32
        Cutout size ``H`` (square) or ``(H, W)``; each side at least 8.
    dropout : float, default 0.3
        Dropout rate, in ``[0, 1)``.

    Returns
    -------
    torch.nn.Module
        The network (train mode), with ``last_conv`` and a ``config`` dict.

    Raises
    ------
    OtrainError
        Unknown name, or size / channels / dropout out of range.
    """
    if arch not in _REGISTRY:
        raise OtrainError(f"unknown architecture '{arch}'; "
                          f"choose from {', '.join(available_architectures())}")
    h, w = _as_size(size)
    if min(h, w) < MIN_SIZE:
        raise OtrainError(f"cutouts of {h}x{w} pixels are too small for '{arch}' "
                          f"(at least {MIN_SIZE}x{MIN_SIZE})")
    if int(in_channels) < 1:
        raise OtrainError(f"in_channels must be at least 1, got {in_channels}")
    if not 0.0 <= float(dropout) < 1.0:
        raise OtrainError(f"dropout must be in [0, 1), got {dropout}")
    model = _REGISTRY[arch].factory(int(in_channels), (h, w), float(dropout))
    model.apply(_keras_init)
    model.config = {"arch": arch, "in_channels": int(in_channels), "size": [h, w],
                    "dropout": float(dropout)}
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass per cutout.

    Counted as 2 x the multiply-adds of the convolution and dense layers (biases, activations,
    pooling and dropout are ignored, as is usual).

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    shape : sequence of int
        One cutout ``(C, H, W)``.

    Returns
    -------
    int
        FLOPs per cutout.
    """
    macs = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_out = (module.in_channels // module.groups) * kh * kw
            macs += int(output[0].numel()) * per_out
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros((1, *(int(s) for s in shape)), device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return 2 * macs
