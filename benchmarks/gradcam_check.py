"""Where the Grad-CAM maps of a model put the heat, before and after the issue-15 fix.

For the true positives of a labelled cube (the simulator puts every candidate at the cutout
centre), compares the pre-fix Grad-CAM (maps taken *before* the ReLU after the last convolution,
gradient of the explained class's logit alone), Grad-CAM with rectified maps and the log-odds,
the default (HiResCAM on the network's ``cam_layer``) and occlusion: the share of the map's mass
within ``--radius`` pixels of the centre, the distance of the map's peak from the centre, and
the deletion test (drop of P(real) when the top 10 % of the map, or a random 10 %, is masked).

Writes ``benchmarks/results/gradcam_check.json``.

Usage: ``python benchmarks/gradcam_check.py --model demo_output/CNN_training/demo/demo.safetensors
--cube demo_output/CNN_training/demo/test_set/datacube/cube_test.h5``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from otrain.datacube.hdf5 import open_datacube
from otrain.evaluation.explain import deletion_test, occlusion_maps
from otrain.evaluation.gradcam import compute_grad_cam
from otrain.models.modelfile import load_model, predict_proba
from otrain.models.normalise import normalise

HERE = Path(__file__).resolve().parent


def pre_fix_grad_cam(loaded, images: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Grad-CAM as otrain computed it before issue 15 (pre-ReLU maps, one logit)."""
    kept: list[torch.Tensor] = []
    handle = loaded.model.last_conv.register_forward_hook(lambda _m, _i, o: kept.append(o))
    try:
        x = torch.from_numpy(normalise(images, loaded.normalisation)).requires_grad_(True)
        with torch.enable_grad():
            logits = loaded.model(x)
            idx = torch.from_numpy(target)[:, None]
            (grads,) = torch.autograd.grad(logits.gather(1, idx).sum(), kept[0])
        cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * kept[0]).sum(1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=images.shape[2:], mode="bilinear",
                                              align_corners=False)[:, 0].detach()
    finally:
        handle.remove()
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-30), 0 * cam).numpy()


def describe(maps: np.ndarray, radius: float, loaded, images, target) -> dict:
    n, h, w = maps.shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    mass = maps.reshape(n, -1).sum(1)
    near = (maps * (r <= radius)).reshape(n, -1).sum(1) / np.where(mass > 0, mass, 1)
    peaks = np.array([r.ravel()[np.argmax(m)] for m in maps.reshape(n, -1)])
    d = deletion_test(loaded, images, maps, target).summary()
    return {"mass_within_radius_mean": float(np.mean(near)),
            "mass_within_radius_uniform": float(np.mean(r <= radius)),
            "peak_distance_median": float(np.median(peaks)),
            "n_peak_within_radius": int(np.sum(peaks <= radius)), "n": int(n),
            "n_empty": int(np.sum(mass == 0)), "deletion": d}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cube", required=True)
    parser.add_argument("--n", type=int, default=48, help="true positives looked at (48)")
    parser.add_argument("--radius", type=float, default=4.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    loaded = load_model(args.model)
    with open_datacube(args.cube) as cube:
        rows = np.flatnonzero(cube.labels == 1)
        images = cube.read(rows)
    p = predict_proba(loaded, images)
    tp = np.flatnonzero(p > loaded.threshold)[: args.n]
    images, target = images[tp], np.ones(tp.size, np.int64)
    out = {"model": args.model, "cube": args.cube, "radius": args.radius,
           "pre_fix_grad_cam": describe(pre_fix_grad_cam(loaded, images, target), args.radius,
                                        loaded, images, target),
           "grad_cam_fixed": describe(compute_grad_cam(loaded, images, mode="gradcam",
                                                       layer="last_conv").heatmaps,
                                      args.radius, loaded, images, target),
           "hirescam_default": describe(compute_grad_cam(loaded, images).heatmaps, args.radius,
                                        loaded, images, target),
           "occlusion": describe(occlusion_maps(loaded, images, target), args.radius, loaded,
                                 images, target)}
    out["seconds"] = time.perf_counter() - start
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "gradcam_check.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
