"""Honest explanations (issue 15, item 5): the deletion test, occlusion maps, empty maps said so,
odd-size alignment, and contact sheets with whole ids and every channel.

The blob model of test_gradcam (a vgg6 trained for a few seconds to find Gaussian blobs anywhere)
is the ground truth: the evidence for "real" is the blob, so a faithful map points at it and
masking what it points at must hurt more than masking random pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import blob_cutouts, run_cli
from otrain.datacube.hdf5 import write_datacube
from otrain.evaluation.explain import deletion_test, occlusion_maps
from otrain.evaluation.gallery import _tile, contact_sheet, wrap_id
from otrain.evaluation.gradcam import _upsample, compute_grad_cam
from otrain.models.modelfile import load_model, save_model
from otrain.models.networks import build_model
from test_gradcam import SIZE, trained  # noqa: F401  (the shared module fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_deletion_test_passes_for_grad_cam_and_occlusion_and_fails_for_a_wrong_map(
        trained: Path) -> None:  # noqa: F811
    loaded = load_model(trained)
    x, y = blob_cutouts(24, np.random.default_rng(7), SIZE)
    real = x[y == 1]
    res = compute_grad_cam(loaded, real)
    good = deletion_test(loaded, real, res.heatmaps, res.target)
    assert good.passed and np.mean(good.drop_top) > np.mean(good.drop_random) + 0.05
    occ = occlusion_maps(loaded, real, res.target)
    assert occ.shape == res.heatmaps.shape and occ.min() >= 0 and occ.max() <= 1
    assert deletion_test(loaded, real, occ, res.target).passed
    wrong = deletion_test(loaded, real, 1.0 - res.heatmaps, res.target)  # the map inverted
    assert not wrong.passed
    empty = deletion_test(loaded, real, np.zeros_like(res.heatmaps), res.target)
    assert empty.passed is None and empty.n_empty == len(real)


def test_upsampling_puts_each_cell_on_the_pixels_it_covers() -> None:
    cam = torch.zeros(1, 1, 5, 5)
    cam[0, 0, 2, 3] = 1.0  # a 21-pixel cutout pooled twice: 5 cells of 4 pixels cover 0..19
    up = _upsample(cam, 21, 21)[0].numpy()
    iy, ix = np.unravel_index(np.argmax(up), up.shape)
    assert 8 <= iy <= 11 and 12 <= ix <= 15
    assert up.shape == (21, 21) and np.allclose(up[20], up[19])  # the uncovered row: edge copy


def test_cli_writes_the_deletion_test_and_says_when_maps_are_empty(
        trained: Path, tmp_path: Path) -> None:  # noqa: F811
    x, y = blob_cutouts(24, np.random.default_rng(3), SIZE)
    cube = write_datacube(tmp_path / "c.h5", x, {"candid": [str(10**18 + i) for i in range(24)],
                                                "label": y}, ["diff"])
    proc = run_cli("otrain-grad-cam", "--cube", str(cube), "--model", str(trained),
                   "--cam-path", str(tmp_path / "cams"), "--n-random", "6", "--method",
                   "occlusion", "--seed", "1", check=True)
    result = json.loads((tmp_path / "cams" / "deletion_test.json").read_text())
    assert result["method"] == "occlusion" and result["all"]["passed"] is True, result
    assert "deletion test passed" in proc.stdout
    assert (tmp_path / "cams" / "deletion_test.png").stat().st_size > 5000
    # A network whose last convolution is dead: every map is empty, and the run says so.
    torch.manual_seed(0)
    dead = build_model("vgg6", 1, SIZE, 0.0)
    with torch.no_grad():
        dead.last_conv.weight.zero_()
        dead.last_conv.bias.fill_(-1.0)
    model = save_model(tmp_path / "dead.safetensors", dead, {"normalisation": "zscore"})
    proc = run_cli("otrain-grad-cam", "--cube", str(cube), "--model", str(model),
                   "--cam-path", str(tmp_path / "dead"), "--n-random", "2", check=True)
    assert "deletion test not run: every map is empty" in proc.stdout
    assert json.loads((tmp_path / "dead" / "deletion_test.json").read_text())["all"][
        "passed"] is None


def test_contact_sheets_keep_whole_ids_and_every_channel() -> None:
    ids = [str(1615400115215015000 + i) for i in range(3)]  # differ in the last digit only
    labels = [wrap_id(c) for c in ids]
    assert len(set(labels)) == 3 and all(lab.replace("\n", "") == c for lab, c in
                                         zip(labels, ids, strict=True))
    images = np.random.default_rng(0).normal(size=(3, 3, 8, 8))
    assert _tile(images[0]).shape == (8, 3 * 8 + 2)  # diff | sci | ref, one-pixel gaps
    fig = contact_sheet(images, labels, "t", channels=["diff", "sci", "ref"])
    assert [ax.get_title() for ax in fig.axes[:3]] == labels
    assert "diff | sci | ref" in fig._suptitle.get_text()
