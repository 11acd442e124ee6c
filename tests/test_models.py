"""Tests of course_utils.models: the U-Nets, the Cellpose-style and StarDist-style networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils.models import (
    CellposeNet,
    StarDistNet,
    UNet,
    UNetOriginal,
    center_crop,
    count_parameters,
    unet_output_size,
    valid_input_sizes,
)

torch.set_num_threads(1)


def _naive_output_size(size, depth):
    """Follow the paper's figure: -4 per level, /2 per pooling, x2 per up-convolution."""
    for _ in range(depth):
        size -= 4
        if size % 2 or size < 2:
            return None
        size //= 2
    size -= 4
    for _ in range(depth):
        size = 2 * size - 4
    return size if size >= 1 else None


# --------------------------------------------------------------------------- original U-Net


def test_output_size_of_the_paper():
    assert unet_output_size(572) == 388
    assert 572 in valid_input_sizes()
    assert unet_output_size(188) == 4  # the smallest input of the 4-pooling U-Net


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_input_sizes_agree_with_naive(depth):
    sizes = valid_input_sizes(depth=depth, min_size=1, max_size=400)
    expected = [s for s in range(1, 401) if _naive_output_size(s, depth) is not None]
    assert sizes == expected
    assert all(unet_output_size(s, depth) == _naive_output_size(s, depth) for s in sizes)


@pytest.mark.parametrize("size", [570, 573, 100, 8])
def test_unet_output_size_rejects_sizes_that_do_not_fit(size):
    with pytest.raises(ValueError, match="input_size"):
        unet_output_size(size, depth=4)


def test_unet_original_572_gives_388():
    model = UNetOriginal(base_channels=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


@pytest.mark.parametrize(("depth", "base", "classes", "size"), [(2, 8, 3, 92), (3, 4, 2, 140)])
def test_unet_original_shapes(depth, base, classes, size):
    model = UNetOriginal(in_channels=2, n_classes=classes, depth=depth, base_channels=base)
    out = model(torch.randn(2, 2, size, size))
    side = unet_output_size(size, depth)
    assert out.shape == (2, classes, side, side)


def test_unet_original_parameter_count_of_the_paper_architecture():
    # 23 convolutions of the paper with 64 base channels: about 31 million parameters.
    count = count_parameters(UNetOriginal())
    expected = 0
    widths = [64, 128, 256, 512, 1024]
    c_in = 1
    for w in widths:  # encoder and bottleneck: two 3x3 convs each
        expected += (9 * c_in + 1) * w + (9 * w + 1) * w
        c_in = w
    for w in reversed(widths[:-1]):  # up-conv 2x2, then two 3x3 convs on the concatenation
        expected += (4 * 2 * w + 1) * w + (9 * 2 * w + 1) * w + (9 * w + 1) * w
    expected += (64 + 1) * 2
    assert count == expected == 31_030_658


def test_unet_original_skip_is_a_centre_crop():
    model = UNetOriginal(depth=2, base_channels=4, dropout=0.0).eval()
    seen = {}
    model.encoder[0].register_forward_hook(lambda m, i, o: seen.__setitem__("skip", o))
    model.decoder[-1].register_forward_pre_hook(lambda m, i: seen.__setitem__("cat", i[0]))
    with torch.no_grad():
        model(torch.randn(1, 1, 92, 92))
    skip, cat = seen["skip"], seen["cat"]
    h, w = cat.shape[-2:]
    top, left = (skip.shape[-2] - h) // 2, (skip.shape[-1] - w) // 2
    hand = skip[:, :, top : top + h, left : left + w]
    assert skip.shape[-1] > w  # the crop does something
    torch.testing.assert_close(cat[:, : skip.shape[1]], hand)


def test_center_crop_by_hand():
    x = torch.arange(7 * 8).reshape(1, 1, 7, 8)
    torch.testing.assert_close(center_crop(x, (3, 4)), x[..., 2:5, 2:6])
    with pytest.raises(ValueError):
        center_crop(x, (9, 4))


def test_unet_original_bad_input_raises():
    model = UNetOriginal(depth=2, base_channels=4)
    with pytest.raises(ValueError, match="input_size"):
        model(torch.randn(1, 1, 90, 90))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(1, 3, 92, 92))
    with pytest.raises(ValueError):
        UNetOriginal(dropout=1.0)
    with pytest.raises(TypeError):
        UNetOriginal(depth=2.0)


# --------------------------------------------------------------------------- modern U-Net


@pytest.mark.parametrize(
    "kwargs",
    [
        {"depth": 1, "base_channels": 4},
        {"depth": 3, "base_channels": 8, "out_channels": 3},
        {"depth": 2, "out_channels": 1, "norm": "group", "residual": True},
        {"depth": 2, "norm": "none", "upsample": "bilinear", "padding_mode": "reflect"},
        {"depth": 4, "base_channels": 4, "dropout": 0.2, "padding_mode": "replicate"},
    ],
)
def test_unet_shapes(kwargs):
    kwargs = {"base_channels": 8, **kwargs}
    model = UNet(in_channels=2, **kwargs)
    out = model(torch.randn(2, 2, 48, 32))
    assert out.shape == (2, kwargs.get("out_channels", 2), 48, 32)


def test_unet_as_backbone_returns_features():
    model = UNet(out_channels=None, depth=2, base_channels=6)
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 6, 16, 16)


def test_unet_residual_adds_shortcuts():
    plain = UNet(depth=2, base_channels=8)
    residual = UNet(depth=2, base_channels=8, residual=True)
    # one 1x1 projection per block whose channel count changes (all of them: 5 blocks)
    extra = count_parameters(residual) - count_parameters(plain)
    projections = [(1, 8), (8, 16), (16, 32), (32, 16), (16, 8)]
    assert extra == sum(i * o + o for i, o in projections)


def test_unet_group_norm_works_with_batch_of_one():
    model = UNet(depth=2, base_channels=8, norm="group").train()
    assert torch.isfinite(model(torch.randn(1, 1, 16, 16))).all()
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


def test_unet_bad_arguments_raise():
    for kwargs in ({"norm": "layer"}, {"upsample": "nearest"}, {"padding_mode": "valid"}):
        with pytest.raises(ValueError):
            UNet(**kwargs)
    model = UNet(depth=3, base_channels=4)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 1, 20, 16))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(1, 16, 16))
    with pytest.raises(TypeError):
        model(torch.randn(1, 1, 16, 16).numpy())


# --------------------------------------------------------------------------- Cellpose-style


@pytest.mark.parametrize(("depth", "base"), [(1, 4), (2, 8), (3, 4)])
def test_cellpose_shapes_and_style(depth, base):
    model = CellposeNet(in_channels=2, base_channels=base, depth=depth)
    x = torch.randn(2, 2, 32, 24)
    assert model(x).shape == (2, 3, 32, 24)
    out, style = model(x, return_style=True)
    assert out.shape == (2, 3, 32, 24)
    assert style.shape == (2, base * 2**depth)
    torch.testing.assert_close(style.norm(dim=1), torch.ones(2))


def test_cellpose_style_is_normalised_global_average_of_bottleneck():
    model = CellposeNet(base_channels=4, depth=2).eval()
    seen = {}
    model.down[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("bottom", o))
    with torch.no_grad():
        _, style = model(torch.randn(3, 1, 16, 16), return_style=True)
    mean = seen["bottom"].mean(dim=(2, 3))
    torch.testing.assert_close(style, mean / mean.norm(dim=1, keepdim=True))


def test_cellpose_style_ablation_changes_the_output():
    torch.manual_seed(0)
    with_style = CellposeNet(base_channels=4, depth=2, style=True).eval()
    without = CellposeNet(base_channels=4, depth=2, style=False).eval()
    missing, unexpected = without.load_state_dict(with_style.state_dict(), strict=False)
    assert not missing and unexpected and all("style_map" in k for k in unexpected)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(with_style(x), without(x), atol=1e-4)
        # zeroing the style maps makes both the same network: the style is all that differs
        for module in with_style.modules():
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)
        torch.testing.assert_close(with_style(x), without(x))


def test_cellpose_parameter_count_close_to_published():
    # Stringer 2021: about 6.6 million parameters for 2 input channels and 3 poolings.
    count = count_parameters(CellposeNet(in_channels=2, depth=3))
    assert 6.4e6 < count < 6.8e6


def test_cellpose_bad_input_raises():
    with pytest.raises(ValueError, match="divisible"):
        CellposeNet(base_channels=4, depth=2)(torch.randn(1, 1, 18, 16))


# --------------------------------------------------------------------------- StarDist-style


@pytest.mark.parametrize(("grid", "depth", "rays"), [(1, 2, 8), (2, 3, 16), (4, 1, 32)])
def test_stardist_shapes_and_positive_distances(grid, depth, rays):
    model = StarDistNet(n_rays=rays, base_channels=4, depth=depth, grid=grid)
    prob, dist = model(5 * torch.randn(2, 1, 64, 32))
    assert prob.shape == (2, 1, 64 // grid, 32 // grid)
    assert dist.shape == (2, rays, 64 // grid, 32 // grid)
    assert (dist >= 0).all()


def test_stardist_distances_stay_positive_for_negative_preactivations():
    model = StarDistNet(n_rays=4, base_channels=4, depth=1)
    with torch.no_grad():
        model.dist_head.bias.fill_(-50.0)
    _, dist = model(torch.randn(1, 1, 16, 16))
    # Strictly positive, with a gradient back to the head: a ReLU would give 0 and no gradient.
    assert (dist > 0).all()
    dist.sum().backward()
    assert (model.dist_head.bias.grad > 0).all()


def test_stardist_bad_arguments_raise():
    with pytest.raises(ValueError, match="grid"):
        StarDistNet(grid=3)
    with pytest.raises(ValueError, match="divisible by 16"):
        StarDistNet(base_channels=4, depth=3, grid=2)(torch.randn(1, 1, 24, 32))


# --------------------------------------------------------------------------- all models


@pytest.mark.parametrize(
    "make",
    [
        lambda: UNetOriginal(depth=1, base_channels=4),
        lambda: UNet(depth=2, base_channels=4, residual=True, upsample="bilinear"),
        lambda: CellposeNet(base_channels=4, depth=2),
        lambda: StarDistNet(n_rays=8, base_channels=4, depth=2, grid=2),
    ],
)
def test_gradients_reach_every_parameter(make):
    torch.manual_seed(0)  # independent of the tests that ran before in this process
    model = make()
    size = 44 if isinstance(model, UNetOriginal) else 32
    out = model(torch.randn(2, 1, size, size))
    loss = sum(o.square().mean() for o in out) if isinstance(out, tuple) else out.square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_count_parameters_counts_trainable_only():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2 + 2
    model[0].requires_grad_(False)
    assert count_parameters(model) == 4 * 2 + 2
    with pytest.raises(TypeError):
        count_parameters("model")


@pytest.mark.parametrize(
    ("make", "multiple"),
    [
        (lambda: UNet(depth=3, base_channels=4), 8),
        (lambda: CellposeNet(depth=2, base_channels=4), 4),
        (lambda: StarDistNet(depth=2, base_channels=4, grid=2), 8),
    ],
)
def test_networks_say_which_input_sizes_they_take(make, multiple):
    net = make()
    assert net.input_multiple == multiple
    net(torch.zeros(1, 1, 2 * multiple, multiple))  # a multiple goes through
    with pytest.raises(ValueError, match=f"divisible by {multiple}"):
        net(torch.zeros(1, 1, 2 * multiple + 1, multiple))
    assert net.ENCODER and all(
        any(name.startswith(p) for name, _ in net.named_parameters()) for p in net.ENCODER
    ), "every encoder prefix names parameters"


def test_the_original_unet_lists_its_valid_sizes():
    net = UNetOriginal(depth=2, base_channels=4)
    sizes = net.valid_sizes(40, 120)
    assert sizes == valid_input_sizes(2, 40, 120) and sizes
    net(torch.zeros(1, 1, sizes[0], sizes[0]))
    with pytest.raises(ValueError):
        net(torch.zeros(1, 1, sizes[0] + 1, sizes[0] + 1))
