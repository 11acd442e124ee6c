"""The results of notebook 10 (whole cells), sections 4 to 6: each method's failures on real
cells, boxes of whole cells and Mask R-CNN's stages (the top-down family), and every method
side by side.

The true ("perfect") box of every object, how much of it the object fills and how much other
objects cover, which objects a box NMS deletes even from perfect boxes, and the figures of
Mask R-CNN: the perfect boxes of a crop, the training loss, and the three stages (proposals,
detections, masks); then each method's scores next to the ceilings. Boxes are
``(x0, y0, x1, y1)`` in pixel edges, as torchvision wants them.

Introduced in notebook 10b.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torchvision
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from skimage.segmentation import relabel_sequential

from ..plot import overlay
from ..scale import rescale_labels
from ..topdown import detection_targets, detections_to_labels
from ._common import error_masks

__all__ = [
    "box_summary",
    "perfect_box_nms",
    "show_boxes",
    "show_failures",
    "show_losses",
    "show_stages",
    "show_summary",
]

PIXELS = {"xlabel": "x (pixels)", "ylabel": "y (pixels)"}


def _overlay(ax: Any, image: np.ndarray, labels: np.ndarray, title: str) -> None:
    """Labels over a grey image, with pixel axes."""
    overlay(image, labels, ax=ax, title=title)
    ax.set_axis_on()
    ax.set(**PIXELS)


def _consecutive(labels: Any) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype.kind not in "iu" or (lab.size and lab.min() < 0):
        raise ValueError(
            f"labels must be (H, W) non-negative integers, got {lab.dtype} {lab.shape}."
        )
    return relabel_sequential(lab)[0]


def perfect_box_nms(labels: Any, iou_thresh: float) -> np.ndarray:
    """The ids of the objects whose true boxes survive a box NMS (the larger box first).

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` int labels with ids 1..N.
    iou_thresh : float
        The NMS deletes the smaller of two boxes that overlap by more than this IoU.

    Returns
    -------
    np.ndarray
        ``(K,)`` int64 ids of the kept objects, largest box first.

    Introduced in notebook 10b.
    """
    lab = np.asarray(labels)
    if not np.array_equal(_consecutive(lab), lab):
        raise ValueError("labels must have the consecutive ids 1..N (relabel_sequential).")
    boxes = detection_targets(lab)["boxes"]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return torchvision.ops.nms(boxes, area, float(iou_thresh)).numpy() + 1


def box_summary(labels: Sequence[Any], iou_thresh: Sequence[float] = (0.5, 0.3)) -> dict:
    """What the perfect boxes of label images hold: the row of the box table.

    Parameters
    ----------
    labels : sequence of np.ndarray
        ``(H, W)`` int label images (any ids; 0 the background).
    iou_thresh : sequence of float
        The NMS thresholds at which to count deleted objects.

    Returns
    -------
    dict
        ``"objects"``; ``"box filled by its object"``, the median share of an object's box
        that the object fills; ``"boxes > 20% other objects (%)"``, the percentage of boxes
        of which other objects cover more than a fifth; ``"deleted by NMS at t"``, the objects
        whose perfect box an NMS at ``t`` deletes (the larger box first).

    Introduced in notebook 10b.
    """
    own, others, deleted = [], [], dict.fromkeys(iou_thresh, 0)
    for lab in map(_consecutive, labels):
        boxes = detection_targets(lab)["boxes"].int().tolist()
        for i, (x0, y0, x1, y1) in enumerate(boxes, 1):
            window = lab[y0:y1, x0:x1]
            own.append(np.mean(window == i))
            others.append(np.mean((window > 0) & (window != i)))
        for t in iou_thresh:
            deleted[t] += len(boxes) - len(perfect_box_nms(lab, t))
    return {
        "objects": len(own),
        "box filled by its object": float(np.median(own)),
        "boxes > 20% other objects (%)": 100 * float(np.mean(np.array(others) > 0.2)),
        **{f"deleted by NMS at {t}": n for t, n in deleted.items()},
    }


def show_failures(
    image: Any, truth: Any, predictions: Mapping[str, Any], crop: tuple[slice, slice]
) -> Figure:
    """The truth and each prediction on a crop, the errors at IoU 0.5 outlined: true cells
    that were missed in red, predicted objects that match nothing in yellow.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image.
    truth : np.ndarray
        ``(H, W)`` int true labels (of the whole image: a cell cut by the crop still counts).
    predictions : mapping of str to np.ndarray
        Method -> int predicted labels ``(h, w)``, resized to ``(H, W)`` by nearest neighbour
        (``course_utils.scale.rescale_labels``) when predicted at another scale.
    crop : (slice, slice)
        The rows and columns to show.

    Returns
    -------
    Figure
        ``1 + len(predictions)`` panels.

    Introduced in notebook 10b.
    """
    image, truth = np.asarray(image), np.asarray(truth)
    if image.ndim != 2 or image.shape != truth.shape:
        raise ValueError(f"need an (H, W) image and truth, got {image.shape} and {truth.shape}.")
    preds = {m: rescale_labels(p, shape=truth.shape) for m, p in predictions.items()}
    n = len(preds) + 1
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.6), squeeze=False)
    _overlay(axes[0, 0], image[crop], truth[crop], "truth")
    for ax, (method, pred) in zip(axes[0, 1:], preds.items()):
        missed, extra = error_masks(truth, pred)
        _overlay(ax, image[crop], pred[crop], method)
        ax.contour(missed[crop], levels=[0.5], colors="red", linewidths=1)
        ax.contour(extra[crop], levels=[0.5], colors="yellow", linewidths=1)
    fig.suptitle("A crop of test image 0 (red: missed, yellow: unmatched)")
    fig.tight_layout()
    return fig


def show_boxes(image: Any, labels: Any, iou_thresh: float) -> Figure:
    """Labels with their perfect boxes: those a box NMS keeps in white, those it deletes red.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image.
    labels : np.ndarray
        ``(H, W)`` int labels with ids 1..N.
    iou_thresh : float
        The NMS threshold.

    Returns
    -------
    Figure

    Introduced in notebook 10b.
    """
    image = np.asarray(image)
    if image.shape != np.shape(labels):
        raise ValueError(f"image {image.shape} and labels {np.shape(labels)} differ.")
    boxes = detection_targets(np.asarray(labels))["boxes"].numpy()
    kept = set((perfect_box_nms(labels, iou_thresh) - 1).tolist())
    fig, ax = plt.subplots(figsize=(7, 7))
    deleted = len(boxes) - len(kept)
    title = f"perfect boxes: {deleted} of {len(boxes)} deleted by NMS at {iou_thresh} (red)"
    overlay(image, labels, ax=ax, title=title)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        style = {"color": "white", "lw": 1} if k in kept else {"color": "red", "lw": 2.5}
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, **style))
    ax.set_axis_on()
    ax.set(**PIXELS)
    return fig


def show_losses(losses: Any) -> Figure:
    """The training loss of Mask R-CNN, step by step.

    Parameters
    ----------
    losses : array_like
        ``(S,)`` float sum of the five losses at each step.

    Returns
    -------
    Figure

    Introduced in notebook 10b.
    """
    values = np.asarray(losses, dtype=float)
    if values.ndim != 1 or not values.size:
        raise ValueError(f"losses must be a non-empty (S,) array, got shape {values.shape}.")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(values)
    ax.set(xlabel="step", ylabel="sum of the five losses", title="Mask R-CNN training")
    return fig


def show_stages(image: Any, proposals: Any, detections: Mapping[str, Any]) -> Figure:
    """Mask R-CNN's stages on one image: the RPN's proposals, the detections the box head
    keeps (score >= the 80th percentile of the scores, at most 0.5) and their masks.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image.
    proposals : np.ndarray
        ``(P, 4)`` float boxes ``(x0, y0, x1, y1)``.
    detections : mapping
        ``topdown.predict_detections``'s: ``boxes`` (N, 4), ``scores`` (N,), ``masks``
        (N, H, W).

    Returns
    -------
    Figure
        Three panels.

    Introduced in notebook 10b.
    """
    image = np.asarray(image)
    scores = np.asarray(detections["scores"])
    if image.ndim != 2 or np.shape(detections["masks"])[1:] != image.shape:
        raise ValueError(f"need an (H, W) image and (N, H, W) masks, got {image.shape}.")
    threshold = min(0.5, float(np.quantile(scores, 0.8, method="higher"))) if len(scores) else 0.5
    confident = np.asarray(detections["boxes"]).reshape(-1, 4)[scores >= threshold]
    proposals = np.asarray(proposals).reshape(-1, 4)
    shown = {
        f"{len(proposals)} best proposals (RPN)": proposals,
        f"{len(confident)} detections with score >= {threshold:.2f}": confident,
    }
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
    for ax, (title, boxes) in zip(axes, shown.items()):
        ax.imshow(image, cmap="gray")
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="cyan", lw=0.8))
        ax.set_title(title)
    masks = detections_to_labels(detections, score_threshold=threshold - 1e-6)
    overlay(image, masks, ax=axes[2], title="their masks")
    for ax in axes:
        ax.set_axis_on()
        ax.set(**PIXELS)
    fig.tight_layout()
    return fig


def show_summary(
    scores: Mapping[str, Mapping[str, float]],
    title: str,
    thresholds: Any,
    ceilings: Mapping[str, Any],
) -> Figure:
    """Each method's scores as grouped bars, and the ceilings against the IoU threshold.

    Parameters
    ----------
    scores : mapping of str to mapping of str to float
        Method -> score name (``"AP@0.5"``, ...) -> value in [0, 1]; every method has the
        same scores.
    title : str
        Title of the bars.
    thresholds : array_like
        ``(T,)`` IoU thresholds.
    ceilings : mapping of str to np.ndarray
        Label -> ``(T,)`` AP of perfect outputs.

    Returns
    -------
    Figure
        Two panels.

    Introduced in notebook 10b.
    """
    columns = list(next(iter(scores.values()), {}))
    if not columns or any(list(row) != columns for row in scores.values()):
        raise ValueError(f"every method needs the same scores, got {dict(scores)}.")
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6))
    width = 0.8 / len(columns)
    for k, column in enumerate(columns):
        values = [row[column] for row in scores.values()]
        axes[0].bar(np.arange(len(scores)) + (k - (len(columns) - 1) / 2) * width, values, width)
        axes[0].containers[-1].set_label(column)
    axes[0].set_xticks(np.arange(len(scores)), list(scores))
    axes[0].set(xlabel="method", ylabel="AP", ylim=(0, 1), title=title)
    axes[0].legend()
    tau = np.asarray(thresholds, dtype=float)
    for label, ap in ceilings.items():
        if np.shape(ap) != tau.shape:
            raise ValueError(f"ceiling {label!r} has shape {np.shape(ap)}, thresholds {tau.shape}.")
        axes[1].plot(tau, ap, "o-", label=label)
    axes[1].set(xlabel="IoU threshold τ", ylabel="AP", ylim=(0, 1.02))
    axes[1].set_title("Ceilings on Usiigaci: perfect outputs")
    axes[1].legend()
    fig.tight_layout()
    return fig
