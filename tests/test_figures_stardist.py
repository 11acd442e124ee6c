"""Tests of course_utils.figures.stardist and .stardist_results (figures of notebooks 06, 06b):
each figure has the panels, titles and axis labels it claims, draws the data it is given, and
refuses bad input with a ValueError before drawing."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.patches import Polygon, Rectangle

from course_utils.figures import stardist as fs
from course_utils.figures import stardist_results as fr
from course_utils.postprocess import dist_to_coord, non_maximum_suppression, polygons_to_label
from course_utils.targets import edt_prob, rays_golden_spiral, star_dist, star_distances_3d

PIXELS = ("x (pixels)", "y (pixels)")


@pytest.fixture(scope="module")
def blobs():
    """A 40 x 48 image with three touching square-ish nuclei (ids 1..3)."""
    labels = np.zeros((40, 48), np.int32)
    labels[5:20, 5:18] = 1
    labels[5:20, 18:30] = 2
    labels[22:35, 10:26] = 3
    image = (labels > 0).astype(np.float32) * 0.8 + 0.1
    return image, labels


def _labels(ax):
    return ax.get_xlabel(), ax.get_ylabel()


def test_diagrams_draw_one_box_per_step_and_refuse_bad_sizes():
    fig = fs.families_diagram()
    ax = fig.axes[0]
    assert ax.get_title() == "Two families of instance segmentation"
    assert len(ax.patches) == 3 * 7 + 3 * 6  # 7 boxes and 6 arrows per row
    fig = fs.pipeline_diagram(16, 2)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert fig.axes[0].get_title() == "The StarDist pipeline"
    assert "16 ray distances" in texts and "grid 2" in texts
    assert len(fig.axes[0].patches) == 2 * 5 + 2 * 4
    with pytest.raises(ValueError, match="n_rays"):
        fs.pipeline_diagram(2, 2)


def test_elongated_nuclei_touch_without_overlapping():
    labels = fs.elongated_nuclei()
    assert labels.dtype == np.int32 and labels.shape == (100, 130)
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    assert np.any((labels[:, :-1] == 1) & (labels[:, 1:] == 2)) or np.any(
        (labels[:-1] == 1) & (labels[1:] == 2)
    )
    with pytest.raises(ValueError, match="half_axes"):
        fs.elongated_nuclei(half_axes=(0, 5))


def test_show_boxes_draws_every_box_and_the_worst_pair_in_red(blobs):
    image, labels = blobs
    boxes = np.array([[5, 5, 20, 18], [5, 18, 20, 30], [22, 10, 35, 26]])
    fig = fs.show_boxes(image, labels, boxes, [0.1, 0.4], [(1, 2), (2, 3)], ["lab", "box"])
    left, right = fig.axes
    assert left.get_title() == "lab" and right.get_title().startswith("box\n")
    assert "box IoU 0.40" in right.get_title()
    assert np.array_equal(right.images[0].get_array(), image)
    rects = [p for p in right.patches if isinstance(p, Rectangle)]
    assert len(rects) == 3
    assert [r.get_linewidth() for r in rects] == [1.5, 3, 3]  # ids 2 and 3 are the red pair
    assert (rects[2].get_x(), rects[2].get_y(), rects[2].get_width()) == (9.5, 21.5, 16)
    assert _labels(right) == PIXELS
    with pytest.raises(ValueError, match="boxes"):
        fs.show_boxes(image, labels, boxes[:2], [0.1], [(1, 2)], ["a", "b"])
    with pytest.raises(ValueError, match="one IoU per pair"):
        fs.show_boxes(image, labels, boxes, [0.1], [(1, 2), (2, 3)], ["a", "b"])
    with pytest.raises(ValueError, match="differ in shape"):
        fs.show_boxes(image[:10], labels, boxes, [0.1], [(1, 2)], ["a", "b"])


def test_show_ray_polygon_draws_the_rays_and_two_distance_maps(blobs):
    image, labels = blobs
    dist = star_dist(labels, 8)
    vertices = dist_to_coord(dist[12, 11][None], np.array([[12, 11]]))[0]
    fig = fs.show_ray_polygon(image, (12, 11), vertices, dist)
    image_axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(image_axes) == 3
    assert image_axes[0].get_title() == "8 rays from one pixel and their polygon"
    assert len(image_axes[0].lines) == 8 + 1  # one line per ray, and the starting pixel
    assert np.allclose(image_axes[0].patches[0].get_xy()[:8], vertices[::-1].T)
    assert np.array_equal(image_axes[1].images[0].get_array(), dist[..., 0])
    assert np.array_equal(image_axes[2].images[0].get_array(), dist[..., 2])
    assert "90°, down" in image_axes[2].get_title()
    assert all(_labels(ax) == PIXELS for ax in image_axes)
    with pytest.raises(ValueError, match="vertices"):
        fs.show_ray_polygon(image, (12, 11), vertices[:, :4], dist)


def test_show_polygons_draws_one_patch_per_polygon(blobs):
    image, labels = blobs
    centres = np.array([[12, 11], [12, 24], [28, 18]])
    polygons = dist_to_coord(star_dist(labels, 16)[centres[:, 0], centres[:, 1]], centres)
    fig = fs.show_polygons(image, polygons, "three", centres=centres)
    ax = fig.axes[0]
    assert ax.get_title() == "three" and _labels(ax) == PIXELS
    assert len([p for p in ax.patches if isinstance(p, Polygon)]) == 3
    assert np.allclose(ax.lines[0].get_xdata(), centres[:, 1])
    fig = fs.show_polygons(labels > 0, polygons, "bool image", colour="cyan")
    assert fig.axes[0].images[0].get_array().dtype == np.float32
    with pytest.raises(ValueError, match="centres"):
        fs.show_polygons(image, polygons, "t", centres=centres[:2])
    with pytest.raises(ValueError, match="polygons"):
        fs.show_polygons(image, polygons[0], "t")


def test_show_polygon_fits_picks_the_worst_and_the_median(blobs):
    _, labels = blobs
    centres = np.array([[12, 11], [12, 24], [28, 18]])
    fig = fs.show_polygon_fits(labels, centres, np.array([0.9, 0.5, 0.95]), rays=(4, 8))
    worst, typical = fig.axes
    assert worst.get_title() == "worst fit: IoU 0.50 with 8 rays"
    assert typical.get_title() == "typical: IoU 0.90 with 8 rays"
    assert len(worst.patches) == 2 and _labels(worst) == PIXELS
    assert worst.images[0].get_array().sum() == (labels == 2).sum()  # nucleus 2 alone
    with pytest.raises(ValueError, match="centres"):
        fs.show_polygon_fits(labels, centres[:2], np.ones(2), rays=(8,))


def test_show_ray_sweep_plots_mean_and_percentile():
    ious = {4: [0.6, 0.7], 8: [0.85, 0.9], 32: [0.97, 0.99]}
    fig = fr.show_ray_sweep(ious, 32)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "number of rays" and ax.get_ylabel() == "IoU of polygon and true mask"
    assert "(2 nuclei)" in ax.get_title()
    assert np.allclose(ax.lines[0].get_ydata(), [0.65, 0.875, 0.98])
    assert list(ax.lines[0].get_xdata()) == [4, 8, 32]
    with pytest.raises(ValueError, match="ious"):
        fr.show_ray_sweep({4: []}, 32)


def test_show_object_probability_bins_the_pixels(blobs):
    image, labels = blobs
    prob = edt_prob(labels)
    fig = fr.show_object_probability(
        image, labels, prob, [0.1, 0.15, 0.9, 0.5], [0.5, 0.7, 0.95, 0.8], n_bins=2
    )
    assert len(fig.axes) == 4  # three panels and a colour bar
    assert np.array_equal(fig.axes[1].images[0].get_array(), prob)
    bars = fig.axes[2].patches
    assert np.allclose([b.get_height() for b in bars], [(0.5 + 0.7) / 2, (0.8 + 0.95) / 2])
    assert fig.axes[2].get_xlabel() == "object probability of the pixel"
    assert _labels(fig.axes[1]) == PIXELS
    with pytest.raises(ValueError, match="pixel_prob"):
        fr.show_object_probability(image, labels, prob, [0.1], [0.5, 0.6])


def test_show_prediction_steps_and_threshold_choice(blobs):
    image, labels = blobs
    prob, dist = edt_prob(labels)[::2, ::2], star_dist(labels, 16, grid=(2, 2))
    points, scores, dists = non_maximum_suppression(
        dist, prob, prob_thresh=0.5, nms_thresh=0.4, grid=(2, 2), b=0
    )
    pred = polygons_to_label(dists, points, labels.shape, prob=scores)
    fig = fr.show_prediction_steps(
        image, prob, points, dists, pred, grid=2, prob_thresh=0.5, size=32
    )
    assert len(fig.axes) == 4
    assert fig.axes[0].get_title() == "predicted probability"
    assert np.array_equal(fig.axes[0].images[0].get_array(), prob[:16, :16])
    n_candidates = int((prob[:16, :16] > 0.5).sum())
    assert fig.axes[1].get_title() == f"{n_candidates} candidates (prob > 0.5)"
    assert len(fig.axes[1].lines[0].get_xdata()) == n_candidates
    kept = int(((points[:, 0] < 32) & (points[:, 1] < 32)).sum())
    assert fig.axes[2].get_title() == f"{kept} polygons kept by NMS" and kept > 0
    assert len(fig.axes[2].patches) == kept
    assert all(_labels(ax) == PIXELS for ax in fig.axes[:3])
    with pytest.raises(ValueError, match="dists"):
        fr.show_prediction_steps(image, prob, points, dists[:0], pred, grid=2, prob_thresh=0.5)

    fig = fr.show_threshold_choice(image, labels, pred, 0.5, 0.4, size=32)
    assert fig.axes[0].get_title() == "ground truth"
    assert fig.axes[1].get_title().startswith("prob > 0.50, NMS 0.40: whole image")
    with pytest.raises(ValueError, match="2-D"):
        fr.show_threshold_choice(image, labels, pred[:10], 0.5, 0.4)


def test_show_threshold_search_writes_every_score():
    search = np.array([[0.5, 0.6], [0.7, 0.65], [0.4, 0.3]])
    fig = fr.show_threshold_search(search, [0.4, 0.5, 0.6], [0.3, 0.4])
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("nms_thresh", "prob_thresh")
    assert ax.get_title() == "validation AP at IoU 0.5"
    assert np.array_equal(ax.images[0].get_array(), search)
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.2f}" for v in search.ravel())
    with pytest.raises(ValueError, match="search"):
        fr.show_threshold_search(search, [0.4, 0.5], [0.3, 0.4])


def test_show_strict_iou_draws_the_curves_and_the_predictions(blobs):
    image, labels = blobs
    ap = {"trained here": [0.8, 0.5, 0.1], "true polygons": [0.95, 0.94, 0.9]}
    preds = {"trained here": labels, "zoo model": np.zeros_like(labels)}
    fig = fr.show_strict_iou(ap, [0.5, 0.7, 0.9], image, labels, preds, n_images=4)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title() == "4 BBBC039 test images"
    assert fig.axes[0].get_xlabel() == "IoU threshold"
    assert np.allclose(fig.axes[0].lines[1].get_ydata(), [0.95, 0.94, 0.9])
    assert fig.axes[1].get_title() == "test image 0, trained here (F1@0.5 1.000)"
    assert fig.axes[2].get_title() == "test image 0, zoo model (F1@0.5 0.000)"
    with pytest.raises(ValueError, match="one AP per threshold"):
        fr.show_strict_iou(ap, [0.5, 0.7], image, labels, preds, n_images=4)


def test_show_ray_errors_histograms_and_scatter():
    rng = np.random.default_rng(0)
    rays = {"a": rng.uniform(0.5, 3, (20, 3)), "b": rng.uniform(0.1, 1, (15, 3))}
    fig = fr.show_ray_errors(rays, 0.8)
    hist, scatter = fig.axes
    assert hist.get_title() == "How far off are the rays?" and hist.get_ylabel() == "nuclei"
    assert scatter.get_xlabel() == "true mean ray length (px): the nucleus's size"
    assert np.allclose(scatter.lines[0].get_xdata(), rays["a"][:, 1])
    assert np.allclose(scatter.lines[1].get_ydata(), rays["b"][:, 2])
    assert hist.lines[0].get_xdata()[0] == 0.8  # the budget
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        fr.show_ray_errors({"a": np.zeros((4, 2))}, 0.8)


def test_show_3d_rays_plots_measured_against_exact():
    volume = np.zeros((12, 14, 16), np.int32)
    volume[2:10, 3:11, 4:12] = 1
    rays = rays_golden_spiral(20)
    dist = star_distances_3d(volume, rays)
    points = {"centre": (6, 7, 8)}
    exact = {"centre": dist[6, 7, 8] + 0.1}
    fig = fr.show_3d_rays(points, exact, dist, rays)
    assert len(fig.axes) == 2
    line_ax = fig.axes[0]
    assert line_ax.get_ylabel() == "star_distances_3d (voxels)"
    assert np.allclose(line_ax.lines[0].get_ydata(), dist[6, 7, 8])
    assert "error mean 0.10" in line_ax.get_legend().get_texts()[0].get_text()
    assert fig.axes[1].get_title() == "polyhedron vertices from the centre"
    with pytest.raises(ValueError, match="dist"):
        fr.show_3d_rays(points, exact, dist[0], rays)
