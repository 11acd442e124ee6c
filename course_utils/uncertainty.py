"""Bootstrap intervals over images: how much would a score move on other test images?

A test set is a sample of images. Scoring the same method on another sample of the same kind
would give another number; the **bootstrap** (Efron 1979) estimates by how much, from the one
sample we have: draw as many images as there are, *with replacement*, score the resample, and
repeat. The central ``level`` fraction of the resampled scores (the percentile interval) is
the interval. Images, not nuclei, are resampled, because nuclei of one image share its
staining, focus and density: they are not independent.

Every score here is a function of sums over images, so the expensive part (matching the
objects of each image) runs once: :func:`image_counts` computes per-image counts, and
:func:`bootstrap_interval` resamples them with a multinomial weight per image and resample.
Scores by name (:data:`SCORES`), all pooled over the images as ``metrics.matching_dataset``:

==================  ========================================================
``precision``       TP / (TP + FP)
``recall``          TP / (TP + FN)
``f1``              2 TP / (2 TP + FP + FN)
``ap``              TP / (TP + FP + FN) (the "AP" of the DSB 2018, Cellpose, StarDist);
                    with several thresholds, its mean over them ("AP 0.5:0.95")
``matched_iou``     sum of the matched IoUs / TP
``pq``              sum of the matched IoUs / (TP + FP / 2 + FN / 2)
==================  ========================================================

Any other score is a callable of the summed counts: give per-image counts of your own (a
mean over images is ``{"value": v, "images": ones}`` with ``lambda s: s["value"] /
s["images"]``). Resamples depend only on ``seed`` and the number of images, so two methods
scored on the same images with the same seed are resampled together (a *paired* bootstrap,
:func:`bootstrap_difference`).

The interval says how much the score depends on *which* test images were drawn, nothing about
other training runs or other data; with a handful of images it is itself rough (4 images have
only 35 distinct resamples).

Introduced in notebook 07b.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._shared.validate import check_int, check_real
from .metrics import matching

__all__ = ["SCORES", "Interval", "bootstrap_difference", "bootstrap_interval", "image_counts"]

Counts = Mapping[str, np.ndarray]
Score = Callable[[Mapping[str, np.ndarray]], Any]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _mean_over_thresholds(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=-1) if values.ndim > 1 else values


#: Scores by name: each maps summed counts (arrays with a leading resample axis, and a last
#: threshold axis when :func:`image_counts` got several thresholds) to one value per resample.
SCORES: Mapping[str, Score] = {
    "precision": lambda s: _mean_over_thresholds(_ratio(s["tp"], s["tp"] + s["fp"])),
    "recall": lambda s: _mean_over_thresholds(_ratio(s["tp"], s["tp"] + s["fn"])),
    "f1": lambda s: _mean_over_thresholds(_ratio(2 * s["tp"], 2 * s["tp"] + s["fp"] + s["fn"])),
    "ap": lambda s: _mean_over_thresholds(_ratio(s["tp"], s["tp"] + s["fp"] + s["fn"])),
    "matched_iou": lambda s: _mean_over_thresholds(_ratio(s["iou_sum"], s["tp"])),
    "pq": lambda s: _mean_over_thresholds(_ratio(s["iou_sum"], s["tp"] + (s["fp"] + s["fn"]) / 2)),
}


@dataclass(frozen=True)
class Interval:
    """A score and its bootstrap interval: ``estimate`` (on all images), ``low`` and ``high``
    (the percentiles of the resampled scores), ``level`` (0.95), ``n_boot`` resamples of
    ``n_images`` images. Prints as ``0.912 [0.874, 0.941]``."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_images: int

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def image_counts(
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    thresh: float | Sequence[float] = 0.5,
    *,
    criterion: str = "iou",
) -> dict[str, np.ndarray]:
    """Per-image counts of an object matching, for :func:`bootstrap_interval`.

    Parameters
    ----------
    truths, preds : list of ndarray, shape (H, W), int
        True and predicted label images, paired in order (at least one pair).
    thresh : float or sequence of float
        Matching threshold(s), as in :func:`course_utils.metrics.matching`.
    criterion : {"iou", "iot", "iop"}
        The overlap score of the matching.

    Returns
    -------
    dict of str to ndarray, float64
        ``tp``, ``fp``, ``fn``, ``iou_sum`` (sum of the matched scores): shape (n_images,) for
        one threshold, (n_images, n_thresholds) for several; ``n_true``, ``n_pred``, ``images``
        (ones): shape (n_images,).

    Introduced in notebook 07b.
    """
    truths, preds = list(truths), list(preds)
    if len(truths) != len(preds) or not truths:
        raise ValueError(
            f"need as many predictions as true label images (at least one), got "
            f"{len(truths)} and {len(preds)}"
        )
    single = np.ndim(thresh) == 0
    thresholds = [float(thresh)] if single else [float(t) for t in thresh]
    stats = [matching(t, p, thresholds, criterion=criterion) for t, p in zip(truths, preds)]
    counts = {
        key: np.array([[getattr(m, key) for m in per] for per in stats], np.float64)
        for key in ("tp", "fp", "fn")
    }
    counts["iou_sum"] = np.array([[m.mean_matched_score * m.tp for m in per] for per in stats])
    if single:
        counts = {key: value[:, 0] for key, value in counts.items()}
    counts["n_true"] = np.array([per[0].n_true for per in stats], np.float64)
    counts["n_pred"] = np.array([per[0].n_pred for per in stats], np.float64)
    counts["images"] = np.ones(len(stats))
    return counts


def _check_counts(counts: Any) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(counts, Mapping) or not counts:
        raise TypeError("counts must be a non-empty dict of per-image arrays (image_counts)")
    arrays = {str(k): np.asarray(v, dtype=np.float64) for k, v in counts.items()}
    lengths = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
    if None in lengths.values() or len(set(lengths.values())) != 1:
        raise ValueError(f"every count needs one row per image, got lengths {lengths}")
    n_images = next(iter(lengths.values()))
    if n_images == 0:
        raise ValueError("counts hold no image")
    for key, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"counts[{key!r}] holds NaN or infinity")
    return arrays, int(n_images)


def _resample_weights(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_images) float64: how often each image is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_boot).astype(
        np.float64
    )


def _score_fn(score: str | Score) -> Score:
    if isinstance(score, str):
        if score not in SCORES:
            raise ValueError(f"score must be one of {sorted(SCORES)} or a callable, got {score!r}")
        return SCORES[score]
    if not callable(score):
        raise TypeError(f"score must be a name of SCORES or a callable, got {type(score).__name__}")
    return score


def _resampled(arrays: dict[str, np.ndarray], fn: Score, weights: np.ndarray) -> np.ndarray:
    sums = {k: np.tensordot(weights, a, axes=(1, 0)) for k, a in arrays.items()}
    values = np.asarray(fn(sums), dtype=np.float64)
    if values.shape != (len(weights),):
        raise ValueError(
            f"the score must give one number per resample, shape "
            f"({len(weights)},), got {values.shape}"
        )
    return values


def _check_options(n_boot: Any, level: Any, seed: Any) -> tuple[int, float, int]:
    n_boot = check_int(n_boot, "n_boot", minimum=1)
    level = check_real(level, "level", minimum=0.0, maximum=1.0)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level}")
    return n_boot, level, check_int(seed, "seed")


def bootstrap_interval(
    counts: Counts,
    score: str | Score = "f1",
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The score on all images and its percentile bootstrap interval over images.

    Parameters
    ----------
    counts : dict of str to array, shape (n_images, ...)
        Per-image counts, from :func:`image_counts` or your own (one row per image).
    score : str or callable
        A name of :data:`SCORES`, or ``score(sums) -> array (n_boot,)`` where ``sums`` holds
        each count summed over a resample (shape ``(n_boot, ...)``); use numpy operations.
    n_boot : int
        Number of resamples (2000 for a 95% interval; a few hundred give its rough width).
    level : float
        Central fraction of the resampled scores, in (0, 1).
    seed : int
        Seed of the resampling (same seed and image count: same resamples).

    Returns
    -------
    Interval
        ``estimate`` is the score of the counts as given (every image once).

    Introduced in notebook 07b.
    """
    arrays, n_images = _check_counts(counts)
    n_boot, level, seed = _check_options(n_boot, level, seed)
    fn = _score_fn(score)
    estimate = float(_resampled(arrays, fn, np.ones((1, n_images)))[0])
    values = _resampled(arrays, fn, _resample_weights(n_images, n_boot, seed))
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), level, n_boot, n_images)


def bootstrap_difference(
    counts_a: Counts,
    counts_b: Counts,
    score: str | Score = "f1",
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Score of ``a`` minus score of ``b`` on the same images, with a *paired* interval: each
    resample draws the same images for both (``counts_a`` and ``counts_b`` describe the same
    images in the same order). An interval above 0 says that ``a`` is better on images like
    these. Arguments as in :func:`bootstrap_interval`. Introduced in notebook 07b."""
    arrays_a, n_a = _check_counts(counts_a)
    arrays_b, n_b = _check_counts(counts_b)
    if n_a != n_b:
        raise ValueError(f"paired counts need the same images, got {n_a} and {n_b} images")
    n_boot, level, seed = _check_options(n_boot, level, seed)
    fn = _score_fn(score)
    weights = _resample_weights(n_a, n_boot, seed)
    ones = np.ones((1, n_a))
    estimate = float(_resampled(arrays_a, fn, ones)[0] - _resampled(arrays_b, fn, ones)[0])
    values = _resampled(arrays_a, fn, weights) - _resampled(arrays_b, fn, weights)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), level, n_boot, n_a)
