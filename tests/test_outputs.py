"""Tests of the output discipline (otrain.outputs): checks before work, the lock between runs,
the checked rename, hidden temporary files and their clean-up, write errors as one line."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_clean_error, make_labelled_folder, run_cli
from otrain.cutouts.reading import find_cutouts
from otrain.datacube.hdf5 import DatacubeWriter
from otrain.errors import OtrainError
from otrain.models.modelfile import save_model
from otrain.models.networks import build_model
from otrain.outputs import TMP_TAG, atomic_output, check_writable, release_lock, write_text_atomic


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write to: chmod 555, or (as root, who ignores modes) a read-only
    tmpfs; skipped where neither works."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here: {done.stderr!r}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (a full disk); skipped when mounting is not allowed."""
    folder = tmp_path / "full"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr!r}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_folder_and_parent_file_refused_before_work(tmp_path: Path) -> None:
    with pytest.raises(OtrainError, match="is a folder"):
        check_writable(tmp_path, overwrite=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OtrainError, match="afile is a file, not a folder") as info:
        check_writable(tmp_path / "afile" / "sub" / "out.dat", overwrite=False)
    assert info.value.path == str(tmp_path / "afile" / "sub" / "out.dat")


def test_readonly_folder_refused_before_work(readonly_dir: Path) -> None:
    with pytest.raises(OtrainError, match="not writable") as info:
        check_writable(readonly_dir / "out.dat", overwrite=False)
    assert str(readonly_dir / "out.dat") in str(info.value)


def test_cli_readonly_output_fails_before_reading(readonly_dir: Path, tmp_path: Path) -> None:
    make_labelled_folder(tmp_path / "c", 3, 3)
    proc = run_cli("otrain-convert", "--path", str(readonly_dir / "sub"), "--cube", "x",
                   "--cutouts", str(tmp_path / "c"), "--seed", "1")
    assert_clean_error(proc, "not writable")
    assert "reading cutouts" not in proc.stderr + proc.stdout


_HOLDER = """
import sys, time
from otrain.outputs import check_writable
check_writable(sys.argv[1], overwrite=True)
print("locked", flush=True)
time.sleep(60)
"""


def _hold_lock(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_refused_while_first_writes(tmp_path: Path) -> None:
    out = tmp_path / "scores.dat"
    holder = _hold_lock(out)
    try:
        with pytest.raises(OtrainError, match=f"another otrain run \\(pid {holder.pid}\\)"):
            check_writable(out, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    # the lock died with its process: the next run goes ahead and removes the stale lock file
    write_text_atomic(out, "ok\n")
    assert out.read_text() == "ok\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.dat"]


def test_two_infer_runs_same_output(tmp_path: Path) -> None:
    """A real otrain-infer against an output another process is writing: one line, at once."""
    torch.manual_seed(0)
    model = save_model(tmp_path / "m.safetensors", build_model("otrain", 1, 16, 0.0),
                       {"normalisation": "zscore", "channels": ["diff"]})
    make_labelled_folder(tmp_path / "c", 4, 4)
    out = tmp_path / "scores.dat"
    holder = _hold_lock(out)
    try:
        proc = run_cli("otrain-infer", "--cutouts", str(tmp_path / "c" / "true"), "--model",
                       str(model), "--output", str(out))
    finally:
        holder.kill()
        holder.wait()
    assert_clean_error(proc, "being written by another otrain run")
    assert not out.exists()


def test_rename_checked_again(tmp_path: Path) -> None:
    out = tmp_path / "table.dat"
    with pytest.raises(OtrainError, match="created by another program"):
        with atomic_output(out) as tmp:
            tmp.write_text("mine\n")
            out.write_text("theirs\n")  # appears while this run works
    assert out.read_text() == "theirs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.dat"]


def test_temporary_files_hidden_ignored_and_cleaned(tmp_path: Path) -> None:
    make_labelled_folder(tmp_path, 2, 0)
    true = tmp_path / "true"
    leftovers = [true / f".cube.h5{TMP_TAG}abc.h5", true / ".t_000.fits.x1y2.part.fits",
                 true / f".t_009.fits{TMP_TAG}q.fits"]
    for p in leftovers:
        p.write_bytes((true / "t_000.fits").read_bytes())
    (true / "x.particle.fits").write_bytes((true / "t_000.fits").read_bytes())  # an ordinary name
    assert [p.name for p in find_cutouts(true)] == ["t_000.fits", "t_001.fits", "x.particle.fits"]
    check_writable(true / "t_009.fits", overwrite=False)
    release_lock(true / "t_009.fits")
    check_writable(true / "cube.h5", overwrite=False)
    release_lock(true / "cube.h5")
    assert not leftovers[0].exists() and not leftovers[2].exists()
    assert leftovers[1].exists()  # another file's leftover: not ours to remove


def test_model_file_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = save_model(tmp_path / "m.safetensors", build_model("otrain", 1, 16, 0.0),
                          {"normalisation": "zscore", "channels": ["diff"]})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_error_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC simulated by a failing write: one error naming the file, the old file intact."""
    out = tmp_path / "report.json"
    out.write_text("old\n")

    def full(self: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OtrainError, match="no space left on device") as info:
        write_text_atomic(out, "new\n", overwrite=True)
    assert info.value.path == str(out)
    monkeypatch.undo()
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_datacube_on_full_disk(tiny_disk: Path) -> None:
    """A real full disk while writing a cube: an OtrainError, HDF5 closed once, nothing left."""
    writer = DatacubeWriter(tiny_disk / "c.h5", (1, 32, 32), ["diff"])
    with pytest.raises(OtrainError, match="no space left") as info:
        for _ in range(20):
            writer.append(np.zeros((100, 1, 32, 32), np.float32),
                          {"candid": np.arange(100), "label": np.zeros(100, np.int8)})
    assert info.value.path == str(tiny_disk / "c.h5")
    writer.abort()  # a second abort is harmless
    assert list(tiny_disk.iterdir()) == []


def test_cli_convert_on_full_disk(tiny_disk: Path, tmp_path: Path) -> None:
    """The reported segfault: convert into a full disk ends in one line, exit 2."""
    make_labelled_folder(tmp_path / "c", 60, 60, size=40)
    start = time.monotonic()
    proc = run_cli("otrain-convert", "--path", str(tiny_disk), "--cube", "c", "--cutouts",
                   str(tmp_path / "c"), "--seed", "1", "--workers", "1")
    assert proc.returncode == 2, proc.stderr
    assert_clean_error(proc, str(tiny_disk / "datacube" / "c.h5"), "no space left on device")
    assert time.monotonic() - start < 60
    assert list((tiny_disk / "datacube").iterdir()) == []


def test_torch_checkpoint_on_full_disk(tiny_disk: Path) -> None:
    """torch.save on a full disk raised 'inline_container.cc ... unexpected pos': one line now."""
    import shutil

    from otrain.training.outputs import save_checkpoint

    (tiny_disk / "fill").write_bytes(b"\0" * (shutil.disk_usage(tiny_disk).free - 40_000))
    with pytest.raises(OtrainError, match="no space left on device") as info:
        save_checkpoint(tiny_disk / "checkpoint.pt", {"w": torch.zeros(100_000)})
    assert info.value.path == str(tiny_disk / "checkpoint.pt")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["fill"]
