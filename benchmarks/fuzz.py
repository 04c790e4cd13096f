"""Differential fuzzing of otrain's readers: a seeded mutation loop over valid files.

Seeds (made here, or read at run time, never stored): a single-HDU cutout, a multi-extension
cutout, a gzipped cutout, a tile-compressed cutout, an HDF5 and an ``.npz`` datacube, a model
file, and two real ZTF alert packets (the first records of the smallest file in
``/work/shared/data/ztf``, when present). Each case mutates one seed (bit flips, random bytes,
truncation, insertion, a duplicated block, or a header card set to a random value) and reads it:

- FITS: the fast parser (:func:`otrain.cutouts.fitsfile.parse_hdus`) must agree with astropy
  (same number of image HDUs, same pixels, NaN-equal) wherever astropy reads every HDU's data,
  and fail with :class:`~otrain.cutouts.fitsfile.FitsFormatError` where astropy fails;
  :func:`otrain.cutouts.read_cutout` must return a cutout or raise one ``CutoutError``.
- cubes, models, alerts: the reader returns or raises ``OtrainError``; nothing else escapes.

Every case runs under a per-case alarm (a hang counts as a failure) and the process under an
address-space limit (memory stays bounded: a MemoryError counts as a failure).

Usage: ``python benchmarks/fuzz.py [--seconds 120] [--seed 0] [--out benchmarks/results/fuzz.json]``
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ZTF_DIR = HERE.parent.parent / "shared" / "data" / "ztf"
CASE_SECONDS = 5
MEMORY_LIMIT = 3 << 30


class Disagreement(Exception):
    """The fast FITS parser and astropy read a file differently (reported, not an escape)."""


class Hang(Exception):
    """A case ran longer than :data:`CASE_SECONDS`."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang()


# ------------------------------------------------------------------------------------------
# Seeds
# ------------------------------------------------------------------------------------------
def fits_seeds(rng: np.random.Generator) -> dict[str, bytes]:
    from astropy.io import fits

    image = rng.normal(100.0, 5.0, (24, 24)).astype(np.float32)
    header = fits.Header()
    for key, value in {"CANDID": "c1", "MAG": 18.5, "MAGERR": 0.05, "FILTER": "r",
                       "FWHM": 2.5, "EDGE": "False", "RA": 150.1, "DEC": 2.2}.items():
        header[key] = value
    out: dict[str, bytes] = {}
    buf = io.BytesIO()
    fits.PrimaryHDU(image, header).writeto(buf)
    out["fits_single"] = buf.getvalue()
    out["fits_gzip"] = gzip.compress(out["fits_single"], mtime=0)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(header=header)]
                 + [fits.ImageHDU((image * k).astype(np.float32), name=n)
                    for k, n in ((1, "DIFF"), (2, "SCI"), (3, "REF"))]).writeto(buf)
    out["fits_mef"] = buf.getvalue()
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(header=header),
                  fits.CompImageHDU(image, name="DIFF", compression_type="RICE_1")]).writeto(buf)
    out["fits_tile"] = buf.getvalue()
    buf = io.BytesIO()
    fits.PrimaryHDU(rng.integers(0, 30000, (16, 16)).astype(np.int16)).writeto(buf)
    out["fits_int16"] = buf.getvalue()
    return out


def file_seeds(rng: np.random.Generator, tmp: Path) -> dict[str, tuple[str, bytes]]:
    """Name -> (suffix, bytes) of the non-FITS seeds."""
    import torch

    from otrain.datacube.hdf5 import write_datacube
    from otrain.models.modelfile import save_model
    from otrain.models.networks import build_model

    images = rng.normal(size=(6, 1, 8, 8)).astype(np.float32)
    table = {"candid": np.array([f"c{i}" for i in range(6)]), "label": np.arange(6) % 2,
             "mag": np.linspace(17, 19, 6)}
    write_datacube(tmp / "cube.h5", images, table, ["diff"])
    np.savez(tmp / "cube.npz", cube=np.moveaxis(images, 1, -1), labels=np.arange(6) % 2,
             mags=np.linspace(17, 19, 6), candids=np.array([f"c{i}" for i in range(6)]))
    torch.manual_seed(0)
    save_model(tmp / "m.safetensors", build_model("otrain", 1, 16, 0.0),
               {"normalisation": "zscore", "channels": ["diff"]})
    out = {"cube_h5": (".h5", (tmp / "cube.h5").read_bytes()),
           "cube_npz": (".npz", (tmp / "cube.npz").read_bytes()),
           "model": (".safetensors", (tmp / "m.safetensors").read_bytes())}
    alerts = sorted(ZTF_DIR.glob("*.avro"), key=lambda p: p.stat().st_size)
    if alerts:
        import fastavro

        with open(alerts[0], "rb") as handle:
            reader = fastavro.reader(handle)
            records = [rec for _, rec in zip(range(2), reader, strict=False)]
            schema = reader.writer_schema
        buf = io.BytesIO()
        fastavro.writer(buf, schema, records)
        out["ztf_alert"] = (".avro", buf.getvalue())
    return out


# ------------------------------------------------------------------------------------------
# Mutations
# ------------------------------------------------------------------------------------------
def _set_card(data: bytearray, rng: np.random.Generator) -> str:
    cards = [i for i in range(0, min(len(data), 2880 * 4), 80)
             if data[i:i + 8].strip() and data[i + 8:i + 10] == b"= "]
    if not cards:
        return "none"
    i = int(rng.choice(cards))
    value = rng.choice(["0", "-1", "99999999", "1e30", "'abc'", "T", "", "'", "-32", "64",
                        "3", "1.5", str(int(rng.integers(-100, 100)))])
    data[i + 10:i + 80] = f"{value:>20}".ljust(70).encode()[:70]
    return f"card {data[i:i + 8].decode(errors='replace').strip()}={value}"


def mutate(raw: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random mutation of ``raw`` and its description."""
    data = bytearray(raw)
    kind = rng.choice(["flip", "bytes", "truncate", "insert", "duplicate", "card", "multi"])
    if kind == "card" and raw[:6] == b"SIMPLE":
        return bytes(data), _set_card(data, rng)
    if kind in ("flip", "multi", "card"):
        for _ in range(1 if kind != "multi" else int(rng.integers(2, 20))):
            i = int(rng.integers(0, len(data)))
            data[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(data), kind
    if kind == "bytes":
        i = int(rng.integers(0, len(data)))
        n = int(rng.integers(1, 64))
        data[i:i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        return bytes(data), kind
    if kind == "truncate":
        return bytes(data[:int(rng.integers(0, len(data)))]), kind
    if kind == "insert":
        i = int(rng.integers(0, len(data)))
        return bytes(data[:i]) + rng.integers(0, 256, int(rng.integers(1, 3000)),
                                              dtype=np.uint8).tobytes() + bytes(data[i:]), kind
    i = int(rng.integers(0, len(data)))
    n = int(rng.integers(1, 2880))
    return bytes(data[:i]) + bytes(data[i:i + n]) + bytes(data[i:]), "duplicate"


# ------------------------------------------------------------------------------------------
# Oracles: each returns "ok", "rejected" (the one expected error) or raises AssertionError
# ------------------------------------------------------------------------------------------
def _astropy_images(raw: bytes) -> list[np.ndarray] | None:
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw),
                           memmap=False) as hdul:
                return [np.asarray(h.data, dtype=np.float32) for h in hdul
                        if h.is_image and h.data is not None]
    except Exception:  # astropy does not read it: otrain must reject it
        return None


def check_fits(raw: bytes, path: Path) -> str:
    from otrain.cutouts.fitsfile import FitsFormatError, parse_hdus, read_bytes
    from otrain.cutouts.reading import read_cutout
    from otrain.errors import CutoutError

    path.write_bytes(raw)
    try:  # the guarantee: a cutout or one CutoutError, nothing else
        read_cutout(path)
        outcome = "ok"
    except CutoutError:
        outcome = "rejected"
    theirs = _astropy_images(raw)
    try:
        ours = [h.data for h in parse_hdus(read_bytes(path)) if h.data is not None]
    except FitsFormatError:
        ours = None
    if theirs is not None and ours is not None:
        if len(ours) != len(theirs):
            raise Disagreement(f"{len(ours)} image HDUs, astropy {len(theirs)}")
        for a, b in zip(ours, theirs, strict=True):
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                raise Disagreement(f"pixels or shape {a.shape} differ from astropy {b.shape}")
    elif theirs:
        raise Disagreement("astropy reads it, the fast parser rejects it")
    elif ours is not None and theirs is None:
        raise Disagreement("the fast parser reads what astropy rejects")
    return outcome


def check_other(raw: bytes, path: Path) -> str:
    from otrain.errors import OtrainError

    path.write_bytes(raw)
    try:
        if path.suffix in (".h5", ".npz"):
            from otrain.datacube.hdf5 import open_datacube

            with open_datacube(path) as cube:
                cube.read(np.arange(len(cube)))
                _ = cube.labels
        elif path.suffix == ".safetensors":
            from otrain.models.modelfile import load_model, predict_proba

            predict_proba(load_model(path), np.zeros((2, 1, 16, 16), np.float32))
        else:
            from otrain.alerts.reading import read_alerts

            read_alerts([path], quiet=True)
    except OtrainError:
        return "rejected"
    return "ok"


# ------------------------------------------------------------------------------------------
# Loop
# ------------------------------------------------------------------------------------------
def run(seconds: float, seed: int, per_family: int | None = None) -> dict:
    """Mutate and check until ``seconds`` have passed; return the counts and failures."""
    from astropy import log

    log.setLevel("ERROR")
    warnings.simplefilter("ignore")
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _alarm)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="otrain-fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        families: dict[str, tuple[str, bytes, Callable[[bytes, Path], str]]] = {
            name: (".fits.gz" if name == "fits_gzip" else ".fits", raw, check_fits)
            for name, raw in fits_seeds(rng).items()}
        families |= {name: (suffix, raw, check_other)
                     for name, (suffix, raw) in file_seeds(rng, tmp).items()}
        stats = {name: {"cases": 0, "ok": 0, "rejected": 0, "failures": 0, "disagreements": 0}
                 for name in families}
        failures: list[dict] = []
        disagreements: list[dict] = []
        start = time.monotonic()
        names = list(families)
        k = 0
        while time.monotonic() - start < seconds:
            name = names[k % len(names)]
            k += 1
            if per_family is not None and stats[name]["cases"] >= per_family:
                if all(s["cases"] >= per_family for s in stats.values()):
                    break
                continue
            suffix, raw, check = families[name]
            case_seed = int(rng.integers(0, 2**63))
            if name == "fits_gzip":  # mutate the FITS inside, so gzip is not always broken
                inner, how = mutate(gzip.decompress(raw), np.random.default_rng(case_seed))
                mutated = gzip.compress(inner, mtime=0)
            else:
                mutated, how = mutate(raw, np.random.default_rng(case_seed))
            stats[name]["cases"] += 1
            signal.alarm(CASE_SECONDS)
            try:
                stats[name][check(mutated, tmp / f"case{suffix}")] += 1
            except Disagreement as exc:
                stats[name]["disagreements"] += 1
                if len(disagreements) < 50:
                    disagreements.append({"family": name, "case_seed": case_seed,
                                          "mutation": how, "what": str(exc)})
            except (Exception, Hang) as exc:  # an escape, a hang or MemoryError: a finding
                stats[name]["failures"] += 1
                if len(failures) < 50:
                    failures.append({"family": name, "case_seed": case_seed, "mutation": how,
                                     "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                                     "where": traceback.format_exc(limit=-2)[-400:]})
            finally:
                signal.alarm(0)
    total = sum(s["cases"] for s in stats.values())
    return {"seed": seed, "seconds": round(time.monotonic() - start, 1), "cases": total,
            "case_timeout_s": CASE_SECONDS, "memory_limit_gb": MEMORY_LIMIT / 2**30,
            "n_failures": sum(s["failures"] for s in stats.values()),
            "n_disagreements": sum(s["disagreements"] for s in stats.values()),
            "families": stats, "failures": failures, "disagreements": disagreements,
            "ztf_seed_present": "ztf_alert" in stats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-family", type=int, default=None,
                        help="stop once every family has this many cases")
    parser.add_argument("--out", default=str(HERE / "results" / "fuzz.json"))
    args = parser.parse_args(argv)
    result = run(args.seconds, args.seed, args.per_family)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['cases']} cases in {result['seconds']} s: {result['n_failures']} failures "
          f"(escapes, hangs), {result['n_disagreements']} disagreements with astropy "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
