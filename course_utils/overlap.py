"""The overlap table of two label images: object ids, areas and overlapping pairs.

Everything instance metrics need comes from one sparse table built from the pixels: for each pair
of a true and a predicted object that overlap, the number of shared pixels. IoU (and the IoT/IoP
criteria) follow from it and the areas, with no loop over object pairs.

Introduced in notebook 03.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._shared.validate import check_label_pair

CRITERIA = ("iou", "iot", "iop")


@dataclass(frozen=True)
class OverlapTable:
    """Sparse overlap between the objects of two label images (see :func:`overlap_table`).

    ``true_ids`` ``(n_true,)`` and ``pred_ids`` ``(n_pred,)``: sorted ids of the objects present;
    ``true_areas``, ``pred_areas``: their int64 pixel counts; ``rows``, ``cols``,
    ``intersection`` ``(n_pairs,)``: one entry per overlapping pair, int64 indices into the id
    arrays and the int64 number of shared pixels (> 0).
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_areas: np.ndarray
    pred_areas: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    intersection: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.true_ids), len(self.pred_ids)

    def scores(self, criterion: str = "iou") -> np.ndarray:
        """float64 ``(n_pairs,)``: intersection over union (iou), true (iot) or pred (iop) area."""
        inter = self.intersection.astype(np.float64)
        a_true = self.true_areas[self.rows]
        a_pred = self.pred_areas[self.cols]
        if criterion == "iou":
            return inter / (a_true + a_pred - self.intersection)
        if criterion == "iot":
            return inter / a_true
        if criterion == "iop":
            return inter / a_pred
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")

    def dense(self, criterion: str = "iou") -> np.ndarray:
        """float64 score matrix ``(n_true, n_pred)``; pairs that do not overlap score 0."""
        out = np.zeros(self.shape, dtype=np.float64)
        out[self.rows, self.cols] = self.scores(criterion)
        return out


def _pair_counts(t: np.ndarray, p: np.ndarray):
    """Distinct (true id, pred id) pairs of two flat label arrays and their pixel counts."""
    change = t[1:] != t[:-1]
    change |= p[1:] != p[:-1]
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    lengths = np.diff(np.append(starts, t.size))
    t_run, p_run = t[starts], p[starts]
    t_ids = p_ids = None
    if (int(t_run.max()) + 1) * (int(p_run.max()) + 1) >= 2**62:
        # Ids too large for one int64 pair key (e.g. random 64-bit ids): use their ranks.
        t_ids, t_run = np.unique(t_run, return_inverse=True)
        p_ids, p_run = np.unique(p_run, return_inverse=True)
    p_span = int(p_run.max()) + 1
    key = t_run.astype(np.int64) * p_span + p_run.astype(np.int64)
    order = np.argsort(key)
    key = key[order]
    first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    t_of, p_of = np.divmod(key[first], p_span)
    if t_ids is not None:
        t_of, p_of = t_ids[t_of], p_ids[p_of]
    return t_of, p_of, np.add.reduceat(lengths[order], first)


def overlap_table(y_true: np.ndarray, y_pred: np.ndarray) -> OverlapTable:
    """Count the shared pixels of every overlapping (true, pred) object pair.

    Parameters
    ----------
    y_true, y_pred : np.ndarray
        Integer label images of the same shape ``(H, W)`` or ``(D, H, W)``, 0 = background;
        ids need not be consecutive.

    Returns
    -------
    OverlapTable
        Ids, areas and the sparse list of overlapping pairs.

    Notes
    -----
    Neighbouring pixels mostly carry the same (true, pred) pair: the flat images are cut into
    runs of constant pair, and only the runs (far fewer than the pixels) are sorted and summed.
    """
    t_img, p_img = check_label_pair(y_true, y_pred)
    t_of, p_of, counts = _pair_counts(t_img.ravel(), p_img.ravel())
    t_ids, rows = np.unique(t_of, return_inverse=True)
    p_ids, cols = np.unique(p_of, return_inverse=True)
    t_areas = np.bincount(rows, weights=counts, minlength=len(t_ids)).astype(np.int64)
    p_areas = np.bincount(cols, weights=counts, minlength=len(p_ids)).astype(np.int64)
    # Background (id 0), when present, is the first id: drop it and shift the indices.
    t0, p0 = int(t_ids[0] == 0), int(p_ids[0] == 0)
    fg = (t_of != 0) & (p_of != 0)
    return OverlapTable(
        true_ids=t_ids[t0:],
        pred_ids=p_ids[p0:],
        true_areas=t_areas[t0:],
        pred_areas=p_areas[p0:],
        rows=rows[fg].astype(np.int64) - t0,
        cols=cols[fg].astype(np.int64) - p0,
        intersection=counts[fg],
    )


def iou_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, *, return_ids: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection over union between every true and every predicted object.

    Parameters
    ----------
    y_true, y_pred : np.ndarray
        Integer label images of the same shape, 0 = background; ids need not be consecutive.
    return_ids : bool
        Also return the ids that index the rows and columns.

    Returns
    -------
    iou : np.ndarray
        float64 ``(n_true, n_pred)``, rows and columns in increasing id order.
    true_ids, pred_ids : np.ndarray
        Only with ``return_ids=True``: the ids of the rows ``(n_true,)`` and columns ``(n_pred,)``.

    Introduced in notebook 03.
    """
    table = overlap_table(y_true, y_pred)
    iou = table.dense("iou")
    return (iou, table.true_ids, table.pred_ids) if return_ids else iou
