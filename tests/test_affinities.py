"""Affinity targets and their grouping, against slow pure-Python references."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from course_utils.data import synthetic_nuclei
from course_utils.postprocess import affinities_to_labels, affinity_components
from course_utils.targets import (
    AFFINITY_OFFSETS,
    affinity_targets,
    affinity_valid,
    label_affinities,
)
from course_utils.targets.affinities import check_offsets, pair_slices

NEAREST = ((1, 0), (0, 1))
ODD_OFFSETS = ((1, 0), (0, 1), (-2, 1), (0, -3), (4, 4), (20, 0))


def _reference_affinities(labels, offsets):
    h, w = labels.shape
    out = np.zeros((len(offsets), h, w), np.float32)
    for k, (dy, dx) in enumerate(offsets):
        for y in range(h):
            for x in range(w):
                v, yy, xx = labels[y, x], y + dy, x + dx
                if v > 0 and 0 <= yy < h and 0 <= xx < w and labels[yy, xx] == v:
                    out[k, y, x] = 1
    return out


def _reference_components(mask, aff, offsets, threshold):
    """Breadth-first search over the pixel graph, ids in raster order of the first pixel."""
    h, w = mask.shape
    neighbours = {(y, x): [] for y in range(h) for x in range(w) if mask[y, x]}
    for k, (dy, dx) in enumerate(offsets):
        for y, x in neighbours:
            q = (y + dy, x + dx)
            if q in neighbours and aff[k, y, x] > threshold:
                neighbours[(y, x)].append(q)
                neighbours[q].append((y, x))
    labels = np.zeros((h, w), np.int32)
    n = 0
    for start in sorted(neighbours):
        if labels[start]:
            continue
        n += 1
        labels[start] = n
        queue = deque([start])
        while queue:
            for q in neighbours[queue.popleft()]:
                if not labels[q]:
                    labels[q] = n
                    queue.append(q)
    return labels


def _raster_order(labels):
    """The same partition with ids 1..N in raster order of each object's first pixel."""
    flat = labels.ravel()
    ids, first = np.unique(flat[flat > 0], return_index=True)
    new = {int(i): k for k, i in enumerate(ids[np.argsort(first)], start=1)}
    return np.array([new.get(int(v), 0) for v in flat], np.int32).reshape(labels.shape)


@pytest.fixture(scope="module")
def small_labels():
    """Three small label images: touching nuclei, sparse ids, and an image border object."""
    _, nuclei = synthetic_nuclei((40, 36), seed=4)
    sparse = np.zeros((12, 14), np.int64)
    sparse[1:5, 1:6], sparse[5:11, 2:7], sparse[3:9, 7:13] = 7, 1000, 3
    sparse[0:3, 10:14] = 2**40  # a huge id touching the image border
    return [nuclei, sparse, np.zeros((6, 5), np.int32)]


def test_label_affinities_equal_the_slow_reference(small_labels):
    for lab in small_labels:
        got = label_affinities(lab, ODD_OFFSETS)
        assert got.dtype == np.float32 and got.shape == (len(ODD_OFFSETS), *lab.shape)
        np.testing.assert_array_equal(got, _reference_affinities(lab, ODD_OFFSETS))
    np.testing.assert_array_equal(  # the docstring's example, and the default offsets
        label_affinities(np.array([[1, 1, 2], [0, 2, 2]]), [(0, 1)])[0], [[1, 0, 0], [0, 1, 0]]
    )
    assert label_affinities(small_labels[0]).shape[0] == len(AFFINITY_OFFSETS)


def test_valid_pairs_and_the_loss_mask(small_labels):
    lab = small_labels[1]
    valid = affinity_valid(lab.shape, ODD_OFFSETS)
    for k, (dy, dx) in enumerate(ODD_OFFSETS):
        ys, xs = np.indices(lab.shape)
        h, w = lab.shape
        inside = (ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
        np.testing.assert_array_equal(valid[k], inside)
    assert not valid[-1].any()  # 20 rows down leaves a 12-row image
    fg, aff, mask = affinity_targets(lab, ODD_OFFSETS)
    assert fg.shape == (1, *lab.shape) and all(a.dtype == np.float32 for a in (fg, aff, mask))
    np.testing.assert_array_equal(fg[0], lab > 0)
    np.testing.assert_array_equal(aff, label_affinities(lab, ODD_OFFSETS))
    for k, (dy, dx) in enumerate(ODD_OFFSETS):
        for y, x in np.ndindex(lab.shape):
            q = (y + dy, x + dx)
            expected = valid[k, y, x] and (lab[y, x] > 0 or lab[q] > 0)
            assert mask[k, y, x] == expected, (k, y, x)
    assert np.all(aff <= mask)  # a positive pair is always a counted pair


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_components_equal_the_slow_reference_on_noisy_affinities(small_labels, threshold):
    rng = np.random.default_rng(0)
    for lab in small_labels[:2]:
        mask = lab > 0
        aff = np.clip(
            label_affinities(lab, ODD_OFFSETS) + rng.normal(0, 0.4, (6, *lab.shape)), 0, 1
        )
        got = affinity_components(mask, aff, ODD_OFFSETS, threshold)
        np.testing.assert_array_equal(got, _reference_components(mask, aff, ODD_OFFSETS, threshold))
        ids = np.unique(got[got > 0])
        np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))  # consecutive


@pytest.mark.parametrize("method", ["components", "watershed"])
@pytest.mark.parametrize("offsets", [NEAREST, AFFINITY_OFFSETS])
def test_perfect_affinities_give_back_the_labels_exactly(small_labels, method, offsets):
    for lab in small_labels:
        aff = label_affinities(lab, offsets)
        got = affinities_to_labels((lab > 0).astype(np.float32), aff, offsets, method=method)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, _raster_order(lab))


def test_one_leaky_edge_merges_components_but_not_the_watershed():
    lab = np.zeros((10, 16), np.int32)
    lab[2:8, 1:8], lab[2:8, 8:15] = 1, 2
    aff = label_affinities(lab, NEAREST)
    aff[1, 4, 7] = 0.7  # the pair (4, 7) - (4, 8) across the border: wrongly "same cell"
    fg = (lab > 0).astype(np.float32)
    merged = affinities_to_labels(fg, aff, NEAREST, method="components")
    assert merged.max() == 1
    apart = affinities_to_labels(fg, aff, NEAREST, method="watershed", seed_threshold=0.9)
    np.testing.assert_array_equal(apart, lab)


def test_min_size_drops_small_objects_and_keeps_ids_consecutive():
    lab = np.zeros((8, 12), np.int32)
    lab[0:2, 0:2], lab[4:8, 4:10], lab[0:1, 10:12] = 1, 2, 3  # 4, 24 and 2 pixels
    aff = label_affinities(lab, NEAREST)
    got = affinities_to_labels((lab > 0).astype(float), aff, min_size=4)
    np.testing.assert_array_equal(np.unique(got), [0, 1, 2])
    assert (got == 1).sum() == 4 and (got == 2).sum() == 24
    fewer = affinities_to_labels((lab > 0).astype(float), aff, min_size=5, method="watershed")
    np.testing.assert_array_equal(fewer, (lab == 2).astype(np.int32))


def test_thresholds_and_tensors():
    lab = np.zeros((6, 6), np.int32)
    lab[1:5, 1:5] = 1
    aff = 0.6 * label_affinities(lab, NEAREST)
    fg = 0.7 * (lab > 0)
    assert affinities_to_labels(fg, aff).max() == 1
    assert affinities_to_labels(fg, aff, threshold=0.6).max() == 16  # every edge cut
    assert affinities_to_labels(fg, aff, foreground_threshold=0.7).max() == 0
    from_tensors = affinities_to_labels(torch.from_numpy(fg), torch.from_numpy(aff))
    assert isinstance(from_tensors, np.ndarray)
    np.testing.assert_array_equal(from_tensors, affinities_to_labels(fg, aff))
    empty = affinities_to_labels(np.zeros((6, 6)), aff, method="watershed")
    assert empty.dtype == np.int32 and empty.max() == 0


def test_pair_slices_cover_every_pair():
    a = np.arange(20).reshape(4, 5)
    here, there = pair_slices(a.shape, (1, -2))
    np.testing.assert_array_equal(a[there], a[here] + 5 - 2)
    assert pair_slices(a.shape, (4, 0)) is None and pair_slices(a.shape, (0, -5)) is None


def test_bad_input_is_refused_with_the_argument_named():
    lab = np.ones((4, 4), np.int32)
    with pytest.raises(ValueError, match=r"offsets\[1\] is \(0, 0\)"):
        label_affinities(lab, [(1, 0), (0, 0)])
    with pytest.raises(ValueError, match="offsets is empty"):
        check_offsets([])
    with pytest.raises(ValueError, match=r"offsets\[0\] must be a pair"):
        check_offsets([(1, 0, 0)])
    with pytest.raises(TypeError, match=r"offsets\[0\] must be an int"):
        check_offsets([(1.5, 0)])
    with pytest.raises(ValueError, match="sequence of"):
        check_offsets(3)
    with pytest.raises(TypeError, match="integer labels"):
        label_affinities(lab.astype(float))
    with pytest.raises(ValueError, match="negative ids"):
        affinity_targets(-lab)
    with pytest.raises(ValueError, match="shape"):
        affinity_valid((4,))
    aff = label_affinities(lab, NEAREST)
    with pytest.raises(ValueError, match=r"affinities must have shape \(len\(offsets\), H, W\)"):
        affinities_to_labels(lab, aff[:1])
    with pytest.raises(ValueError, match="foreground must be an"):
        affinities_to_labels(lab[0], aff)
    with pytest.raises(ValueError, match="method must be one of"):
        affinities_to_labels(lab, aff, method="mutex")
    bad = aff.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="affinities has 1 NaN"):
        affinities_to_labels(lab, bad)
    with pytest.raises(TypeError, match="real numbers"):
        affinities_to_labels(lab.astype(complex), aff)
    with pytest.raises(ValueError, match="min_size must be >= 0"):
        affinity_components(lab, aff, NEAREST, min_size=-1)
