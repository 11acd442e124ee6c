"""Tests of course_utils.figures.flows: each figure draws the arrays it is given, with the panels,
titles and axis labels it claims, and bad input fails with a clear ValueError."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import ndimage as ndi

from course_utils.data import synthetic_nuclei
from course_utils.figures import flows as ff
from course_utils.plot import flow_to_rgb


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((48, 56), seed=1)
    return image.astype(np.float32), labels


def _flows(labels):
    """(2, H, W) float32 unit vectors towards the image centre on the nuclei, 0 elsewhere (a
    stand-in for masks_to_flows, which compiles on first use)."""
    yy, xx = np.indices(labels.shape, dtype=np.float32)
    field = np.stack([labels.shape[0] / 2 - yy, labels.shape[1] / 2 - xx])
    return field / (np.hypot(*field) + 1e-6) * (labels > 0)


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_show_touching_counts_components_and_nuclei(nuclei):
    image, labels = nuclei
    components, n_components = ndi.label(labels > 0)
    fig = ff.show_touching(image, components, labels)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == [
        "BBBC039 crop",
        f"foreground: {n_components} components",
        f"instance labels: {len(np.unique(labels)) - 1} nuclei",
    ]
    assert all(ax.get_xlabel() == "x (pixels)" and ax.axison for ax in fig.axes)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), image)
    with pytest.raises(ValueError, match="differ"):
        ff.show_touching(image, components[:-1], labels)


def test_show_heat_draws_log_temperature_of_one_cell_and_all(nuclei):
    _, labels = nuclei
    mask = labels == labels.max()
    heat_cell = np.where(mask, 10.0, 0.0)
    heat = np.where(labels > 0, 100.0, 0.0)
    zoom = np.s_[0:20, 0:30]
    centre = tuple(int(v) for v in np.argwhere(mask)[0])
    fig = ff.show_heat(heat_cell, heat, mask, labels > 0, centre, zoom=zoom, title="one cell")
    axes = _image_axes(fig)
    assert [ax.get_title() for ax in axes] == ["one cell", "all cells of the crop (summed)"]
    assert len(fig.axes) == 4  # two panels, two colour bars
    one = axes[0].images[0].get_array()
    assert one.shape == (20, 30)
    np.testing.assert_allclose(one.compressed(), 1.0)  # log10(10), blank outside the cell
    np.testing.assert_allclose(axes[1].images[0].get_array().compressed(), 2.0)
    assert axes[1].get_ylabel() == "y (pixels)"
    with pytest.raises(ValueError, match="differ in shape"):
        ff.show_heat(heat_cell, heat[:-1], mask, labels > 0, centre, zoom=zoom, title="t")


def test_show_rotated_flows_shows_the_three_colourings(nuclei):
    _, labels = nuclei
    flows = _flows(labels)
    colours = [flow_to_rgb(f) for f in (flows, -flows, flows)]
    errors = {"pixels only": 90.0, "pixels and arrows": 0.04}
    fig = ff.show_rotated_flows(colours, errors)
    axes = _image_axes(fig)
    assert len(axes) == 3
    assert axes[0].get_title() == "flows of the rotated labels"
    assert axes[1].get_title() == "pixels rotated only: wrong\n(mean error 90 degrees)"
    assert axes[2].get_title() == "pixels and arrows rotated\n(mean error 0.0 degrees)"
    np.testing.assert_allclose(axes[1].images[0].get_array(), colours[1])
    with pytest.raises(ValueError, match="lacks"):
        ff.show_rotated_flows(colours, {"pixels only": 1.0})
    with pytest.raises(ValueError, match="three"):
        ff.show_rotated_flows(colours[:2], errors)
    with pytest.raises(ValueError, match="3 axes"):
        ff.show_rotated_flows([flows[0]] * 3, errors)


def test_show_training_item_shows_patch_flows_and_probability(nuclei):
    image, labels = nuclei
    flows = 5 * _flows(labels)
    prob = (labels > 0).astype(np.float32)
    fig = ff.show_training_item(image[None], flows, prob)
    axes = _image_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "augmented patch",
        "its flow target (x5)",
        "its cell-probability target",
    ]
    np.testing.assert_array_equal(axes[0].images[0].get_array(), image)
    np.testing.assert_array_equal(axes[2].images[0].get_array(), prob)
    with pytest.raises(ValueError, match=r"\(1, h, w\)"):
        ff.show_training_item(np.stack([image, image]), flows, prob)


def test_show_prediction_draws_the_window(nuclei):
    image, labels = nuclei
    flows = _flows(labels)
    logit = np.where(labels > 0, 4.0, -4.0)
    window = np.s_[10:30, 5:45]
    fig = ff.show_prediction(image, 5 * flows, logit, flows, window=window, scale=5.0)
    axes = _image_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "test image (window)",
        "predicted cell probability",
        "predicted flows",
        "true flows",
    ]
    assert axes[0].get_xlabel() == "x (pixels)"
    np.testing.assert_array_equal(axes[0].images[0].get_array(), image[window])
    np.testing.assert_allclose(axes[1].images[0].get_array(), 1 / (1 + np.exp(-logit[window])))
    np.testing.assert_allclose(axes[2].images[0].get_array(), axes[3].images[0].get_array())
    with pytest.raises(ValueError, match="as image"):
        ff.show_prediction(image, flows[:, :-1], logit, flows, window=window, scale=5.0)


def test_plot_flow_errors_draws_the_histogram_and_threshold():
    errors = np.array([0.1, 0.2, 0.3, 0.9])
    fig = ff.plot_flow_errors(errors, threshold=0.4)
    ax = fig.axes[0]
    assert ax.get_title() == "flow error per predicted mask (test image 0)"
    assert ax.get_ylabel() == "number of masks" and "flows" in ax.get_xlabel()
    assert sum(p.get_height() for p in ax.patches) == 4  # every mask counted once
    assert ax.lines[0].get_xdata()[0] == 0.4
    with pytest.raises(ValueError, match="1 axes"):
        ff.plot_flow_errors(np.zeros((2, 2)))


def test_plot_ap_draws_one_curve_per_method():
    thresholds = np.array([0.5, 0.75, 0.9])
    curves = {"net": np.array([0.9, 0.7, 0.2]), "classical": np.array([0.6, 0.4, 0.1])}
    fig = ff.plot_ap(thresholds, curves, n_images=4)
    ax = fig.axes[0]
    assert ax.get_title() == "Average precision on 4 BBBC039 test images"
    assert ax.get_xlabel() == "IoU threshold" and ax.get_ylabel().startswith("AP")
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), curves["classical"])
    assert [line.get_label() for line in ax.lines] == ["net", "classical"]
    with pytest.raises(ValueError, match="2 values for 3 thresholds"):
        ff.plot_ap(thresholds, {"bad": np.zeros(2)}, n_images=1)
    with pytest.raises(ValueError, match="empty"):
        ff.plot_ap(thresholds, {}, n_images=1)


def test_show_failures_samples_missed_and_wrong_objects(nuclei):
    image, labels = nuclei
    pred = labels.copy()
    pred[labels == labels.max()] = 0  # one nucleus missed
    pred[:4, :4] = 999  # one wrong mask
    fig = ff.show_failures([image], [labels], [pred], n=4, seed=0)
    titles = [ax.get_title() for ax in _image_axes(fig)]
    assert len(titles) == 2
    assert titles[0].startswith("missed (FN)\ntest image 0")
    assert titles[1] == "wrong (FP)\ntest image 0, 16 px"
    assert _image_axes(fig)[1].images[0].get_array().shape == (*image.shape, 3)  # 80 px or less
    perfect = ff.show_failures([image], [labels], [labels])
    assert perfect.axes[0].get_title() == "no missed nuclei and no wrong masks"
    with pytest.raises(ValueError, match="same length"):
        ff.show_failures([image], [labels], [])
