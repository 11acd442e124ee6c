"""Tests of course_utils.figures.evaluation and figures.comparison (notebooks 07, 07b): each figure
has the panels, titles and axis labels it claims, draws the data it is given, and refuses bad
input with a ValueError before drawing."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from course_utils import detection, uncertainty
from course_utils.data import synthetic_nuclei
from course_utils.figures import comparison, evaluation

THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)


@pytest.fixture(scope="module")
def nuclei():
    """A small synthetic image, its labels, and a worse prediction (a third of the nuclei
    dropped and one blob added)."""
    image, labels = synthetic_nuclei((96, 128), seed=3)
    pred = np.where(labels % 3 == 0, 0, labels)
    pred[2:10, 2:10] = labels.max() + 1
    return image, labels, pred


def _lines_with_label(ax, label):
    return [line for line in ax.lines if line.get_label() == label]


def test_show_overlays_draws_labels_over_the_image_or_the_image_alone(nuclei):
    image, labels, pred = nuclei
    fig = evaluation.show_overlays(image, {"truth": labels, "alone": None})
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["truth", "alone"]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), image)
    assert len(fig.axes[0].images) == 2  # the image and the coloured labels
    assert len(fig.axes[1].images) == 1 and fig.axes[1].get_xlabel() == "x (pixels)"
    with pytest.raises(ValueError, match="panel"):
        evaluation.show_overlays(image, {})
    with pytest.raises(ValueError, match="panel"):
        evaluation.show_overlays(image[None], {"truth": labels})


def test_show_dice_vs_iou_puts_each_prediction_on_the_curve():
    scores = {"a": {"iou": 0.5, "dice": 2 / 3}, "b": {"iou": 0.8, "dice": 1.6 / 1.8}}
    fig = evaluation.show_dice_vs_iou(scores)
    (ax,) = fig.axes
    assert ax.get_title() == "Dice is a fixed function of IoU"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("pixel IoU", "pixel Dice")
    (point,) = _lines_with_label(ax, "b")
    assert point.get_xdata()[0] == 0.8 and point.get_ydata()[0] == pytest.approx(1.6 / 1.8)
    curve = _lines_with_label(ax, "Dice = 2 IoU / (1 + IoU)")[0]
    x, y = curve.get_data()
    np.testing.assert_allclose(y, 2 * x / (1 + x))
    with pytest.raises(ValueError, match="dice"):
        evaluation.show_dice_vs_iou({"a": {"iou": 0.5}})


def test_show_small_objects_plots_the_iou_per_radius_and_the_radii_histogram():
    radii, iou = np.arange(2, 6), np.array([0.4, 0.55, 0.65, 0.7])
    areas = np.array([50, 80, 120, 300])
    fig = evaluation.show_small_objects(radii, iou, areas)
    left, right = fig.axes
    np.testing.assert_array_equal(left.lines[0].get_ydata(), iou)
    assert left.get_xlabel() == "disk radius (pixels)" and "small objects" in left.get_title()
    assert sum(p.get_height() for p in right.patches) == len(areas)
    assert right.get_ylabel() == "number of nuclei" and right.get_title()
    with pytest.raises(ValueError, match="one IoU per radius"):
        evaluation.show_small_objects(radii, iou[:2], areas)


def test_show_masks_draws_truth_plus_prediction(nuclei):
    _, labels, pred = nuclei
    truth = labels > 0
    fig = evaluation.show_masks(truth, {"truth": truth, "pred": pred > 0}, title="two")
    assert len(fig.axes) == 2 and fig.get_suptitle() == "two"
    assert [ax.get_title() for ax in fig.axes] == ["truth", "pred"]
    expected = truth.astype(int) + (pred > 0)
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), expected)
    assert fig.axes[0].get_ylabel() == "y (pixels)"
    with pytest.raises(ValueError, match="shape"):
        evaluation.show_masks(truth, {"pred": truth[:10]}, title="bad")


def test_show_worst_windows_finds_the_window_with_the_errors(nuclei):
    image, labels, pred = nuclei
    images, truths = [image, image], [labels, labels]
    rows = {"perfect": [labels, labels], "worse": [labels, pred]}
    fig = evaluation.show_worst_windows(images, truths, rows, names={"worse": "W"}, size=32)
    axes = np.array(fig.axes).reshape(2, 2)
    assert "worst 32 x 32 window" in fig.get_suptitle()
    assert axes[1, 0].get_title().startswith("perfect\n0 errors")
    assert axes[1, 1].get_title().startswith("W\n") and "test image 1" in axes[0, 1].get_title()
    assert int(axes[1, 1].get_title().split("\n")[1].split()[0]) > 0
    assert axes[0, 1].images[0].get_array().shape == (32, 32)
    with pytest.raises(ValueError, match="as many label images"):
        evaluation.show_worst_windows(images, truths, {"bad": [labels]})


def test_show_ap_curves_draws_one_or_two_panels():
    curves = {"a": np.linspace(0.9, 0.2, len(THRESHOLDS)), "z": np.linspace(1, 0.5, 10)}
    fig = comparison.show_ap_curves(THRESHOLDS, {"a": curves["a"]}, title="one")
    (ax,) = fig.axes
    assert ax.get_title() == "one" and ax.get_xlabel() == "IoU threshold τ"
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), curves["a"])
    fig = comparison.show_ap_curves(
        THRESHOLDS, curves, {"a": curves["z"]}, names={"a": "A"}, colours={"a": "red"}, dashed={"z"}
    )
    left, right = fig.axes
    assert right.get_title().startswith("Ceiling") and left.get_ylabel().startswith("AP")
    assert [line.get_label() for line in left.lines] == ["A", "z"]
    assert left.lines[1].get_linestyle() == "--" and left.lines[0].get_color() == "red"
    np.testing.assert_array_equal(right.lines[0].get_ydata(), curves["z"])
    assert right.lines[0].get_color() == "red"  # a row keeps its colour in both panels
    with pytest.raises(ValueError, match="one value per threshold"):
        comparison.show_ap_curves(THRESHOLDS, {"a": [0.5, 0.4]})


def test_show_intervals_draws_a_bar_and_a_dot_per_row():
    counts = {
        "a": {"tp": np.array([8.0, 9, 7]), "fp": np.array([1.0, 2, 1]), "fn": np.ones(3)},
        "b": {"tp": np.array([5.0, 9, 2]), "fp": np.array([3.0, 2, 6]), "fn": np.ones(3)},
    }
    intervals = {
        row: {
            "F1": uncertainty.bootstrap_interval(c, "f1", n_boot=50, seed=0),
            "AP": uncertainty.bootstrap_interval(c, "ap", n_boot=50, seed=0),
        }
        for row, c in counts.items()
    }
    fig = comparison.show_intervals(intervals, ["F1", "AP"], names={"b": "B"}, hollow={"b"})
    ax, right = fig.axes
    assert ax.get_title() == "F1: estimate and 95% interval" and ax.get_xlabel() == "F1"
    assert right.get_title().startswith("AP") and right.get_xlabel() == "AP"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "B"]
    assert ax.get_ylabel() == "method" and ax.get_ylim()[0] > ax.get_ylim()[1]  # a on top
    bar, dot = ax.lines[2], ax.lines[3]  # row "b"
    iv = intervals["b"]["F1"]
    np.testing.assert_allclose(bar.get_xdata(), [iv.low, iv.high])
    assert dot.get_xdata()[0] == iv.estimate and dot.get_markerfacecolor() == "w"
    with pytest.raises(ValueError, match="interval for each"):
        comparison.show_intervals(intervals, ["F1", "PQ"])


def test_show_pr_curves_draws_each_curve_with_its_ap(nuclei):
    _, labels, pred = nuclei
    scores = np.linspace(1, 0.1, int(pred.max()))
    curve = detection.detection_curve([labels], [pred], [scores], 0.5)
    curves = {("s", "tuned"): curve, ("s", "low"): curve}
    fig = comparison.show_pr_curves(curves, names={"s": "StarDist"})
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("recall", "precision")
    assert "IoU 0.5" in ax.get_title()
    assert ax.lines[0].get_label() == f"StarDist, tuned threshold (COCO AP {curve.ap:.2f})"
    assert ax.lines[0].get_linestyle() == "-" and ax.lines[1].get_linestyle() == ":"
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), curve.recall)
    with pytest.raises(ValueError, match="DetectionCurve"):
        comparison.show_pr_curves({("s", "tuned"): 0.5})


def test_show_counts_sizes_plots_the_counts_and_the_areas(nuclei):
    _, labels, pred = nuclei
    fig = comparison.show_counts_sizes([labels, pred], {"m": [pred, pred]})
    sizes, counts = fig.axes
    assert sizes.get_xlabel() == "object area (pixels)" and sizes.get_title()
    assert counts.get_title() == "Counts per test image"
    n_true = [len(np.unique(t)) - 1 for t in (labels, pred)]
    (points,) = _lines_with_label(counts, "m")
    np.testing.assert_array_equal(points.get_xdata(), n_true)
    np.testing.assert_array_equal(points.get_ydata(), [n_true[1], n_true[1]])
    with pytest.raises(ValueError, match="one prediction per true image"):
        comparison.show_counts_sizes([labels], {"m": [pred, pred]})
