"""What the figures modules share: input checks, pixel axes, and the error masks of a match."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes

from .._shared.validate import to_numpy
from ..metrics import iou_matrix

__all__ = ["as_array", "error_masks", "pixel_axes"]


def as_array(value: Any, name: str, ndim: int, dtype: Any = None) -> np.ndarray:
    """``value`` (numpy array or torch tensor) as an array with ``ndim`` axes (cast to
    ``dtype`` when given), or a ``ValueError`` naming ``name``."""
    arr = np.asarray(to_numpy(value), dtype=dtype)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {arr.shape}.")
    return arr


def pixel_axes(ax: Axes, title: str | None = None, what: str = "") -> None:
    """Title ``ax`` and label its axes in pixels (``what`` before x and y, e.g. "output ")."""
    if title is not None:
        ax.set_title(title)
    ax.set_xlabel(f"{what}x (pixels)")
    ax.set_ylabel(f"{what}y (pixels)")


def error_masks(
    truth: np.ndarray, pred: np.ndarray, thresh: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (H, W) masks of the true objects no prediction matches at IoU ``thresh`` (missed)
    and of the predictions that match no true object (extra)."""
    iou, t_ids, p_ids = iou_matrix(truth, pred, return_ids=True)
    missed = t_ids[iou.max(axis=1, initial=0) < thresh]
    extra = p_ids[iou.max(axis=0, initial=0) < thresh]
    return np.isin(truth, missed) & (truth > 0), np.isin(pred, extra) & (pred > 0)
