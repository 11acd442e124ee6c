"""Tests of course_utils.figures.cells_results (notebook 10, sections 4-6): the box numbers
agree with a direct computation, each figure has the panels, titles and labels it claims and
draws the data it is given, and bad input fails with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from course_utils.figures import cells_results as fr
from course_utils.scale import rescale_labels


def _pixels(ax):
    return ax.get_xlabel(), ax.get_ylabel()


@pytest.fixture()
def diagonal():
    """Two thin diagonal cells side by side (their boxes overlap a lot), and an L-shaped cell
    with a small one in the corner of its box."""
    lab = np.zeros((40, 40), np.int32)
    for k in range(20):
        lab[k + 2, k + 2 : k + 5] = 1
        lab[k + 2, k + 6 : k + 9] = 2
    lab[30:36, 30:32], lab[34:36, 30:36], lab[30:33, 33:36] = 3, 3, 4
    return lab


def _iou(a, b):
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a, area_b = ((x[2] - x[0]) * (x[3] - x[1]) for x in (a, b))
    return w * h / (area_a + area_b - w * h)


def test_perfect_box_nms_and_box_summary_agree_with_a_direct_count(diagonal):
    kept = fr.perfect_box_nms(diagonal, 0.3)
    boxes = {1: (2, 2, 24, 22), 2: (6, 2, 28, 22), 3: (30, 30, 36, 36), 4: (33, 30, 36, 33)}
    assert _iou(boxes[1], boxes[2]) > 0.3  # so the NMS keeps one of the two diagonal cells
    assert len(kept) == 3 and {3, 4} <= set(kept.tolist())
    np.testing.assert_array_equal(np.sort(fr.perfect_box_nms(diagonal, 0.99)), [1, 2, 3, 4])
    row = fr.box_summary([diagonal, diagonal], iou_thresh=(0.99, 0.3))
    windows = {i: diagonal[y0:y1, x0:x1] for i, (x0, y0, x1, y1) in boxes.items()}
    own = [np.mean(w == i) for i, w in windows.items()]
    others = [np.mean((w > 0) & (w != i)) for i, w in windows.items()]
    assert row["objects"] == 8 and max(others) > 0.2  # the small cell in the L's box
    assert row["box filled by its object"] == pytest.approx(np.median(own * 2))
    assert row["deleted by NMS at 0.99"] == 0 and row["deleted by NMS at 0.3"] == 2
    assert row["boxes > 20% other objects (%)"] == pytest.approx(
        100 * np.mean(np.array(others) > 0.2)
    )
    with pytest.raises(ValueError, match="consecutive"):
        fr.perfect_box_nms(diagonal * 2, 0.5)
    with pytest.raises(ValueError, match="non-negative integers"):
        fr.box_summary([diagonal.astype(float)])


def test_show_boxes_colours_the_deleted_box_red(diagonal):
    image = (diagonal > 0).astype(np.float32)
    fig = fr.show_boxes(image, diagonal, 0.3)
    (ax,) = fig.axes
    colours = [tuple(p.get_edgecolor()[:3]) for p in ax.patches]
    assert colours.count((1.0, 0.0, 0.0)) == 1 and len(colours) == 4
    assert ax.get_title() == "perfect boxes: 1 of 4 deleted by NMS at 0.3 (red)"
    assert _pixels(ax) == ("x (pixels)", "y (pixels)")
    np.testing.assert_array_equal(ax.images[0].get_array(), image)
    with pytest.raises(ValueError, match="differ"):
        fr.show_boxes(image[:-1], diagonal, 0.3)


def test_show_failures_outlines_missed_and_unmatched(diagonal):
    image = (diagonal > 0).astype(np.float32)
    half = rescale_labels(np.where(diagonal >= 3, 0, diagonal), 0.5)  # a prediction at half size
    fig = fr.show_failures(image, diagonal, {"net": half}, np.s_[0:40, 0:40])
    truth_ax, net_ax = fig.axes
    assert (truth_ax.get_title(), net_ax.get_title()) == ("truth", "net")
    assert _pixels(net_ax) == ("x (pixels)", "y (pixels)")
    assert len(net_ax.collections) >= 1  # the missed square, outlined
    assert fig.get_suptitle().startswith("A crop of test image 0")
    with pytest.raises(ValueError, match="truth"):
        fr.show_failures(image[:-1], diagonal, {"net": half}, np.s_[:, :])


def test_show_losses_and_show_stages():
    fig = fr.show_losses([3.0, 2.0, 1.5])
    (ax,) = fig.axes
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [3.0, 2.0, 1.5])
    assert _pixels(ax) == ("step", "sum of the five losses")
    with pytest.raises(ValueError, match="non-empty"):
        fr.show_losses([])
    image = np.zeros((32, 32), np.float32)
    masks = np.zeros((2, 32, 32), np.float32)
    masks[0, 2:10, 2:10], masks[1, 20:30, 20:30] = 1, 1
    detections = {
        "boxes": np.array([[2, 2, 10, 10], [20, 20, 30, 30]], np.float32),
        "scores": np.array([0.9, 0.2], np.float32),
        "masks": masks,
    }
    fig = fr.show_stages(image, np.array([[0, 0, 5, 5]] * 3, np.float32), detections)
    a, b, c = fig.axes
    assert a.get_title() == "3 best proposals (RPN)" and len(a.patches) == 3
    assert b.get_title() == "1 detections with score >= 0.50" and len(b.patches) == 1
    assert c.get_title() == "their masks" and _pixels(c) == ("x (pixels)", "y (pixels)")
    with pytest.raises(ValueError, match="masks"):
        fr.show_stages(image[:-1], detections["boxes"], detections)


def test_show_summary_draws_grouped_bars_and_the_ceilings():
    scores = {
        "classical": {"AP@0.5": 0.1, "AP@0.75": 0.05},
        "cellpose": {"AP@0.5": 0.8, "AP@0.75": 0.5},
    }
    tau = [0.5, 0.75]
    fig = fr.show_summary(scores, "Usiigaci", tau, {"cellpose": [1.0, 0.9]})
    bars, curves = fig.axes
    assert [p.get_height() for p in bars.patches] == [0.1, 0.8, 0.05, 0.5]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["classical", "cellpose"]
    assert bars.get_title() == "Usiigaci" and _pixels(bars) == ("method", "AP")
    np.testing.assert_allclose(curves.lines[0].get_ydata(), [1.0, 0.9])
    assert curves.get_xlabel() == "IoU threshold τ"
    with pytest.raises(ValueError, match="same scores"):
        fr.show_summary({"a": {"x": 1.0}, "b": {"y": 1.0}}, "t", tau, {})
    with pytest.raises(ValueError, match="thresholds"):
        fr.show_summary(scores, "t", tau, {"c": [1.0]})
