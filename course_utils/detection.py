"""COCO-style detection average precision: precision and recall over score-ranked detections.

Object detection benchmarks (COCO, Lin et al. 2014; Mask R-CNN, He et al. 2017) give every
predicted object a **confidence score** and ask how precision and recall trade off as fewer or
more of the most confident detections are kept:

1. in each image, visit the predictions from the highest score to the lowest; each one is a
   true positive when some still unmatched true object overlaps it with IoU >= ``thresh`` (it
   takes the one with the highest IoU), else a false positive;
2. pool the detections of all images and sort them by score; after the ``k`` most confident,
   precision = TP / k and recall = TP / (number of true objects);
3. make precision non-increasing from the right (the best precision at this recall or a higher
   one), read it at the 101 recalls 0, 0.01, ..., 1 (0 beyond the largest recall reached) and
   average: that is the AP of COCO's ``COCOeval`` at one IoU threshold. COCO's headline
   "AP" (mAP) is its mean over the IoU thresholds 0.5, 0.55, ..., 0.95.

This is a different score from the "average precision" of the Cellpose and StarDist papers and
of the 2018 Data Science Bowl, TP / (TP + FP + FN) at a threshold
(:func:`course_utils.metrics.matching`), which needs no scores and counts one operating point.

Introduced in notebook 07.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._shared.validate import check_real
from .overlap import overlap_table

__all__ = [
    "RECALL_POINTS",
    "DetectionCurve",
    "detection_ap",
    "detection_curve",
    "greedy_matching",
]

#: The 101 recall levels at which COCO reads the interpolated precision.
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class DetectionCurve:
    """The precision-recall curve of score-ranked detections (see :func:`detection_curve`).

    Attributes
    ----------
    scores : ndarray, shape (n_det,), float64
        The detections' scores, from the highest to the lowest (pooled over the images).
    is_tp : ndarray, shape (n_det,), bool
        Whether each detection (same order) matched a true object.
    precision, recall : ndarray, shape (n_det,), float64
        After the first ``k + 1`` detections: TP / (k + 1) and TP / ``n_true``.
    interpolated : ndarray, shape (101,), float64
        The precision envelope read at :data:`RECALL_POINTS` (0 beyond the largest recall).
    ap : float
        The mean of ``interpolated``: COCO's AP at ``thresh``.
    n_true : int
        Number of true objects (over all images).
    thresh : float
        The IoU a detection needs to match.
    """

    scores: np.ndarray
    is_tp: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    interpolated: np.ndarray
    ap: float
    n_true: int
    thresh: float

    def __str__(self) -> str:
        return (
            f"DetectionCurve(IoU >= {self.thresh:.2f}): {len(self.scores)} detections, "
            f"{int(self.is_tp.sum())} TP of {self.n_true} true objects, AP {self.ap:.3f}"
        )


def _score_table(scores: Any, pred_ids: np.ndarray, where: str) -> np.ndarray:
    """The float64 score of each predicted id (``pred_ids``, sorted)."""
    if isinstance(scores, Mapping):
        missing = [int(i) for i in pred_ids if int(i) not in scores]
        if missing:
            raise ValueError(f"{where}: no score for the predicted ids {missing[:5]}")
        values = np.array([scores[int(i)] for i in pred_ids], dtype=np.float64)
    else:
        arr = np.asarray(scores)
        if arr.ndim != 1 or arr.dtype.kind not in "biuf" or arr.dtype == bool:
            raise ValueError(
                f"{where}: scores must be a 1-D array of numbers (scores[k] is the "
                f"score of id k + 1) or a dict {{id: score}}, got shape "
                f"{arr.shape} and dtype {arr.dtype}"
            )
        if len(pred_ids) and int(pred_ids[-1]) > len(arr):
            raise ValueError(
                f"{where}: scores has {len(arr)} entries but the largest predicted "
                f"id is {int(pred_ids[-1])} (scores[k] is the score of id k + 1)"
            )
        values = arr[pred_ids.astype(np.int64) - 1].astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{where}: the scores of the predicted objects must be finite")
    return values


def greedy_matching(
    scores: np.ndarray, thresh: float, *, priority: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching on a score matrix (IoU of true rows and predicted columns).

    The pairs with ``scores >= thresh`` are visited in order, and a pair is kept when neither
    its row nor its column is taken yet. The order: without ``priority``, by decreasing score
    (the greedy matching of ``metrics.matching(..., greedy=True)``; ties by lower row, then
    column); with ``priority`` (one value per column, e.g. a detection's confidence), column by
    column from the highest priority (ties: lower column), each column taking its best free
    row (COCO's matching of score-ranked detections).

    Parameters
    ----------
    scores : ndarray, shape (n_true, n_pred), float
        Overlap of every true object (row) with every prediction (column), e.g.
        ``metrics.iou_matrix``.
    thresh : float
        The smallest score of a kept pair.
    priority : ndarray, shape (n_pred,), float, optional
        The order in which the columns choose.

    Returns
    -------
    rows, cols : ndarray, shape (n_matches,), int64
        The kept pairs, in the order they were taken; ``scores[rows, cols]`` are their scores.

    Introduced in notebook 07.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D (n_true, n_pred) matrix, got shape {scores.shape}")
    check_real(thresh, "thresh")
    rows, cols = np.nonzero(scores >= thresh)
    value = scores[rows, cols]
    if priority is None:
        order = np.lexsort((cols, rows, -value))
    else:
        priority = np.asarray(priority, dtype=np.float64)
        if priority.shape != (scores.shape[1],):
            raise ValueError(
                f"priority needs one value per column, shape ({scores.shape[1]},), "
                f"got {priority.shape}"
            )
        order = np.lexsort((rows, -value, cols, -priority[cols]))
    used_rows, used_cols, keep = set(), set(), []
    for k in order:
        if rows[k] not in used_rows and cols[k] not in used_cols:
            used_rows.add(rows[k])
            used_cols.add(cols[k])
            keep.append(k)
    keep = np.asarray(keep, dtype=np.int64)
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def _match_by_score(y_true, y_pred, scores, thresh, where):
    """(scores, is_tp, n_true) of one image: COCO's greedy matching in score order."""
    table = overlap_table(y_true, y_pred)
    score = _score_table(scores, table.pred_ids, where)
    _, cols = greedy_matching(table.dense("iou"), thresh, priority=score)
    is_tp = np.zeros(len(score), bool)
    is_tp[cols] = True
    order = np.argsort(-score, kind="stable")
    return score[order], is_tp[order], table.shape[0]


def detection_curve(
    y_true: np.ndarray | Sequence[np.ndarray],
    y_pred: np.ndarray | Sequence[np.ndarray],
    scores: Any,
    thresh: float = 0.5,
) -> DetectionCurve:
    """Precision and recall of score-ranked detections, and COCO's 101-point AP.

    Parameters
    ----------
    y_true, y_pred : ndarray, shape (H, W), int, or lists of them
        True and predicted instance labels (0 = background) of one image, or lists (a data
        set, paired in order). Predicted ids must be 1..N-like: ``scores`` is indexed by them.
    scores : 1-D array, dict, or a list of them (one per image)
        The confidence of each predicted object: ``scores[k]`` is the score of id ``k + 1``
        (the layout of StarDist's NMS, whose polygon ``k`` gets id ``k + 1``), or a dict
        ``{id: score}``. Ids without pixels in ``y_pred`` are ignored (not detections).
    thresh : float
        IoU a detection needs to match a true object, in (0, 1].

    Returns
    -------
    DetectionCurve

    Raises
    ------
    ValueError
        Mismatched lists or shapes, a predicted id without a finite score, a threshold outside
        (0, 1], or no true object at all (recall is undefined; COCO skips such a category).

    Notes
    -----
    Matching follows ``pycocotools.cocoeval.COCOeval.evaluateImg`` (no crowd regions, no area
    ranges, no limit on detections per image): predictions are visited by decreasing score
    (ties by increasing id) and take the unmatched true object with the highest IoU >= thresh
    (:func:`greedy_matching` with the scores as priority). Two true objects with exactly the
    same IoU go to the lower id here, to the higher one in COCOeval.
    Detections are pooled over images by a stable sort of their scores, as ``accumulate`` does.

    Introduced in notebook 07b.
    """
    thresh = check_real(thresh, "thresh", minimum=0.0, maximum=1.0)
    if thresh == 0.0:
        raise ValueError("thresh must be in (0, 1], got 0 (it would match disjoint objects)")
    many = isinstance(y_true, list | tuple)
    if many != isinstance(y_pred, list | tuple):
        raise ValueError("y_true and y_pred must both be lists (a data set) or both one image")
    truths, preds = (list(y_true), list(y_pred)) if many else ([y_true], [y_pred])
    score_list = list(scores) if many else [scores]
    if not (len(truths) == len(preds) == len(score_list)) or not truths:
        raise ValueError(
            f"need as many true label images, predictions and score tables (at "
            f"least one), got {len(truths)}, {len(preds)} and {len(score_list)}"
        )
    per_image = [
        _match_by_score(t, p, s, thresh, f"image {k}")
        for k, (t, p, s) in enumerate(zip(truths, preds, score_list))
    ]
    n_true = sum(n for _, _, n in per_image)
    if n_true == 0:
        raise ValueError("there is no true object: recall, and so the AP, is undefined")
    all_scores = np.concatenate([s for s, _, _ in per_image])
    all_tp = np.concatenate([t for _, t, _ in per_image])
    order = np.argsort(-all_scores, kind="stable")
    all_scores, all_tp = all_scores[order], all_tp[order]
    tp = np.cumsum(all_tp)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / n_true
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(tp) else precision
    where = np.searchsorted(recall, RECALL_POINTS, side="left")
    reached = where < len(recall)
    interpolated = np.zeros(len(RECALL_POINTS))
    interpolated[reached] = envelope[where[reached]]
    return DetectionCurve(
        scores=all_scores,
        is_tp=all_tp,
        precision=precision,
        recall=recall,
        interpolated=interpolated,
        ap=float(interpolated.mean()),
        n_true=int(n_true),
        thresh=thresh,
    )


def detection_ap(
    y_true: np.ndarray | Sequence[np.ndarray],
    y_pred: np.ndarray | Sequence[np.ndarray],
    scores: Any,
    thresh: float = 0.5,
) -> float:
    """COCO's average precision at one IoU threshold: :func:`detection_curve`'s ``ap``.

    The mean over 101 recall levels (0, 0.01, ..., 1) of the best precision reached at that
    recall or beyond, over the detections ranked by ``scores`` (see :func:`detection_curve`
    for the arguments). A score in [0, 1]. Introduced in notebook 07.
    """
    return detection_curve(y_true, y_pred, scores, thresh).ap
