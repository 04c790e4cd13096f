"""The fast dropout masks and the chunked optimiser steps (issue 16: training speed)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from otrain.models import build_model
from otrain.models.dropout import Dropout
from otrain.models.ensemble import DROPOUT_TYPES, normalised_member_probabilities
from otrain.progress import Progress
from otrain.training import steps


def test_dropout_keeps_one_minus_p_and_scales() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.ones(400, 16, 16, 16)
    y = drop(x)
    kept = y != 0
    # 1.6M Bernoulli(0.7) draws: the standard error of the fraction is 3.6e-4
    assert abs(float(kept.float().mean()) - 0.7) < 2e-3
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    # neighbouring activations are independent (no repeated 16-bit pattern)
    flat = kept.flatten().float()
    corr = np.corrcoef(flat[:-1].numpy(), flat[1:].numpy())[0, 1]
    assert abs(corr) < 5e-3


def test_dropout_seeded_by_torch_and_identity_in_eval() -> None:
    drop = Dropout(0.5).train()
    x = torch.randn(8, 4, 8, 8)
    torch.manual_seed(7)
    a = drop(x)
    torch.manual_seed(7)
    b = drop(x)
    c = drop(x)
    assert torch.equal(a, b)
    assert not torch.equal(b, c)
    drop.eval()
    assert torch.equal(drop(x), x)


def test_dropout_keeps_channels_last_and_bf16_and_its_gradient() -> None:
    torch.manual_seed(1)
    drop = Dropout(0.3).train()
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last).bfloat16()
    x.requires_grad_(True)
    y = drop(x)
    assert y.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    factor = (y.detach() / x.detach()).nan_to_num()
    assert torch.equal(x.grad != 0, y.detach() != 0)
    assert torch.allclose(x.grad.float(), factor.float(), atol=1e-2)


def test_dropout_falls_back_to_torch_where_it_should() -> None:
    x = torch.randn(16, 16)
    for drop in (Dropout(0.0), Dropout(1.0)):
        drop.train()
        torch.manual_seed(3)
        ours = drop(x)
        torch.manual_seed(3)
        assert torch.equal(ours, nn.functional.dropout(x, drop.p, True))
    strided = torch.randn(16, 32)[:, ::2]
    drop = Dropout(0.4).train()
    torch.manual_seed(3)
    ours = drop(strided)
    torch.manual_seed(3)
    assert torch.equal(ours, nn.functional.dropout(strided, 0.4, True))


def test_networks_use_it_and_mc_dropout_finds_it() -> None:
    torch.manual_seed(0)
    net = build_model("otrain", 1, (16, 16), 0.3)
    drops = [m for m in net.modules() if isinstance(m, DROPOUT_TYPES)]
    assert len(drops) == 3 and all(isinstance(m, Dropout) for m in drops)
    images = np.random.default_rng(0).normal(size=(6, 1, 16, 16)).astype(np.float32)
    p1 = normalised_member_probabilities([net], images, mc_samples=4, seed=5)
    p2 = normalised_member_probabilities([net], images, mc_samples=4, seed=5)
    assert p1.shape == (4, 6)
    assert np.array_equal(p1, p2)
    assert np.ptp(p1, axis=0).max() > 0  # the passes differ


def _epoch(chunk: int | None, batch: int, weight: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    net = build_model("otrain", 1, (16, 16), 0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(96, 1, 16, 16)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 2, 96))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch)
    with Progress(len(loader), "t", quiet=True) as bar:
        loss, correct, total = steps.train_epoch(net, loader, opt, weight, torch.device("cpu"),
                                                 0.5, bar, chunk=chunk)
    assert total == 96 and 0 <= correct <= 96 and loss > 0
    net.loss = loss  # type: ignore[attr-defined]
    return net


def test_chunked_batches_take_the_same_steps() -> None:
    weight = torch.tensor([0.7, 1.6])
    whole = _epoch(48, 48, weight)
    chunked = _epoch(16, 48, weight)
    unchunked_smaller = _epoch(16, 16, weight)
    for a, b in zip(whole.parameters(), chunked.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert abs(whole.loss - chunked.loss) < 1e-4 * whole.loss
    # and it is not trivially so: batches of 16 take other steps
    assert any(not torch.allclose(a, c, atol=1e-5)
               for a, c in zip(whole.parameters(), unchunked_smaller.parameters(),
                               strict=True))


def test_chunk_size_on_cpu_and_ddp_syncs_only_the_last_chunk() -> None:
    assert steps.chunk_size(torch.device("cpu"), 1024) == steps.CPU_CHUNK
    assert steps.chunk_size(torch.device("cpu"), 32) == 32
    assert steps.chunk_size(torch.device("cuda"), 1024) == 1024

    class FakeDDP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = build_model("otrain", 1, (16, 16), 0.0)
            self.unsynced = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        @contextlib.contextmanager
        def no_sync(self) -> contextlib.AbstractContextManager:
            self.unsynced += 1
            yield

    model = FakeDDP()
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(40, 1, 16, 16), torch.randint(0, 2, (40,))
    loader = DataLoader(TensorDataset(x, y), batch_size=40)
    with Progress(1, "t", quiet=True) as bar:
        steps.train_epoch(model, loader, opt, torch.ones(2), torch.device("cpu"), 0.5, bar,
                          shares=[(1 / 40, 40.0)], chunk=16)
    assert model.unsynced == 2  # chunks of 16, 16, 8: the last one all-reduces
