"""Grad-CAM (otrain.evaluation.gradcam): heatmaps, hooks, focus, overlays and otrain-grad-cam."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from conftest import assert_clean_error, blob_cutouts, run_cli
from otrain.datacube.hdf5 import open_datacube, write_datacube
from otrain.errors import OtrainError
from otrain.evaluation.gradcam import (
    CATEGORIES,
    compute_grad_cam,
    grad_cam,
    run_grad_cam,
    select_cutouts,
)
from otrain.models.modelfile import LoadedModel, load_model, predict_proba, save_model
from otrain.models.networks import build_model
from otrain.models.normalise import normalise

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the tests share 2 cores


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small vgg6 trained for a few seconds to find blobs anywhere in the cutout."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x, y = blob_cutouts(1024, rng, SIZE)
    torch.manual_seed(0)
    model = build_model("vgg6", 1, SIZE, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(normalise(x, "zscore")), torch.from_numpy(y)
    for _ in range(150):
        idx = torch.from_numpy(rng.integers(0, len(x), 64))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    path = tmp_path_factory.mktemp("model") / "blob.safetensors"
    save_model(path, model.eval(), {"normalisation": "zscore", "channels": ["diff"]})
    return path


def test_heatmap_shape_range_and_focus_on_the_source(trained: Path) -> None:
    loaded = load_model(trained)
    rng = np.random.default_rng(5)
    for y0, x0 in ((4.0, 11.0), (11.0, 4.0), (8.0, 8.0)):
        x, _ = blob_cutouts(16, rng, SIZE, centre=(y0, x0))
        real = x[1::2]
        res = compute_grad_cam(loaded, real)
        assert res.heatmaps.shape == (8, SIZE, SIZE)
        assert np.isfinite(res.heatmaps).all()
        assert res.heatmaps.min() >= 0 and res.heatmaps.max() <= 1
        assert (res.p_real > 0.5).all() and (res.target == 1).all()
        mean = res.heatmaps.mean(axis=0)
        peak = np.unravel_index(np.argmax(mean), mean.shape)
        assert abs(peak[0] - y0) <= 3 and abs(peak[1] - x0) <= 3, (peak, (y0, x0))
        assert np.allclose(res.p_real, predict_proba(loaded, real))
    assert grad_cam(loaded, real[:, 0]).shape == (8, SIZE, SIZE)  # (N, H, W) accepted


def test_hooks_give_the_textbook_grad_cam(trained: Path) -> None:
    """Recompute Grad-CAM by hand through VGG6's layers and compare."""
    loaded = load_model(trained)
    x, _ = blob_cutouts(4, np.random.default_rng(1), SIZE)
    model, a = loaded.model, loaded.model.act
    for i in range(4):
        inp = torch.from_numpy(normalise(x[i : i + 1], "zscore"))
        h = model.drop1(model.pool1(a(model.conv2(a(model.conv1(inp))))))
        z = a(model.last_conv(a(model.conv3(h))))  # the rectified maps A, as in the paper
        z.retain_grad()
        out = model.out(model.drop3(a(model.fc1(model.flatten(model.drop2(model.pool2(a(z))))))))
        cls = int(torch.softmax(out, 1)[0, 1] > 0.5)
        (out[0, cls] - out[0, 1 - cls]).backward()  # the log-odds of the explained class
        cam = torch.relu((z.grad.mean(dim=(2, 3), keepdim=True) * z).sum(1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=(SIZE, SIZE), mode="bilinear")[0, 0]
        expected = (cam / cam.max()).detach().numpy() if cam.max() > 0 else np.zeros_like(cam)
        np.testing.assert_allclose(grad_cam(loaded, x[i : i + 1], mode="gradcam")[0], expected,
                                   atol=1e-5)


def test_flat_heatmap_is_zeros_not_nan() -> None:
    model = build_model("vgg6", 1, SIZE, 0.0)
    with torch.no_grad():
        model.last_conv.weight.zero_()
        model.last_conv.bias.zero_()
    loaded = LoadedModel(model.eval(), {"channels": ["diff"], "input_size": [SIZE, SIZE],
                                        "normalisation": "zscore", "threshold": 0.5})
    x, _ = blob_cutouts(3, np.random.default_rng(2), SIZE)
    heat = grad_cam(loaded, x)
    assert np.isfinite(heat).all() and not heat.any()
    with pytest.raises(OtrainError, match="no layer 'nope'"):
        grad_cam(loaded, x, layer="nope")


def test_selection_is_seeded_and_allows_fewer_than_asked() -> None:
    labels = np.array([1, 1, 1, 0, 0, 1, 0, -1])
    p = np.array([0.9, 0.8, 0.2, 0.1, 0.7, 0.95, 0.3, 0.9])
    sel = select_cutouts(labels, p, 0.5, n_random=2, seed=3)
    assert sel["false_negative"].tolist() == [2] and sel["false_positive"].tolist() == [4]
    assert len(sel["true_positive"]) == 2 and set(sel["true_positive"]) <= {0, 1, 5}
    assert sel["true_negative"].tolist() == [3, 6]  # fewer than... exactly 2 exist
    again = select_cutouts(labels, p, 0.5, n_random=2, seed=3)
    assert all(np.array_equal(sel[k], again[k]) for k in CATEGORIES)
    assert select_cutouts(labels, p, 0.5, n_random=100, seed=0)["true_positive"].tolist() == \
        [0, 1, 5]


def _cube(path: Path, n: int, channels: int, seed: int) -> Path:
    x, y = blob_cutouts(n, np.random.default_rng(seed), SIZE, channels=channels)
    table = {"candid": np.array([f"cand/{i:03d} x" for i in range(n)]), "label": y,
             "mag": np.linspace(16, 20, n), "magerr": np.full(n, 0.05)}
    return write_datacube(path, x, table, ["diff", "sci", "ref"][:channels])


def test_overlays_in_the_cam_folder_one_panel_per_channel(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("vgg6", 3, SIZE, 0.0)
    model_file = save_model(tmp_path / "m3.safetensors", model,
                            {"normalisation": "zscore", "channels": ["diff", "sci", "ref"]})
    cube = _cube(tmp_path / "c3.h5", 12, 3, seed=4)
    run = run_grad_cam(cube, model_file, tmp_path / "cams", n_random=50, seed=0, quiet=True)
    assert sum(run.counts.values()) == 12  # fewer than n_random: all of them, no crash
    for name in CATEGORIES:
        files = sorted((tmp_path / "cams" / name).glob("*.png"))
        assert len(files) == run.counts[name]
        assert all(" " not in f.name and "/" not in f.name[4:] for f in files)
    rows = list(csv.DictReader((tmp_path / "cams/grad_cam_index.csv").open()))
    assert len(rows) == 12 and {r["category"] for r in rows} <= set(CATEGORIES)
    img = mpimg.imread(tmp_path / "cams" / rows[0]["file"])
    assert img.shape[1] > 2.5 * img.shape[0] and float(img.std()) > 0.05  # 3 panels side by side
    with pytest.raises(OtrainError, match="already exists"):
        run_grad_cam(cube, model_file, tmp_path / "cams", n_random=50, quiet=True)


def test_cli_honours_cam_path_and_reports_bad_input(trained: Path, tmp_path: Path) -> None:
    cube = _cube(tmp_path / "c1.h5", 40, 1, seed=9)
    out = tmp_path / "elsewhere" / "cams"
    out.parent.mkdir()  # the command creates its own folder, not the ones above
    proc = run_cli("otrain-grad-cam", "--cube", str(cube), "--model-path", str(trained),
                   "--cam_path", str(out), "--n_random", "3", "--threshold", "0.5",
                   "--seed", "1", check=True)
    assert "Saved to" in proc.stdout and (out / "grad_cam_index.csv").is_file()
    loaded = load_model(trained)
    with open_datacube(cube) as c:
        p, y = predict_proba(loaded, c.read(slice(None))), c.labels
    n_fp, n_fn = int(np.sum((y == 0) & (p > 0.5))), int(np.sum((y == 1) & (p <= 0.5)))
    assert len(list((out / "false_positive").glob("*.png"))) == n_fp
    assert len(list((out / "false_negative").glob("*.png"))) == n_fn
    assert len(list((out / "true_positive").glob("*.png"))) == min(3, int(np.sum(y == 1)) - n_fn)
    proc = run_cli("otrain-grad-cam", "--cube", str(cube), "--model-path", str(cube),
                   "--cam-path", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert_clean_error(proc, "not a model file")
