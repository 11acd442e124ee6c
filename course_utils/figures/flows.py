"""The longer figures of the Cellpose chapter: touching nuclei, the heat of the flow target,
rotated flows, a training item, predicted maps, flow errors, masks, the AP curve and failures.

The notebook computes what it teaches (the diffusion, the flows, the training, the scores) and
hands the arrays to these functions, which only draw them. The flow-field views that notebook
05 shares with others (``show_flow_field``, ``show_trajectories``, ``failure_crop``) are in
``course_utils.plot_methods``.

Introduced in notebook 05.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..metrics import iou_matrix
from ..plot import flow_to_rgb, overlay, show_grid
from ..plot_methods import failure_crop, show_maps
from ._common import as_array, pixel_axes

__all__ = [
    "plot_ap",
    "plot_flow_errors",
    "show_failures",
    "show_heat",
    "show_prediction",
    "show_rotated_flows",
    "show_touching",
    "show_training_item",
]


def _count(labels: np.ndarray) -> int:
    return len(np.unique(labels[labels > 0]))


def show_touching(image: Any, components: Any, labels: Any) -> Figure:
    """A crop, its foreground's connected components, and its instance labels.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image in [0, 1].
    components : np.ndarray
        ``(H, W)`` integer connected components of the foreground ``labels > 0``.
    labels : np.ndarray
        ``(H, W)`` integer instance labels.

    Returns
    -------
    Figure
        Three panels with pixel axes; the titles count the components and the nuclei.

    Introduced in notebook 05.
    """
    img, comp, lab = (
        as_array(x, n, 2)
        for x, n in ((image, "image"), (components, "components"), (labels, "labels"))
    )
    if not img.shape == comp.shape == lab.shape:
        raise ValueError(f"image {img.shape}, components {comp.shape}, labels {lab.shape} differ.")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), layout="constrained")
    axes[0].imshow(img, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("BBBC039 crop")
    overlay(img, comp, ax=axes[1], title=f"foreground: {_count(comp)} components")
    overlay(img, lab, ax=axes[2], title=f"instance labels: {_count(lab)} nuclei")
    for ax in axes:
        ax.set_axis_on()
        pixel_axes(ax)
    return fig


def show_heat(
    heat_cell: Any,
    heat: Any,
    cell_mask: Any,
    foreground: Any,
    centre: tuple[int, int],
    *,
    zoom: tuple[slice, slice],
    title: str,
) -> Figure:
    """The temperature of one cell (zoomed, with its outline and centre) and of all cells.

    Both panels show log10 of the temperature on one colour scale (that of the one cell), blank
    outside the cell and outside the foreground.

    Parameters
    ----------
    heat_cell : np.ndarray
        ``(H, W)`` float temperature of the one cell (0 outside it).
    heat : np.ndarray
        ``(H, W)`` float summed temperature of all cells (0 on the background).
    cell_mask : np.ndarray
        ``(H, W)`` bool mask of the one cell.
    foreground : np.ndarray
        ``(H, W)`` bool mask of all cells.
    centre : (int, int)
        (row, column) of the cell's centre.
    zoom : (slice, slice)
        The window around the cell for the first panel.
    title : str
        Title of the first panel.

    Returns
    -------
    Figure

    Introduced in notebook 05.
    """
    one, total = as_array(heat_cell, "heat_cell", 2), as_array(heat, "heat", 2)
    mask = as_array(cell_mask, "cell_mask", 2).astype(bool)
    cells = as_array(foreground, "foreground", 2).astype(bool)
    if not one.shape == total.shape == mask.shape == cells.shape:
        raise ValueError(
            f"heat_cell {one.shape}, heat {total.shape}, cell_mask {mask.shape} and foreground "
            f"{cells.shape} differ in shape."
        )
    log_one = np.log10(np.where(mask, one, np.nan))  # NaN (blank) outside the cell
    log_all = np.log10(np.where(cells, total, np.nan))
    limits = {"vmin": np.nanmin(log_one), "vmax": np.nanmax(log_one), "cmap": "inferno"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    im = axes[0].imshow(log_one[zoom], **limits)
    axes[0].contour(mask[zoom], [0.5], colors="cyan", linewidths=1)
    axes[0].plot(
        centre[1] - (zoom[1].start or 0), centre[0] - (zoom[0].start or 0), "c+", ms=12, mew=2
    )
    pixel_axes(axes[0], title)
    fig.colorbar(im, ax=axes[0], label="log10(temperature)")
    im = axes[1].imshow(log_all, **limits)
    pixel_axes(axes[1], "all cells of the crop (summed)")
    fig.colorbar(im, ax=axes[1], label="log10(temperature)")
    return fig


def show_rotated_flows(colours: Sequence[Any], errors: Mapping[str, float]) -> Figure:
    """Flows of rotated labels beside the flows rotated as pixels only, and as arrows too.

    Parameters
    ----------
    colours : sequence of three np.ndarray
        ``(H, W, 3)`` float RGB images (``flow_to_rgb``) of the flows recomputed from the
        rotated labels, of the flow maps rotated like images, and of those rotated with their
        arrows turned.
    errors : mapping of str to float
        The mean angle error (degrees) of ``"pixels only"`` and of ``"pixels and arrows"``.

    Returns
    -------
    Figure
        Three panels.

    Introduced in notebook 05.
    """
    rgb = [as_array(c, "colours", 3) for c in colours]
    if len(rgb) != 3 or any(c.shape[-1] != 3 for c in rgb):
        raise ValueError("colours must be three (H, W, 3) RGB images.")
    if missing := {"pixels only", "pixels and arrows"} - set(errors):
        raise ValueError(f"errors lacks {sorted(missing)}.")
    titles = [
        "flows of the rotated labels",
        f"pixels rotated only: wrong\n(mean error {errors['pixels only']:.0f} degrees)",
        f"pixels and arrows rotated\n(mean error {errors['pixels and arrows']:.1f} degrees)",
    ]
    return show_grid(rgb, titles=titles, ncols=3, figsize=(12, 4.6))


def show_training_item(image: Any, flows: Any, cellprob: Any) -> Figure:
    """One training item: the augmented patch, its flow target and its cell-probability target.

    Parameters
    ----------
    image : np.ndarray or torch.Tensor
        ``(1, h, w)`` float32 patch.
    flows : np.ndarray or torch.Tensor
        ``(2, h, w)`` float32 flow target (at 5x scale).
    cellprob : np.ndarray or torch.Tensor
        ``(h, w)`` float32 foreground target, 0 or 1.

    Returns
    -------
    Figure

    Introduced in notebook 05.
    """
    patch = as_array(image, "image", 3)
    if patch.shape[0] != 1:
        raise ValueError(f"image must be (1, h, w), got shape {patch.shape}.")
    flows, prob = as_array(flows, "flows", 3), as_array(cellprob, "cellprob", 2)
    return show_grid(
        [patch[0], flow_to_rgb(flows), prob],
        titles=["augmented patch", "its flow target (x5)", "its cell-probability target"],
        ncols=3,
        figsize=(11, 3.9),
    )


def show_prediction(
    image: Any,
    flows: Any,
    logit: Any,
    true_flows: Any,
    *,
    window: tuple[slice, slice],
    scale: float,
) -> Figure:
    """A window of a test image: the predicted cell probability and flows, and the true flows.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image in [0, 1].
    flows : np.ndarray
        ``(2, H, W)`` float predicted flows, at ``scale`` times unit length.
    logit : np.ndarray
        ``(H, W)`` float predicted cell-probability logit.
    true_flows : np.ndarray
        ``(2, H, W)`` float true unit flows (multiplied by ``scale`` for the display).
    window : (slice, slice)
        The part of the image to show.
    scale : float
        The flow scale: shown at full brightness.

    Returns
    -------
    Figure
        Four panels with pixel axes.

    Introduced in notebook 05.
    """
    img, prob = as_array(image, "image", 2), 1 / (1 + np.exp(-as_array(logit, "logit", 2)))
    pred, true = as_array(flows, "flows", 3), as_array(true_flows, "true_flows", 3)
    if not pred.shape == true.shape == (2, *img.shape) or prob.shape != img.shape:
        raise ValueError("flows and true_flows must be (2, H, W) and logit (H, W), as image.")
    rows, cols = window
    return show_maps(
        [
            img[window],
            prob[window],
            flow_to_rgb(pred[:, rows, cols], scale),
            flow_to_rgb(scale * true[:, rows, cols], scale),
        ],
        ["test image (window)", "predicted cell probability", "predicted flows", "true flows"],
        cmap=["gray", "magma", "gray", "gray"],
        vmin=0,
        vmax=1,
        figsize=(19, 4.6),
    )


def plot_flow_errors(flow_error: Any, threshold: float = 0.4) -> Figure:
    """Histogram of the flow error of every predicted mask, with the threshold.

    Parameters
    ----------
    flow_error : np.ndarray
        ``(N,)`` float mean squared flow difference of each mask.
    threshold : float
        The ``flow_threshold`` drawn as a dashed line.

    Returns
    -------
    Figure

    Introduced in notebook 05.
    """
    errors = as_array(flow_error, "flow_error", 1)
    fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    ax.hist(errors, bins=40, color="tab:blue")
    ax.axvline(threshold, color="tab:red", ls="--", label=f"flow_threshold = {threshold:g}")
    ax.set_title("flow error per predicted mask (test image 0)")
    ax.set_xlabel("mean squared difference to the predicted unit flows")
    ax.set_ylabel("number of masks")
    ax.legend()
    return fig


def plot_ap(thresholds: Any, curves: Mapping[str, Any], *, n_images: int) -> Figure:
    """Average precision against the IoU threshold, one line per method.

    Parameters
    ----------
    thresholds : np.ndarray
        ``(T,)`` float IoU thresholds.
    curves : mapping of str to np.ndarray
        Each method's name and its ``(T,)`` AP at those thresholds.
    n_images : int
        How many test images the scores pool (for the title).

    Returns
    -------
    Figure

    Introduced in notebook 05.
    """
    x = as_array(thresholds, "thresholds", 1)
    if not curves:
        raise ValueError("curves is empty.")
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for (name, ap), style in zip(curves.items(), ["o-", "s--", "^:", "d-."] * len(curves)):
        ap = as_array(ap, name, 1)
        if ap.shape != x.shape:
            raise ValueError(f"{name!r} has {ap.size} values for {x.size} thresholds.")
        ax.plot(x, ap, style, label=name)
    ax.set_title(f"Average precision on {n_images} BBBC039 test images")
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP = TP / (TP + FP + FN)")
    ax.set_ylim(0, 1)
    ax.legend()
    return fig


def _failures(truth: np.ndarray, pred: np.ndarray, thresh: float):
    """Ids of unmatched true objects (FN) and unmatched predicted objects (FP) at IoU thresh."""
    iou, true_ids, pred_ids = iou_matrix(truth, pred, return_ids=True)
    best_true = iou.max(axis=1) if iou.shape[1] else np.zeros(len(true_ids))
    best_pred = iou.max(axis=0) if iou.shape[0] else np.zeros(len(pred_ids))
    return true_ids[best_true < thresh], pred_ids[best_pred < thresh]


def show_failures(
    images: Sequence[Any],
    truths: Sequence[Any],
    predictions: Sequence[Any],
    *,
    n: int = 4,
    seed: int = 0,
    thresh: float = 0.5,
) -> Figure:
    """A random sample of missed nuclei (FN) and wrong masks (FP), as crops.

    A true nucleus is missed when no predicted mask overlaps it with IoU >= ``thresh``; a mask
    is wrong when it overlaps no true nucleus that much. ``n`` of each are drawn at random
    (``seed``), not the worst or the best cases, as 80 x 80 crops
    (``plot_methods.failure_crop``): the object tinted blue, true outlines green, predicted
    outlines orange.

    Parameters
    ----------
    images, truths, predictions : sequence of np.ndarray
        ``(H, W)`` test images, their integer true labels and the integer predicted masks.
    n : int
        How many missed nuclei, and how many wrong masks, to show (fewer if there are fewer).
    seed : int
        Seeds the random sample.
    thresh : float
        The IoU of a match.

    Returns
    -------
    Figure
        One crop per object, titled with its kind, its image and its size in pixels (a single
        empty panel that says so when there is no failure).

    Introduced in notebook 05.
    """
    if not len(images) == len(truths) == len(predictions):
        raise ValueError("images, truths and predictions must have the same length.")
    missed, wrong = [], []  # (image index, label image holding the object, id)
    for i, (t, p) in enumerate(zip(truths, predictions)):
        fn_ids, fp_ids = _failures(np.asarray(t), np.asarray(p), thresh)
        missed += [(i, np.asarray(t), k) for k in fn_ids]
        wrong += [(i, np.asarray(p), k) for k in fp_ids]
    rng = np.random.default_rng(seed)
    shown = [("missed (FN)", missed[c]) for c in rng.permutation(len(missed))[:n]]
    shown += [("wrong (FP)", wrong[c]) for c in rng.permutation(len(wrong))[:n]]
    if not shown:
        fig, ax = plt.subplots(figsize=(3, 3))
        ax.set_axis_off()
        ax.set_title("no missed nuclei and no wrong masks")
        return fig
    crops = [
        failure_crop(images[i], truths[i], predictions[i], holder, k) for _, (i, holder, k) in shown
    ]
    titles = [f"{kind}\ntest image {i}, {np.sum(holder == k)} px" for kind, (i, holder, k) in shown]
    return show_grid(crops, titles=titles, ncols=len(shown), figsize=(2.7 * len(shown), 3.4))
