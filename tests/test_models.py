"""Networks (otrain.models) and per-cutout normalisation (otrain.models.normalise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from otrain.errors import OtrainError
from otrain.models.networks import (
    available_architectures,
    build_model,
    count_flops,
    count_parameters,
)
from otrain.models.normalise import METHODS, normalise, resolve_method


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------
def test_registry_lists_default_first() -> None:
    archs = available_architectures()
    assert archs[0] == "otrain"
    assert "vgg6" in archs


@pytest.mark.parametrize("arch", ["otrain", "vgg6"])
@pytest.mark.parametrize("size", [8, 16, 31, (20, 24), 48])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_is_two_logits(arch: str, size: int | tuple[int, int], channels: int) -> None:
    model = build_model(arch, channels, size, dropout=0.3).eval()
    h, w = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        out = model(torch.randn(5, channels, h, w))
    assert out.shape == (5, 2)
    assert torch.isfinite(out).all()
    assert isinstance(model.last_conv, nn.Conv2d)
    assert model.config == {"arch": arch, "in_channels": channels, "size": [h, w],
                            "dropout": 0.3}


@pytest.mark.parametrize(("size", "expected"), [(32, 2_621_826), (31, 1_704_322),
                                                (48, 5_243_266), (64, 8_913_282)])
def test_otrain_parameter_count_matches_keras(size: int, expected: int) -> None:
    assert count_parameters(build_model("otrain", 1, size)) == expected


def test_otrain_layers_as_the_original() -> None:
    model = build_model("otrain", 1, 32, dropout=0.25)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert model.last_conv is convs[-1]
    dense = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert dense == [512, 256, 2]
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.25, 0.25, 0.25]
    assert isinstance(model.pool1, nn.AvgPool2d)


def test_vgg6_layers() -> None:
    model = build_model("vgg6", 2, 32)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 16, 32, 32]
    assert model.last_conv.out_channels == 32
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [256, 2]


def test_count_flops() -> None:
    # conv: H*W*out*9*in per layer; dense: in*out; x2 for multiply-adds
    assert count_flops(build_model("otrain", 1, 32), (1, 32, 32)) == 70_812_672
    small = count_flops(build_model("vgg6", 1, 16), (1, 16, 16))
    assert 0 < small < count_flops(build_model("vgg6", 3, 16), (3, 16, 16))


def test_build_is_seeded() -> None:
    torch.manual_seed(3)
    a = build_model("otrain", 1, 16).state_dict()
    torch.manual_seed(3)
    b = build_model("otrain", 1, 16).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not v.any() for k, v in a.items() if k.endswith("bias"))  # Keras init


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"arch": "resnet"}, "unknown architecture"),
    ({"size": 7}, "too small"),
    ({"in_channels": 0}, "in_channels"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_build_arguments(kwargs: dict, fragment: str) -> None:
    with pytest.raises(OtrainError, match=fragment):
        build_model(**kwargs)


# ------------------------------------------------------------------------------------------
# normalisation
# ------------------------------------------------------------------------------------------
def _noise(n: int = 4, c: int = 2, size: int = 21, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100.0 + 5.0 * rng.normal(size=(n, c, size, size))).astype(np.float64)


def test_zscore_centres_and_scales_each_cutout_and_channel() -> None:
    images = _noise()
    images[:, 1] *= 10.0
    out = normalise(images, "zscore")
    assert out.dtype == np.float32 and out.shape == images.shape
    med = np.median(out.reshape(4, 2, -1), axis=2)
    mad = 1.4826 * np.median(np.abs(out.reshape(4, 2, -1) - med[..., None]), axis=2)
    np.testing.assert_allclose(med, 0.0, atol=1e-5)
    np.testing.assert_allclose(mad, 1.0, rtol=1e-4)


def test_zscore_floor_on_flat_background() -> None:
    images = np.zeros((2, 1, 9, 9))
    images[0, 0, 4, 4] = 50.0  # one hot pixel, MAD = 0
    out = normalise(images, "zscore")
    assert np.isfinite(out).all()
    assert out[0, 0, 4, 4] == pytest.approx(1000.0)
    assert not out[1].any()  # constant cutout -> 0


def test_non_finite_pixels_become_zero() -> None:
    images = _noise(n=3, c=1)
    images[0, 0, 0, :5] = np.nan
    images[0, 0, 1, 0] = np.inf
    images[1] = np.nan  # nothing finite
    for method in METHODS:
        out = normalise(images, method)
        assert np.isfinite(out).all(), method
        assert not out[0, 0, 0, :5].any() and out[0, 0, 1, 0] == 0.0
        assert not out[1].any()
    # statistics ignore the masked pixels
    z = normalise(images, "zscore")
    assert abs(np.median(z[0, 0].ravel()[10:])) < 0.2


def test_minmax_and_none() -> None:
    images = _noise()
    mm = normalise(images, "minmax")
    flat = mm.reshape(4, 2, -1)
    np.testing.assert_allclose(flat.min(axis=2), 0.0)
    np.testing.assert_allclose(flat.max(axis=2), 1.0)
    assert not normalise(np.ones((1, 1, 8, 8)), "minmax").any()
    np.testing.assert_array_equal(normalise(images, "none"), images.astype(np.float32))


def test_normalise_commutes_with_rotation_and_keeps_input() -> None:
    images = _noise()
    before = images.copy()
    for method in METHODS:
        a = normalise(np.rot90(images, 1, axes=(2, 3)), method)
        b = np.rot90(normalise(images, method), 1, axes=(2, 3))
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_array_equal(images, before)


def test_normalise_errors() -> None:
    with pytest.raises(OtrainError, match="unknown normalisation"):
        normalise(_noise(), "robust")
    with pytest.raises(OtrainError, match="4-D"):
        normalise(np.zeros((8, 8)), "zscore")
    assert normalise(np.zeros((0, 1, 8, 8)), "zscore").shape == (0, 1, 8, 8)


def test_l2_normalisation_divides_by_rms_and_zeroes_nan():
    x = np.full((1, 2, 4, 4), 3.0, dtype=np.float32)
    x[0, 1] = np.arange(16, dtype=np.float32).reshape(4, 4)
    x[0, 0, 0, 0] = np.nan
    out = normalise(x, "l2")
    assert out[0, 0, 0, 0] == 0.0 and np.isfinite(out).all()
    for c in range(2):
        np.testing.assert_allclose(np.sqrt(np.mean(out[0, c] ** 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(normalise(np.rot90(x, axes=(2, 3)), "l2"),
                               np.rot90(out, axes=(2, 3)))


def test_resolve_method_for_auto() -> None:
    assert resolve_method("auto", ["diff"]) == "zscore"
    assert resolve_method("auto", ["diff"], source="alerts") == "l2"
    assert resolve_method("auto", ["diff", "sci", "ref"]) == "l2"
    assert resolve_method("minmax", ["diff", "sci", "ref"], source="alerts") == "minmax"
    with pytest.raises(OtrainError, match="unknown normalisation 'auto'"):
        normalise(np.zeros((1, 1, 8, 8)), "auto")  # inference never sees 'auto'
    with pytest.raises(OtrainError, match="unknown normalisation"):
        resolve_method("zcore", ["diff"])
