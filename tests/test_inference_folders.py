"""otrain-infer on several folders at once (e.g. a simulated night's true/ and false/)."""

from __future__ import annotations

import torch
from astropy.table import Table

from conftest import make_labelled_folder, run_cli
from otrain.models.modelfile import save_model
from otrain.models.networks import build_model


def test_several_folders_are_expanded(tmp_path):
    src = make_labelled_folder(tmp_path / "night", 3, 4, size=16)
    torch.manual_seed(0)
    model = save_model(tmp_path / "m.safetensors", build_model("vgg6", 1, 16, 0.0),
                       {"normalisation": "zscore", "channels": ["diff"]})
    out = tmp_path / "scores.csv"
    run_cli("otrain-infer", "--cutouts", str(src / "true"), str(src / "false"), "--model",
            str(model), "--output", str(out), check=True)
    table = Table.read(out, format="ascii.csv")
    assert len(table) == 7
    assert sorted(str(c) for c in table["cand_ID"]) == sorted(
        [f"t_{i:03d}" for i in range(3)] + [f"f_{i:03d}" for i in range(4)])
