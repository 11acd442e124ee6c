"""Tests of course_utils.plot_methods: each figure has the panels, titles and labels it claims,
the crops are coloured where they say, and bad input fails before anything is drawn."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from course_utils import plot_methods as pm  # noqa: E402
from course_utils.data import synthetic_nuclei  # noqa: E402
from course_utils.targets import masks_to_flows  # noqa: E402


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((48, 56), seed=1)
    return image, labels


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_show_maps_draws_scalar_maps_with_colour_bars_and_rgb_without(nuclei):
    image, labels = nuclei
    rgb = np.dstack([image, image, image]).clip(0, 1)
    fig = pm.show_maps(
        [image, labels > 0, rgb],
        ["a", "b", "c"],
        cmap=["gray", "magma", "x"],
        vmin=0,
        vmax=1,
        suptitle="maps",
    )
    axes = _image_axes(fig)
    assert [ax.get_title() for ax in axes[:3]] == ["a", "b", "c"]
    assert len(fig.axes) == 5  # three maps and two colour bars (none for RGB)
    assert axes[0].get_xlabel() == "x (pixels)" and fig.get_suptitle() == "maps"
    assert axes[0].images[0].get_clim() == (0, 1)
    with pytest.raises(ValueError, match="titles"):
        pm.show_maps([image], ["a", "b"])
    with pytest.raises(ValueError, match="maps\\[0\\]"):
        pm.show_maps([np.zeros((2, 3, 4))], ["a"])
    with pytest.raises(ValueError, match="empty"):
        pm.show_maps([], [])


def test_show_deformations_has_a_grid_row_and_an_overlay_row(nuclei):
    image, labels = nuclei
    fig = pm.show_deformations([image, image], [image, image], [labels, labels], ["s", "u"])
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["s", "u"]
    assert all(ax.get_title() == "the crop, deformed" for ax in axes[1])
    with pytest.raises(ValueError, match="labels"):
        pm.show_deformations([image], [image], [], ["s"])


def test_show_flow_field_draws_arrows_only_in_the_mask(nuclei):
    image, labels = nuclei
    flows = masks_to_flows(labels)
    fig = pm.show_flow_field(flows, image, labels > 0, step=4)
    quiver = fig.axes[4].collections[0]
    gy, gx = np.mgrid[0:48:4, 0:56:4]
    assert len(quiver.get_offsets()) == int((labels[gy, gx] > 0).sum())
    assert fig.axes[3].get_xlabel() == "dx" and "every 4th" in fig.axes[4].get_title()
    with pytest.raises(ValueError, match="flows"):
        pm.show_flow_field(flows[0], image, labels > 0)


def test_show_trajectories_draws_every_nth_path_and_all_end_points():
    path = np.cumsum(np.ones((11, 20, 2)), axis=0)
    fig = pm.show_trajectories(np.zeros((30, 30)), path, ["red"] * 20, every=5)
    assert len(fig.axes[0].lines) == 4
    assert len(fig.axes[1].collections[0].get_offsets()) == 20
    assert fig.axes[1].get_title() == "end points after 10 steps"
    with pytest.raises(ValueError, match="colours"):
        pm.show_trajectories(np.zeros((30, 30)), path, ["red"])


def test_failure_crop_colours_outlines_and_tints_the_object(nuclei):
    image, labels = nuclei
    pred = np.zeros_like(labels)
    k = int(labels.max())
    rgb = pm.failure_crop(image, labels, pred, labels, k, size=32)
    assert rgb.shape == (32, 32, 3)
    green = np.isclose(rgb, [0.2, 1.0, 0.2]).all(axis=-1)
    assert green.any() and not np.isclose(rgb, [1.0, 0.6, 0.0]).all(axis=-1).any()  # no pred.
    assert np.isclose(rgb[..., 2], rgb[..., 0] + 0.4)[~green].any()  # the tinted object
    with pytest.raises(ValueError, match="not in holder"):
        pm.failure_crop(image, labels, pred, labels, k + 1)
    with pytest.raises(ValueError, match="same"):
        pm.failure_crop(image[:10], labels, pred, labels, k)
