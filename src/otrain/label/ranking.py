"""Query strategies of active learning: which unlabelled candidate to show next.

Every strategy is a pure function of a matrix ``draws`` of P(real), shape ``(n_candidates,
n_samples)``: one column per member of an ensemble or per stochastic forward pass (MC dropout),
or a single column for a deterministic model. :func:`rank` turns a strategy name into an order
(queried first first). :func:`draws_from_model` is the one adapter from a model file to that
matrix (MC dropout); it is kept alone so that it can be swapped for a shared ensemble /
MC-dropout implementation.

Strategies
----------
``uncertainty``
    closeness of the mean P(real) to 0.5 (``1 - 2 |mean - 0.5|``).
``bald``
    mutual information between the label and the model (Houlsby et al. 2011):
    ``H(mean p) - mean H(p)``; with a single column it is 0 everywhere and the ranking falls back
    on ``uncertainty``.
``disagreement``
    standard deviation of the draws.
``score``
    highest mean P(real) first.
``random``
    a seeded permutation.
``file``
    the input order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from otrain.errors import OtrainError

ORDERS = ("uncertainty", "bald", "disagreement", "random", "score", "file")
_EPS = 1e-12


def check_draws(draws: np.ndarray | Sequence[float]) -> np.ndarray:
    """Return ``draws`` as a float64 ``(n, k)`` matrix of probabilities (a vector is one column).

    Raises
    ------
    OtrainError
        If the values are not finite probabilities or the shape is not 1-D / 2-D.
    """
    arr = np.asarray(draws, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise OtrainError(f"P(real) draws must be (n_candidates, n_samples), got {arr.shape}")
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0):
        raise OtrainError("P(real) draws must be finite and within [0, 1]")
    return arr


def _entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return -(q * np.log(q) + (1.0 - q) * np.log(1.0 - q))


def mean_score(draws: np.ndarray) -> np.ndarray:
    """Mean P(real) of each candidate."""
    return check_draws(draws).mean(axis=1)


def uncertainty(draws: np.ndarray) -> np.ndarray:
    """``1 - 2 |mean P(real) - 0.5|``: 1 at 0.5, 0 at a certain 0 or 1."""
    return 1.0 - 2.0 * np.abs(mean_score(draws) - 0.5)


def bald(draws: np.ndarray) -> np.ndarray:
    """Mutual information (nats) between label and model parameters, per candidate."""
    arr = check_draws(draws)
    return np.maximum(_entropy(arr.mean(axis=1)) - _entropy(arr).mean(axis=1), 0.0)


def disagreement(draws: np.ndarray) -> np.ndarray:
    """Standard deviation of the draws (0 for a single column)."""
    return check_draws(draws).std(axis=1)


def rank(order: str, n: int, draws: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Candidate indices in the order they should be shown.

    Parameters
    ----------
    order : str
        One of :data:`ORDERS`.
    n : int
        Number of candidates.
    draws : numpy.ndarray, optional
        ``(n, k)`` P(real) draws; needed by every order but ``random`` and ``file``.
    seed : int, default 0
        Seed of ``random`` (and of nothing else).

    Returns
    -------
    numpy.ndarray
        int64 permutation of ``range(n)``; ties keep the input order.
    """
    if order not in ORDERS:
        raise OtrainError(f"unknown order '{order}'; choose from {', '.join(ORDERS)}")
    if order == "file":
        return np.arange(n, dtype=np.int64)
    if order == "random":
        return np.random.default_rng(seed).permutation(n).astype(np.int64)
    if draws is None:
        raise OtrainError(f"order '{order}' needs model scores (give --model)")
    arr = check_draws(draws)
    if arr.shape[0] != n:
        raise OtrainError(f"{arr.shape[0]} score rows for {n} candidates")
    if order == "score":
        keys: tuple[np.ndarray, ...] = (-mean_score(arr),)
    elif order == "uncertainty":
        keys = (-uncertainty(arr),)
    elif order == "disagreement":
        keys = (-uncertainty(arr), -disagreement(arr))
    else:  # bald; uncertainty breaks ties (and decides alone with one column)
        keys = (-uncertainty(arr), -bald(arr))
    # np.lexsort sorts by the last key first; a stable sort keeps the input order in ties.
    return np.lexsort(keys).astype(np.int64)


def draws_from_model(loaded: object, images: np.ndarray, n_samples: int = 10, seed: int = 0,
                     batch_size: int = 256) -> np.ndarray:
    """P(real) draws of a model by MC dropout: dropout layers in train mode, K seeded passes.

    Everything but the dropout layers stays in eval mode. A network without dropout (or with
    rate 0) gives one deterministic column. This is the only place that turns a model into
    draws; swap it for an ensemble-aware version when model files hold several members.

    Parameters
    ----------
    loaded : otrain.models.modelfile.LoadedModel
        From :func:`otrain.models.modelfile.load_model`.
    images : numpy.ndarray
        Raw cutouts ``(N, C, H, W)``.
    n_samples : int, default 10
        Stochastic passes K.
    seed : int, default 0
        Seed of the dropout masks.
    batch_size : int, default 256
        Cutouts per forward pass.

    Returns
    -------
    numpy.ndarray
        float64 ``(N, K)`` (``(N, 1)`` without dropout).
    """
    import torch
    from torch import nn

    from otrain.models.modelfile import predict_proba
    from otrain.models.normalise import normalise

    model = loaded.model  # type: ignore[attr-defined]
    drops = [m for m in model.modules()
             if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    if not drops or n_samples <= 1:
        return predict_proba(loaded, images, batch_size)[:, None]  # type: ignore[arg-type]
    loaded.check_input(images.shape[1], images.shape[2:])  # type: ignore[attr-defined]
    device = loaded.device  # type: ignore[attr-defined]
    method = loaded.normalisation  # type: ignore[attr-defined]
    was_training = model.training
    out = np.empty((images.shape[0], n_samples), dtype=np.float64)
    gen_state = torch.random.get_rng_state()
    try:
        model.eval()
        for m in drops:
            m.train()
        torch.manual_seed(seed)
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = torch.from_numpy(normalise(images[start:start + batch_size], method))
                batch = batch.to(device)
                for k in range(n_samples):
                    logits = model(batch)
                    out[start:start + batch.shape[0], k] = (
                        torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy())
    finally:
        torch.random.set_rng_state(gen_state)
        model.train(was_training)
    return out
