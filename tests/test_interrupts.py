"""Interrupts: SIGINT / SIGTERM sent to the whole process group (as a terminal or a batch system
does) end a command and its worker pool within seconds, exit 130 / 143, no worker traceback, no
partial output."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, make_labelled_folder

_SLOW_MAP = """
import signal, sys, threading, time
from otrain.cli.main import _execute
from otrain.parallel import ordered_map

def slow(x):
    time.sleep(0.02)
    return x

def run(args):
    if sys.argv[1:] == ["other-thread"]:
        # a thread that does not block the stop signals (as a numerical library's threads),
        # then the main thread blocks them: the kernel must hand the group's signal to it
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    for i, _ in enumerate(ordered_map(slow, list(range(20000)), 2, 256)):
        if i == 0:
            print("started", flush=True)
    return 0

sys.exit(_execute("slowmap", run, None))
"""


def _stop(proc: subprocess.Popen, sig: int, limit: float = 10.0) -> tuple[int, float, str]:
    """Send ``sig`` to the process group; return (exit status, seconds to exit, stderr)."""
    os.killpg(proc.pid, sig)
    start = time.monotonic()
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"still running {limit:.0f} s after signal {sig} (hang)")
    return proc.returncode, time.monotonic() - start, err


@pytest.mark.parametrize("other_thread", [False, True], ids=["main-thread", "other-thread"])
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_worker_pool_stops_on_group_signal(sig: int, status: int, other_thread: bool) -> None:
    """Also when the signal is taken by a thread other than the main one: the hang found in
    convert, whose wait for the pool's results never returned to run the handler."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_MAP,
                             *(["other-thread"] if other_thread else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    code, seconds, err = _stop(proc, sig)
    assert code == status, err
    assert seconds < 5
    assert "Traceback" not in err, err
    if not other_thread:
        assert "KeyboardInterrupt" not in err, err


def _children(pid: int) -> list[str]:
    """Child processes of ``pid``, whichever of its threads started them."""
    out: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += (task / "children").read_text().split()
    return out


@pytest.fixture(scope="module")
def many_cutouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1200 small cutouts: enough for convert to use two worker processes."""
    return make_labelled_folder(tmp_path_factory.mktemp("many"), 600, 600, size=8)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_convert_interrupted(many_cutouts: Path, tmp_path: Path, sig: int, status: int) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [str(BIN / "otrain-convert"), "--path", str(out), "--cube", "c", "--cutouts",
         str(many_cutouts), "--workers", "2", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2:  # the reading pool is up
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"convert ended or stalled before reading: {proc.communicate()}")
        time.sleep(0.005)
    code, seconds, err = _stop(proc, sig)
    if code == 0:
        pytest.skip("convert finished before the signal arrived")
    assert code == status, err
    assert seconds < 5
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith("interrupted" if status == 130 else
                                                  "terminated"), err
    cube_dir = out / "datacube"
    assert not cube_dir.is_dir() or sorted(p.name for p in cube_dir.iterdir()) == []


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_train_interrupted_with_loader_workers(tmp_path: Path, sig: int, status: int) -> None:
    """otrain-train with DataLoader worker processes, signalled mid-run: ends in seconds with
    130 / 143 and one line, no model file or temporary file is left, and --resume goes on."""
    from test_training import make_cube

    cube = make_cube(tmp_path / "cube.h5", n=400, groups=80)
    args = [str(BIN / "otrain-train"), "--cube", str(cube), "--model-path", str(tmp_path),
            "--model-name", "m", "--epochs", "400", "--workers", "2", "--batch-size", "16",
            "--seed", "1", "--precision", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    folder = tmp_path / "CNN_training" / "m"
    deadline = time.monotonic() + 120
    while not (folder / "checkpoint.pt").is_file():  # at least one epoch done
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"training ended or stalled before its first epoch: {proc.communicate()}")
        time.sleep(0.05)
    time.sleep(0.3)  # inside a later epoch, loader workers running
    code, seconds, err = _stop(proc, sig)
    assert code == status, err
    assert seconds < 5
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].endswith("interrupted" if status == 130 else
                                                  "terminated"), err
    assert not (folder / "m.safetensors").exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    resumed = subprocess.run([*args[:8], "2", *args[9:], "--resume", "--quiet"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert (folder / "m.safetensors").is_file()


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_infer_on_a_local_dask_cluster_interrupted(tmp_path: Path, sig: int,
                                                   status: int) -> None:
    """otrain-infer --scheduler local: the signal (to the whole group, workers included) ends
    the command and its Dask workers within seconds, with its one line and no Dask warnings,
    tracebacks or output file."""
    pytest.importorskip("distributed", reason="the dask extra is not installed")
    import torch

    from otrain.models.modelfile import save_model
    from otrain.models.networks import build_model

    torch.manual_seed(0)
    model = save_model(tmp_path / "m.safetensors", build_model("otrain", 1, (32, 32), 0.3),
                       {"normalisation": "zscore"})
    cutouts = make_labelled_folder(tmp_path / "cut", 1500, 1500, size=32)
    out = tmp_path / "scores.dat"
    proc = subprocess.Popen(
        [str(BIN / "otrain-infer"), "--cutouts", str(cutouts / "true"), str(cutouts / "false"),
         "--model", str(model), "--output", str(out), "--scheduler", "local", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 90
    while len(_children(proc.pid)) < 2:  # the cluster's worker processes are up
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"infer ended or stalled before its cluster started: {proc.communicate()}")
        time.sleep(0.05)
    time.sleep(2.0)  # workers registered, scoring under way
    code, seconds, err = _stop(proc, sig, limit=20)
    if code == 0:
        pytest.skip("infer finished before the signal arrived")
    assert code == status, err
    assert seconds < 5, err
    assert "Traceback" not in err and "WARNING" not in err, err
    assert err.strip().splitlines()[-1].endswith("interrupted" if status == 130 else
                                                  "terminated"), err
    assert not out.exists() and not [p.name for p in tmp_path.iterdir() if p.name[0] == "."]
    time.sleep(0.5)
    assert _children(proc.pid) == []


QUIET_WORKER = """
import sys, threading
from otrain.training.splits import _quiet_worker

def hand_over(exc):  # what multiprocessing.resource_sharer's thread does with an error
    try:
        raise exc
    except BaseException:
        sys.excepthook(*sys.exc_info())

_quiet_worker(0)
for exc in (EOFError("lost"), ConnectionResetError("reset"), ValueError("a real bug")):
    t = threading.Thread(target=hand_over, args=(exc,))
    t.start()
    t.join()
"""


def test_loader_worker_is_quiet_about_a_lost_connection_only() -> None:
    """An interrupted run breaks the hand-over of a batch between a loader worker and the
    training process; the worker's hook prints no traceback for that, and does for others."""
    proc = subprocess.run([sys.executable, "-c", QUIET_WORKER], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "EOFError" not in proc.stderr and "ConnectionResetError" not in proc.stderr
    assert "ValueError: a real bug" in proc.stderr and "Traceback" in proc.stderr
