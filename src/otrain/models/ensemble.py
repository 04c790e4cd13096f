"""One prediction path for every model file: members, temperature and MC-dropout.

A model file holds one network or an *ensemble* of ``M`` networks of the same architecture
(``member0.``, ``member1.``... tensor prefixes; see :mod:`otrain.models.modelfile`), and a
*temperature* ``T`` (1 for files written before calibration existed). For a cutout with member
logits ``z_m``:

* member probability ``p_m = softmax(z_m / T + [0, b])[real]``, i.e. ``sigmoid((z_real -
  z_bogus) / T + b)``: temperature scaling (one scalar ``T`` for the whole model or ensemble)
  and a logit offset ``b`` (``logit_bias``, 0 for older files). Training sets ``b =
  log(n_real / n_bogus)`` of its training rows when the loss was class-weighted: the weighted
  loss makes the network's P(real) that of a balanced set, and this prior correction moves it
  back to the class mix it was trained on;
* score ``label1 = mean_m p_m`` (the calibrated P(real)), spread ``p_real_std = std_m p_m``
  (population standard deviation, 0 for one member);
* with MC-dropout (``mc_samples = K > 0``) every member runs ``K`` passes with its dropout layers
  in train mode (everything else in eval mode) and the ``M x K`` probabilities are averaged the
  same way: MC-dropout combines with ensembles (the spread then mixes both sources). The dropout
  masks come from ``seed`` (pass ``k`` of member ``m`` on forward batch ``b`` uses
  ``SeedSequence([seed, m, k, b])``), so a run is reproducible for the same inputs, batch size
  and seed; the global torch RNG is left untouched.

:func:`fit_temperature` chooses ``T`` by minimising the negative log-likelihood of exactly this
mean on labelled (validation) rows, by a bounded 1-D search on ``log T`` (a grid over
``[1/20, 20]`` then golden-section refinement): no SciPy needed.

Which rows calibrate an ensemble: training (:mod:`otrain.training.ensemble`) keeps ONE shared
validation split (the usual ``--frac`` rows, grouped by ``--group-by``) held out from every
member; each member early-stops on its own split drawn from the remaining training rows. The
temperature, the threshold and the reported validation metrics all use the shared rows, which no
member trained or early-stopped on.

This module works on plain ``nn.Module`` lists (no model-file import): the functions taking a
``loaded`` model accept :class:`otrain.models.modelfile.LoadedModel` or anything with its
``members``, ``temperature``, ``device``, ``normalisation`` and ``check_input``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from otrain.errors import OtrainError
from otrain.models.normalise import normalise

__all__ = ["DROPOUT_TYPES", "MEMBER_PREFIX", "T_RANGE", "checked_images", "combine",
           "fit_temperature", "logits_probabilities", "mc_dropout", "member_logits",
           "member_probabilities", "member_state", "nll", "normalised_member_probabilities",
           "prefixed_state", "prior_bias", "spread"]

MEMBER_PREFIX = "member"
#: Search range of the temperature.
T_RANGE = (0.05, 20.0)
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


# ------------------------------------------------------------------------------------------
# Tensors of the members in one file
# ------------------------------------------------------------------------------------------
def prefixed_state(members: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """The tensors of all members, keyed ``member<i>.<name>`` (CPU, contiguous copies)."""
    out = {}
    for i, net in enumerate(members):
        for key, value in net.state_dict().items():
            out[f"{MEMBER_PREFIX}{i}.{key}"] = value.detach().to("cpu").contiguous().clone()
    return out


def member_state(tensors: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """The tensors of member ``index`` with their prefix removed."""
    prefix = f"{MEMBER_PREFIX}{index}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------------------
# Probabilities
# ------------------------------------------------------------------------------------------
def logits_probabilities(logits: np.ndarray | torch.Tensor, temperature: float = 1.0,
                         bias: float = 0.0) -> np.ndarray:
    """P(real) = ``softmax(logits / T + [0, b])[..., 1]`` for logits ``(..., 2)``, computed in
    the logits' dtype, returned as float64 (``T = 1, b = 0`` leave the logits untouched, so
    files without calibration score exactly as before)."""
    z = torch.as_tensor(logits)
    if not z.is_floating_point():
        z = z.double()
    if temperature != 1.0:
        z = z / float(temperature)
    if bias != 0.0:
        z = z + torch.tensor([0.0, float(bias)], dtype=z.dtype, device=z.device)
    return torch.softmax(z, dim=-1)[..., 1].double().numpy()


def prior_bias(n_real: int, n_bogus: int) -> float:
    """The logit offset ``log(n_real / n_bogus)`` that undoes class-balanced loss weights.

    With weights inversely proportional to the class counts the loss is minimised by the
    log-odds of a balanced set; adding this offset gives those of the training class mix.
    0 when a class is missing.
    """
    if n_real <= 0 or n_bogus <= 0:
        return 0.0
    return float(math.log(n_real / n_bogus))


def combine(member_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std over axis 0 of ``(S, N)`` member / pass probabilities."""
    p = np.asarray(member_p, dtype=np.float64)
    return p.mean(axis=0), p.std(axis=0)


def spread(member_p: np.ndarray) -> np.ndarray:
    """``p_real_std``: the standard deviation of ``(S, N)`` member probabilities over axis 0."""
    return combine(member_p)[1]


@contextlib.contextmanager
def mc_dropout(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode except its dropout layers (train mode); restored afterwards."""
    was = net.training
    net.eval()
    drops = [m for m in net.modules() if isinstance(m, DROPOUT_TYPES)]
    for m in drops:
        m.train()
    try:
        yield net
    finally:
        net.train(was)


def _seeded(seed: int, member: int, sample: int, batch: int) -> contextlib.AbstractContextManager:
    """A forked torch RNG seeded for one MC-dropout pass (the global RNG is left alone)."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=[]))
    state = np.random.SeedSequence([seed, member, sample, batch]).generate_state(1)[0]
    torch.manual_seed(int(state))
    return stack


def normalised_member_probabilities(
    members: Sequence[nn.Module] | Sequence[Callable[[torch.Tensor], torch.Tensor]],
    images: np.ndarray,
    temperature: float = 1.0,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    mc_samples: int = 0,
    seed: int = 0,
    forward: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
    first_batch: int = 0,
    bias: float = 0.0,
) -> np.ndarray:
    """Calibrated P(real) of each member (and MC pass) for NORMALISED images.

    Parameters
    ----------
    members : sequence of nn.Module (or callables with ``mc_samples == 0``)
        The networks.
    images : numpy.ndarray
        Normalised cutouts ``(N, C, H, W)``.
    temperature : float, default 1
        Logits are divided by it before the softmax.
    device : torch.device or str
        Where the networks live.
    batch_size : int, default 512
        Cutouts per forward pass.
    mc_samples : int, default 0
        0: deterministic (eval mode); K > 0: K MC-dropout passes per member.
    seed : int, default 0
        Seed of the MC-dropout masks.
    forward : callable, optional
        ``forward(member, x) -> logits`` (default ``member(x).float()``), e.g. to pad
        batches; the softmax runs in the dtype it returns.
    first_batch : int, default 0
        Number of the first forward batch (in the MC-dropout seeds), for callers that feed
        the rows in several calls.
    bias : float, default 0
        Added to the real-class logit after the temperature (the model's ``logit_bias``).

    Returns
    -------
    numpy.ndarray
        float64 ``(S, N)``: ``S = M`` members, or ``M * K`` (member-major) with MC-dropout.
    """
    if mc_samples < 0:
        raise OtrainError(f"MC-dropout samples must be >= 0, got {mc_samples}")
    run = forward or (lambda m, x: m(x).float())
    n = images.shape[0]
    passes = max(1, mc_samples)
    out = np.empty((len(members) * passes, n), dtype=np.float64)
    with torch.no_grad():
        for m, net in enumerate(members):
            ctx = mc_dropout(net) if mc_samples else _eval(net)
            with ctx:
                for k in range(passes):
                    for b, start in enumerate(range(0, n, batch_size)):
                        x = torch.from_numpy(np.ascontiguousarray(
                            images[start:start + batch_size])).to(device)
                        with (_seeded(seed, m, k, first_batch + b) if mc_samples
                              else contextlib.nullcontext()):
                            logits = run(net, x)
                        out[m * passes + k, start:start + x.shape[0]] = logits_probabilities(
                            logits.cpu(), temperature, bias)
    return out


@contextlib.contextmanager
def _eval(net: Any) -> Iterator[Any]:
    was = getattr(net, "training", None) if isinstance(net, nn.Module) else None
    if was is None:  # a plain callable or a frozen TorchScript graph (always in eval mode)
        yield net
        return
    net.eval()
    try:
        yield net
    finally:
        net.train(was)


def checked_images(loaded: Any, images: np.ndarray) -> np.ndarray:
    """Raw cutouts as ``(N, C, H, W)`` (``(N, H, W)`` gains the channel axis), checked
    against the model's channels and input size.

    Raises
    ------
    OtrainError
        If the images are not 3-D/4-D; ModelFileError if they do not fit the model.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise OtrainError(f"images must be (N, C, H, W), got shape {images.shape}")
    loaded.check_input(images.shape[1], images.shape[2:])
    return images


def member_probabilities(loaded: Any, images: np.ndarray, batch_size: int = 512,
                         mc_samples: int = 0, seed: int = 0,
                         calibrated: bool = True) -> np.ndarray:
    """Per-member (and per MC pass) P(real) ``(S, N)`` of RAW cutouts.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`otrain.models.modelfile.load_model`.
    images : numpy.ndarray
        Raw cutouts ``(N, C, H, W)`` (``(N, H, W)`` for one channel).
    batch_size, mc_samples, seed
        As :func:`normalised_member_probabilities`.
    calibrated : bool, default True
        Apply the model's temperature and logit bias (False: the raw softmax, for
        before/after comparisons).

    Raises
    ------
    OtrainError
        If the images are not 3-D/4-D; ModelFileError if they do not fit the model.
    """
    images = checked_images(loaded, images)
    temperature = float(loaded.temperature) if calibrated else 1.0
    bias = float(getattr(loaded, "logit_bias", 0.0)) if calibrated else 0.0
    parts = []
    for start in range(0, max(images.shape[0], 1), batch_size):
        x = normalise(images[start:start + batch_size], loaded.normalisation)
        parts.append(normalised_member_probabilities(
            loaded.members, x, temperature, loaded.device, batch_size, mc_samples, seed,
            first_batch=start // batch_size, bias=bias))
    return np.concatenate(parts, axis=1)


def member_logits(loaded: Any, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Logits ``(M, N, 2)`` (float32, eval mode) of each member for RAW cutouts, e.g. to
    compare calibrated and uncalibrated scores from one pass (:func:`logits_probabilities`)."""
    images = checked_images(loaded, images)
    out = np.empty((len(loaded.members), images.shape[0], 2), dtype=np.float32)
    with torch.no_grad():
        for m, net in enumerate(loaded.members):
            with _eval(net):
                for start in range(0, images.shape[0], batch_size):
                    x = normalise(images[start:start + batch_size], loaded.normalisation)
                    out[m, start:start + x.shape[0]] = net(
                        torch.from_numpy(x).to(loaded.device)).float().cpu().numpy()
    return out


# ------------------------------------------------------------------------------------------
# Temperature scaling
# ------------------------------------------------------------------------------------------
def nll(member_logits: np.ndarray, y: np.ndarray, temperature: float,
        bias: float = 0.0) -> float:
    """Mean negative log-likelihood of labels ``y`` under the mean of the members'
    ``softmax(z / T + [0, b])``; ``member_logits`` is ``(M, N, 2)`` (or ``(N, 2)`` for one
    model)."""
    z = np.asarray(member_logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    zt = z / temperature
    if bias:
        zt = zt + np.array([0.0, bias])
    zt -= zt.max(axis=-1, keepdims=True)
    p = np.exp(zt)
    p /= p.sum(axis=-1, keepdims=True)
    mean = p.mean(axis=0)  # (N, 2)
    picked = mean[np.arange(y.size), np.asarray(y, dtype=np.int64)]
    return float(-np.mean(np.log(np.clip(picked, 1e-300, None))))


def fit_temperature(member_logits: np.ndarray, y: np.ndarray,
                    bounds: tuple[float, float] = T_RANGE, bias: float = 0.0) -> float:
    """Temperature minimising :func:`nll` (with the fixed logit ``bias``) on labelled rows
    (1.0 when there are none).

    A log-spaced grid of 61 values over ``bounds`` finds the best bracket, golden-section
    search on ``log T`` refines it to ~1e-6 relative.
    """
    y = np.asarray(y, dtype=np.int64)
    if y.size == 0:
        return 1.0

    def loss(t: float) -> float:
        return nll(member_logits, y, t, bias)

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = np.linspace(lo, hi, 61)
    losses = [loss(math.exp(g)) for g in grid]
    i = int(np.argmin(losses))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(math.exp(c)), loss(math.exp(d))
    while b - a > 1e-6:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(math.exp(d))
    best = (a + b) / 2
    return float(math.exp(best)) if loss(math.exp(best)) <= losses[i] \
        else float(math.exp(grid[i]))
