"""A small budget of the differential fuzzing in benchmarks/fuzz.py (the longer run writes
benchmarks/results/fuzz.json): mutated cutouts (single-HDU, multi-extension, gzipped,
tile-compressed, int16), HDF5 and .npz cubes, model files and real ZTF alert packets; nothing
but the one expected error escapes a reader, nothing hangs (5 s per case), memory is bounded
(3 GB address space), and the fast FITS walk never disagrees with astropy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fuzz_small_budget(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz.py"), "--seconds",
                           "8", "--seed", "17", "--out", str(out)], capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["n_failures"] == 0, json.dumps(result["failures"][:5], indent=1)
    # the fast FITS walk reads exactly what astropy reads, and refuses what astropy refuses
    assert result["n_disagreements"] == 0, json.dumps(result["disagreements"][:5], indent=1)
    for name, stats in result["families"].items():
        assert stats["cases"] >= 5, (name, stats)
        assert stats["ok"] + stats["rejected"] + stats["disagreements"] == stats["cases"]
