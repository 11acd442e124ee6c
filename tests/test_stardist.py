"""StarDist targets and post-processing: radial distances, object probability, polygon NMS,
polygons -> labels. Checked against hand-computed cases and naive implementations; the parity
with the reference package is in test_stardist_reference.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.draw import disk, ellipse
from skimage.draw import polygon as sk_polygon

from course_utils.postprocess import dist_to_coord, non_maximum_suppression, polygons_to_label
from course_utils.postprocess._polygon_overlap import intersection_area_np
from course_utils.targets import edt_prob, ray_angles, star_dist


def touching_blobs(shape=(96, 112), n=14, seed=0) -> np.ndarray:
    """Discs and ellipses, later ones painted over earlier ones, so many objects touch."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        centre = rng.uniform(8, np.array(shape) - 8)
        if k % 2:
            rr, cc = disk(centre, rng.uniform(5, 10), shape=shape)
        else:
            radii = rng.uniform(4, 11, 2)
            rr, cc = ellipse(*centre, *radii, shape=shape, rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = k
    return labels


def touching_discs(shape=(128, 128), n=24, seed=0) -> np.ndarray:
    """Discs cut by their Voronoi cells: touching, convex (so star-convex) objects."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(6, np.array(shape) - 6, (n, 2))
    radii = rng.uniform(7, 12, n)
    yx = np.stack(np.mgrid[: shape[0], : shape[1]], axis=-1).astype(float)
    d = np.linalg.norm(yx[:, :, None, :] - centres, axis=-1)
    nearest = d.argmin(-1)
    inside = np.take_along_axis(d, nearest[..., None], -1)[..., 0] < radii[nearest]
    return np.where(inside, nearest + 1, 0).astype(np.int32)


def naive_star_dist(labels: np.ndarray, n_rays: int) -> np.ndarray:
    """Plain Python loops: walk each ray in unit float32 steps until the label changes."""
    h, w = labels.shape
    out = np.zeros((h, w, n_rays), np.float32)
    step = np.float32(2 * np.pi / n_rays)
    for i, j in zip(*np.nonzero(labels)):
        for k in range(n_rays):
            phi = np.float64(np.float32(k) * step)
            dr, dc = np.float32(np.sin(phi)), np.float32(np.cos(phi))
            r = c = np.float32(0)
            n = 0
            while True:
                r, c, n = r + dr, c + dc, n + 1
                ii, jj = int(np.rint(np.float32(i) + r)), int(np.rint(np.float32(j) + c))
                if not (0 <= ii < h and 0 <= jj < w) or labels[ii, jj] != labels[i, j]:
                    break
            out[i, j, k] = n - 1 + 0.5 / max(abs(float(dr)), abs(float(dc)))
    return out


def f1_iou50(true: np.ndarray, pred: np.ndarray) -> float:
    """F1 at IoU 0.5 (matches at IoU > 0.5 are unique, so no assignment is needed)."""
    ids_t, ids_p = np.unique(true[true > 0]), np.unique(pred[pred > 0])
    tp = 0
    for t in ids_t:
        mt = true == t
        cand, counts = np.unique(pred[mt], return_counts=True)
        for p, inter in zip(cand, counts):
            if p and inter / (mt.sum() + (pred == p).sum() - inter) > 0.5:
                tp += 1
    return 2 * tp / max(len(ids_t) + len(ids_p), 1)


# ---------------------------------------------------------------- radial distances


def test_ray_angles():
    a = ray_angles(8)
    assert a.dtype == np.float64 and a.shape == (8,)
    np.testing.assert_allclose(a, np.arange(8) * np.pi / 4)
    with pytest.raises(ValueError, match="n_rays"):
        ray_angles(2)


def test_star_dist_hand_computed_square():
    labels = np.zeros((9, 9), np.int32)
    labels[3:6, 3:6] = 7
    d = star_dist(labels, n_rays=8)
    assert d.dtype == np.float32 and d.shape == (9, 9, 8)
    # Centre of a 3x3 square: along the axes, 2 steps to leave, back by half a pixel: 1.5.
    # Diagonally, steps of (0.707, 0.707) round to (1, 1), (1, 1), (2, 2): 3 steps, back
    # by 1 - 0.5 / 0.707, so 2 + 0.707 = 2.707.
    np.testing.assert_allclose(d[4, 4, ::2], 1.5, atol=1e-6)
    np.testing.assert_allclose(d[4, 4, 1::2], 2 + np.sqrt(0.5), atol=1e-5)
    # A corner pixel: one step to the outside along rays 0 and 6 (right, up) -> 0.5.
    assert d[3, 3, 4] == pytest.approx(0.5) and d[3, 3, 6] == pytest.approx(0.5)
    assert d[3, 3, 0] == pytest.approx(2.5)
    assert np.all(d[labels == 0] == 0)


def test_star_dist_disc_is_radius():
    labels = np.zeros((64, 64), np.int32)
    rr, cc = disk((32, 32), 15)
    labels[rr, cc] = 1
    d = star_dist(labels, n_rays=32)
    # Pixels inside a disc of radius 15 have centres closer than 15: the reported distance is
    # half a pixel past the last inside pixel, so within a pixel of the radius.
    np.testing.assert_allclose(d[32, 32], 15, atol=1.0)
    assert abs(d[32, 32].mean() - 15) < 0.5


def test_star_dist_matches_naive_loops():
    labels = touching_blobs((40, 48), n=8, seed=3)
    np.testing.assert_allclose(star_dist(labels, 12), naive_star_dist(labels, 12), atol=1e-5)


def test_star_dist_image_border_and_grid():
    labels = np.full((11, 11), 3, np.int32)
    d = star_dist(labels, n_rays=4)
    # The image border counts as background: from (5, 5) there are 6 steps to leave.
    np.testing.assert_allclose(d[5, 5], 5.5)
    labels = touching_blobs()
    full = star_dist(labels, 16)
    np.testing.assert_array_equal(star_dist(labels, 16, grid=(2, 4)), full[::2, ::4])


def test_star_dist_torch_equals_numba():
    labels = touching_blobs((48, 64), n=10, seed=1)
    expected = star_dist(labels, 32)
    got = star_dist(torch.from_numpy(labels).long(), 32)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    sub = star_dist(torch.from_numpy(labels), 8, grid=(2, 2))
    np.testing.assert_array_equal(sub.numpy(), star_dist(labels, 8, grid=(2, 2)))


@pytest.mark.parametrize(
    "bad, err",
    [
        (np.zeros((8, 8), np.float32), TypeError),
        (np.zeros((8, 8), bool), TypeError),
        (np.zeros((4, 8, 8), np.int32), ValueError),
        (-np.ones((8, 8), np.int32), ValueError),
        (np.zeros((0, 8), np.int32), ValueError),
    ],
)
def test_star_dist_bad_input(bad, err):
    with pytest.raises(err):
        star_dist(bad)
    if bad.size:
        with pytest.raises(err):
            star_dist(torch.from_numpy(bad))


def test_star_dist_bad_arguments():
    with pytest.raises(ValueError, match="n_rays"):
        star_dist(np.zeros((8, 8), np.int32), n_rays=2)
    with pytest.raises(ValueError, match="grid"):
        star_dist(np.zeros((8, 8), np.int32), grid=(0, 1))


# ---------------------------------------------------------------- object probability


def test_edt_prob_matches_per_object_edt():
    labels = touching_blobs()
    prob = edt_prob(labels)
    assert prob.dtype == np.float32 and prob.shape == labels.shape
    expected = np.zeros(labels.shape)
    for i in np.unique(labels[labels > 0]):
        # Distance to the nearest pixel of another label or background; the border is not
        # background (scipy's EDT on the whole image).
        dt = ndi.distance_transform_edt(labels == i)
        expected[labels == i] = dt[labels == i] / dt.max()
    np.testing.assert_allclose(prob, expected, atol=1e-6)
    assert np.all(prob[labels == 0] == 0)


def test_edt_prob_single_object_image():
    with pytest.raises(TypeError):
        edt_prob(np.ones((5, 5), np.float32))
    prob = edt_prob(np.ones((5, 5), np.int32))
    # One object filling the image: treated as surrounded by background.
    assert prob[2, 2] == pytest.approx(1.0) and prob[0, 0] == pytest.approx(1 / 3)


# ---------------------------------------------------------------- 3-D


# ---------------------------------------------------------------- polygons


def test_dist_to_coord_hand_computed():
    coord = dist_to_coord(np.array([[2.0, 2.0, 2.0, 2.0]]), np.array([[5, 7]]))
    assert coord.shape == (1, 2, 4) and coord.dtype == np.float32
    # Rays point right, down, left, up in (row, col).
    np.testing.assert_allclose(coord[0, 0], [5, 7, 5, 3], atol=1e-6)
    np.testing.assert_allclose(coord[0, 1], [9, 7, 5, 7], atol=1e-6)
    with pytest.raises(ValueError):
        dist_to_coord(np.ones((2, 4)), np.ones((3, 2)))


def test_polygons_to_label_matches_skimage_and_order():
    rng = np.random.default_rng(0)
    dist = rng.uniform(3, 12, (20, 16))
    points = rng.integers(-5, 60, (20, 2))
    prob = rng.random(20)
    out = polygons_to_label(dist, points, (56, 64), prob=prob)
    assert out.dtype == np.int32 and out.shape == (56, 64)
    expected = np.zeros((56, 64), np.int32)
    coord = dist_to_coord(dist, points)
    for i in np.argsort(prob, kind="stable"):
        expected[sk_polygon(coord[i, 0], coord[i, 1], (56, 64))] = i + 1
    assert np.mean(out == expected) > 0.995
    # The more probable of two overlapping polygons wins the overlap.
    d = np.full((2, 8), 6.0)
    pts = np.array([[20, 20], [20, 24]])
    assert polygons_to_label(d, pts, (40, 40), prob=[0.9, 0.1])[20, 22] == 1
    assert polygons_to_label(d, pts, (40, 40), prob=[0.1, 0.9])[20, 22] == 2
    assert polygons_to_label(np.zeros((0, 8)), np.zeros((0, 2)), (5, 5)).max() == 0
    with pytest.raises(ValueError):
        polygons_to_label(d, pts, (40, 40), prob=[0.5])


def _side(a, b, p) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def sutherland_hodgman(subject: np.ndarray, clip: np.ndarray) -> float:
    """Area of subject clipped by a convex counter-clockwise polygon (exact for convex ones)."""
    out = [np.asarray(p, float) for p in subject]
    for k in range(len(clip)):
        a, b = clip[k], clip[(k + 1) % len(clip)]
        pts, out = out, []
        for i in range(len(pts)):
            p, q = pts[i], pts[(i + 1) % len(pts)]
            sp, sq = _side(a, b, p), _side(a, b, q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                out.append(p + (q - p) * sp / (sp - sq))
        if not out:
            return 0.0
    x, y = np.array(out).T
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_intersection_area_exact():
    square = np.array([[0, 0], [4, 0], [4, 4], [0, 4]])
    assert intersection_area_np(square, square + [2, 1]) == pytest.approx(6.0)
    assert intersection_area_np(square, square + [4, 0]) == 0.0  # shared edge only
    # A spike (out and back along a segment) and a repeated vertex add no area.
    spiky = np.array([[0, 0], [4, 0], [4, 4], [7, 4], [4, 4], [4, 4], [0, 4]])
    assert intersection_area_np(spiky, square) == pytest.approx(16.0)
    # Non-convex: an L shape against a square covering its corner.
    ell = np.array([[0, 0], [6, 0], [6, 2], [2, 2], [2, 6], [0, 6]])
    assert intersection_area_np(ell, np.array([[1, 1], [3, 1], [3, 3], [1, 3]])) == 3.0
    rng = np.random.default_rng(0)
    from scipy.spatial import ConvexHull

    for _ in range(50):
        a = rng.integers(0, 12, (8, 2))
        b = rng.integers(0, 12, (8, 2))
        a, b = a[ConvexHull(a).vertices], b[ConvexHull(b).vertices]
        expected = sutherland_hodgman(a.astype(float), b.astype(float))
        assert intersection_area_np(a, b) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- NMS


def two_polygon_input(offset: int, p=(0.9, 0.8)):
    dist = np.zeros((40, 60, 16), np.float32)
    prob = np.zeros((40, 60), np.float32)
    for (r, c), pr in zip([(20, 20), (20, 20 + offset)], p):
        dist[r, c], prob[r, c] = 6.0, pr
    return dist, prob


def test_nms_keeps_best_of_overlapping_and_both_disjoint():
    points, prob, dist = non_maximum_suppression(*two_polygon_input(3))
    np.testing.assert_array_equal(points, [[20, 20]])
    assert prob.tolist() == [pytest.approx(0.9)] and dist.shape == (1, 16)
    points, _, _ = non_maximum_suppression(*two_polygon_input(3, p=(0.6, 0.95)))
    np.testing.assert_array_equal(points, [[20, 23]])
    points, prob, _ = non_maximum_suppression(*two_polygon_input(20))
    np.testing.assert_array_equal(points, [[20, 20], [20, 40]])
    # Overlap / smaller area ~ 0.25 at an offset of 9: kept at nms_thresh 0.4, not at 0.1.
    assert len(non_maximum_suppression(*two_polygon_input(9), nms_thresh=0.4)[0]) == 2
    assert len(non_maximum_suppression(*two_polygon_input(9), nms_thresh=0.1)[0]) == 1


def test_nms_border_grid_and_empty():
    dist, prob = two_polygon_input(20)
    prob[1, 30], dist[1, 30] = 0.99, 3.0
    assert len(non_maximum_suppression(dist, prob, b=2)[0]) == 2
    assert len(non_maximum_suppression(dist, prob, b=0)[0]) == 3
    points, _, _ = non_maximum_suppression(dist, prob, grid=(2, 2), b=None)
    assert sorted(map(tuple, points)) == [(2, 60), (40, 40), (40, 80)]
    points, prob_k, dist_k = non_maximum_suppression(dist, prob * 0)
    assert points.shape == (0, 2) and prob_k.shape == (0,) and dist_k.shape == (0, 16)


def test_nms_torch_equals_numpy():
    labels = touching_blobs()
    rng = np.random.default_rng(0)
    dist = star_dist(labels, 16) + rng.normal(0, 0.5, (*labels.shape, 16)).astype(np.float32)
    prob = edt_prob(labels)
    expected = non_maximum_suppression(dist, prob)
    got = non_maximum_suppression(torch.from_numpy(dist), torch.from_numpy(prob))
    assert all(isinstance(g, torch.Tensor) for g in got)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.numpy(), e)


def test_nms_bad_input():
    dist, prob = two_polygon_input(3)
    with pytest.raises(ValueError, match="dist"):
        non_maximum_suppression(dist[:-1], prob)
    with pytest.raises(ValueError, match="prob"):
        non_maximum_suppression(dist, prob[None])
    with pytest.raises(TypeError):
        non_maximum_suppression(dist, prob.astype(int))
    with pytest.raises(ValueError, match="b must"):
        non_maximum_suppression(dist, prob, b="x")
    dist[20, 20, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        non_maximum_suppression(dist, prob)


@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_labels_distances_nms_labels(seed):
    labels = touching_discs(seed=seed)
    dist, prob = star_dist(labels, 32), edt_prob(labels)
    points, scores, kept = non_maximum_suppression(dist, prob, prob_thresh=0.5, nms_thresh=0.4)
    restored = polygons_to_label(kept, points, labels.shape, prob=scores)
    assert f1_iou50(labels, restored) >= 0.95
