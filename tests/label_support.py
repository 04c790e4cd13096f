"""Helpers of the ``otrain label`` tests: cutout folders, a real server process, HTTP calls."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from conftest import BIN, write_mef


def triplet_folder(root: Path, n: int = 6, size: int = 21, seed: int = 0,
                   **keys: object) -> Path:
    """``root`` with ``n`` diff/sci/ref cutouts named c_000.fits..., half holding a source."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    blob = 20.0 * np.exp(-((xx - size // 2) ** 2 + (yy - size // 2) ** 2) / 4.0)
    for i in range(n):
        planes = {name: rng.normal(size=(size, size)) + (blob if i % 2 == 0 else 0.0)
                  for name in ("DIFF", "SCI", "REF")}
        write_mef(root / f"c_{i:03d}.fits", planes, MAG=18.0 + 0.1 * i, **keys)
    return root


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``otrain-label ... --port P`` run as a user runs it, on 127.0.0.1."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.args = [str(BIN / "otrain-label"), *args, "--port", str(self.port)]
        self.proc: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> Server:
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stderr.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill(signal.SIGTERM)


def call(url: str, body: Any = None, method: str | None = None,
         headers: dict[str, str] | None = None, raw: bytes | None = None
         ) -> tuple[int, Any]:
    """HTTP request; returns (status, parsed JSON or bytes)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    hdrs = dict(headers or {})
    if body is not None and "Content-Type" not in hdrs:
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, payload, ctype = resp.status, resp.read(), resp.headers.get("Content-Type")
    except urllib.error.HTTPError as exc:
        status, payload, ctype = exc.code, exc.read(), exc.headers.get("Content-Type")
    if ctype and ctype.startswith("application/json"):
        return status, json.loads(payload)
    return status, payload
