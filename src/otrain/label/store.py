"""Label events in SQLite: one row per key press, nothing ever updated or deleted.

The database (stdlib :mod:`sqlite3`, WAL journal, ``synchronous=FULL``) holds

``events``
    ``id`` (increasing), ``candid``, ``label`` (``real``/``bogus``/``unsure``/``skip``/``undo``),
    ``labeller``, ``time`` (UTC, ISO 8601), ``score_shown`` (0/1: was the model's P(real) on the
    page), ``score`` (the model's P(real) then, or NULL), ``undoes`` (for ``undo``: the event it
    cancels), ``nonce`` (an optional client key: a retried POST with the same nonce is recorded
    once).
``candidates``
    ``candid``, ``position`` (in the input), ``source`` (the cutout file or alert record), so
    that an export needs only the database.
``info``
    key/value provenance (input, order, model).

Every event is committed before the server answers, so a killed server loses at most the event
in flight. A labeller's *current* label of a candidate is their latest event on it that no undo
cancelled; ``undo`` cancels that labeller's latest not yet cancelled label event. Several
server processes (one per labeller) may share a database.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from otrain.errors import OtrainError
from otrain.outputs import acquire_lock, release_lock

#: Label words and the keys that give them.
LABELS = ("real", "bogus", "unsure", "skip")
KEYS = {"r": "real", "b": "bogus", "u": "unsure", "s": "skip"}
UNDO = "undo"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    candid TEXT NOT NULL,
    label TEXT NOT NULL CHECK (label IN ('real', 'bogus', 'unsure', 'skip', 'undo')),
    labeller TEXT NOT NULL,
    time TEXT NOT NULL,
    score_shown INTEGER NOT NULL DEFAULT 0,
    score REAL,
    undoes INTEGER REFERENCES events(id),
    nonce TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS events_nonce ON events(labeller, nonce) WHERE nonce IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_labeller ON events(labeller, id);
CREATE TABLE IF NOT EXISTS candidates (
    candid TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Event:
    """One row of ``events``."""

    id: int
    candid: str
    label: str
    labeller: str
    time: str
    score_shown: bool
    score: float | None
    undoes: int | None


def normalise_label(value: object) -> str:
    """``r``/``real`` -> ``real`` etc.

    Raises
    ------
    OtrainError
        For anything but the four labels or their keys.
    """
    text = str(value).strip().lower() if isinstance(value, str) else ""
    text = KEYS.get(text, text)
    if text not in LABELS:
        raise OtrainError(f"label must be one of {', '.join(LABELS)} (or r/b/u/s), got "
                          f"{str(value)[:40]!r}")
    return text


class LabelStore:
    """The label database; thread-safe (one connection behind a lock).

    Parameters
    ----------
    path : str or Path
        SQLite file (created with its folder's permission when missing).
    writer : bool, default False
        Take the database's exclusive otrain lock (:func:`otrain.outputs.acquire_lock`) for
        as long as the store is open, as every otrain writer does: a second labelling server
        on the same database fails at once with one line instead of labelling the same
        candidates from another queue. Readers (export) need no lock: SQLite's WAL gives them
        a consistent snapshot while a server writes.

    Raises
    ------
    OtrainError
        A folder, a missing parent folder, a database another server holds, or a file that is
        not a usable SQLite database.
    """

    def __init__(self, path: str | Path, writer: bool = False) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise OtrainError("is a folder, expected a label database file", self.path)
        if not self.path.parent.is_dir():
            raise OtrainError("folder of the label database does not exist", self.path.parent)
        self._writer = writer
        if writer:
            acquire_lock(self.path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if writer:
                release_lock(self.path)
            raise OtrainError(f"not a usable label database ({exc})", self.path) from None

    def close(self) -> None:
        """Close the connection (and release the writer's lock)."""
        with self._lock:
            self._db.close()
        if self._writer:
            release_lock(self.path)

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- provenance and candidates ---------------------------------------------------------
    def set_info(self, **values: str) -> None:
        """Record provenance key/values (replacing earlier ones)."""
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO info(key, value) VALUES (?, ?)",
                                 [(k, str(v)) for k, v in values.items()])

    def info(self) -> dict[str, str]:
        """All provenance key/values."""
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM info").fetchall())

    def add_candidates(self, candids: Sequence[str], sources: Sequence[str]) -> None:
        """Record the input's candidates (already known ones are left as they are)."""
        rows = [(str(c), i, str(s)) for i, (c, s) in enumerate(zip(candids, sources,
                                                                    strict=True))]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO candidates(candid, position, source)"
                                     " VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def sources(self) -> dict[str, str]:
        """candid -> source (cutout file or alert record) of every recorded candidate."""
        with self._lock:
            return dict(self._db.execute("SELECT candid, source FROM candidates").fetchall())

    # -- events ----------------------------------------------------------------------------
    def add_label(self, candid: str, label: str, labeller: str, score_shown: bool = False,
                  score: float | None = None, nonce: str | None = None) -> Event:
        """Record one label event (committed on return).

        A second call with the same ``labeller`` and ``nonce`` records nothing and returns the
        first event.
        """
        label = normalise_label(label)
        with self._lock:
            if nonce is not None:
                found = self._find_nonce(labeller, nonce)
                if found is not None:
                    return found
            cur = self._db.execute(
                "INSERT INTO events(candid, label, labeller, time, score_shown, score, nonce) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (str(candid), label, labeller, _now(), int(bool(score_shown)),
                 None if score is None else float(score), nonce))
            return self._event(int(cur.lastrowid or 0))

    def undo(self, labeller: str, nonce: str | None = None) -> Event | None:
        """Cancel ``labeller``'s latest label event still in force.

        Returns
        -------
        Event or None
            The event cancelled (its candidate is the one to go back to), or None when there is
            nothing to undo.
        """
        with self._lock:
            if nonce is not None:
                found = self._find_nonce(labeller, nonce)
                if found is not None:
                    return self._event(found.undoes) if found.undoes else None
            self._db.execute("BEGIN IMMEDIATE")
            try:
                stack = _effective(self._rows("WHERE labeller = ?", (labeller,)))
                if not stack:
                    self._db.execute("COMMIT")
                    return None
                target = stack[-1]
                self._db.execute(
                    "INSERT INTO events(candid, label, labeller, time, undoes, nonce) "
                    "VALUES (?, 'undo', ?, ?, ?, ?)",
                    (target.candid, labeller, _now(), target.id, nonce))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return target

    def events(self, labeller: str | None = None) -> list[Event]:
        """Every event (of one labeller, or all), oldest first."""
        with self._lock:
            if labeller is None:
                return self._rows("", ())
            return self._rows("WHERE labeller = ?", (labeller,))

    def labellers(self) -> list[str]:
        """Names of everyone who has recorded an event."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT DISTINCT labeller FROM events ORDER BY labeller")]

    def current(self, labeller: str | None = None) -> dict[str, Event]:
        """candid -> the event in force (of ``labeller``; of anyone, latest wins, for None)."""
        events = self.events(labeller)
        by_labeller: dict[str, list[Event]] = {}
        for ev in events:
            by_labeller.setdefault(ev.labeller, []).append(ev)
        out: dict[str, Event] = {}
        for ev in sorted((e for evs in by_labeller.values() for e in _effective(evs)),
                         key=lambda e: e.id):
            out[ev.candid] = ev
        return out

    def counts(self, labeller: str | None = None) -> dict[str, int]:
        """Number of candidates whose current label is each of :data:`LABELS`."""
        tally = Counter(ev.label for ev in self.current(labeller).values())
        return {name: int(tally.get(name, 0)) for name in LABELS}

    # -- internals -------------------------------------------------------------------------
    def _find_nonce(self, labeller: str, nonce: str) -> Event | None:
        rows = self._rows("WHERE labeller = ? AND nonce = ?", (labeller, nonce))
        return rows[0] if rows else None

    def _event(self, event_id: int) -> Event:
        return self._rows("WHERE id = ?", (event_id,))[0]

    def _rows(self, where: str, params: Iterable[object]) -> list[Event]:
        sql = ("SELECT id, candid, label, labeller, time, score_shown, score, undoes FROM events "
               f"{where} ORDER BY id")
        return [Event(int(r[0]), r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7])
                for r in self._db.execute(sql, tuple(params))]


def _effective(events: Sequence[Event]) -> list[Event]:
    """One labeller's label events in force, oldest first (undo pops the newest)."""
    stack: list[Event] = []
    for ev in events:
        if ev.label == UNDO:
            if stack and (ev.undoes is None or stack[-1].id == ev.undoes):
                stack.pop()
            elif ev.undoes is not None:
                stack = [e for e in stack if e.id != ev.undoes]
        else:
            stack.append(ev)
    return stack


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
