"""Benchmark of the broker-facing paths: the exported ONNX graph (onnxruntime) against otrain's
own scoring (torch), and :func:`otrain.score_alerts` on real ZTF alert records.

Writes ``benchmarks/results/onnx_stream.json`` with, for the O'TRAIN CNN (random weights,
``l2`` and ``zscore`` normalisation, inside the graph for ONNX):

(a) stamps/s of :func:`otrain.score_stamps` (numpy normalisation + torch) and of onnxruntime on
    the exported file, one thread each, for batches of 1 (an alert at a time) and 256;
(b) the largest |onnxruntime - otrain| P(real) difference on those batches;
(c) alerts/s of :func:`otrain.score_alerts` on fastavro records of the shared ZTF alerts
    (stamp decoding and windowing included), triplet 32x32 window, when the alerts are present.

Each figure is the median of ``--repeats`` timed runs, with the min and max. One thread: the
machine is shared (its load average is recorded).

Usage: ``python benchmarks/onnx_stream.py [--repeats 5]`` (needs the ``onnx`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ZTF = HERE.parents[1] / "shared" / "data" / "ztf" / "ztf_alerts_v3.3.avro"


def timed(fn: Callable[[], object], n_items: int, repeats: int) -> dict[str, float]:
    """Items per second: median, min and max over ``repeats`` runs (after one warm-up)."""
    fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(n_items / (time.perf_counter() - start))
    return {"median": float(np.median(rates)), "min": float(min(rates)),
            "max": float(max(rates))}


def stamps_part(method: str, channels: int, size: int, repeats: int, tmp: Path) -> dict:
    """(a) and (b) for one model configuration."""
    import onnxruntime as ort

    import otrain
    from otrain.broker.onnx_export import check_batch, export_onnx
    from otrain.models.modelfile import save_model
    from otrain.models.networks import build_model

    torch.manual_seed(0)
    names = ["diff", "sci", "ref"][:channels]
    path = tmp / f"m_{method}_{channels}_{size}.safetensors"
    save_model(path, build_model("otrain", channels, size), {"normalisation": method,
                                                            "channels": names})
    model = otrain.load_model(path)
    onnx_path, _ = export_onnx(model.loaded, tmp / f"{path.stem}.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    out: dict = {"method": method, "channels": channels, "size": size}
    for batch in (1, 256):
        x = check_batch(model.loaded, batch, seed=batch)
        ours = otrain.score_stamps(x, model)["p_real"]
        theirs = session.run(["p_real"], {"stamps": x})[0]
        out[f"batch_{batch}"] = {
            "otrain_stamps_per_s": timed(lambda x=x: otrain.score_stamps(x, model), batch,
                                         repeats),
            "onnxruntime_stamps_per_s": timed(
                lambda x=x: session.run(["p_real"], {"stamps": x}), batch, repeats),
            "max_abs_diff": float(np.max(np.abs(ours - theirs))),
        }
    return out


def alerts_part(repeats: int, tmp: Path) -> dict | None:
    """(c): score_alerts on real ZTF records."""
    if not ZTF.exists():
        return None
    import fastavro

    import otrain
    from otrain.models.modelfile import save_model
    from otrain.models.networks import build_model

    with ZTF.open("rb") as fh:
        records = list(islice(fastavro.reader(fh), 256))
    torch.manual_seed(0)
    path = tmp / "ztf.safetensors"
    save_model(path, build_model("otrain", 3, 32), {"normalisation": "l2",
                                                   "channels": ["diff", "sci", "ref"]})
    model = otrain.load_model(path)
    rate = timed(lambda: otrain.score_alerts(records, model), len(records), repeats)
    return {"file": ZTF.name, "n_alerts": len(records), "window": 32,
            "channels": "diff,sci,ref", "alerts_per_s": rate}


def main() -> None:
    """Run the parts and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(HERE / "results" / "onnx_stream.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"python": sys.version.split()[0], "machine": platform.machine(),
                    "cpus": os.cpu_count(), "threads": 1, "torch": torch.__version__,
                    "load_before": os.getloadavg(), "repeats": args.repeats}
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result["stamps"] = [stamps_part(m, c, s, args.repeats, Path(tmp))
                            for m, c, s in (("l2", 1, 32), ("zscore", 1, 32), ("l2", 3, 63))]
        result["alerts"] = alerts_part(args.repeats, Path(tmp))
    result["seconds"] = time.perf_counter() - start
    result["load_after"] = os.getloadavg()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
