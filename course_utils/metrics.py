"""Instance and pixel metrics: how good is a segmentation?

Instance metrics match true and predicted objects one-to-one when their overlap score (IoU by
default) reaches a threshold, then count true positives (matched pairs), false positives and
false negatives. Definitions follow ``stardist.matching.matching`` (same fields and numbers),
including "accuracy" TP / (TP + FP + FN), the "average precision" of Cellpose and StarDist.
The overlaps come from one sparse table built from the pixels (no loop over object pairs);
matching is optimal (most matches, then highest total score, as StarDist) or greedy.

Scores are float64; a pair counts when ``score >= thresh - THRESH_TOLERANCE`` (1e-12), so that
``np.arange(0.5, 1, 0.05)[4] == 0.7000000000000002`` still accepts an IoU of exactly 0.7.
StarDist compares in float32 (a tolerance of ~1e-7): the two differ only for a score within
1e-7 of the threshold but not equal to it, which needs objects over ~100,000 pixels.

Introduced in notebook 01 (and explained in notebook 07).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from tqdm.auto import tqdm

from ._shared.validate import check_label_pair, is_tensor
from .overlap import CRITERIA
from .overlap import OverlapTable as OverlapTable
from .overlap import iou_matrix as iou_matrix
from .overlap import overlap_table as overlap_table

DEFAULT_AP_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)  # 0.5, 0.55, ..., 0.95
THRESH_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Matching:
    """Instance matching statistics at one threshold (fields as in ``stardist.matching``).

    ``accuracy`` = TP / (TP + FP + FN) is the "average precision" of the Cellpose and StarDist
    papers; ``f1`` = 2 TP / (2 TP + FP + FN); every ratio is 0 when TP = 0. The sum of the
    matched scores is divided by TP (``mean_matched_score``), by ``n_true``
    (``mean_true_score``) and by TP + FP/2 + FN/2 (``panoptic_quality``, Kirillov 2019).
    Printing gives a three-line summary; :meth:`as_dict` a plain dict.
    """

    criterion: str
    thresh: float
    fp: int
    tp: int
    fn: int
    precision: float
    recall: float
    accuracy: float
    f1: float
    n_true: int
    n_pred: int
    mean_true_score: float
    mean_matched_score: float
    panoptic_quality: float

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-friendly)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (
            f"{type(self).__name__}({self.criterion} >= {self.thresh:.2f}): "
            f"tp={self.tp} fp={self.fp} fn={self.fn} (n_true={self.n_true}, "
            f"n_pred={self.n_pred})\n  precision={self.precision:.3f} "
            f"recall={self.recall:.3f} f1={self.f1:.3f} accuracy(AP)={self.accuracy:.3f}\n"
            f"  mean_matched_score={self.mean_matched_score:.3f} "
            f"mean_true_score={self.mean_true_score:.3f} "
            f"panoptic_quality={self.panoptic_quality:.3f}"
        )


@dataclass(frozen=True)
class DatasetMatching(Matching):
    """:class:`Matching` over a data set; ``by_image`` says how the ratios were averaged."""

    by_image: bool = False


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den > 0 else 0.0


def _record(cls, criterion, thresh, tp, n_true, n_pred, score_sum, **extra):
    """Build a Matching record from counts and the sum of matched scores."""
    fp, fn = n_pred - tp, n_true - tp  # with tp = 0 every ratio is 0, also 0 / 0
    return cls(
        criterion=criterion,
        thresh=float(thresh),
        fp=int(fp),
        tp=int(tp),
        fn=int(fn),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        accuracy=_ratio(tp, tp + fp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        n_true=int(n_true),
        n_pred=int(n_pred),
        mean_true_score=_ratio(score_sum, n_true),
        mean_matched_score=_ratio(score_sum, tp),
        panoptic_quality=_ratio(score_sum, tp + fp / 2 + fn / 2),
        **extra,
    )


def _match_greedy(rows, cols, scores, thr):
    """Indices of the pairs kept when taking the highest score first."""
    cand = np.flatnonzero(scores >= thr)
    # lexsort: the last key is primary; ties go to the lower (row, col) for determinism
    order = cand[np.lexsort((cols[cand], rows[cand], -scores[cand]))]
    used_t, used_p, keep = set(), set(), []
    for k in order:
        r, c = rows[k], cols[k]
        if r not in used_t and c not in used_p:
            used_t.add(r)
            used_p.add(c)
            keep.append(k)
    return np.asarray(keep, dtype=np.int64)


def _match_optimal(rows, cols, scores, thr, n_true, n_pred):
    """Indices of the pairs kept by the optimal one-to-one assignment.

    Maximises the number of pairs with score >= thr, then the total score of all assigned
    pairs (StarDist's objective). Solved on the sparse graph of overlapping pairs: each true
    object also gets a private "unmatched" column, so a full matching always exists, and
    every cost is shifted by +2 to stay positive (a constant per row: the optimum is unchanged).
    """
    n_min = min(n_true, n_pred)
    gain = (scores >= thr) + scores / (2 * n_min)
    data = np.concatenate((2.0 - gain, np.full(n_true, 2.0)))
    r = np.concatenate((rows, np.arange(n_true)))
    c = np.concatenate((cols, n_pred + np.arange(n_true)))
    graph = sparse.csr_matrix((data, (r, c)), shape=(n_true, n_pred + n_true))
    r_sel, c_sel = min_weight_full_bipartite_matching(graph)
    real = c_sel < n_pred
    # Find each assigned (row, col) among the pairs; the matching only uses existing edges.
    keys = rows * n_pred + cols
    order = np.argsort(keys)
    pos = order[np.searchsorted(keys[order], r_sel[real] * n_pred + c_sel[real])]
    return pos[scores[pos] >= thr]


def _match_indices(table, scores, thr, greedy):
    """Pair indices matched at ``thr``; the conflict-free case needs no assignment at all."""
    cand = np.flatnonzero(scores >= thr)
    rows, cols = table.rows[cand], table.cols[cand]
    if len(np.unique(rows)) == len(cand) and len(np.unique(cols)) == len(cand):
        return cand  # every object has at most one candidate: both methods keep them all
    if greedy:
        return _match_greedy(table.rows, table.cols, scores, thr)
    return _match_optimal(table.rows, table.cols, scores, thr, *table.shape)


def _thresholds(thresh: Any) -> tuple[list[float], bool]:
    single = np.ndim(thresh) == 0
    values = [float(thresh)] if single else [float(t) for t in thresh]
    if not values:
        raise ValueError("thresh is an empty sequence.")
    for t in values:
        if not 0.0 < t <= 1.0:
            raise ValueError(f"thresh must be in (0, 1], got {t} (0 would match disjoint objects).")
    return values, single


def _match_table(table, criterion, thresholds, greedy):
    """(thresh, tp, score_sum) for each threshold from one overlap table."""
    scores = table.scores(criterion)
    out = []
    for thr in thresholds:
        keep = _match_indices(table, scores, thr - THRESH_TOLERANCE, greedy)
        # fsum is exactly rounded, so the result does not depend on the order of the ids
        out.append((thr, len(keep), math.fsum(scores[keep].tolist())))
    return out


def matching(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    thresh: float | Sequence[float] = 0.5,
    *,
    criterion: str = "iou",
    greedy: bool = False,
) -> Matching | list[Matching]:
    """Match true and predicted objects one-to-one and count TP, FP and FN.

    Parameters
    ----------
    y_true, y_pred : np.ndarray
        Integer label images of the same shape ``(H, W)`` or ``(D, H, W)``, 0 = background,
        non-negative ids that need not be consecutive.
    thresh : float or sequence of float
        A pair can match when its score is >= thresh, in (0, 1]. A sequence gives one record
        per threshold (the overlap is computed once).
    criterion : {"iou", "iot", "iop"}
        Intersection over union, over the true area, or over the predicted area.
    greedy : bool
        False (default): optimal assignment, as StarDist. True: take pairs by decreasing score.
        Both agree for IoU thresholds above 0.5, where a match can only be unique.

    Returns
    -------
    Matching or list of Matching

    Notes
    -----
    A 3-D pair is one volume: objects are matched across its slices. Score an ``(N, H, W)``
    stack of 2-D images with ``matching_dataset(list(stack_true), list(stack_pred))``.

    Introduced in notebook 05 (and explained in notebook 07).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    thresholds, single = _thresholds(thresh)
    table = overlap_table(y_true, y_pred)
    n_true, n_pred = table.shape
    records = [
        _record(Matching, criterion, thr, tp, n_true, n_pred, s)
        for thr, tp, s in _match_table(table, criterion, thresholds, greedy)
    ]
    return records[0] if single else records


def matching_dataset(
    ys_true: Iterable[np.ndarray],
    ys_pred: Iterable[np.ndarray],
    thresh: float | Sequence[float] = 0.5,
    *,
    criterion: str = "iou",
    by_image: bool = False,
    greedy: bool = False,
    progress: bool = False,
    volume: bool = False,
) -> DatasetMatching | list[DatasetMatching]:
    """:func:`matching` over a data set, aggregated like ``stardist.matching.matching_dataset``.

    Parameters
    ----------
    ys_true, ys_pred : list (or tuple, iterable) of np.ndarray
        Label images ``(H, W)``, paired in order (equal lengths, at least one pair). One numpy
        array is refused: for an ``(N, H, W)`` stack pass ``list(stack)``.
    thresh, criterion, greedy
        As in :func:`matching`.
    by_image : bool
        False (default): pool the counts of all images, then compute the ratios (large images
        weigh more). True: average the per-image ratios and scores.
    progress : bool
        Show a progress bar.
    volume : bool
        The 3-D items are volumes ``(D, H, W)``; without it a 3-D item (a stack?) is refused.

    Returns
    -------
    DatasetMatching or list of DatasetMatching
        ``tp``, ``fp``, ``fn``, ``n_true`` and ``n_pred`` are always sums over the images.

    Introduced in notebook 01.
    """
    ys_true = _dataset_items(ys_true, "ys_true", volume)
    ys_pred = _dataset_items(ys_pred, "ys_pred", volume)
    if len(ys_true) != len(ys_pred):
        raise ValueError(f"ys_true has {len(ys_true)} images but ys_pred has {len(ys_pred)}.")
    if not ys_true:
        raise ValueError("ys_true and ys_pred are empty.")
    thresholds, single = _thresholds(thresh)
    pairs = tqdm(zip(ys_true, ys_pred), total=len(ys_true), disable=not progress)
    per_image = [matching(t, p, thresholds, criterion=criterion, greedy=greedy) for t, p in pairs]
    records = []
    for k, thr in enumerate(thresholds):
        stats = [m[k] for m in per_image]
        tp, n_true, n_pred = (sum(getattr(s, f) for s in stats) for f in ("tp", "n_true", "n_pred"))
        score_sum = sum(s.mean_matched_score * s.tp for s in stats)
        rec = _record(DatasetMatching, criterion, thr, tp, n_true, n_pred, score_sum)
        if by_image:
            fields = ("precision", "recall", "accuracy", "f1", "mean_true_score")
            fields += ("mean_matched_score", "panoptic_quality")
            means = {f: float(np.mean([getattr(s, f) for s in stats])) for f in fields}
            rec = dataclasses.replace(rec, **means)
        records.append(dataclasses.replace(rec, by_image=bool(by_image)))
    return records[0] if single else records


def average_precision(
    y_true: np.ndarray | Sequence[np.ndarray],
    y_pred: np.ndarray | Sequence[np.ndarray],
    thresholds: Sequence[float] = DEFAULT_AP_THRESHOLDS,
    *,
    by_image: bool = False,
    volume: bool = False,
) -> np.ndarray:
    """The "average precision" TP / (TP + FP + FN) at each IoU threshold (Cellpose, StarDist).

    Parameters
    ----------
    y_true, y_pred : np.ndarray or list of np.ndarray
        One pair of ``(H, W)`` label images, or lists (tuples) of them for a data set. A 3-D
        array is refused unless ``volume=True``: an ``(N, H, W)`` stack of images is a data
        set, pass ``list(stack)``.
    thresholds : sequence of float
        IoU thresholds in (0, 1]; default 0.5, 0.55, ..., 0.95.
    by_image : bool
        Data sets only: average the per-image AP (as the Cellpose papers report) instead of
        pooling TP, FP and FN over all images first (default, as StarDist's matching_dataset).
    volume : bool
        The 3-D arrays are volumes ``(D, H, W)``, each matched as one volume.

    Returns
    -------
    np.ndarray
        float64, shape ``(len(thresholds),)``.

    Introduced in notebook 01.
    """
    many = isinstance(y_true, list | tuple)
    if many != isinstance(y_pred, list | tuple):
        raise ValueError("y_true and y_pred must both be lists (a data set) or both one image.")
    if many:
        stats = matching_dataset(y_true, y_pred, list(thresholds), by_image=by_image, volume=volume)
    else:
        for name, y in (("y_true", y_true), ("y_pred", y_pred)):
            _refuse_unannounced_volume(y, name, volume)
        stats = matching(y_true, y_pred, list(thresholds))
    return np.array([s.accuracy for s in stats], dtype=np.float64)


def _refuse_unannounced_volume(y: Any, name: str, volume: bool) -> None:
    """A 3-D label array may be one volume or a stack of 2-D images: never guess which."""
    if not volume and np.ndim(y) == 3:
        raise ValueError(
            f"{name} is a 3-D array of shape {tuple(np.shape(y))}. A stack of 2-D images "
            "would be scored as one volume, matching objects across images: pass a list of "
            "images instead (list(stack)), or volume=True if it is one 3-D volume (D, H, W)."
        )


def _dataset_items(ys: Any, name: str, volume: bool) -> list:
    """The label images of a data set as a list; one array (a stack?) is refused."""
    if isinstance(ys, np.ndarray) or is_tensor(ys):
        raise ValueError(
            f"{name} is one array of shape {tuple(ys.shape)}, not a list of label images: "
            "pass list(stack) for an (N, H, W) stack of 2-D images, or [volume] with "
            "volume=True for one 3-D volume."
        )
    items = list(ys)
    for k, y in enumerate(items):
        _refuse_unannounced_volume(y, f"{name}[{k}]", volume)
    return items


def pixel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Pixel-wise scores of a foreground/background segmentation.

    Parameters
    ----------
    y_true, y_pred : np.ndarray
        Boolean or integer arrays of the same shape (2D or 3D); nonzero = foreground, so label
        images work too. Float arrays (probabilities) are refused: threshold them first.

    Returns
    -------
    dict
        ``accuracy`` (TP + TN) / N, ``precision`` TP / (TP + FP), ``recall`` TP / (TP + FN),
        ``iou`` TP / (TP + FP + FN) and ``dice`` 2 TP / (2 TP + FP + FN), as Python floats.
        A 0/0 ratio is 1.0 when both masks are empty (nothing to find, nothing found) and
        0.0 otherwise (e.g. precision of an empty prediction when the truth is not empty).

    Introduced in notebook 02b.
    """
    t, p = check_label_pair(y_true, y_pred, allow_bool=True)
    t, p = t != 0, p != 0
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    tn = t.size - tp - fp - fn
    empty = 1.0 if tp + fp + fn == 0 else 0.0  # the value of 0/0

    def ratio(num: int, den: int) -> float:
        return num / den if den else empty

    return {
        "accuracy": (tp + tn) / t.size,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
    }
