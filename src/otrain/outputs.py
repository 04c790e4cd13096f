"""Safe output writing: one discipline for every file otrain writes.

Every file otrain writes goes through :func:`check_writable` (before any work) and
:func:`atomic_output` (the writing itself):

- **Checked before work**: the destination must not be a folder, must not exist unless
  ``overwrite`` is set, and its folder must exist or be creatable and be writable (a probe file
  is created and removed), so a read-only folder or a parent that is a file is one line naming the
  path before any scoring or training starts.
- **Locked**: an exclusive ``flock`` on a hidden lock file beside the destination
  (``.<name>.otrain-lock``) is taken at the check and held until the file is in place; a second
  otrain run writing the same file fails at once with one line. The lock dies with its process,
  so a killed run never blocks the next one.
- **Atomic and checked again at the rename**: content goes to a hidden temporary file
  (``.<name>.otrain-tmp-XXXX<suffix>``, which no reader picks up) renamed into place only when
  complete; without ``overwrite`` the rename is a hard link that fails if the destination appeared
  meanwhile. Temporary files left by a killed run are removed by the next run that takes the lock.
- **Errors**: ENOSPC, EACCES and other write errors become one :class:`~otrain.errors.OtrainError`
  naming the destination; an existing destination is left intact.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from otrain.errors import OtrainError

#: Marker in the names of otrain's temporary files (always hidden: they start with a dot).
TMP_TAG = ".otrain-tmp-"
#: Suffix of the lock file beside a destination being written.
LOCK_TAG = ".otrain-lock"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}
#: What torch (``inline_container.cc``) and HDF5 say when a write fails.
_WRITE_FAILED = ("unexpected pos", "file write failed", "No space left", "errno = 28",
                 "PytorchStreamWriter failed")
#: destination (absolute) -> (lock fd, lock path, owner pid)
_HELD: dict[str, tuple[int, Path, int]] = {}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_temporary(path: str | Path) -> bool:
    """True for a hidden file (otrain's temporary and lock files, and the ``.part`` files of
    earlier versions, are all hidden) or a name holding otrain's temporary marker.

    Readers of cutout folders skip these, so what an interrupted run leaves is never read as data.
    """
    name = path if isinstance(path, str) and "/" not in path else Path(path).name
    return name.startswith(".") or TMP_TAG in name or name.endswith(LOCK_TAG)


def write_error(exc: BaseException, path: str | Path) -> OtrainError:
    """Turn an error raised while writing ``path`` into one line naming it.

    Parameters
    ----------
    exc : BaseException
        An :class:`OSError` (or a library's RuntimeError around one).
    path : str or Path
        The destination being written.

    Returns
    -------
    OtrainError
        "no space left on device", "permission denied" or the system's wording.
    """
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in _NO_SPACE or "No space left" in text or "errno = 28" in text or (
            "unexpected pos" in text and _disk_nearly_full(path)):
        reason = "no space left on device"
    elif code in _NO_PERMISSION:
        reason = f"permission denied ({os.strerror(code)})" if code else "permission denied"
    else:
        first = text.splitlines()[0] if text else type(exc).__name__
        reason = getattr(exc, "strerror", None) or first
    return OtrainError(f"could not be written: {reason}; an existing file is left unchanged", path)


def _disk_nearly_full(path: str | Path) -> bool:
    try:
        return shutil.disk_usage(Path(path).parent).free < (1 << 20)
    except OSError:
        return False


def _check_folder(path: Path) -> None:
    """The destination's folder exists (created if missing) and a file can be created in it."""
    existing = path.parent
    for ancestor in (path.parent, *path.parent.parents):
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise OtrainError(f"cannot be written: {ancestor} is a file, not a folder", path)
            existing = ancestor
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}probe-", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = "no space left on device" if exc.errno in _NO_SPACE else (
            exc.strerror or str(exc))
        raise OtrainError(f"cannot be written: folder {existing} is not writable ({reason})",
                          path) from None


def _remove_stale(path: Path) -> None:
    """Remove temporary files of ``path`` left by killed runs (we hold its lock: none is live)."""
    prefixes = (f".{path.name}{TMP_TAG}", f".{path.name}.")
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            stale = name.startswith(prefixes[0]) or (
                name.startswith(prefixes[1]) and ".part" in name)  # the former naming
            if stale and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def acquire_lock(path: str | Path) -> None:
    """Take the exclusive lock of destination ``path`` for this process (re-entrant).

    Raises
    ------
    OtrainError
        If another process holds it.
    """
    path = Path(path)
    key = str(path.absolute())
    if key in _HELD and _HELD[key][2] == os.getpid():
        return
    lock_path = path.with_name(f".{path.name}{LOCK_TAG}")
    try:
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                with contextlib.suppress(OSError):
                    owner = os.read(fd, 32).decode(errors="replace").strip()
                os.close(fd)
                raise OtrainError(
                    f"is being written by another otrain run (pid {owner or '?'}); wait for it "
                    "to finish or choose another output", path) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except FileNotFoundError:
                same = False
            if same:  # else the holder removed it as we opened it: take the new one
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as exc:
        raise write_error(exc, path) from None
    _HELD[key] = (fd, lock_path, os.getpid())
    _remove_stale(path)


def release_lock(path: str | Path) -> None:
    """Release (and remove) the lock of ``path`` if this process holds it."""
    held = _HELD.pop(str(Path(path).absolute()), None)
    if held is None:
        return
    fd, lock_path, owner = held
    if owner != os.getpid():  # a forked child: the lock is its parent's
        return
    with contextlib.suppress(OSError):
        os.unlink(lock_path)
    with contextlib.suppress(OSError):
        os.close(fd)


@atexit.register
def _release_all() -> None:
    for key in list(_HELD):
        release_lock(key)


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Check, before any work, that ``path`` can be written; take its lock.

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
        If the destination is a folder, exists and ``overwrite`` is false, its folder cannot be
        created or written, or another otrain run is writing it.
    """
    path = Path(path)
    if path.is_dir():
        raise OtrainError("is a folder, expected a file name", path)
    if not path.name or path.name in (".", ".."):
        raise OtrainError("is not a file name", path)
    if path.exists() and not overwrite:
        raise OtrainError("already exists; pass --overwrite to replace it", path)
    _check_folder(path)
    acquire_lock(path)
    return path


def _put_in_place(tmp: Path, path: Path, overwrite: bool) -> None:
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp (and some writers) make 0600
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the destination appeared meanwhile: nothing is lost
    except FileExistsError:
        raise OtrainError("was created by another program while this run was working; it is "
                          "kept and this run's result is discarded", path) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                             errno.EMLINK):
            raise
        if path.exists():  # a file system without hard links: check, then rename
            raise OtrainError("was created by another program while this run was working",
                              path) from None
        os.replace(tmp, path)
    else:
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; move it onto ``path`` on success.

    Parameters
    ----------
    path : str or Path
        Final destination. Parent folders are created.
    overwrite : bool, default False
        Whether an existing destination may be replaced.

    Yields
    ------
    Path
        Temporary file to write to (same folder, same suffix, hidden).

    Raises
    ------
    OtrainError
        As :func:`check_writable`; or if writing fails (disk full, permission), naming ``path``.
    """
    path = check_writable(path, overwrite)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}", suffix=path.suffix,
                                   dir=path.parent)
    except OSError as exc:
        release_lock(path)
        raise write_error(exc, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            _put_in_place(tmp_path, path, overwrite)
        except OSError as exc:
            if exc.filename not in (None, str(tmp_path), str(path), tmp, tmp_path, path):
                raise OtrainError(exc.strerror or str(exc), exc.filename) from None
            raise write_error(exc, path) from None
        except RuntimeError as exc:  # torch / h5py wrap a failed write in a RuntimeError
            if not any(mark in str(exc) for mark in _WRITE_FAILED):
                raise
            raise write_error(exc, path) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        release_lock(path)


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
