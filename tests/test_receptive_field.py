"""Receptive field: known stacks, the classic recurrence, and the gradient of real networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from course_utils.models import receptive_field
from course_utils.models.receptive_field import ReceptiveField


def empirical_extent(model: nn.Module, n_in: int, row: int, col: int) -> tuple[int, int, int, int]:
    """First/last input row and column whose gradient on output pixel (row, col) is non-zero.

    Weights are set to ones (and biases to zero) so that no path cancels another: the non-zero
    gradient then covers exactly the theoretical receptive field.
    """
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0) if p.ndim > 1 else p.zero_()
    # A positive input keeps every ReLU open (its gradient at 0 is 0).
    x = torch.ones(1, 1, n_in, n_in, dtype=torch.float64, requires_grad=True)
    model = model.double()
    model(x)[0, 0, row, col].backward()
    g = x.grad[0, 0].abs().numpy()
    rows, cols = np.flatnonzero(g.sum(1)), np.flatnonzero(g.sum(0))
    return rows[0], rows[-1], cols[0], cols[-1]


def classic_recurrence(layers: list[tuple[int, int, int, int]]) -> tuple[int, int, float]:
    """Textbook recurrence over (kernel, stride, padding, dilation) layers: size, jump, start."""
    size, jump, start = 1, 1, 0.0
    for k, s, p, d in layers:
        k_eff = d * (k - 1) + 1
        size += (k_eff - 1) * jump
        start += ((k_eff - 1) / 2 - p) * jump
        jump *= s
    return size, jump, start


def test_known_stacks():
    assert receptive_field([("conv", 3), ("conv", 3)]).size == 5
    rf = receptive_field([("conv", 3), ("pool", 2), ("conv", 3)])
    assert (rf.size, rf.jump, rf.start) == (8, 2.0, 3.5)
    assert receptive_field([("conv", 3, 1, 0, 2)]).size == 5  # dilation 2
    assert receptive_field([("conv", 3)] * 10).size == 21
    # U-Net (Ronneberger 2015) encoder: 4 x (two 3x3 convs + 2x2 pool), then two 3x3 convs.
    unet_encoder = ([("conv", 3)] * 2 + [("pool", 2)]) * 4 + [("conv", 3)] * 2
    rf = receptive_field(unet_encoder)
    assert (rf.size, rf.jump) == (140, 16.0)
    assert receptive_field([]) == ReceptiveField(size=1, jump=1.0, start=0.0, size_min=1)


def test_padding_moves_start_not_size():
    valid = receptive_field([("conv", 3), ("conv", 3)])
    same = receptive_field([{"type": "conv", "kernel": 3, "padding": 1}] * 2)
    assert valid.size == same.size == 5
    assert (valid.start, same.start) == (2.0, 0.0)


def test_modules_equal_specs():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(4, 4, 5, stride=2, dilation=2)),
        nn.Dropout2d(0.1),
    )
    specs = [("conv", 3, 1, 1), ("pool", 2), ("conv", 5, 2, 0, 2)]
    assert receptive_field(net) == receptive_field(specs)
    same = nn.Conv2d(1, 1, 5, padding="same", dilation=2)
    assert receptive_field([same]) == receptive_field([("conv", 5, 1, 4, 2)])


def test_axis_for_rectangular_kernels():
    conv = nn.Conv2d(1, 1, kernel_size=(3, 7), stride=(1, 2))
    assert receptive_field([conv], axis=0).size == 3
    rf_w = receptive_field([conv], axis=1)
    assert (rf_w.size, rf_w.jump) == (7, 2.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(0, 3), st.integers(1, 3)),
        max_size=6,
    )
)
def test_matches_classic_recurrence(layers):
    rf = receptive_field([("conv", *layer) for layer in layers])
    size, jump, start = classic_recurrence(layers)
    assert (rf.size, rf.jump, rf.start, rf.size_min) == (size, jump, start, size)


STACKS = {
    "two convs": [nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)],
    "conv pool conv": [nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(1, 1, 3)],
    "strided dilated": [
        nn.Conv2d(1, 2, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(2, 1, 3, dilation=3, padding=2),
        nn.AvgPool2d(3, stride=2, padding=1),
    ],
    "unet-like": [
        nn.Conv2d(1, 2, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 2, 3, padding=1),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(2, 1, 3, padding=1),
    ],
    "bilinear": [nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2, mode="bilinear")],
    "bilinear x3": [nn.Upsample(scale_factor=3, mode="bilinear"), nn.Conv2d(1, 1, 2)],
    "transposed 2/2": [nn.AvgPool2d(2), nn.ConvTranspose2d(1, 1, 2, stride=2)],
    "transposed 3/2": [nn.Conv2d(1, 1, 3), nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1)],
    "transposed 4/2 twice": [
        nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1),
        nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1),
    ],
}


@pytest.mark.parametrize("name", sorted(STACKS))
def test_equals_gradient_of_real_network(name):
    net = nn.Sequential(*STACKS[name])
    rf = receptive_field(net)
    n_in = 96
    n_out = net(torch.zeros(1, 1, n_in, n_in)).shape[-1]
    # Output pixels far from the borders (where the padding would cut the field), over more
    # than one period of the pattern, along the diagonal (both axes at once).
    positions = range(n_out // 2 - 4, n_out // 2 + 4)
    upsamples = any(isinstance(m, (nn.Upsample, nn.ConvTranspose2d)) for m in net)
    sizes = []
    for i in positions:
        r0, r1, c0, c1 = empirical_extent(net, n_in, i, i)
        assert (r0, r1) == (c0, c1)
        sizes.append(r1 - r0 + 1)
        if not upsamples:
            # Without upsampling the field of output i is centred on start + i * jump.
            assert (r0 + r1) / 2 == pytest.approx(rf.start + i * rf.jump)
    assert max(sizes) == rf.size
    assert min(sizes) == rf.size_min


def test_checkerboard_of_transposed_conv():
    rf = receptive_field([nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1)])
    assert (rf.size, rf.size_min, rf.jump) == (2, 1, 0.5)


@pytest.mark.parametrize(
    ("layers", "error"),
    [
        ([("conv", 0)], ValueError),
        ([("conv", 3, 1, -1)], ValueError),
        ([("conv", 3.0)], TypeError),
        ([("fc", 3)], ValueError),
        ([{"type": "conv", "kernel": 3, "size": 2}], ValueError),
        ([("upsample", 2, "bicubic")], ValueError),
        ([("conv", 3, 1, 0, 1, 9)], ValueError),
        ([nn.Linear(3, 3)], TypeError),
        ([nn.Upsample(size=(10, 10))], ValueError),
        ([nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)], ValueError),
        ([nn.ConvTranspose2d(1, 1, 1, stride=2)], ValueError),
        (["conv"], TypeError),
    ],
)
def test_bad_input(layers, error):
    with pytest.raises(error):
        receptive_field(layers)


def test_bad_axis():
    with pytest.raises(ValueError, match="axis"):
        receptive_field([("conv", 3)], axis=2)
