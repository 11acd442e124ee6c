"""Tests for course_utils.classical: Otsu, markers, watershed, merge/split counts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from course_utils.classical import (
    find_markers,
    foreground_mask,
    intensity_histogram,
    merge_split_counts,
    otsu_threshold,
    segment_classical,
)


def touching_discs(
    shape=(80, 120), centers=((40, 40), (40, 70)), radius=17, noise=0.05, seed=0
) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs on a dark background (float32 image, int32 labels), overlaps cut at midline."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    # each pixel inside some disc goes to the nearest centre, like touching nuclei
    dist = np.stack([np.hypot(yy - cy, xx - cx) for cy, cx in centers])
    inside = dist.min(axis=0) <= radius
    labels[inside] = dist.argmin(axis=0)[inside] + 1
    image = (labels > 0).astype(np.float32) + noise * rng.standard_normal(shape).astype(np.float32)
    return image.astype(np.float32), labels


def naive_otsu(image: np.ndarray, nbins: int = 256) -> float:
    """Otsu with an explicit loop over cuts, written from the textbook definition."""
    counts, edges = np.histogram(image.ravel(), bins=nbins)
    centers = (edges[:-1] + edges[1:]) / 2
    p = counts / counts.sum()
    best, best_k = -1.0, 0
    for k in range(nbins - 1):
        w0, w1 = p[: k + 1].sum(), p[k + 1 :].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (p[: k + 1] * centers[: k + 1]).sum() / w0
        m1 = (p[k + 1 :] * centers[k + 1 :]).sum() / w1
        var = w0 * w1 * (m0 - m1) ** 2
        if var > best:
            best, best_k = var, k
    return float(centers[best_k])


# --- Otsu -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_otsu_equals_skimage_on_float_images(seed, dtype):
    rng = np.random.default_rng(seed)
    image = np.concatenate(
        [rng.normal(0.2, 0.05, 3000), rng.normal(0.7 + 0.05 * seed, 0.1, 1000 * (seed + 1))]
    ).reshape(-1, 50)
    image = image.astype(dtype)
    assert otsu_threshold(image) == pytest.approx(float(threshold_otsu(image)), rel=1e-6)
    assert otsu_threshold(image, nbins=64) == pytest.approx(
        float(threshold_otsu(image, nbins=64)), rel=1e-6
    )


def test_otsu_equals_naive_loop():
    image, _ = touching_discs(noise=0.2, seed=3)
    assert otsu_threshold(image, nbins=100) == pytest.approx(naive_otsu(image, 100), rel=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_otsu_equals_skimage_on_integer_images(dtype):
    rng = np.random.default_rng(1)
    image = np.concatenate([rng.integers(10, 60, 2000), rng.integers(120, 250, 800)])
    image = image.reshape(40, 70).astype(dtype)
    assert otsu_threshold(image) == float(threshold_otsu(image))


def test_otsu_on_bbbc039_equals_skimage(bbbc039_pairs):
    images, _ = bbbc039_pairs
    for image in images:
        assert otsu_threshold(image) == pytest.approx(float(threshold_otsu(image)), rel=1e-6)


def test_otsu_constant_image_returns_its_value():
    assert otsu_threshold(np.full((5, 6), 0.25, np.float32)) == 0.25


def test_histogram_counts_every_pixel_and_matches_numpy():
    image, _ = touching_discs()
    counts, centers = intensity_histogram(image, nbins=32)
    ref_counts, edges = np.histogram(image, bins=32)
    assert counts.sum() == image.size
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(centers, (edges[1:] + edges[:-1]) / 2)
    int_counts, int_centers = intensity_histogram(np.array([[3, 3], [5, 7]], np.uint8))
    np.testing.assert_array_equal(int_counts, [2, 0, 1, 0, 1])
    np.testing.assert_array_equal(int_centers, [3, 4, 5, 6, 7])


# --- the pipeline on touching discs -------------------------------------------------------


def test_watershed_splits_touching_discs_that_components_merge():
    image, truth = touching_discs()
    mask = foreground_mask(image, smooth_sigma=1.0)
    _, n_components = ndi.label(mask)
    assert n_components == 1  # the two discs touch: one connected component
    labels = segment_classical(image, min_distance=10)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert labels.max() == 2
    counts = merge_split_counts(truth, labels)
    assert counts["merged"] == 0 and counts["split"] == 0
    # each predicted object is mostly one true disc
    for j in (1, 2):
        overlap = np.bincount(truth[labels == j], minlength=3)[1:]
        assert overlap.max() / overlap.sum() > 0.95


def test_intensity_watershed_splits_two_blobs_with_a_dim_neck():
    shape = (60, 100)
    yy, xx = np.indices(shape)
    image = np.zeros(shape, np.float32)
    for cx in (35, 65):  # two Gaussian nuclei whose sum stays above threshold between them
        image += np.exp(-((yy - 30) ** 2 + (xx - cx) ** 2) / (2 * 12.0**2)).astype(np.float32)
    labels = segment_classical(image, threshold=0.3, method="intensity", min_distance=8)
    assert labels.max() == 2
    assert labels[30, 35] != labels[30, 65] and labels[30, 35] > 0


def test_large_min_distance_merges_and_small_min_size_keeps_specks():
    image, truth = touching_discs()
    merged = segment_classical(image, min_distance=40)
    assert merged.max() == 1
    assert merge_split_counts(truth, merged)["merged"] == 2


def test_min_size_removes_small_objects():
    image, _ = touching_discs(centers=((40, 40),), radius=3, noise=0.0)
    assert segment_classical(image, threshold=0.5, min_size=1).max() == 1
    assert segment_classical(image, threshold=0.5, min_size=100).max() == 0


def test_manual_threshold_above_everything_gives_empty_labels():
    image, _ = touching_discs()
    labels = segment_classical(image, threshold=10.0)
    assert labels.dtype == np.int32 and labels.max() == 0


def test_find_markers_seeds_every_component_even_a_flat_one():
    mask = np.zeros((30, 30), bool)
    mask[2:8, 2:8] = True
    mask[15:25, 15:25] = True
    landscape = np.ones(mask.shape, np.float32)  # flat: no strict local maximum anywhere
    markers = find_markers(landscape, mask, min_distance=3)
    components, n = ndi.label(mask)
    seeded = set(np.unique(components[markers > 0])) - {0}
    assert seeded == set(range(1, n + 1))
    assert (markers[~mask] == 0).all()


def test_segment_classical_on_bbbc039_beats_connected_components(bbbc039_pairs):
    from course_utils.metrics import matching_dataset

    images, truths = bbbc039_pairs
    preds = [segment_classical(im) for im in images]
    components = [ndi.label(foreground_mask(im, min_size=30))[0] for im in images]
    f1 = matching_dataset(truths, preds, thresh=0.5).f1
    f1_cc = matching_dataset(truths, components, thresh=0.5).f1
    assert f1 > 0.8
    assert f1 > f1_cc


# --- merge / split counts -----------------------------------------------------------------


def test_merge_split_counts_on_hand_made_case():
    truth = np.zeros((10, 20), np.int32)
    truth[1:5, 1:5], truth[1:5, 5:9] = 1, 2  # two touching objects...
    truth[6:9, 10:19] = 3  # ...and one long one
    pred = np.zeros_like(truth)
    pred[1:5, 1:9] = 7  # merges 1 and 2
    pred[6:9, 10:14], pred[6:9, 14:19] = 3, 9  # splits 3
    counts = merge_split_counts(truth, pred)
    assert counts == {"n_true": 3, "n_pred": 3, "merged": 2, "split": 1}
    assert merge_split_counts(truth, truth) == {"n_true": 3, "n_pred": 3, "merged": 0, "split": 0}


def test_merge_split_counts_swapped_roles():
    truth = np.zeros((10, 20), np.int32)
    truth[1:5, 1:9] = 1
    pred = np.zeros_like(truth)
    pred[1:5, 1:5], pred[1:5, 5:9] = 1, 2
    assert merge_split_counts(truth, pred)["split"] == 1
    assert merge_split_counts(pred, truth)["merged"] == 2


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"method": "edges"}, ValueError),
        ({"threshold": "li"}, ValueError),
        ({"threshold": [0.5]}, TypeError),
        ({"threshold": float("nan")}, ValueError),
        ({"min_distance": 0}, ValueError),
        ({"min_distance": 2.5}, TypeError),
        ({"smooth_sigma": -1.0}, ValueError),
        ({"min_size": -3}, ValueError),
    ],
)
def test_segment_classical_rejects_bad_arguments(kwargs, error):
    image, _ = touching_discs()
    (name,) = kwargs
    with pytest.raises(error, match=name):  # the message names the argument
        segment_classical(image, **kwargs)


@pytest.mark.parametrize(
    ("image", "error"),
    [
        (np.zeros((4, 4, 3), np.float32), ValueError),
        (np.zeros(16, np.float32), ValueError),
        (np.zeros((0, 5), np.float32), ValueError),
        (np.zeros((4, 4), bool), TypeError),
        (np.zeros((4, 4), np.complex64), TypeError),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), ValueError),
    ],
)
def test_bad_images_raise(image, error):
    with pytest.raises(error):
        otsu_threshold(image)
    with pytest.raises(error):
        segment_classical(image)


def test_merge_split_counts_rejects_bad_labels():
    good = np.zeros((4, 4), np.int32)
    with pytest.raises(TypeError):
        merge_split_counts(good.astype(np.float32), good)
    with pytest.raises(ValueError):
        merge_split_counts(good, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="negative"):
        merge_split_counts(good, good - 1)
    with pytest.raises(ValueError, match="empty"):
        merge_split_counts(good[:0], good[:0])


def test_find_markers_rejects_mismatched_mask():
    with pytest.raises(ValueError):
        find_markers(np.zeros((4, 4), np.float32), np.zeros((4, 5), bool))
    with pytest.raises(TypeError):
        find_markers(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8))
