"""Where a network runs: ``--device auto|cpu|cuda`` as a :class:`torch.device`."""

from __future__ import annotations

import torch

from otrain.errors import OtrainError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` / ``"cpu"`` / ``"cuda"`` into a :class:`torch.device`.

    Raises
    ------
    OtrainError
        If CUDA is asked for but not available.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OtrainError("device 'cuda' asked for but no CUDA GPU is available (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise OtrainError(f"unknown device '{name}' (use auto, cpu or cuda)") from None
