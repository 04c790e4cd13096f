"""The one exception type the command line turns into a clear one-line message."""

from __future__ import annotations

from pathlib import Path


class OtrainError(Exception):
    """A problem with the user's input or files, worth one clear line and a non-zero exit.

    Parameters
    ----------
    message : str
        What is wrong, in words a user can act on.
    path : str or Path, optional
        The file the problem concerns; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class CutoutError(OtrainError):
    """A cutout file that cannot be used (unreadable, missing keyword or extension, bad shape)."""


class ModelFileError(OtrainError):
    """A model file that cannot be loaded, or that does not fit the data it is given."""
