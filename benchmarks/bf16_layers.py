"""Where bf16 scoring moves P(real): layer by layer, on networks trained on the real ZTF alerts.

Issue 16 asks for bf16 scores of an fp32-trained model within 1e-3 of its fp32 scores. This
benchmark trains fp32 networks on the shared ZTF alerts (braai's ``drb >= 0.5`` as the label,
the diff/sci/ref triplet, 41x41, split by ``objectId``; vgg6, the ``auto`` choice for alerts, and
the O'TRAIN CNN; a few seeds) and scores every shared alert, and the ``ztf_extra`` alerts when
present, in fp32 and with bf16 in chosen layers only:

* ``shipped``: :func:`otrain.models.precision.low_precision_scorer`, what ``--precision bf16``
  runs (every layer bf16 but the logits layer, activations stored in bf16);
* ``input only``: the network in fp32 on the image rounded to bf16;
* ``only layer k``: that convolution or dense layer alone takes bf16 operands (its input and
  weights rounded to bf16, products summed in fp32, bias and output in fp32), every other
  layer fp32: how much each rounding contributes;
* ``all but first``: every layer but the first and the logits in bf16 (that way);
* ``deep convolutions``: the convolutions after the first two in bf16 (most of the work);
* ``all``: every layer that way.

For each: the largest, 99.9th and 99th percentile |P(real)| difference from fp32 (with the
model's temperature and logit bias, as otrain reports P(real)), and the share of the network's
multiply-adds in the bf16 layers. Writes ``benchmarks/results/bf16_layers.json``.

Usage: ``python benchmarks/bf16_layers.py [--data ../shared/data/ztf] [--seeds 2]``
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import otrain
from otrain.alerts import LabelRule
from otrain.convert.alerts import convert_alerts
from otrain.convert.folders import ConvertConfig
from otrain.datacube.hdf5 import open_datacube
from otrain.models.ensemble import logits_probabilities
from otrain.models.modelfile import load_model
from otrain.models.normalise import normalise
from otrain.models.precision import hardware, low_precision_scorer, resolve_precision
from otrain.training.config import TrainConfig
from otrain.training.loop import train

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
BF16 = torch.bfloat16


class _Bf16Operands(nn.Module):
    """A conv/linear layer whose input and weights are rounded to bf16 (fp32 sums, bias, output)."""

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.layer
        # the operands rounded to bf16, then an fp32 product: nothing else is rounded
        xr, w = x.to(BF16).float(), m.weight.to(BF16).float()
        if isinstance(m, nn.Conv2d):
            return F.conv2d(xr, w, m.bias, m.stride, m.padding, m.dilation, m.groups)
        return F.linear(xr, w, m.bias)


def _layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _with_bf16(net: nn.Module, chosen: set[int]) -> nn.Module:
    net = copy.deepcopy(net)
    for i, (name, layer) in enumerate(_layers(net)):
        if i in chosen:
            parent = net.get_submodule(name.rpartition(".")[0])
            setattr(parent, name.rpartition(".")[2], _Bf16Operands(layer))
    return net


def _macs(net: nn.Module, shape: tuple[int, ...]) -> list[int]:
    """Multiply-adds of each conv/linear layer for one cutout."""
    counts: list[int] = []

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        counts.append(int(module.weight.numel() * (out[0, 0].numel() if out.dim() == 4 else 1)))

    handles = [m.register_forward_hook(hook) for _, m in _layers(net)]
    with torch.no_grad():
        net(torch.zeros((1, *shape)))
    for h in handles:
        h.remove()
    return counts


def _diff(p: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    d = np.abs(p - ref)
    return {"max": float(d.max()), "p999": float(np.quantile(d, 0.999)),
            "p99": float(np.quantile(d, 0.99)), "median": float(np.median(d))}


def study(model_file: Path, images: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every variant's P(real) differences from fp32, per image set."""
    loaded = load_model(model_file)
    net = loaded.members[0].eval()
    t, b = loaded.temperature, loaded.logit_bias
    n_layers = len(_layers(net))
    shape = next(iter(images.values())).shape[1:]
    macs = _macs(net, shape)
    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "shipped": low_precision_scorer(net, resolve_precision("bf16", "cpu", inference=True),
                                        torch.device("cpu"))}
    share = {"shipped": sum(macs[:-1]) / sum(macs)}
    variants["input only"] = lambda x: net(x.to(BF16).float())
    share["input only"] = 0.0
    for k in range(n_layers - 1):  # the logits layer is fp32 in every variant
        variants[f"only layer {k} ({_layers(net)[k][0]})"] = _with_bf16(net, {k})
        share[f"only layer {k} ({_layers(net)[k][0]})"] = macs[k] / sum(macs)
    variants["all but first"] = _with_bf16(net, set(range(1, n_layers - 1)))
    share["all but first"] = sum(macs[1:-1]) / sum(macs)
    deep = {i for i, (_, m) in enumerate(_layers(net)) if isinstance(m, nn.Conv2d) and i >= 2}
    variants["deep convolutions"] = _with_bf16(net, deep)
    share["deep convolutions"] = sum(macs[i] for i in deep) / sum(macs)
    variants["all"] = _with_bf16(net, set(range(n_layers - 1)))
    share["all"] = sum(macs[:-1]) / sum(macs)
    out: dict[str, Any] = {"arch": type(net).__name__, "layers": [n for n, _ in _layers(net)],
                           "macs_per_cutout": macs, "sets": {}}
    for set_name, raw in images.items():
        x = torch.from_numpy(normalise(raw, loaded.normalisation)).float()
        with torch.inference_mode():
            ref = logits_probabilities(net(x).double(), t, b)
            rows = {name: {**_diff(logits_probabilities(f(x).double(), t, b), ref),
                           "bf16_share_of_macs": round(share[name], 4)}
                    for name, f in variants.items()}
        out["sets"][set_name] = {"n": len(x), "p_real_std": float(ref.std()), "variants": rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA / "ztf")
    parser.add_argument("--extra", type=Path, default=DATA / "ztf_extra")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--archs", default="vgg6,otrain")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bf16_layers.json")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data}: no ZTF alerts (the shared data is not beside the repo)")
    torch.set_num_threads(2)
    start = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory(prefix="otrain-bf16-") as tmpdir:
        tmp = Path(tmpdir)
        cfg = ConvertConfig(channels=("diff", "sci", "ref"), cutout_size=41, frac_true=None)
        convert_alerts(args.data, tmp / "shared.h5", cfg, LabelRule("drb", 0.5), quiet=True)
        paths = {"shared": tmp / "shared.h5"}
        if args.extra.exists():
            convert_alerts(args.extra, tmp / "extra.h5", cfg, None, quiet=True)
            paths["ztf_extra"] = tmp / "extra.h5"
        images = {}
        for name, path in paths.items():
            with open_datacube(path) as cube:
                images[name] = np.asarray(cube.read(slice(None)), dtype=np.float32)
        for arch in args.archs.split(","):
            for seed in range(args.seeds):
                config = TrainConfig(epochs=args.epochs, patience=10, arch=arch, seed=seed,
                                     group_by="objectId", test_frac=0.25, precision="fp32",
                                     workers=0)
                result = train(tmp / "shared.h5", tmp / "models", f"{arch}_{seed}", config,
                               overwrite=True, quiet=True)
                run = {"seed": seed, "epochs_run": result.epochs_run,
                       **study(result.model_file, images)}
                runs.append(run)
                shipped = run["sets"]["shared"]["variants"]["shipped"]
                print(f"{arch} seed {seed}: shipped bf16 max |dP| {shipped['max']:.2e}",
                      flush=True)
    out = {"benchmark": "bf16_layers", "otrain_version": otrain.__version__,
           "torch": torch.__version__, "cpu": hardware("cpu"), "tolerance": 1e-3,
           "labels": "braai's drb >= 0.5 (a machine score, not human vetting)",
           "training": {"precision": "fp32", "epochs": args.epochs, "patience": 10,
                        "split": "objectId, test 25 %"},
           "runs": runs, "seconds": round(time.perf_counter() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(out, indent=1) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
