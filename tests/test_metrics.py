"""Tests of course_utils.metrics against naive implementations and hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linear_sum_assignment

from course_utils.metrics import (
    DatasetMatching,
    Matching,
    average_precision,
    iou_matrix,
    matching,
    matching_dataset,
    overlap_table,
    pixel_metrics,
)

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def blocky_labels(max_id: int = 6):
    """Small label images: random ids on a coarse grid, upsampled so objects have some area."""
    coarse = arrays(
        np.int32, st.tuples(st.integers(2, 6), st.integers(2, 6)), elements=st.integers(0, max_id)
    )
    return coarse.map(lambda a: np.kron(a, np.ones((3, 3), np.int32)))


@st.composite
def label_pairs(draw):
    a = draw(blocky_labels())
    b = draw(arrays(np.int32, (a.shape[0] // 3, a.shape[1] // 3), elements=st.integers(0, 6)))
    b = np.kron(b, np.ones((3, 3), np.int32))
    # Shift the prediction by a pixel or two so that IoUs are not all 0 or 1.
    return a, np.roll(b, draw(st.integers(0, 2)), axis=draw(st.integers(0, 1)))


def naive_iou(y_true, y_pred):
    """One boolean comparison per object pair: slow, obviously right."""
    t_ids = [i for i in np.unique(y_true) if i]
    p_ids = [j for j in np.unique(y_pred) if j]
    out = np.zeros((len(t_ids), len(p_ids)))
    for (a, i), (b, j) in itertools.product(enumerate(t_ids), enumerate(p_ids)):
        inter = np.sum((y_true == i) & (y_pred == j))
        out[a, b] = inter / np.sum((y_true == i) | (y_pred == j))
    return out, np.array(t_ids), np.array(p_ids)


def dense_optimal(iou, thr):
    """StarDist's objective on the dense matrix: most matches, then the highest total IoU."""
    n_min = min(iou.shape)
    if n_min == 0:
        return 0, 0.0
    r, c = linear_sum_assignment(-(iou >= thr).astype(float) - iou / (2 * n_min))
    ok = iou[r, c] >= thr
    return int(ok.sum()), float(iou[r, c][ok].sum())


def square(shape, y0, x0, size, value=1, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    out[y0 : y0 + size, x0 : x0 + size] = value
    return out


# ---------------------------------------------------------------- overlap and IoU
@given(label_pairs())
@PROPERTY
def test_iou_matrix_equals_naive(pair):
    y_true, y_pred = pair
    iou, t_ids, p_ids = iou_matrix(y_true, y_pred, return_ids=True)
    ref, ref_t, ref_p = naive_iou(y_true, y_pred)
    assert iou.dtype == np.float64 and iou.shape == ref.shape
    np.testing.assert_array_equal(t_ids, ref_t)
    np.testing.assert_array_equal(p_ids, ref_p)
    np.testing.assert_allclose(iou, ref, rtol=1e-12)


def test_overlap_table_areas_and_large_ids_path():
    rng = np.random.default_rng(0)
    y_true = np.kron(rng.integers(0, 9, (12, 12)), np.ones((4, 4), np.int64))
    y_pred = np.roll(np.kron(rng.integers(0, 9, (12, 12)), np.ones((4, 4), np.int64)), 2, 1)
    small = overlap_table(y_true, y_pred)
    # Huge ids take the sort-based path instead of the dense histogram: same table.
    big = overlap_table(y_true * 10**12, y_pred * 7_000_003)
    np.testing.assert_array_equal(big.true_ids, small.true_ids * 10**12)
    for field in ("true_areas", "pred_areas", "rows", "cols", "intersection"):
        np.testing.assert_array_equal(getattr(big, field), getattr(small, field))
    np.testing.assert_array_equal(small.true_areas, np.bincount(y_true.ravel())[small.true_ids])
    assert small.intersection.min() > 0
    # Intersection over true, summed over the predictions: the covered fraction of each object.
    covered = [np.mean(y_pred[y_true == i] != 0) for i in small.true_ids]
    np.testing.assert_allclose(small.dense("iot").sum(axis=1), covered)


def test_3d_labels_and_no_background():
    y = np.arange(1, 9, dtype=np.uint16).reshape(2, 2, 2)  # every voxel an object, no 0
    np.testing.assert_array_equal(iou_matrix(y, y), np.eye(8))
    assert matching(y, y).tp == 8


# ---------------------------------------------------------------- matching, by hand
def test_shifted_square_example():
    y_true = square((100, 100), 10, 10, 10)
    y_pred = np.roll(y_true, 5, axis=0)  # IoU = 50 / 150
    m = matching(y_true, y_pred)
    assert (m.tp, m.fp, m.fn, m.precision, m.accuracy) == (0, 1, 1, 0.0, 0.0)
    m = matching(y_true, y_pred, thresh=0.3)
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)
    assert m.mean_matched_score == pytest.approx(1 / 3)
    assert m.panoptic_quality == pytest.approx(1 / 3)


def test_hand_counted_scene():
    shape = (40, 40)
    y_true = square(shape, 0, 0, 10, 1)
    square(shape, 0, 20, 10, 5, out=y_true)  # missed entirely: a false negative
    y_pred = square(shape, 1, 0, 10, 9)  # IoU 90 / 110 with id 1
    square(shape, 30, 30, 5, 3, out=y_pred)  # false positive
    m = matching(y_true, y_pred)
    assert (m.tp, m.fp, m.fn, m.n_true, m.n_pred) == (1, 1, 1, 2, 2)
    assert m.precision == m.recall == 0.5
    assert m.accuracy == pytest.approx(1 / 3)
    assert m.f1 == pytest.approx(0.5)
    assert m.mean_matched_score == pytest.approx(90 / 110)
    assert m.mean_true_score == pytest.approx(90 / 110 / 2)
    assert m.panoptic_quality == pytest.approx((90 / 110) / 2)


@pytest.mark.parametrize(
    ("t_empty", "p_empty", "expected"),
    [(False, True, (0, 0, 3, 3, 0)), (True, False, (0, 3, 0, 0, 3)), (True, True, (0, 0, 0, 0, 0))],
)
def test_empty_images(t_empty, p_empty, expected):
    y = np.zeros((30, 30), np.int32)
    for k in range(3):
        square(y.shape, 2, 2 + 9 * k, 6, k + 1, out=y)
    m = matching(np.zeros_like(y) if t_empty else y, np.zeros_like(y) if p_empty else y)
    assert (m.tp, m.fp, m.fn, m.n_true, m.n_pred) == expected
    assert m.precision == m.recall == m.f1 == m.accuracy == m.panoptic_quality == 0.0


def test_greedy_and_optimal_differ():
    # Pred 7 overlaps true 1 best and true 2 a little; pred 3 overlaps only true 1. Greedy gives
    # true 1 to pred 7 and matches once; the optimal assignment (1-3, 2-7) matches twice.
    y_true = np.zeros((4, 20), np.int32)
    y_true[:, 0:10], y_true[:, 10:20] = 1, 2
    y_pred = np.zeros_like(y_true)
    y_pred[:, 3:14], y_pred[:, 0:3] = 7, 3
    iou = iou_matrix(y_true, y_pred)  # rows: true 1, 2; cols: pred 3, 7
    np.testing.assert_allclose(iou, [[3 / 10, 7 / 14], [0, 4 / 17]])
    assert matching(y_true, y_pred, 0.2).tp == 2
    assert matching(y_true, y_pred, 0.2, greedy=True).tp == 1
    assert matching(y_true, y_pred, 0.5).tp == matching(y_true, y_pred, 0.5, greedy=True).tp == 1


@given(label_pairs(), st.sampled_from([0.05, 0.2, 0.35, 0.5, 0.7]))
@PROPERTY
def test_optimal_equals_dense_assignment(pair, thr):
    y_true, y_pred = pair
    tp, score_sum = dense_optimal(naive_iou(y_true, y_pred)[0], thr)
    m = matching(y_true, y_pred, thr)
    assert m.tp == tp
    assert m.mean_matched_score * m.tp == pytest.approx(score_sum)
    assert matching(y_true, y_pred, thr, greedy=True).tp <= tp


def test_threshold_sequence_matches_single_calls():
    rng = np.random.default_rng(3)
    y_true = np.kron(rng.integers(0, 12, (10, 10)), np.ones((5, 5), np.int32))
    y_pred = np.roll(y_true, 2, axis=1)
    thresholds = [0.1, 0.5, 0.9]
    many = matching(y_true, y_pred, thresholds, criterion="iop")
    assert isinstance(many, list) and len(many) == 3
    assert many == [matching(y_true, y_pred, t, criterion="iop") for t in thresholds]


# ---------------------------------------------------------------- properties
@given(blocky_labels())
@PROPERTY
def test_self_match_scores_one(y):
    if not y.any():
        return
    m = matching(y, y, 0.99)
    assert m.tp == m.n_true == m.n_pred and m.fp == m.fn == 0
    assert m.precision == m.recall == m.f1 == m.accuracy == 1.0
    assert m.mean_matched_score == m.panoptic_quality == 1.0


@given(label_pairs(), st.integers(0, 2**31 - 1))
@PROPERTY
def test_relabelling_changes_nothing(pair, seed):
    y_true, y_pred = pair
    rng = np.random.default_rng(seed)
    new_t = np.concatenate(([0], rng.choice(10**6, y_true.max(), replace=False) + 1))
    new_p = np.concatenate(([0], rng.choice(10**6, y_pred.max(), replace=False) + 1))
    for thr in (0.2, 0.5):
        assert matching(new_t[y_true], new_p[y_pred], thr) == matching(y_true, y_pred, thr)


@given(label_pairs(), st.sampled_from([0.2, 0.5, 0.8]), st.booleans())
@PROPERTY
def test_swapping_true_and_pred_swaps_precision_and_recall(pair, thr, greedy):
    y_true, y_pred = pair
    a = matching(y_true, y_pred, thr, greedy=greedy)
    b = matching(y_pred, y_true, thr, greedy=greedy)
    assert (a.tp, a.fp, a.fn) == (b.tp, b.fn, b.fp)
    assert (a.precision, a.recall) == (b.recall, b.precision)
    assert a.f1 == b.f1 and a.accuracy == b.accuracy


# ---------------------------------------------------------------- data sets and AP
def _images(seed, n=3):
    rng = np.random.default_rng(seed)
    ys = [np.kron(rng.integers(0, 8, (6, 6)), np.ones((4, 4), np.int32)) for _ in range(n)]
    return ys, [np.roll(y, k, axis=1) for k, y in enumerate(ys)]


def test_matching_dataset_pools_like_one_big_image():
    ys_true, ys_pred = _images(0)
    pooled = matching_dataset(ys_true, ys_pred, 0.3)
    # Side by side with disjoint ids, the images make one image with the pooled counts.
    offsets = np.arange(len(ys_true)) * 100
    big_t = np.hstack([np.where(y > 0, y + o, 0) for y, o in zip(ys_true, offsets)])
    big_p = np.hstack([np.where(y > 0, y + o, 0) for y, o in zip(ys_pred, offsets)])
    big = matching(big_t, big_p, 0.3)
    assert isinstance(pooled, DatasetMatching) and pooled.by_image is False
    for field, value in big.as_dict().items():
        assert getattr(pooled, field) == pytest.approx(value)


def test_matching_dataset_by_image_averages():
    ys_true, ys_pred = _images(1)
    per = [matching(t, p, 0.5) for t, p in zip(ys_true, ys_pred)]
    res = matching_dataset(ys_true, ys_pred, [0.5, 0.7], by_image=True)[0]
    assert res.by_image and res.tp == sum(m.tp for m in per)
    for field in ("precision", "recall", "f1", "accuracy", "panoptic_quality"):
        assert getattr(res, field) == pytest.approx(np.mean([getattr(m, field) for m in per]))


def test_average_precision_single_and_dataset():
    ys_true, ys_pred = _images(2)
    thresholds = [0.3, 0.6, 0.9]
    ap = average_precision(ys_true[0], ys_pred[0], thresholds)
    assert ap.dtype == np.float64 and ap.shape == (3,)
    np.testing.assert_allclose(
        ap, [m.accuracy for m in matching(ys_true[0], ys_pred[0], thresholds)]
    )
    pooled = average_precision(ys_true, ys_pred, thresholds)
    counts = [matching_dataset(ys_true, ys_pred, t) for t in thresholds]
    np.testing.assert_allclose(pooled, [c.tp / (c.tp + c.fp + c.fn) for c in counts])
    per = np.mean([average_precision(t, p, thresholds) for t, p in zip(ys_true, ys_pred)], axis=0)
    np.testing.assert_allclose(average_precision(ys_true, ys_pred, thresholds, by_image=True), per)
    assert len(average_precision(ys_true[0], ys_true[0])) == 10


def test_record_is_printable_and_frozen():
    m = matching(square((20, 20), 2, 2, 6), square((20, 20), 3, 2, 6))
    text = str(m)
    assert "tp=1" in text and "precision=1.000" in text and "iou >= 0.50" in text
    d = m.as_dict()
    assert list(d)[:3] == ["criterion", "thresh", "fp"] and d["tp"] == 1
    assert isinstance(m, Matching)
    with pytest.raises(AttributeError):
        m.tp = 3


# ---------------------------------------------------------------- pixel metrics
def test_pixel_metrics_against_counts():
    rng = np.random.default_rng(4)
    t, p = rng.random((50, 60)) < 0.4, rng.random((50, 60)) < 0.5
    tp, fp, fn = np.sum(t & p), np.sum(~t & p), np.sum(t & ~p)
    out = pixel_metrics(t.astype(np.uint8) * 3, p)  # labels work too: nonzero = foreground
    assert out["accuracy"] == pytest.approx(np.mean(t == p))
    assert out["precision"] == pytest.approx(tp / (tp + fp))
    assert out["recall"] == pytest.approx(tp / (tp + fn))
    assert out["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert out["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_pixel_metrics_empty_cases():
    empty, full = np.zeros((8, 8), bool), np.ones((8, 8), bool)
    assert pixel_metrics(empty, empty) == dict.fromkeys(
        ("accuracy", "precision", "recall", "iou", "dice"), 1.0
    )
    missed = pixel_metrics(full, empty)  # nothing predicted: precision 0/0 -> 0
    assert missed == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "iou": 0.0, "dice": 0.0}
    spurious = pixel_metrics(empty, full)  # nothing to find: recall 0/0 -> 0
    assert spurious["recall"] == 0.0 and spurious["precision"] == 0.0


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("y_true", "y_pred", "error", "match"),
    [
        (np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32), ValueError, "different shapes"),
        (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.int32), TypeError, "integer"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), np.int32), TypeError, "boolean"),
        (-np.ones((4, 4), np.int32), np.zeros((4, 4), np.int32), ValueError, "negative"),
        (np.zeros(4, np.int32), np.zeros(4, np.int32), ValueError, "2D or 3D"),
        (np.zeros((0, 4), np.int32), np.zeros((0, 4), np.int32), ValueError, "empty"),
    ],
)
def test_bad_labels(y_true, y_pred, error, match):
    with pytest.raises(error, match=match):
        matching(y_true, y_pred)
    with pytest.raises(error, match=match):
        iou_matrix(y_true, y_pred)


def test_bad_arguments():
    y = square((10, 10), 2, 2, 4)
    for thr in (0.0, -0.1, 1.5, [0.5, 2.0], []):
        with pytest.raises(ValueError, match="thresh"):
            matching(y, y, thr)
    with pytest.raises(ValueError, match="criterion"):
        matching(y, y, criterion="dice")
    with pytest.raises(ValueError, match="3 images but ys_pred has 2"):
        matching_dataset([y] * 3, [y] * 2)
    with pytest.raises(ValueError, match="empty"):
        matching_dataset([], [])
    with pytest.raises(TypeError, match="threshold probabilities first"):
        pixel_metrics(y.astype(float), y)
    with pytest.raises(ValueError, match="different shapes"):
        pixel_metrics(y, y[:5])
