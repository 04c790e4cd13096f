"""Benchmark of otrain-convert: cutouts/s for 20,000 single-HDU 32x32 FITS files, peak memory.

Writes ``benchmarks/results/convert.json``. Each measured run is a separate process so that its
peak memory (own and worker processes) is its own. Also measured, on the same files: the
original O'TRAIN way of reading (``astropy.io.fits.open`` of one file after another), and where
the time of one file goes (file read, header parse, whole cutout).

Usage: ``python benchmarks/convert.py [--n 20000] [--size 32]``
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

HERE = Path(__file__).resolve().parent


def make_files(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for label, count in (("true", n // 2), ("false", n - n // 2)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            header = fits.Header()
            for key, value in dict(CANDID=f"{label}{i}", MAG=18.0, MAGERR=0.05, FILTER="r",
                                   FWHM=2.5, EDGE="False", RA=10.0, DEC=-5.0, FILE="img.fits",
                                   XPOS=100.0, YPOS=100.0, FWHMPSF=2.4).items():
                header[key] = value
            fits.writeto(root / label / f"{label}_{i:06d}.fits",
                         rng.normal(size=(size, size)).astype(np.float32), header)


def one_run(cutouts: str, workers: int, out: str) -> dict:
    from otrain.convert.folders import ConvertConfig, convert_cutouts

    start = time.perf_counter()
    report = convert_cutouts(cutouts, out, ConvertConfig(workers=workers), quiet=True)
    seconds = time.perf_counter() - start
    n_files = report.n_true_files + report.n_false_files
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"workers": workers, "files": n_files, "seconds": round(seconds, 3),
            "cutouts_per_s": round(n_files / seconds, 1),
            "peak_rss_main_mb": round(self_kb / 1024, 1),
            "peak_rss_worker_mb": round(child_kb / 1024, 1)}


def original_style(cutouts: Path, limit: int) -> dict:
    files = sorted((cutouts / "true").glob("*.fits"))[:limit // 2]
    files += sorted((cutouts / "false").glob("*.fits"))[:limit // 2]
    start = time.perf_counter()
    images = []
    for path in files:
        hdus = fits.open(path, memmap=False)
        header = hdus[0].header
        if header["EDGE"] == "False":
            images.append(hdus[0].data)
            _ = (header["CANDID"], header["MAG"], header["MAGERR"], header["FILTER"],
                 header["FWHM"])
        hdus.close()
    np.asarray(images, dtype=np.float32)
    seconds = time.perf_counter() - start
    return {"files": len(files), "seconds": round(seconds, 3),
            "cutouts_per_s": round(len(files) / seconds, 1)}


def where_time_goes(cutouts: Path, limit: int = 2000) -> dict:
    from otrain.cutouts.fitsfile import parse_hdus, read_bytes
    from otrain.cutouts.reading import TRAINING_KEYWORDS, read_cutout

    files = sorted((cutouts / "true").glob("*.fits"))[:limit]
    out = {}
    for name, func in (
        ("read_bytes_us", read_bytes),
        ("read_and_parse_us", lambda p: parse_hdus(read_bytes(p))),
        ("read_cutout_us", lambda p: read_cutout(p, required=TRAINING_KEYWORDS)),
        ("astropy_fits_open_us", lambda p: fits.open(p, memmap=False)[0].data),
    ):
        start = time.perf_counter()
        for path in files:
            func(path)
        out[name] = round((time.perf_counter() - start) / len(files) * 1e6, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--one", nargs=3, metavar=("CUTOUTS", "WORKERS", "OUT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(HERE / "results" / "convert.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one[0], int(args.one[1]), args.one[2])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_files(root / "cutouts", args.n, args.size)
        print(f"wrote {args.n} files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        runs = []
        for workers in (1, 2):
            out = root / f"cube_w{workers}.h5"
            proc = subprocess.run([sys.executable, __file__, "--one", str(root / "cutouts"),
                                   str(workers), str(out)], capture_output=True, text=True,
                                  check=True)
            runs.append(json.loads(proc.stdout))
            print(runs[-1], file=sys.stderr)
        baseline = original_style(root / "cutouts", min(args.n, 5000))
        profile = where_time_goes(root / "cutouts")
    best = max(r["cutouts_per_s"] for r in runs)
    result = {
        "benchmark": "convert", "n_files": args.n, "size": args.size,
        "machine": {"cpus": len(__import__("os").sched_getaffinity(0)),
                    "python": platform.python_version()},
        "runs": runs,
        "original_style_serial_astropy": baseline,
        "per_file_microseconds": profile,
        "reference_original_otrain_cutouts_per_s": 1000,
        "speedup_vs_reference": round(best / 1000, 1),
        "speedup_vs_original_style_measured": round(best / baseline["cutouts_per_s"], 1),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
