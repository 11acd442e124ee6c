"""Parity of course_utils.metrics with stardist.matching (and Cellpose's AP) on the same inputs.

Predictions are the truth perturbed the way real models fail: eroded or dilated outlines,
shifts, missed objects, merged neighbours and false objects, with non-consecutive ids.

One known, documented difference: StarDist compares scores with the threshold in float32, we
compare float64 with a 1e-12 tolerance. A score within ~1e-7 of the threshold but not equal to
it could count differently; such (image, threshold) cases, if any, are checked separately.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.draw import disk
from skimage.segmentation import expand_labels, find_boundaries, relabel_sequential

from course_utils.metrics import THRESH_TOLERANCE, matching, matching_dataset, overlap_table

pytestmark = pytest.mark.reference
stardist_matching = pytest.importorskip("stardist.matching")

THRESHOLDS = [0.1, 0.3, 0.5, 0.55, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95]
COUNTS = ("tp", "fp", "fn", "n_true", "n_pred")
SCORES = ("precision", "recall", "accuracy", "f1")
SCORES += ("mean_true_score", "mean_matched_score", "panoptic_quality")


def random_disks(shape=(256, 256), n=60, seed=0):
    """Touching random disks: disk seeds grown into their neighbours' gaps."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        centre = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        rr, cc = disk(centre, rng.uniform(4, 10), shape=shape)
        labels[rr, cc] = k
    return expand_labels(labels, 3)


def perturb(labels, seed=0):
    """A plausible prediction: every failure mode a little, ids shuffled and spread out."""
    rng = np.random.default_rng(seed)
    y = labels.copy()
    ids = np.unique(y[y > 0])
    eroded = rng.choice(ids, len(ids) // 4, replace=False)
    y[np.isin(y, eroded) & find_boundaries(y, mode="inner")] = 0
    y = np.where(np.isin(labels, rng.choice(ids, len(ids) // 4)), expand_labels(y, 2), y)
    y = np.roll(y, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    y[np.isin(y, rng.choice(ids, len(ids) // 10, replace=False))] = 0  # missed objects
    # Merge neighbours: pixels next to a different object take that object's id.
    right = np.roll(y, -1, axis=1)
    touching = np.unique(np.stack([y, right], -1)[(y > 0) & (right > 0) & (y != right)], axis=0)
    for a, b in touching[rng.permutation(len(touching))[: max(1, len(touching) // 15)]]:
        y[y == a] = b
    for k in range(5):  # false objects in the background
        rr, cc = disk(tuple(rng.uniform(0, s) for s in y.shape), 5, shape=y.shape)
        y[rr[y[rr, cc] == 0], cc[y[rr, cc] == 0]] = ids.max() + 1 + k
    relabel = np.concatenate(([0], rng.choice(10**6, y.max(), replace=False) + 1))
    return relabel[y].astype(np.int64)


def float32_ties(y_true, y_pred, thr, criterion="iou"):
    """Pairs where StarDist's float32 comparison and ours disagree on ``score >= thr``."""
    s = overlap_table(y_true, y_pred).scores(criterion)
    ours = s >= thr - THRESH_TOLERANCE
    return int(np.sum(ours != (s.astype(np.float32) >= np.float32(thr))))


def assert_parity(y_true, y_pred, thresholds=THRESHOLDS, criterion="iou"):
    """Compare every field at every threshold; returns how many thresholds had float32 ties."""
    ours = matching(y_true, y_pred, thresholds, criterion=criterion)
    ref = stardist_matching.matching(y_true, y_pred, thresholds, criterion=criterion)
    n_ties = 0
    for thr, a, b in zip(thresholds, ours, ref):
        ties = float32_ties(y_true, y_pred, thr, criterion)
        if ties:  # a tie can move at most one match each
            n_ties += 1
            assert abs(a.tp - b.tp) <= ties
            continue
        assert (a.criterion, a.thresh) == (b.criterion, b.thresh)
        assert tuple(getattr(a, f) for f in COUNTS) == tuple(getattr(b, f) for f in COUNTS), thr
        for f in SCORES:
            assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-6, abs=1e-9), (thr, f)
    return n_ties


@pytest.mark.parametrize("seed", range(4))
def test_parity_on_perturbed_random_disks(seed):
    y_true = random_disks(seed=seed)
    y_pred = perturb(y_true, seed=seed)
    assert 0 < matching(y_true, y_pred).tp < matching(y_true, y_pred).n_true  # not trivial
    assert assert_parity(y_true, y_pred) <= 2


@pytest.mark.parametrize("criterion", ["iot", "iop"])
def test_parity_other_criteria(criterion):
    y_true = random_disks(seed=5)
    assert assert_parity(y_true, perturb(y_true, seed=5), criterion=criterion) <= 2


def test_parity_on_bbbc039(bbbc039_labels):
    total_ties = 0
    for k, y_true in enumerate(bbbc039_labels):
        total_ties += assert_parity(y_true, perturb(y_true, seed=k))
    assert total_ties <= len(bbbc039_labels) * len(THRESHOLDS) // 4


def test_parity_matching_dataset(bbbc039_labels):
    ys_pred = [perturb(y, seed=10 + k) for k, y in enumerate(bbbc039_labels)]
    for by_image in (False, True):
        ours = matching_dataset(bbbc039_labels, ys_pred, [0.5, 0.75], by_image=by_image)
        ref = stardist_matching.matching_dataset(
            bbbc039_labels, ys_pred, (0.5, 0.75), by_image=by_image, show_progress=False
        )
        for a, b in zip(ours, ref):
            assert a.by_image == b.by_image
            assert tuple(getattr(a, f) for f in COUNTS) == tuple(getattr(b, f) for f in COUNTS)
            for f in SCORES:
                assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-6, abs=1e-9)


def test_parity_matching_dataset_synthetic():
    ys_true = [random_disks((128, 160), 25, seed=s) for s in range(3)]
    ys_pred = [perturb(y, seed=s) for s, y in enumerate(ys_true)]
    ys_pred[1] = np.zeros_like(ys_pred[1])  # an image with no prediction at all
    for by_image in (False, True):
        a = matching_dataset(ys_true, ys_pred, 0.3, by_image=by_image)
        b = stardist_matching.matching_dataset(
            ys_true, ys_pred, 0.3, by_image=by_image, show_progress=False
        )
        assert tuple(getattr(a, f) for f in COUNTS) == tuple(getattr(b, f) for f in COUNTS)
        for f in SCORES:
            assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("case", ["empty_pred", "empty_true", "both_empty", "sparse_ids"])
def test_parity_edge_cases(case):
    y = random_disks((96, 96), 12, seed=7)
    y_true, y_pred = y, perturb(y, seed=7)
    if case in ("empty_pred", "both_empty"):
        y_pred = np.zeros_like(y_pred)
    if case in ("empty_true", "both_empty"):
        y_true = np.zeros_like(y_true)
    if case == "sparse_ids":
        y_true = np.where(y_true > 0, y_true * 1000 + 7, 0).astype(np.uint32)
    assert_parity(y_true, y_pred)


@st.composite
def small_pairs(draw):
    """Coarse random labels with many overlaps, so the optimal assignment has work to do."""
    a = draw(arrays(np.int32, (5, 6), elements=st.integers(0, 7)))
    b = draw(arrays(np.int32, (5, 6), elements=st.integers(0, 7)))
    up = np.ones((3, 3), np.int32)
    return np.kron(a, up), np.roll(np.kron(b, up), draw(st.integers(0, 2)), axis=1)


@given(small_pairs())
@settings(max_examples=60, deadline=None)
def test_parity_random_small_pairs(pair):
    assert_parity(*pair, thresholds=[0.1, 0.2, 0.3, 0.4, 0.5, 0.66])


def test_parity_with_cellpose_average_precision():
    cp_metrics = pytest.importorskip("cellpose.metrics")
    ys_true = [random_disks((128, 128), 25, seed=s) for s in range(3)]
    # Cellpose's overlap matrix is dense over the id range: give it consecutive ids.
    ys_pred = [relabel_sequential(perturb(y, seed=s))[0] for s, y in enumerate(ys_true)]
    thresholds = [0.3, 0.5, 0.75, 0.9]
    ap, tp, fp, fn = cp_metrics.average_precision(ys_true, ys_pred, threshold=thresholds)
    # Cellpose compares float64 IoUs without tolerance; no IoU here lies within 1e-12 of these.
    for k, (t, p) in enumerate(zip(ys_true, ys_pred)):
        ours = matching(t, p, thresholds)
        assert [(m.tp, m.fp, m.fn) for m in ours] == list(zip(tp[k], fp[k], fn[k]))
        np.testing.assert_allclose([m.accuracy for m in ours], ap[k], rtol=1e-6)


def test_exact_threshold_ties_count_as_in_stardist():
    # IoU exactly 0.7 (70 / 100 pixels): counted at 0.7 and at np.arange's 0.7000000000000002.
    y_true = np.zeros((20, 20), np.int32)
    y_true[:10, :10] = 1
    y_pred = np.zeros_like(y_true)
    y_pred[:7, :10] = 4
    thresholds = [0.7, float(np.arange(0.5, 1.0, 0.05)[4]), 0.71]
    assert thresholds[1] > 0.7
    assert [m.tp for m in matching(y_true, y_pred, thresholds)] == [1, 1, 0]
    assert_parity(y_true, y_pred, thresholds)
    assert float32_ties(y_true, y_pred, thresholds[1]) == 0


def test_benchmark_quick_runs(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_matching.py"
    spec = importlib.util.spec_from_file_location("bench_matching", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--quick", "--repeats", "1"])  # exits non-zero if tp differs from stardist
    out = capsys.readouterr().out
    assert "stardist_ms" in out and "True" in out
