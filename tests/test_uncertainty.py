"""Bootstrap intervals over images: per-image counts, estimates equal to the pooled scores, a
naive resampling loop, the normal-theory width of a mean, pairing, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from course_utils import metrics
from course_utils.uncertainty import (
    SCORES,
    bootstrap_difference,
    bootstrap_interval,
    image_counts,
)


@pytest.fixture(scope="module")
def pairs(bbbc039_labels):
    """Four true label images and imperfect predictions of them (shifted, some ids dropped)."""
    rng = np.random.default_rng(0)
    preds = []
    for k, truth in enumerate(bbbc039_labels):
        pred = np.roll(truth, (k + 1, -k), axis=(0, 1))
        drop = rng.choice(np.unique(pred)[1:], 5 * (k + 1), replace=False)
        preds.append(np.where(np.isin(pred, drop), 0, pred))
    return list(bbbc039_labels), preds


def test_counts_sum_to_the_pooled_matching(pairs):
    truths, preds = pairs
    counts = image_counts(truths, preds, 0.5)
    pooled = metrics.matching_dataset(truths, preds, 0.5)
    assert counts["tp"].shape == (4,)
    assert (counts["tp"].sum(), counts["fp"].sum(), counts["fn"].sum()) == (
        pooled.tp,
        pooled.fp,
        pooled.fn,
    )
    assert counts["n_true"].sum() == pooled.n_true and counts["images"].sum() == 4


@pytest.mark.parametrize(
    "name, field",
    [
        ("precision", "precision"),
        ("recall", "recall"),
        ("f1", "f1"),
        ("ap", "accuracy"),
        ("matched_iou", "mean_matched_score"),
        ("pq", "panoptic_quality"),
    ],
)
def test_estimates_are_the_pooled_scores(pairs, name, field):
    truths, preds = pairs
    interval = bootstrap_interval(image_counts(truths, preds, 0.7), name, n_boot=200)
    pooled = metrics.matching_dataset(truths, preds, 0.7)
    assert interval.estimate == pytest.approx(getattr(pooled, field))
    assert interval.low <= interval.estimate <= interval.high
    assert interval.estimate in interval and interval.width >= 0


def test_several_thresholds_average_the_ap(pairs):
    truths, preds = pairs
    thresholds = metrics.DEFAULT_AP_THRESHOLDS
    counts = image_counts(truths, preds, thresholds)
    assert counts["tp"].shape == (4, len(thresholds))
    interval = bootstrap_interval(counts, "ap", n_boot=100)
    assert interval.estimate == pytest.approx(
        metrics.average_precision(truths, preds, thresholds).mean()
    )


def test_resamples_equal_a_naive_loop(pairs):
    # the same resamples, drawn as image indices and scored by matching_dataset
    truths, preds = pairs
    counts = image_counts(truths, preds, 0.5)
    n_boot, seed = 50, 3
    weights = np.random.default_rng(seed).multinomial(4, np.full(4, 0.25), size=n_boot)
    naive = []
    for w in weights:
        idx = np.repeat(np.arange(4), w)
        naive.append(
            metrics.matching_dataset([truths[i] for i in idx], [preds[i] for i in idx], 0.5).f1
        )
    low, high = np.quantile(naive, [0.025, 0.975])
    interval = bootstrap_interval(counts, "f1", n_boot=n_boot, seed=seed)
    assert (interval.low, interval.high) == pytest.approx((low, high))


def test_a_mean_over_images_has_the_normal_theory_width():
    values = np.random.default_rng(1).normal(size=400)
    counts = {"value": values, "images": np.ones(400)}
    interval = bootstrap_interval(counts, lambda s: s["value"] / s["images"], n_boot=4000)
    assert interval.estimate == pytest.approx(values.mean())
    expected = 2 * 1.96 * values.std() / np.sqrt(400)
    assert interval.width == pytest.approx(expected, rel=0.1)
    assert str(interval).startswith(f"{values.mean():.3f} [")


def test_seed_level_and_one_image():
    counts = {"tp": np.array([5.0, 9, 2]), "fp": np.array([1.0, 0, 4]), "fn": np.array([0.0, 2, 3])}
    a = bootstrap_interval(counts, "f1", seed=5)
    assert a == bootstrap_interval(counts, "f1", seed=5)
    assert bootstrap_interval(counts, "f1", level=0.5).width < a.width
    one = bootstrap_interval({k: v[:1] for k, v in counts.items()}, "f1")
    assert one.low == one.high == one.estimate


def test_paired_difference(pairs):
    truths, preds = pairs
    good = image_counts(truths, truths, 0.5)
    bad = image_counts(truths, preds, 0.5)
    same = bootstrap_difference(bad, bad, "f1")
    assert same.estimate == same.low == same.high == 0
    better = bootstrap_difference(good, bad, "f1", n_boot=300)
    assert better.low > 0 and better.estimate == pytest.approx(
        1 - metrics.matching_dataset(truths, preds, 0.5).f1
    )


def test_every_named_score_is_vectorised():
    counts = {
        "tp": np.array([3.0, 4]),
        "fp": np.array([1.0, 0]),
        "fn": np.array([0.0, 2]),
        "iou_sum": np.array([2.4, 3.5]),
    }
    for name in SCORES:
        interval = bootstrap_interval(counts, name, n_boot=20)
        assert 0 <= interval.low <= interval.high <= 1


@pytest.mark.parametrize(
    "counts, kwargs, error, message",
    [
        ({}, {}, TypeError, "non-empty dict"),
        ({"tp": np.ones(3), "fp": np.ones(2), "fn": np.ones(3)}, {}, ValueError, "one row per"),
        ({"tp": np.zeros(0), "fp": np.zeros(0), "fn": np.zeros(0)}, {}, ValueError, "no image"),
        (
            {"tp": np.array([1.0, np.nan]), "fp": np.ones(2), "fn": np.ones(2)},
            {},
            ValueError,
            "NaN",
        ),
        (
            {"tp": np.ones(2), "fp": np.ones(2), "fn": np.ones(2)},
            {"score": "dice"},
            ValueError,
            "one of",
        ),
        (
            {"tp": np.ones(2), "fp": np.ones(2), "fn": np.ones(2)},
            {"level": 1.0},
            ValueError,
            "strictly between",
        ),
        (
            {"tp": np.ones(2), "fp": np.ones(2), "fn": np.ones(2)},
            {"n_boot": 0},
            ValueError,
            "n_boot",
        ),
        (
            {"tp": np.ones(2), "fp": np.ones(2), "fn": np.ones(2)},
            {"n_boot": 10.0},
            TypeError,
            "n_boot",
        ),
        (
            {"tp": np.ones(2), "fp": np.ones(2), "fn": np.ones(2)},
            {"score": lambda s: s["tp"][:1]},
            ValueError,
            "one number per resample",
        ),
    ],
)
def test_bad_input_is_refused(counts, kwargs, error, message):
    with pytest.raises(error, match=message):
        bootstrap_interval(counts, **kwargs)


def test_bad_pairs_are_refused(pairs):
    truths, preds = pairs
    with pytest.raises(ValueError, match="as many"):
        image_counts(truths, preds[:2])
    counts = image_counts(truths, preds)
    with pytest.raises(ValueError, match="same images"):
        bootstrap_difference(counts, {k: v[:2] for k, v in counts.items()})
