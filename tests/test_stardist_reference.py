"""Parity of course_utils' StarDist functions with the reference ``stardist`` package (its
compiled code): radial distances, object probability, polygon NMS, polygons -> labels, and the
round trip labels -> distances -> NMS -> labels. On BBBC039 labels (skipped without the data)
and on synthetic touching objects (always)."""

from __future__ import annotations

import numpy as np
import pytest

from course_utils.postprocess import dist_to_coord, non_maximum_suppression, polygons_to_label
from course_utils.targets import edt_prob, ray_angles, star_dist

pytestmark = pytest.mark.reference

sd_geometry = pytest.importorskip("stardist.geometry")
sd_nms = pytest.importorskip("stardist.nms")
sd_utils = pytest.importorskip("stardist.utils")
sd_matching = pytest.importorskip("stardist.matching")


def synthetic_labels(seed: int, size: int = 192) -> np.ndarray:
    """Touching ellipses of varied shapes (the course's generator when it is there)."""
    try:
        from course_utils.data import synthetic_nuclei
    except ImportError:
        from skimage.draw import ellipse

        rng = np.random.default_rng(seed)
        labels = np.zeros((size, size), np.int32)
        for k in range(1, int(150 * (size / 512) ** 2) + 1):
            centre, radii = rng.uniform(0, size, 2), rng.uniform(5, 12, 2)
            rr, cc = ellipse(*centre, *radii, shape=labels.shape, rotation=rng.uniform(0, 3))
            labels[rr, cc] = k
        return labels
    return synthetic_nuclei((size, size), seed=seed)[1]


@pytest.fixture(scope="module")
def synthetic():
    return [synthetic_labels(seed) for seed in range(3)]


def kept_agreement(ours, ref) -> float:
    """Share of kept polygons (by centre) that both keep: |A & B| / |A | B|."""
    a, b = set(map(tuple, np.asarray(ours))), set(map(tuple, np.asarray(ref)))
    return len(a & b) / max(len(a | b), 1)


def nms_inputs(labels: np.ndarray, noise: float, seed: int = 0):
    """Probability and distances from the labels; ``noise`` (px) makes them prediction-like."""
    rng = np.random.default_rng(seed)
    dist = star_dist(labels, 32)
    prob = edt_prob(labels)
    if noise:
        dist = np.clip(dist + rng.normal(0, noise, dist.shape), 0, None).astype(np.float32)
        prob = (prob + rng.normal(0, 0.05 * noise, prob.shape)).astype(np.float32)
    return dist, prob


def test_ray_angles_and_dist_to_coord_match(synthetic):
    np.testing.assert_allclose(ray_angles(32), sd_geometry.ray_angles(32))
    rng = np.random.default_rng(0)
    dist, points = rng.uniform(0, 20, (50, 32)).astype(np.float32), rng.integers(0, 99, (50, 2))
    np.testing.assert_array_equal(
        dist_to_coord(dist, points), sd_geometry.dist_to_coord(dist, points)
    )


@pytest.mark.parametrize("n_rays, grid", [(32, (1, 1)), (8, (1, 1)), (17, (2, 2)), (64, (1, 4))])
def test_star_dist_matches_on_synthetic(synthetic, n_rays, grid):
    for labels in synthetic:
        ours = star_dist(labels, n_rays, grid=grid)
        ref = sd_geometry.star_dist(labels, n_rays, grid=grid)
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


def test_star_dist_and_edt_prob_match_on_bbbc039(bbbc039_labels):
    for labels in bbbc039_labels:
        np.testing.assert_allclose(
            star_dist(labels, 32), sd_geometry.star_dist(labels, 32), atol=1e-3, rtol=0
        )
        np.testing.assert_allclose(edt_prob(labels), sd_utils.edt_prob(labels), atol=1e-6)


def test_edt_prob_matches_on_synthetic(synthetic):
    for labels in synthetic:
        np.testing.assert_allclose(edt_prob(labels), sd_utils.edt_prob(labels), atol=1e-6)


@pytest.mark.parametrize("noise, nms_thresh", [(0.0, 0.4), (0.5, 0.3), (1.0, 0.5)])
def test_nms_keeps_the_same_polygons_on_synthetic(synthetic, noise, nms_thresh):
    for seed, labels in enumerate(synthetic):
        dist, prob = nms_inputs(labels, noise, seed)
        ours = non_maximum_suppression(dist, prob, prob_thresh=0.5, nms_thresh=nms_thresh)
        ref = sd_nms.non_maximum_suppression(dist, prob, prob_thresh=0.5, nms_thresh=nms_thresh)
        assert kept_agreement(ours[0], ref[0]) >= 0.99


def test_nms_and_rendering_match_on_bbbc039(bbbc039_labels):
    labels = bbbc039_labels[0]
    dist, prob = nms_inputs(labels, noise=0.5)
    points, scores, kept = non_maximum_suppression(dist, prob, nms_thresh=0.4)
    ref = sd_nms.non_maximum_suppression(dist, prob, prob_thresh=0.5, nms_thresh=0.4)
    assert kept_agreement(points, ref[0]) >= 0.99
    # Rendering the same polygons: ours vs the reference's rasteriser.
    ours_lbl = polygons_to_label(ref[2], ref[0], labels.shape, prob=ref[1])
    ref_lbl = sd_geometry.polygons_to_label(ref[2], ref[0], labels.shape, prob=ref[1])
    assert sd_matching.matching(ref_lbl, ours_lbl, thresh=0.5).f1 >= 0.99
    assert np.mean(ours_lbl == ref_lbl) > 0.999


def test_polygons_to_label_matches_on_random_polygons():
    rng = np.random.default_rng(1)
    dist = rng.uniform(2, 15, (200, 32)).astype(np.float32)
    points, prob = rng.integers(-10, 200, (200, 2)), rng.random(200)
    ours = polygons_to_label(dist, points, (180, 190), prob=prob)
    ref = sd_geometry.polygons_to_label(dist, points, (180, 190), prob=prob)
    assert np.mean(ours == ref) > 0.999
    assert sd_matching.matching(ref, ours, thresh=0.5).f1 >= 0.99


def round_trip_f1(labels: np.ndarray) -> float:
    dist, prob = star_dist(labels, 32), edt_prob(labels)
    points, scores, kept = non_maximum_suppression(dist, prob, prob_thresh=0.5, nms_thresh=0.4)
    restored = polygons_to_label(kept, points, labels.shape, prob=scores)
    return sd_matching.matching(labels, restored, thresh=0.5).f1


def test_round_trip_on_synthetic(synthetic):
    for labels in synthetic:
        assert round_trip_f1(labels) >= 0.95


def test_round_trip_on_bbbc039(bbbc039_labels):
    for labels in bbbc039_labels:
        assert round_trip_f1(labels) >= 0.95
