"""The figures of notebooks 02 and 02b (course_utils.figures.blocks): panels, titles, axis
labels, the data drawn, and a clear error on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from course_utils.figures import blocks


def _image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def _assert_labelled(ax) -> None:
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_show_crop_draws_the_image_and_the_crop():
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    fig = blocks.show_crop(image, top=5, left=10, size=16, name="test image")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    whole, crop = fig.axes
    np.testing.assert_allclose(whole.images[0].get_array(), image)
    np.testing.assert_allclose(crop.images[0].get_array(), image[5:21, 10:26])
    assert whole.get_title() == "test image (40, 50)" and "16 x 16" in crop.get_title()
    (outline,) = whole.patches
    assert outline.get_xy() == (10, 5) and outline.get_width() == 16
    for ax in fig.axes:
        _assert_labelled(ax)


@pytest.mark.parametrize("top, left, size", [(30, 0, 16), (0, -1, 8), (0, 0, 0)])
def test_show_crop_refuses_a_crop_outside_the_image(top, left, size):
    with pytest.raises(ValueError, match="not inside"):
        blocks.show_crop(np.zeros((40, 50)), top=top, left=left, size=size)


def test_show_crop_refuses_a_stack():
    with pytest.raises(ValueError, match="2 axes"):
        blocks.show_crop(np.zeros((2, 40, 50)), 0, 0, 8)


def test_show_learning_curves_draws_one_line_per_run_from_step_1():
    curves = {"lr = 0.3": [1.0, 0.1, 0.01], "lr = 1.0": [1.0, 10.0, float("inf")]}
    fig = blocks.show_learning_curves(curves, "Learning one kernel", "MSE loss")
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == list(curves)
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), curves["lr = 0.3"])
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "MSE loss"
    _assert_labelled(ax)


def test_show_learning_curves_refuses_no_curves():
    with pytest.raises(ValueError, match="empty"):
        blocks.show_learning_curves({}, "title")


def test_show_kernel_footprints_draws_three_9x9_grids():
    fig = blocks.show_kernel_footprints()
    assert len(fig.axes) == 3
    plain, dilated, strided = (ax.images[0].get_array() for ax in fig.axes)
    assert plain.shape == (9, 9) and plain.sum() == 9 and dilated.sum() == 9
    assert strided.max() == 3  # the overlap of the two stride-2 outputs
    assert "dilation 2" in fig.axes[1].get_title()
    for ax in fig.axes:
        _assert_labelled(ax)


def test_show_filter_responses_signed_outputs_are_centred_on_zero():
    image = np.random.default_rng(1).random((12, 12))
    edges = torch.linspace(-2, 1, 144).reshape(12, 12)
    responses = {"edges": edges, "blur": np.full((12, 12), 0.5), "zero": np.zeros((12, 12))}
    fig = blocks.show_filter_responses(image, responses)
    shown = _image_axes(fig)
    assert [ax.get_title() for ax in shown] == ["input", "edges", "blur", "zero"]
    assert len(fig.axes) == 6 and not fig.axes[5].axison  # the unused place of the 2 x 3 grid
    np.testing.assert_allclose(shown[0].images[0].get_array(), image)
    np.testing.assert_allclose(shown[1].images[0].get_array(), edges.numpy())
    assert shown[1].images[0].get_clim() == (-2.0, 2.0)
    assert shown[1].images[0].get_cmap().name == "RdBu_r"
    assert shown[2].images[0].get_cmap().name == "gray"
    for ax in shown:
        _assert_labelled(ax)


def test_show_filter_responses_refuses_a_1d_response():
    with pytest.raises(ValueError, match="responses\\['bad'\\] must have 2 axes"):
        blocks.show_filter_responses(np.zeros((4, 4)), {"bad": np.zeros(4)})


def test_show_effective_field_reads_the_size_from_the_mask():
    theory = np.zeros((16, 16), dtype=bool)
    theory[3:12, 3:12] = True
    y, x = np.mgrid[:16, :16]
    erf = np.exp(-((y - 7.5) ** 2 + (x - 7.5) ** 2) / 8)
    fig = blocks.show_effective_field(theory, erf)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title() == "theoretical field: 9 x 9"
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), erf)
    effective, theoretical = fig.axes[2].lines
    np.testing.assert_allclose(effective.get_ydata(), erf[8] / erf[8].max())
    np.testing.assert_array_equal(theoretical.get_ydata(), theory[8])
    for ax in fig.axes:
        _assert_labelled(ax)


def test_show_effective_field_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        blocks.show_effective_field(np.ones((8, 8)), np.ones((8, 9)))


def test_show_activations_draws_f_and_its_derivative_per_panel():
    z = torch.linspace(-2, 2, 5, requires_grad=True)
    curves = {"ReLU": (torch.relu(z), (z > 0).float()), "identity": (z, torch.ones(5))}
    fig = blocks.show_activations(z, curves)
    assert [ax.get_title() for ax in fig.axes] == ["ReLU", "identity"]
    f, df = fig.axes[0].lines
    np.testing.assert_allclose(f.get_xdata(), z.detach().numpy())
    np.testing.assert_allclose(f.get_ydata(), [0, 0, 0, 1, 2])
    np.testing.assert_allclose(df.get_ydata(), [0, 0, 0, 1, 1])
    for ax in fig.axes:
        _assert_labelled(ax)


def test_show_activations_refuses_values_of_another_length():
    with pytest.raises(ValueError, match="ReLU"):
        blocks.show_activations(np.zeros(5), {"ReLU": (np.zeros(4), np.zeros(5))})


def test_show_checkerboards_shows_the_interior_and_its_values():
    board = np.ones((10, 10))
    board[::2, ::2] = 4.0
    fig = blocks.show_checkerboards({"stamps": board, "flat": np.full((10, 10), 9.0)}, margin=3)
    shown = _image_axes(fig)
    assert len(shown) == 2 and len(fig.axes) == 4  # two panels, two colour bars
    np.testing.assert_allclose(shown[0].images[0].get_array(), board[3:-3, 3:-3])
    assert shown[0].get_title().endswith("interior values [1.0, 4.0]")
    assert shown[1].get_title().endswith("interior values [9.0]")
    assert "checkerboard" in fig._suptitle.get_text()
    for ax in shown:
        _assert_labelled(ax)


def test_show_checkerboards_refuses_an_output_without_interior():
    with pytest.raises(ValueError, match="no interior"):
        blocks.show_checkerboards({"small": np.ones((6, 6))}, margin=3)


def test_show_overfitting_draws_loss_and_dice_per_set():
    steps = [0, 10, 20]
    curves = {
        "training": {"loss": [1.0, 0.1, 0.01], "dice": [0.0, 0.5, 0.9]},
        "validation": {"loss": [1.0, 0.5, 0.8], "dice": [0.0, 0.3, 0.4]},
    }
    fig = blocks.show_overfitting(steps, curves)
    loss_ax, dice_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["training", "validation"]
    np.testing.assert_array_equal(loss_ax.lines[1].get_ydata(), [1.0, 0.5, 0.8])
    np.testing.assert_array_equal(dice_ax.lines[0].get_xdata(), steps)
    np.testing.assert_array_equal(dice_ax.lines[0].get_ydata(), [0.0, 0.5, 0.9])
    assert loss_ax.get_yscale() == "log"
    for ax in fig.axes:
        _assert_labelled(ax)


def test_show_overfitting_refuses_curves_of_another_length():
    with pytest.raises(ValueError, match="2 loss values for 3 steps"):
        blocks.show_overfitting([0, 1, 2], {"training": {"loss": [1, 2], "dice": [0, 0, 0]}})


def test_show_feature_maps_draws_one_row_per_layer():
    maps = {"block 1": torch.rand(8, 6, 6), "block 4": np.random.default_rng(2).random((10, 3, 3))}
    fig = blocks.show_feature_maps(maps, n_channels=4, title="Feature maps")
    assert len(fig.axes) == 8
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), maps["block 1"][1].numpy())
    np.testing.assert_allclose(fig.axes[6].images[0].get_array(), maps["block 4"][2])
    assert fig.axes[0].get_ylabel() == "block 1" and fig.axes[4].get_ylabel() == "block 4"
    assert fig.axes[3].get_title() == "channel 3"
    assert fig._suptitle.get_text() == "Feature maps"


def test_show_feature_maps_refuses_too_few_channels():
    with pytest.raises(ValueError, match="fewer than 8"):
        blocks.show_feature_maps({"block": np.zeros((4, 5, 5))}, n_channels=8)
