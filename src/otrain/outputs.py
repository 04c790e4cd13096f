"""Safe output writing: atomic replacement and no silent overwrite.

Every file otrain writes goes through :func:`atomic_output`: the content is written to a temporary
file in the destination folder and renamed into place only when complete, so an interrupted run
never leaves a half-written file, and an existing result is kept unless the user asked for
``overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from otrain.errors import OtrainError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse to replace an existing file unless ``overwrite`` is set.

    Parameters
    ----------
    path : str or Path
        Destination file.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    Path
        The destination as a :class:`~pathlib.Path`.

    Raises
    ------
    OtrainError
        If the file exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OtrainError("already exists; pass --overwrite to replace it", path)
    if path.is_dir():
        raise OtrainError("is a folder, expected a file name", path)
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Parameters
    ----------
    path : str or Path
        Final destination. Parent folders are created.
    overwrite : bool, default False
        Whether an existing destination may be replaced.

    Yields
    ------
    Path
        Temporary file to write to (same folder, same suffix).
    """
    path = check_writable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are ordinary files
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write a text file atomically.

    Parameters
    ----------
    path : str or Path
        Destination.
    text : str
        Content.
    overwrite : bool, default False
        Whether an existing destination may be replaced.

    Returns
    -------
    Path
        The destination.
    """
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)
