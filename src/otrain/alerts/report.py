"""What happened while reading alerts: counts per policy and the problems met, file by file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass
class AlertReport:
    """Counts of what reading alerts did, and one line per alert or file skipped.

    Attributes
    ----------
    n_files : int
        Alert files opened.
    n_alerts : int
        Alert records read from the files.
    n_kept : int
        Alerts turned into cutouts.
    n_missing_stamp : int
        Alerts skipped because a requested stamp was null or empty.
    n_bad_size : int
        Kept alerts whose window reached outside a stamp (stamp smaller than the cutout size,
        e.g. cut by a CCD edge); the missing pixels are NaN.
    n_with_nan : int
        Kept alerts with NaN pixels of their own in the window (padding not counted); the NaN are
        kept in the images (the ``n_nan`` column gives the number per alert).
    n_unreadable : int
        Corrupt records, undecodable stamps and unreadable files, all skipped (an unreadable file
        counts once, whatever it held).
    n_unlabelled : int
        Alerts left out of a labelled datacube because the label rule gave them no label.
    problems : list of str
        ``"file: problem"`` lines (``file#record`` for a single alert), at most
        :attr:`MAX_PROBLEMS` of them; :attr:`n_problems` counts them all.
    n_problems : int
        Number of problems met, including those beyond the stored ones.
    """

    n_files: int = 0
    n_alerts: int = 0
    n_kept: int = 0
    n_missing_stamp: int = 0
    n_bad_size: int = 0
    n_with_nan: int = 0
    n_unreadable: int = 0
    n_unlabelled: int = 0
    problems: list[str] = field(default_factory=list)
    n_problems: int = 0

    #: Problem lines kept in memory (a stream of millions of bad alerts must not fill it).
    MAX_PROBLEMS: ClassVar[int] = 1000

    def add_problem(self, where: str, message: str) -> None:
        """Record a ``"where: message"`` line (kept while fewer than :attr:`MAX_PROBLEMS`)."""
        self.n_problems += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(f"{where}: {message}")

    def as_dict(self) -> dict[str, Any]:
        """The counts and problem lines as a JSON-serialisable dictionary."""
        return asdict(self)

    def summary(self, max_lines: int = 10) -> str:
        """A readable account: one line of counts, then the first problems.

        Parameters
        ----------
        max_lines : int, default 10
            Problem lines to show.

        Returns
        -------
        str
            Multi-line text.
        """
        parts = [f"{self.n_kept} of {self.n_alerts} alerts kept from {self.n_files} file(s)"]
        if self.n_bad_size:
            parts.append(f"{self.n_bad_size} padded with NaN (stamp smaller than the cutout)")
        if self.n_with_nan:
            parts.append(f"{self.n_with_nan} with NaN pixels (kept)")
        if self.n_missing_stamp:
            parts.append(f"{self.n_missing_stamp} skipped: missing stamp")
        if self.n_unreadable:
            parts.append(f"{self.n_unreadable} skipped: unreadable record, stamp or file")
        if self.n_unlabelled:
            parts.append(f"{self.n_unlabelled} left out: no label from the label rule")
        lines = ["; ".join(parts)]
        lines.extend(f"  {line}" for line in self.problems[:max_lines])
        hidden = self.n_problems - min(len(self.problems), max_lines)
        if hidden > 0:
            lines.append(f"  ... and {hidden} more problem(s)")
        return "\n".join(lines)
