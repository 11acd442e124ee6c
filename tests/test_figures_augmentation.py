"""Tests of course_utils.figures.augmentation: each figure draws the arrays it is given, with the
panels, titles and axis labels it claims, and bad input fails with a clear ValueError."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from course_utils.data import synthetic_nuclei
from course_utils.figures import augmentation as fa
from course_utils.history import History


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((40, 48), seed=2)
    return image.astype(np.float32), labels


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_show_crop_draws_the_image_and_counts_the_nuclei(nuclei):
    image, labels = nuclei
    fig = fa.show_crop(image, labels)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    n = len(np.unique(labels)) - 1
    assert [ax.get_title() for ax in fig.axes] == [
        "BBBC039 crop (normalised)",
        f"its {n} instance labels",
    ]
    assert fig.axes[0].get_xlabel() == "x (pixels)" and fig.axes[0].get_ylabel() == "y (pixels)"
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), image)
    with pytest.raises(ValueError, match="differ in shape"):
        fa.show_crop(image, labels[:-1])


def test_show_invented_ids_marks_the_pixels_of_the_invented_ids(nuclei):
    _, labels = nuclei
    cast = labels.copy()
    cast[0, :5] = 250  # five pixels with an id the labels do not have
    fig = fa.show_invented_ids(cast, labels, [250], angle=17)
    axes = _image_axes(fig)
    assert len(axes) == 3
    assert axes[0].get_title() == "bilinear, cast to int (1 invented ids)"
    assert axes[1].get_title() == "pixels with an invented id (5)"
    assert fig.get_suptitle() == "The crop's labels rotated by 17 degrees"
    np.testing.assert_array_equal(axes[0].images[0].get_array(), cast)
    np.testing.assert_array_equal(axes[1].images[0].get_array(), cast == 250)
    np.testing.assert_array_equal(axes[2].images[0].get_array(), labels)
    assert all(ax.get_xlabel() == "x (pixels)" for ax in axes)
    with pytest.raises(ValueError, match="2 axes"):
        fa.show_invented_ids(cast[None], labels, [250], angle=17)


def test_show_overlays_draws_one_panel_per_pair(nuclei):
    image, labels = nuclei
    fig = fa.show_overlays([(image, labels), (image.T, labels.T)], ["a", "b"], suptitle="s")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"] and fig.get_suptitle() == "s"
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), image.T)
    with pytest.raises(ValueError, match="1 titles for 2 pairs"):
        fa.show_overlays([(image, labels), (image, labels)], ["a"])
    with pytest.raises(ValueError, match="empty"):
        fa.show_overlays([], [])


def test_show_warps_applies_each_field_to_a_grid_and_the_crop(nuclei):
    image, labels = nuclei
    shift = np.zeros((2, *image.shape))
    shift[1] = 3.0  # every output pixel reads 3 pixels to its right
    fig = fa.show_warps({"none": np.zeros_like(shift), "shift": shift}, image, labels, suptitle="w")
    assert fig.get_suptitle() == "w" and len(fig.axes) == 4
    assert [fig.axes[i].get_title() for i in (0, 1)] == ["none", "shift"]
    grid = fig.axes[0].images[0].get_array()
    assert grid[0].all() and grid[:, 16].all() and not grid[1, 1]  # lines 16 pixels apart
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array()[:, :-3], grid[:, 3:])
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), image)  # no displacement
    with pytest.raises(ValueError, match="'bad'"):
        fa.show_warps({"bad": shift[:, :-1]}, image, labels, suptitle="w")
    with pytest.raises(ValueError, match="empty"):
        fa.show_warps({}, image, labels, suptitle="w")


def test_plot_seam_draws_dx_and_dy():
    diff = np.vstack([np.linspace(0, 1, 10), np.zeros(10)])
    fig = fa.plot_seam(diff)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "row (y)" and "albumentations" in ax.get_ylabel()
    assert ax.get_title().startswith("Same seed")
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), diff[1])  # x displacement first
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), diff[0])
    with pytest.raises(ValueError, match=r"\(2, H\)"):
        fa.plot_seam(np.zeros(10))


def test_show_weight_maps_shows_the_difference_on_one_scale():
    wrong = np.zeros((6, 7))
    right = np.full((6, 7), 2.0)
    fig = fa.show_weight_maps(wrong, right, suptitle="maps")
    axes = _image_axes(fig)
    assert len(axes) == 3 and fig.get_suptitle() == "maps"
    assert axes[2].get_title() == "|right - wrong|"
    np.testing.assert_array_equal(axes[2].images[0].get_array(), np.abs(right - wrong))
    assert axes[0].images[0].get_clim() == (0, 2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        fa.show_weight_maps(wrong, right[:-1], suptitle="maps")


def test_show_grey_draws_images_and_masks(nuclei):
    image, labels = nuclei
    fig = fa.show_grey([image, labels > 0], ["image", "mask"])
    assert [ax.get_title() for ax in fig.axes] == ["image", "mask"]  # no colour bars
    assert fig.axes[1].get_ylabel() == "y (pixels)"
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), labels > 0)
    with pytest.raises(ValueError, match="2 titles for 1 images"):
        fa.show_grey([image], ["a", "b"])


def test_plot_validation_draws_one_line_per_run():
    history = History()
    for epoch, iou in [(1, 0.5), (2, 0.7)]:
        history.append({"epoch": epoch, "iou": iou})
    fig = fa.plot_validation({"no augmentation": history, "other": {"epoch": [1], "iou": [0.1]}})
    ax = fig.axes[0]
    assert ax.get_title() == "Validation IoU during training"
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "IoU on validation patches"
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), [0.5, 0.7])
    assert [line.get_label() for line in ax.lines] == ["no augmentation", "other"]
    with pytest.raises(ValueError, match="2 epochs but 1 values"):
        fa.plot_validation({"bad": {"epoch": [1, 2], "iou": [0.1]}})
    with pytest.raises(ValueError, match="empty"):
        fa.plot_validation({})
