"""Progress reporting: a bar on a terminal, plain log lines otherwise, nothing with ``quiet``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


class Progress:
    """Report progress of a long task.

    On a terminal this is a tqdm bar; when standard error is not a terminal (logs, CI) it prints a
    plain line roughly every ``log_every`` seconds and at the end; with ``quiet`` it prints nothing.

    Parameters
    ----------
    total : int or None
        Number of steps expected.
    desc : str
        What is being done (e.g. ``"reading cutouts"``).
    quiet : bool, default False
        Silence all output.
    unit : str, default "it"
        Name of one step.
    log_every : float, default 10.0
        Seconds between plain log lines when not on a terminal.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        quiet: bool = False,
        unit: str = "it",
        log_every: float = 10.0,
    ) -> None:
        self.total = total
        self.desc = desc
        self.quiet = quiet
        self.unit = unit
        self.log_every = log_every
        self.count = 0
        self._start = time.monotonic()
        self._last_log = self._start
        self._bar = None
        if not quiet and sys.stderr.isatty():
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1, **postfix: object) -> None:
        """Advance by ``n`` steps, optionally showing ``postfix`` values (e.g. loss)."""
        self.count += n
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every:
            self._last_log = now
            self._log(postfix)

    def _log(self, postfix: dict[str, object]) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        extra = " ".join(f"{k}={v}" for k, v in postfix.items())
        elapsed = time.monotonic() - self._start
        print(f"{self.desc}: {self.count}{of} {self.unit} ({elapsed:.1f} s) {extra}".rstrip(),
              file=sys.stderr, flush=True)

    def close(self) -> None:
        """Finish: close the bar, or print a last log line."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            self._log({})

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], total: int | None, desc: str, quiet: bool = False) -> Iterator[T]:
    """Iterate over ``items`` while reporting progress.

    Parameters
    ----------
    items : iterable
        The items.
    total : int or None
        Their number, if known.
    desc : str
        What is being done.
    quiet : bool, default False
        Silence all output.

    Yields
    ------
    object
        Each item of ``items``.
    """
    with Progress(total, desc, quiet=quiet) as bar:
        for item in items:
            yield item
            bar.update()


def info(message: str, quiet: bool = False) -> None:
    """Print an informational line to standard output unless ``quiet``."""
    if not quiet:
        print(message, flush=True)
