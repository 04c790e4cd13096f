"""Dropout whose CPU training masks cost a fifth of torch's.

On the CPU, :func:`torch.nn.functional.dropout` draws its mask with ``bernoulli_``: about 10 ms
for the 1M activations of the O'TRAIN network's first dropout layer at batch 128, which made
mask drawing ~15% of a bf16 training step (measured with ``torch.profiler`` on this project's
2-core machines). :class:`Dropout` draws the same kind of mask from numpy's PCG64 bit generator
instead, 16 bits per activation, seeded by one draw from torch's global generator: about 2 ms
for the same layer, and still governed by ``torch.manual_seed`` (per-epoch reseeding, resumed
runs, the forked generators of MC-dropout).

An activation is kept when its 16 random bits, read as a signed integer ``s``, satisfy
``s >= round(p * 65536) - 32768``: the keep probability is ``1 - round(p * 65536) / 65536``,
within 7.7e-6 of ``1 - p``; kept activations are scaled by ``1 / (1 - p)`` as torch does. On other
devices (CUDA's fused dropout is fast), in eval mode, for ``p`` of 0 or 1, in-place use or
non-dense tensors it is :class:`torch.nn.Dropout` exactly. It subclasses it, so everything that
looks for dropout layers (MC-dropout, Keras import) finds it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["Dropout", "keep_factor"]

_BITS = 16
_HALF = 1 << (_BITS - 1)


def keep_factor(x: torch.Tensor, p: float) -> torch.Tensor:
    """The dropout factor of ``x`` (0, or ``1 / (1 - p)``), in ``x``'s dtype and layout.

    Parameters
    ----------
    x : torch.Tensor
        A dense CPU tensor (contiguous in some memory format).
    p : float
        Drop probability, ``0 < p < 1``.

    Returns
    -------
    torch.Tensor
        Same shape, strides and dtype as ``x``; no gradient.
    """
    seed = int(torch.randint(0, 2**62, (1,)).item())
    n = x.numel()
    raw = np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw((n + 3) // 4)
    bits = torch.from_numpy(raw.view(np.int16)[:n])
    keep = bits >= round(p * (1 << _BITS)) - _HALF
    factor = keep.to(x.dtype).mul_(1.0 / (1.0 - p))
    return factor.as_strided(x.shape, x.stride())


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with fast CPU training masks (module docstring).

    Parameters
    ----------
    p : float
        Drop probability.
    inplace : bool
        As :class:`torch.nn.Dropout` (in-place use always takes torch's own path).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Drop activations of ``x`` in training mode; identity in eval mode."""
        if (not self.training or self.inplace or x.device.type != "cpu"
                or not 0.0 < self.p < 1.0 or not _dense(x)):
            return super().forward(x)
        return x * keep_factor(x, self.p)


def _dense(x: torch.Tensor) -> bool:
    return x.numel() > 0 and (x.is_contiguous()
                              or (x.dim() == 4 and x.is_contiguous(
                                  memory_format=torch.channels_last)))
