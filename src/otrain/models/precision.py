"""Numeric precision of the network: ``--precision auto|fp32|bf16|fp16``.

* :func:`hardware` reports what the device computes natively in reduced precision: on the CPU
  the ``amx_bf16`` / ``avx512_bf16`` flags of ``/proc/cpuinfo`` (and torch's
  ``torch.backends.cpu.get_cpu_capability()``), on a GPU bfloat16 support and tensor cores
  (compute capability >= 7.0).
* :func:`resolve_precision` turns the request into a :class:`Precision`: ``auto`` is bf16 where
  the hardware has it natively (AMX or AVX512-BF16 CPUs; Ampere or newer GPUs), fp16 on older
  GPUs with tensor cores, fp32 elsewhere.
  ``bf16`` on a CPU without native support still runs
  (emulated by oneDNN, usually slower than fp32) and says so; ``fp16`` needs CUDA.
* :func:`autocast` is the context of a training step or an eager forward pass (fp32 master
  weights; torch's autocast runs convolutions and matrix products in the low precision).
* :func:`low_precision_scorer` is the inference network: a copy with bf16/fp16 weights in
  channels-last memory, whose last linear layer (the logits) stays in fp32 (bf16 logits, 8
  significant bits, would be coarse where P(real) is near 0.5).
* :class:`GuardedForward` checks the first batch of a run: it is scored in fp32 too, and when
  P(real) differs by more than the tolerance (:data:`INFER_TOLERANCE`, 1e-3) the run falls back
  to fp32 with a note.

How close bf16 gets: the rounding that matters is that of the activations, not of the final
layers. On a small trained O'TRAIN model (tests/test_precision.py, 16x16 cutouts) bf16 P(real)
differed from fp32 by 1.3e-4 (median), 1e-3 (99th percentile), 1.6e-3 (max) over 300 cutouts;
keeping the logits layer, the whole dense head, or every layer's arithmetic in fp32 while the
tensors between layers are bf16 left the maximum at 1.6-1.7e-3, and rounding only the network's
input to bf16 (all else fp32) already gave 9e-4. A network that sensitive to a 2**-9 relative
change of its input cannot promise 1e-3 in bf16; the guard then keeps fp32 for it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from otrain.errors import OtrainError

__all__ = [
    "INFER_TOLERANCE",
    "PRECISIONS",
    "TRAIN_TOLERANCE",
    "GuardedForward",
    "Precision",
    "TrainPrecision",
    "autocast",
    "cpu_flags",
    "first_batch_difference",
    "hardware",
    "low_precision_scorer",
    "max_prob_difference",
    "resolve_precision",
]

#: The choices of ``--precision``.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Largest |P(real) difference| to the fp32 scores accepted on the first batch of an inference.
INFER_TOLERANCE = 1e-3
#: The same for the first training batch (the weights stay fp32; this catches overflow, NaN
#: and grossly wrong kernels, not rounding).
TRAIN_TOLERANCE = 1e-2
#: CPU flags meaning native bfloat16 arithmetic (dot products / tiles).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    """The precision a run uses and why.

    Attributes
    ----------
    name : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``: what the network actually runs in.
    requested : str
        What was asked for (``"auto"`` or a precision).
    reason : str
        Why (the hardware seen).
    note : str
        Set when the first-batch guard fell back to fp32.
    """

    name: str
    requested: str
    reason: str
    note: str = ""

    @property
    def dtype(self) -> torch.dtype | None:
        """The low-precision dtype, None for fp32."""
        return _DTYPES.get(self.name)

    def fall_back(self, note: str) -> None:
        """Switch to fp32, keeping why."""
        self.name, self.note = "fp32", note

    def describe(self) -> str:
        """One line for the terminal."""
        text = f"precision {self.name} ({self.requested}: {self.reason})"
        return f"{text}; {self.note}" if self.note else text

    def record(self) -> dict[str, str]:
        """The JSON-able record (model metadata, reports)."""
        return {"precision": self.name, "requested": self.requested, "reason": self.reason,
                "note": self.note}


@functools.cache
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``path`` (empty when unreadable)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def hardware(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What ``device`` offers for reduced precision.

    Returns
    -------
    dict
        ``device``, ``bf16_native``, ``fp16_native`` (bool) and the evidence: on the CPU
        ``flags`` (the bf16/AMX/AVX512 flags present) and ``torch_capability``; on CUDA
        ``name`` and ``compute_capability``.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        return {"device": "cuda", "name": torch.cuda.get_device_name(dev),
                "compute_capability": f"{major}.{minor}",
                "bf16_native": bool(torch.cuda.is_bf16_supported()) and major >= 8,
                "fp16_native": major >= 7}
    flags = cpu_flags()
    shown = sorted(f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f",
                                                     "avx512_fp16", "avx512_vnni")))
    return {"device": dev.type, "flags": shown,
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": any(f in flags for f in BF16_CPU_FLAGS), "fp16_native": False}


def resolve_precision(requested: str, device: torch.device | str = "cpu",
                      hw: dict[str, Any] | None = None, inference: bool = False) -> Precision:
    """The :class:`Precision` of ``requested`` on ``device``.

    Parameters
    ----------
    requested : str
        One of :data:`PRECISIONS`.
    device : torch.device or str
        Where the network runs.
    hw : dict, optional
        :func:`hardware` of the device (detected when None; tests pass their own).
    inference : bool, default False
        For scoring: the choice is the same, and the reason says that the first batch is checked
        against fp32 (:class:`GuardedForward`). On AVX512-BF16 without AMX (AMD Zen 4, the
        project's machines) the bf16 network scores 1.5-1.7x faster than the frozen fp32 graph
        (benchmarks/train_infer.py), but networks trained on real alerts usually differ from
        fp32 by more than 1e-3 (benchmarks/bf16_layers.py), and then the guard falls back to
        fp32, costing one more pass over the first batch.

    Raises
    ------
    OtrainError
        Unknown precision, fp16 off CUDA, bf16 on a GPU without it.
    """
    if requested not in PRECISIONS:
        raise OtrainError(f"unknown precision '{requested}'; choose from {', '.join(PRECISIONS)}")
    hw = hw if hw is not None else hardware(device)
    cuda = hw["device"] == "cuda"
    where = (f"GPU {hw.get('name', '')} (compute capability {hw.get('compute_capability')})"
             if cuda else "CPU")
    native = ", ".join(f for f in hw.get("flags", []) if f in BF16_CPU_FLAGS) or "no AMX or " \
        "AVX512-BF16"
    if requested == "fp32":
        return Precision("fp32", requested, "as asked")
    if requested == "fp16":
        if not cuda:
            raise OtrainError("fp16 is for CUDA devices only; use --precision bf16 or fp32 on the "
                              "CPU")
        return Precision("fp16", requested, "as asked" + ("" if hw["fp16_native"] else
                                                          f"; {where} has no tensor cores"))
    if requested == "bf16":
        if cuda and not hw["bf16_native"]:
            raise OtrainError(f"{where} has no bfloat16; use --precision fp16 or fp32")
        if not cuda and not hw["bf16_native"]:
            return Precision("bf16", requested, f"as asked; CPU has {native}: emulated, "
                             "probably slower than fp32")
        return Precision("bf16", requested, "as asked" + ("" if cuda else f"; CPU has {native}"))
    if cuda:  # auto
        if hw["bf16_native"]:
            return Precision("bf16", requested, f"{where} computes bf16 natively")
        if hw["fp16_native"]:
            return Precision("fp16", requested, f"{where} has fp16 tensor cores")
        return Precision("fp32", requested, f"{where} has no tensor cores")
    if hw["bf16_native"]:
        return Precision("bf16", requested, f"CPU has {native}" + (
            "; the first batch is checked against fp32" if inference else ""))
    return Precision("fp32", requested, f"CPU has {native}")


def autocast(device: torch.device | str,
             precision: Precision | None) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` on ``device`` (a no-op for fp32 or None)."""
    if precision is None or precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=precision.dtype)


class _Fp32Head(nn.Module):
    """Runs ``layer`` in fp32 on an fp32 copy of its input, outside any autocast."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float())


def _last_linear(model: nn.Module) -> tuple[nn.Module, str] | None:
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name:
            found = name
    if found is None:
        return None
    parent_name, _, attr = found.rpartition(".")
    return model.get_submodule(parent_name) if parent_name else model, attr


def low_precision_scorer(model: nn.Module, precision: Precision,
                         device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """An eval-mode copy of ``model`` running in ``precision``; fp32 logits from fp32 images.

    The weights are cast to the low dtype once (no per-call casts, as autocast would do) and
    kept channels-last on the CPU; the last ``nn.Linear`` (the logits) stays fp32.
    """
    dtype = precision.dtype
    if dtype is None:
        raise ValueError("low_precision_scorer needs bf16 or fp16")
    net = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    head = _last_linear(net)
    if head is not None:
        parent, attr = head
        setattr(parent, attr, _Fp32Head(getattr(parent, attr)))
    cl = device.type == "cpu"
    if cl:
        net = net.to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        return net(x).float()

    return forward


def max_prob_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |P(class)| difference between two logit tensors (inf when either is not finite)."""
    pa, pb = torch.softmax(a.double(), 1), torch.softmax(b.double(), 1)
    diff = (pa - pb).abs()
    return float(diff.max()) if bool(torch.isfinite(diff).all()) and diff.numel() else (
        0.0 if not diff.numel() else float("inf"))


class GuardedForward:
    """Logits in ``precision``; the first batch is also scored in fp32 and compared.

    Parameters
    ----------
    fp32 : callable
        Tensor -> fp32 logits.
    low : callable or None
        The same in the low precision (None: fp32 only).
    precision : Precision
        Updated (:meth:`Precision.fall_back`) when the guard trips.
    tolerance : float
        Largest accepted |P difference|.
    """

    def __init__(self, fp32: Callable[[torch.Tensor], torch.Tensor],
                 low: Callable[[torch.Tensor], torch.Tensor] | None, precision: Precision,
                 tolerance: float = INFER_TOLERANCE) -> None:
        self.fp32, self.low, self.precision, self.tolerance = fp32, low, precision, tolerance
        self.checked = low is None
        self.difference: float | None = None

    def __call__(self, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """Logits of ``x``; ``rows``: how many leading rows are real (the rest padding)."""
        if self.low is None:
            return self.fp32(x)
        if self.checked:
            return self.low(x)
        ref, low = self.fp32(x), self.low(x)
        return low if self._agrees(ref, low, x.shape[0] if rows is None else rows) else ref

    def check(self, x: torch.Tensor, rows: int | None = None) -> bool:
        """Compare the precisions on ``x`` now (the first batch); False when it fell back."""
        if self.low is None or self.checked:
            return self.low is not None
        return self._agrees(self.fp32(x), self.low(x), x.shape[0] if rows is None else rows)

    def use_fp32(self) -> None:
        """Score in fp32 from now on (another member of the same model fell back)."""
        self.low, self.checked = None, True

    def _agrees(self, ref: torch.Tensor, low: torch.Tensor, k: int) -> bool:
        self.difference = max_prob_difference(ref[:k], low[:k])
        self.checked = True
        if not self.difference <= self.tolerance:
            self.precision.fall_back(
                f"{self.precision.name} scores of the first batch differed from fp32 by "
                f"{self.difference:.2g} (> {self.tolerance:g}): using fp32")
            self.low = None
            return False
        return True



def first_batch_difference(model: nn.Module, x: torch.Tensor, precision: Precision) -> float:
    """Largest |P difference| between ``model`` in fp32 and under autocast on batch ``x``.

    Eval mode (no dropout, so both passes see the same network), no gradient; the training
    mode is restored. 0.0 for fp32.
    """
    if precision.dtype is None:
        return 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(x).float()
            with autocast(x.device, precision):
                low = model(x).float()
    finally:
        model.train(was_training)
    return max_prob_difference(ref, low)


class TrainPrecision:
    """The precision of a training run: autocast for the forward pass, the backward/step.

    fp16 (CUDA) scales the loss (:class:`torch.amp.GradScaler`) so small gradients do not
    underflow; bf16 has fp32's range and needs no scaling. The weights and the optimizer state
    stay fp32 throughout.
    """

    def __init__(self, precision: Precision, device: torch.device) -> None:
        self.precision, self.device = precision, torch.device(device)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=precision.name == "fp16")

    def guard(self, model: nn.Module, x: torch.Tensor,
              agree: Callable[[float], float] | None = None,
              tolerance: float = TRAIN_TOLERANCE) -> float:
        """Compare the first batch in fp32 and the low precision; fall back to fp32 above
        ``tolerance``. ``agree`` (several processes) turns this rank's difference into the one
        every rank acts on. Returns the difference."""
        diff = first_batch_difference(model, x.to(self.device), self.precision)
        if agree is not None:
            diff = agree(diff)
        if not diff <= tolerance:
            self.precision.fall_back(
                f"{self.precision.name} outputs of the first batch differed from fp32 by "
                f"{diff:.2g} (> {tolerance:g}): training in fp32")
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)
        return diff

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context of a forward pass."""
        return autocast(self.device, self.precision)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward pass, accumulating into the gradients (loss-scaled for fp16)."""
        self.scaler.scale(loss).backward()

    def apply(self, opt: torch.optim.Optimizer) -> None:
        """Optimizer step on the accumulated gradients (skipped by fp16 on overflow)."""
        self.scaler.step(opt)
        self.scaler.update()

    def step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """Backward pass and optimizer step (loss-scaled for fp16)."""
        self.backward(loss)
        self.apply(opt)
