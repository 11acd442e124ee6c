"""Tests of course_utils.figures.unet: each figure draws the arrays it is given, with the panels,
titles and axis labels it claims, and bad input fails with a clear ValueError."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from course_utils.figures import unet as fu
from course_utils.targets import boundary_classes, unet_weight_map, with_gaps


@pytest.fixture(scope="module")
def touching():
    """(image, labels) 60 x 80: two nuclei touching in the top-right corner, one alone."""
    labels = np.zeros((60, 80), np.int32)
    labels[5:15, 50:60] = 1
    labels[5:15, 60:70] = 2  # touches nucleus 1 along a column
    labels[40:50, 10:20] = 3
    image = (labels > 0).astype(np.float32) * 0.8 + 0.1
    return image, labels


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_busiest_window_finds_the_touching_nuclei(touching):
    _, labels = touching
    y, x = fu.busiest_window(labels, 20, step=10)
    window = labels[y : y + 20, x : x + 20]
    assert {1, 2} <= set(np.unique(window).tolist())  # the pair that touches
    touch = (labels > 0) & (with_gaps(labels) == 0)
    assert touch[y : y + 20, x : x + 20].sum() == touch.sum()
    with pytest.raises(ValueError, match="does not fit"):
        fu.busiest_window(labels, 100)
    with pytest.raises(ValueError, match="2 axes"):
        fu.busiest_window(labels[None], 20)
    with pytest.raises(ValueError, match=">= 1"):
        fu.busiest_window(labels, 20, step=0)


def test_show_weight_map_draws_four_panels_of_the_given_maps(touching):
    image, labels = touching
    gapped = with_gaps(labels)
    w_class = unet_weight_map(gapped, w0=0.0)
    weights = unet_weight_map(gapped)
    fig = fu.show_weight_map(image, labels, gapped, w_class, weights)
    assert isinstance(fig, Figure)
    axes = _image_axes(fig)
    assert len(axes) == 4 and len(fig.axes) == 6  # four panels and two colour bars
    assert axes[0].get_title() == "BBBC039 crop and its labels"
    assert axes[3].get_title() == "weight map $w = w_c$ + border term"
    np.testing.assert_array_equal(axes[1].images[0].get_array(), gapped > 0)
    np.testing.assert_array_equal(axes[2].images[0].get_array(), w_class)
    np.testing.assert_array_equal(axes[3].images[0].get_array(), weights)
    for ax in axes[1:]:
        assert ax.get_xlabel() == "x (pixels)" and ax.get_ylabel() == "y (pixels)"
    with pytest.raises(ValueError, match="weights .* differ in shape"):
        fu.show_weight_map(image, labels, gapped, w_class, weights[:-1])


def test_plot_curves_draws_one_line_per_curve_from_step_one():
    curves = {"Adam": [3.0, 2.0, 1.0], "SGD": [3.0, 2.9, 2.8]}
    fig = fu.plot_curves(curves, title="steps", ylabel="loss")
    ax = fig.axes[0]
    assert ax.get_title() == "steps" and ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"
    assert [line.get_label() for line in ax.lines] == ["Adam", "SGD"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), curves["SGD"])
    with pytest.raises(ValueError, match="empty"):
        fu.plot_curves({}, title="t", ylabel="y")
    with pytest.raises(ValueError, match="'SGD'"):
        fu.plot_curves({"Adam": [1.0], "SGD": []}, title="t", ylabel="y")


def test_show_three_classes_draws_the_target_with_ticks(touching):
    image, labels = touching
    classes = boundary_classes(labels)
    fig = fu.show_three_classes(image, labels, classes)
    axes = _image_axes(fig)
    assert len(axes) == 2 and len(fig.axes) == 3
    assert axes[0].get_title() == "labels"
    assert axes[1].get_title().startswith("3-class target")
    assert axes[1].get_xlabel() == "x (pixels)" and axes[1].get_ylabel() == "y (pixels)"
    np.testing.assert_array_equal(axes[1].images[0].get_array(), classes)
    assert list(fig.axes[2].get_yticks()) == [0, 1, 2]
    with pytest.raises(ValueError, match="classes"):
        fu.show_three_classes(image, labels, classes[:, :-1])


def test_compare_predictions_crops_every_panel_and_titles_them(touching):
    image, labels = touching
    wrong = np.where(labels == 2, 1, labels)  # merges the touching pair
    fig = fu.compare_predictions(
        image,
        labels,
        {"good": labels, "merged": wrong},
        {"merged": {"f1@0.5": 0.5, "touching apart": 0}},
        n_touching=2,
        window=(0, 40, 20),
        suptitle="crop",
    )
    axes = fig.axes
    assert len(axes) == 3
    titles = ["ground truth", "good", "merged\nF1 0.50, touching apart 0/2"]
    assert [ax.get_title() for ax in axes] == titles
    assert fig.get_suptitle() == "crop"
    np.testing.assert_array_equal(axes[0].images[0].get_array(), image[0:20, 40:60])
    assert axes[2].images[1].get_array().shape == (20, 20, 4)  # the labels drawn on top
    with pytest.raises(ValueError, match="empty"):
        fu.compare_predictions(image, labels, {})
    with pytest.raises(ValueError, match="no prediction"):
        fu.compare_predictions(image, labels, {"good": labels}, {"other": {}})
    with pytest.raises(ValueError, match="bad .* differ in shape"):
        fu.compare_predictions(image, labels, {"bad": labels[:-1]})
