"""Benchmark of otrain-convert: cutouts/s for 20,000 single-HDU 32x32 FITS files, peak memory.

Writes ``benchmarks/results/convert.json``. Each measured run is a separate process so that its
peak memory (own and worker processes) is its own. Also measured, on the same files: the
original O'TRAIN way of reading (``astropy.io.fits.open`` of one file after another), and where
the time of one file goes (file read, header parse, whole cutout).

Also: ``otrain-convert`` as a whole process against the original's way as a whole process
(import astropy, ``fits.open`` file after file, ``np.savez``), interleaved; and, given
``--fitsio-python`` (a Python with the ``fitsio`` package), the compiled cfitsio reader's time
per file next to otrain's, interleaved.

Usage: ``python benchmarks/convert.py [--n 20000] [--size 32] [--repeats 3]
[--fitsio-python PATH]``
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
    """``n`` cutouts in true/ and false/, with headers as a pipeline writes them: every
    candidate its own CANDID, magnitude, position and FWHM; the image it came from (FILE,
    FWHMPSF) shared by 100 cutouts; one filter."""
    rng = np.random.default_rng(0)
    for label, count in (("true", n // 2), ("false", n - n // 2)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            header = fits.Header()
            mag = float(rng.uniform(14.0, 21.0))
            for key, value in dict(
                    CANDID=f"{label}{i}", MAG=round(mag, 4),
                    MAGERR=round(0.01 * 10 ** (0.2 * (mag - 14.0)), 4), FILTER="r",
                    FWHM=round(float(rng.uniform(1.5, 4.0)), 3), EDGE="False",
                    RA=round(float(rng.uniform(0.0, 360.0)), 6),
                    DEC=round(float(rng.uniform(-30.0, 60.0)), 6),
                    FILE=f"img_{i // 100:04d}.fits", XPOS=round(float(rng.uniform(0, 4096)), 2),
                    YPOS=round(float(rng.uniform(0, 4096)), 2),
                    FWHMPSF=round(2.0 + (i // 100) % 7 * 0.1, 2)).items():
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


#: The original O'TRAIN's way as a whole process (``python -c``): import astropy, open each file
#: with ``fits.open(memmap=False)`` one after another, read its keywords, keep EDGE == 'False',
#: stack float32, ``np.savez``.
ORIGINAL_PROCESS = """
import glob, sys
import numpy as np
from astropy.io import fits
images, meta = [], []
for folder in ("true", "false"):
    for path in sorted(glob.glob(sys.argv[1] + "/" + folder + "/*.fits")):
        with fits.open(path, memmap=False) as hdus:
            header = hdus[0].header
            if header["EDGE"] == "False":
                images.append(hdus[0].data)
                meta.append((header["CANDID"], header["MAG"], header["MAGERR"],
                             header["FILTER"], header["FWHM"]))
cube = np.asarray(images, dtype=np.float32)[..., None]
np.savez(sys.argv[2], cube=cube, candids=np.array([m[0] for m in meta]))
"""


def whole_processes(cutouts: Path, out: Path, repeats: int) -> dict:
    """``otrain-convert`` as a user runs it, against the original's way as a whole process,
    interleaved; wall seconds of each run."""
    exe = Path(sys.executable).with_name("otrain-convert")
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[float]] = {"otrain_convert": [], "original_way": []}
    for k in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(exe), "--path", str(out / f"o{k}"), "--cube", "c", "--cutouts",
                        str(cutouts), "--quiet"], check=True)
        runs["otrain_convert"].append(round(time.perf_counter() - start, 3))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", ORIGINAL_PROCESS, str(cutouts),
                        str(out / f"orig{k}.npz")], check=True)
        runs["original_way"].append(round(time.perf_counter() - start, 3))
    med = {k: float(np.median(v)) for k, v in runs.items()}
    ratios = [o / c for o, c in zip(runs["original_way"], runs["otrain_convert"], strict=True)]
    return {**runs, "speedup_median": round(med["original_way"] / med["otrain_convert"], 2),
            "speedup_min_max": [round(min(ratios), 2), round(max(ratios), 2)],
            "note": "wall seconds of whole processes (start, imports, listing, reading, "
                    "writing), run one after the other, interleaved"}


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


COMPILED_READER = """
import json, sys, time
import fitsio
files = sys.argv[1:]
def one(path):
    with fitsio.FITS(path) as f:
        header = f[0].read_header()
        image = f[0].read()
    return image, [header.get(k) for k in ("CANDID", "MAG", "MAGERR", "FILTER", "FWHM", "EDGE")]
out = {"fitsio": fitsio.__version__}
for name, func in (("fitsio_header_and_image_us", one),
                   ("fitsio_read_header_true_us", lambda p: fitsio.read(p, header=True))):
    func(files[0])
    start = time.perf_counter()
    for path in files:
        func(path)
    out[name] = round((time.perf_counter() - start) / len(files) * 1e6, 1)
print(json.dumps(out))
"""


def compiled_reader(cutouts: Path, python: str | None, limit: int = 2000,
                    rounds: int = 3) -> dict:
    """cfitsio (through the ``fitsio`` package, in another Python: not an otrain dependency)
    against otrain's reader on the same files, interleaved rounds, microseconds per file."""
    if not python or not Path(python).exists():
        return {"note": f"not measured: no Python with fitsio at {python!r} (--fitsio-python)"}
    files = [str(p) for p in sorted((cutouts / "true").glob("*.fits"))[:limit]]
    rows: dict[str, list[float]] = {}
    for _ in range(rounds):
        proc = subprocess.run([python, "-c", COMPILED_READER, *files], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            return {"note": f"not measured: fitsio failed: {proc.stderr.strip()[-300:]}"}
        run = json.loads(proc.stdout)
        version = run.pop("fitsio")
        for key, value in {**run, **where_time_goes(cutouts, limit)}.items():
            rows.setdefault(key, []).append(value)
    return {"fitsio": version, "files": len(files), "rounds": rounds,
            "per_file_us": {k: {"median": float(np.median(v)), "min": min(v), "max": max(v)}
                            for k, v in rows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved whole processes")
    parser.add_argument("--one", nargs=3, metavar=("CUTOUTS", "WORKERS", "OUT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--fitsio-python", default=None,
                        help="a Python with the fitsio package (cfitsio): its per-file reading "
                             "time is measured next to otrain's")
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
        processes = whole_processes(root / "cutouts", root / "whole", args.repeats)
        compiled = compiled_reader(root / "cutouts", args.fitsio_python)
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
        "whole_process_seconds": processes,
        "compiled_reader": compiled,
        "target_issue_16": "otrain-convert whole process >= 10x a one-at-a-time astropy reader",
        "load_average_end": [round(x, 2) for x in __import__("os").getloadavg()],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
