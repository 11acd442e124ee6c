"""Tests of course_utils.figures.cells (notebook 10, sections 1-3): the measurements agree with
a direct computation, each figure has the panels, titles and labels it claims and draws the
data it is given, and bad input fails with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops

from course_utils.data import synthetic_cells, synthetic_nuclei
from course_utils.figures import cells as fc
from course_utils.metrics import matching_dataset
from course_utils.targets import AFFINITY_OFFSETS, label_affinities


@pytest.fixture(scope="module")
def cells():
    image, labels, nuclei = synthetic_cells((96, 96), n_cells=8, seed=2, return_nuclei=True)
    return image.astype(np.float32), labels, nuclei


def _pixels(ax):
    return ax.get_xlabel(), ax.get_ylabel()


def test_shape_measures_agree_with_regionprops_and_a_touching_scan():
    lab = np.zeros((20, 30), np.int32)
    lab[2:8, 2:8], lab[2:8, 8:20], lab[12:18, 2:28] = 1, 2, 3  # 1 and 2 touch, 3 alone
    m = fc.shape_measures([lab, lab[:, :10]])
    props = regionprops(lab) + regionprops(lab[:, :10])
    np.testing.assert_allclose(m["diameter"], [r.equivalent_diameter_area for r in props])
    np.testing.assert_allclose(m["solidity"], [r.solidity for r in props])
    major, minor = (
        np.array([getattr(r, a) for r in props]) for a in ("axis_major_length", "axis_minor_length")
    )
    np.testing.assert_allclose(m["elongation"], major / np.maximum(minor, 1))
    assert m["touching"].tolist() == [True, True, False, True, True, False]
    summary = fc.shape_summary(m)
    assert summary["objects"] == 6 and summary["touching another (%)"] == pytest.approx(400 / 6)
    assert summary["median solidity"] == pytest.approx(np.median(m["solidity"]))
    with pytest.raises(ValueError, match="elongation"):
        fc.shape_summary({"diameter": [1.0], "solidity": [1.0], "touching": [True]})
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        fc.shape_measures([lab.astype(float)])


def test_show_shapes_draws_the_crops_and_the_solidity_histograms(cells):
    image, labels, _ = cells
    crop = np.s_[10:60, 20:80]
    fig = fc.show_shapes({"cells": (image[0], labels, crop)}, {"a": [0.5, 0.9], "b": [0.95]})
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title() == "cells" and _pixels(fig.axes[0]) == (
        "x (pixels)",
        "y (pixels)",
    )
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), image[0][crop])
    hist = fig.axes[1]
    assert hist.get_title() == "How convex are the objects?"
    assert _pixels(hist) == ("solidity (area / convex hull area)", "density")
    assert sum(p.get_height() > 0 for p in hist.containers[0]) == 2  # two values, two bins
    with pytest.raises(ValueError, match="one shape"):
        fc.show_shapes({"cells": (image[0], labels[:-1], crop)}, {"a": [0.5]})
    with pytest.raises(ValueError, match="at least one"):
        fc.show_shapes({}, {"a": [0.5]})


def test_ceiling_labels_give_back_the_labels_for_flows_and_affinities(cells):
    _, labels, _ = cells
    for method in ("cellpose", "affinities"):
        (pred,) = fc.ceiling_labels(method, [labels])
        assert pred.shape == labels.shape
        assert matching_dataset([labels], [pred], 0.5).accuracy > 0.9
    (polygons,) = fc.ceiling_labels("stardist", [labels])
    assert polygons.shape == labels.shape and polygons.max() > 0
    with pytest.raises(ValueError, match="method"):
        fc.ceiling_labels("unet_3class", [labels])


def test_show_ceilings_draws_each_curve_and_the_crop(cells):
    image, labels, _ = cells
    tau = np.array([0.5, 0.75, 0.9])
    curves = {"stardist ceiling": [0.9, 0.6, 0.3], "cellpose ceiling": [1.0, 1.0, 0.9]}
    crop = np.s_[0:40, 0:50]
    fig = fc.show_ceilings(tau, curves, image[0], labels, labels, crop)
    left, right = fig.axes
    assert [line.get_linestyle() for line in left.lines] == ["--", "-"]  # StarDist dashed
    np.testing.assert_allclose(left.lines[1].get_ydata(), curves["cellpose ceiling"])
    assert _pixels(left) == ("IoU threshold τ", "AP = TP / (TP + FP + FN)")
    assert right.get_title().startswith("StarDist ceiling")
    np.testing.assert_array_equal(right.images[0].get_array(), image[0][crop])
    with pytest.raises(ValueError, match="thresholds"):
        fc.show_ceilings(tau, {"x": [1.0]}, image[0], labels, labels, crop)


def test_show_affinities_picks_the_foreground_and_three_offsets(cells):
    _, labels, _ = cells
    aff = label_affinities(labels)
    fig = fc.show_affinities(labels, aff, AFFINITY_OFFSETS)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == [
        "foreground",
        "affinity 1 px down",
        "affinity 1 px right",
        "affinity 9 px right",
    ]
    np.testing.assert_array_equal(fig.axes[3].images[0].get_array(), aff[-1])
    assert fig.get_suptitle().startswith("True affinities")
    with pytest.raises(ValueError, match="offsets"):
        fc.show_affinities(labels, aff, AFFINITY_OFFSETS[:2])


def test_show_leak_titles_count_the_cells():
    pair = np.zeros((14, 30), np.int32)
    pair[2:12, 1:15], pair[2:12, 15:29] = 1, 2
    fg = (pair > 0).astype(np.float32)
    affinity = label_affinities(pair, [(0, 1)])[0]
    fig = fc.show_leak(affinity, fg, (pair > 0).astype(np.int32), pair)
    assert [ax.get_title() for ax in fig.axes] == [
        "affinity to the right (the leak in grey)",
        "components: 1 cell",
        "seeds + watershed: 2",
    ]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), affinity)
    assert all(_pixels(ax) == ("x (pixels)", "y (pixels)") for ax in fig.axes)
    with pytest.raises(ValueError, match="one shape"):
        fc.show_leak(affinity[:-1], fg, pair, pair)


def test_show_synthetic_and_show_channels(cells):
    image, labels, _ = cells
    fig = fc.show_synthetic(image, labels)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["channel 0: cytoplasm", "channel 1: nucleus", f"{labels.max()} cells"]
    assert "clusters" in fig.get_suptitle()
    crop = np.s_[5:70, 5:70]
    fig = fc.show_channels(image, {"true cells": labels, "net": labels}, crop)
    assert [ax.get_title() for ax in fig.axes] == ["nuclear channel", "true cells", "net"]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), image[1][crop])
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), image[0][crop])
    assert all(_pixels(ax) == ("x (pixels)", "y (pixels)") for ax in fig.axes)
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        fc.show_synthetic(image[0], labels)
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        fc.show_channels(image[:1], {"x": labels}, crop)
    with pytest.raises(ValueError, match="one shape"):
        fc.show_channels(image, {"x": labels[:-1]}, crop)


def test_synthetic_nuclei_also_measure():
    _, labels = synthetic_nuclei((64, 64), seed=0)
    m = fc.shape_measures([labels])
    assert len(m["solidity"]) == labels.max() and np.all(m["solidity"] > 0.5)
