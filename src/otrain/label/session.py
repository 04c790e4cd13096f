"""One labeller's session: the pool in queue order, the store, and what the page asks for.

Candidates are addressed by their *position* in the queue order (0..N-1), never by a path. The
queue resumes at the first candidate this labeller has no label in force for, so a restarted
server (same input, order and model) continues where it stopped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from otrain.errors import OtrainError
from otrain.label.export import agreement
from otrain.label.pool import Pool
from otrain.label.ranking import rank
from otrain.label.store import Event, LabelStore, normalise_label


class RequestError(OtrainError):
    """A request the server refuses (HTTP status in ``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Scores:
    """The model's P(real) per pool candidate: mean and spread of the draws."""

    mean: np.ndarray
    spread: np.ndarray
    n_samples: int
    model: str


class LabelSession:
    """The state behind the page.

    Parameters
    ----------
    pool : Pool
        The candidates.
    store : LabelStore
        The label database.
    labeller : str
        Name recorded with every event.
    order : str
        Queue order (:data:`otrain.label.ranking.ORDERS`).
    draws : numpy.ndarray, optional
        ``(N, K)`` P(real) draws of the pool (a model was given).
    show_scores : bool, default False
        Whether the page shows the model's P(real) (recorded with every event).
    seed : int, default 0
        Seed of the ``random`` order.
    model : str, default ""
        Name of the model file (shown in the state).
    """

    def __init__(self, pool: Pool, store: LabelStore, labeller: str, order: str,
                 draws: np.ndarray | None = None, show_scores: bool = False, seed: int = 0,
                 model: str = "") -> None:
        if not labeller or len(labeller) > 64:
            raise OtrainError("--labeller must be 1 to 64 characters")
        self.pool, self.store, self.labeller = pool, store, labeller
        self.order_name = order
        self.order = rank(order, len(pool), draws, seed)
        self.position_of = np.empty(len(pool), dtype=np.int64)
        self.position_of[self.order] = np.arange(len(pool))
        self.index_of = pool.index_of()
        self.scores = None
        if draws is not None:
            d = np.asarray(draws, dtype=np.float64)
            self.scores = Scores(d.mean(axis=1), d.std(axis=1), int(d.shape[1]), model)
        self.show_scores = bool(show_scores and self.scores is not None)
        self._lock = threading.Lock()
        self._current = store.current(labeller)
        store.add_candidates(pool.candids, pool.sources)

    # -- positions -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.pool)

    def check_position(self, pos: int) -> int:
        """``pos`` if it addresses a candidate, else a 404 :class:`RequestError`."""
        if not 0 <= pos < len(self.pool):
            raise RequestError(f"no candidate at position {pos} (0..{len(self.pool) - 1})", 404)
        return pos

    def candid_at(self, pos: int) -> str:
        """candid of the candidate at queue position ``pos``."""
        return self.pool.candids[int(self.order[self.check_position(pos)])]

    def next_unlabelled(self, after: int = -1) -> int | None:
        """First position after ``after`` (wrapping round) without a label of this labeller."""
        n = len(self.pool)
        with self._lock:
            done = set(self._current)
        for step in range(1, n + 1):
            pos = (after + step) % n
            if self.pool.candids[int(self.order[pos])] not in done:
                return pos
        return None

    # -- what the page reads ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Labeller, progress, counts per class, agreement, resume position."""
        with self._lock:
            current = dict(self._current)
        counts = {k: 0 for k in ("real", "bogus", "unsure", "skip")}
        for ev in current.values():
            counts[ev.label] += 1
        agree = agreement(self.store)
        mine = [p for p in agree["pairs"] if self.labeller in (p["a"], p["b"])]
        return {"labeller": self.labeller, "total": len(self.pool), "labelled": len(current),
                "queue": len(self.pool) - len(current), "counts": counts,
                "order": self.order_name, "channels": list(self.pool.channels),
                "kind": self.pool.kind, "show_scores": self.show_scores,
                "next": self.next_unlabelled(-1), "agreement": mine,
                "labellers": agree["labellers"]}

    def candidate(self, pos: int) -> dict[str, Any]:
        """Metadata, the current label and (when shown) the score of one candidate."""
        index = int(self.order[self.check_position(pos)])
        candid = self.pool.candids[index]
        with self._lock:
            ev = self._current.get(candid)
        out: dict[str, Any] = {"position": pos, "candid": candid,
                               "meta": self.pool.meta[index],
                               "label": ev.label if ev else None,
                               "channels": list(self.pool.channels)}
        if self.show_scores and self.scores is not None:
            out["score"] = {"p_real": round(float(self.scores.mean[index]), 4),
                            "spread": round(float(self.scores.spread[index]), 4),
                            "n_samples": self.scores.n_samples}
        return out

    def grid(self, start: int, n: int) -> list[dict[str, Any]]:
        """Position, candid and current label of ``n`` (1-50) candidates from ``start``."""
        self.check_position(start)
        if not 1 <= n <= 50:
            raise RequestError("a grid holds 1 to 50 candidates")
        with self._lock:
            current = dict(self._current)
        out = []
        for pos in range(start, min(start + n, len(self.pool))):
            candid = self.pool.candids[int(self.order[pos])]
            ev = current.get(candid)
            out.append({"position": pos, "candid": candid, "label": ev.label if ev else None})
        return out

    def image(self, pos: int, channel: str) -> np.ndarray:
        """The 2-D pixels of one channel of the candidate at ``pos``."""
        index = int(self.order[self.check_position(pos)])
        if channel not in self.pool.channels:
            raise RequestError(f"no channel {channel[:20]!r}; the input has "
                               f"{','.join(self.pool.channels)}", 404)
        return self.pool.images([index])[0, self.pool.channels.index(channel)]

    # -- what the page writes --------------------------------------------------------------
    def label(self, candid: object, label: object, nonce: object = None) -> dict[str, Any]:
        """Record a label of ``candid``; return the event and the next position to show."""
        if not isinstance(candid, str) or candid not in self.index_of:
            raise RequestError(f"unknown candid {str(candid)[:64]!r}", 404)
        try:
            word = normalise_label(label)
        except OtrainError as exc:
            raise RequestError(exc.reason, 422) from None
        if nonce is not None and (not isinstance(nonce, str) or not 0 < len(nonce) <= 64):
            raise RequestError("nonce must be a string of 1 to 64 characters", 422)
        index = self.index_of[candid]
        score = float(self.scores.mean[index]) if self.scores is not None else None
        ev = self.store.add_label(candid, word, self.labeller, self.show_scores, score, nonce)
        with self._lock:
            self._current[candid] = ev
        pos = int(self.position_of[index])
        return {"event": _event_json(ev), "position": pos, "next": self.next_unlabelled(pos)}

    def undo(self, nonce: object = None) -> dict[str, Any]:
        """Cancel this labeller's last label; return the candidate to go back to."""
        if nonce is not None and (not isinstance(nonce, str) or not 0 < len(nonce) <= 64):
            raise RequestError("nonce must be a string of 1 to 64 characters", 422)
        ev = self.store.undo(self.labeller, nonce)
        with self._lock:
            self._current = self.store.current(self.labeller)
        if ev is None:
            return {"undone": None, "position": None}
        index = self.index_of.get(ev.candid)
        pos = int(self.position_of[index]) if index is not None else None
        return {"undone": _event_json(ev), "position": pos}


def _event_json(ev: Event) -> dict[str, Any]:
    return {"id": ev.id, "candid": ev.candid, "label": ev.label, "labeller": ev.labeller,
            "time": ev.time, "score_shown": ev.score_shown}
