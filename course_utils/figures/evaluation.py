"""Figures of the evaluation chapters: predictions over images, the pitfalls of the metrics
(notebook 07), and where each method fails (the capstone, 07b; the methods' scores side by
side: ``figures.comparison``).

The notebooks compute what they show; these functions only draw it.

Introduced in notebook 07.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..plot import overlay
from ._common import error_masks


def show_overlays(image: Any, panels: Mapping[str, Any]) -> Figure:
    """One image, once per panel: with a label image on top, or alone (``None``).

    Parameters
    ----------
    image : np.ndarray, float, (H, W)
        The grey image.
    panels : dict of str to np.ndarray, int, (H, W), or None
        Panel title -> instance labels drawn over the image (``None``: the image alone).

    Returns
    -------
    Figure

    Introduced in notebook 07.
    """
    image = np.asarray(image)
    if image.ndim != 2 or not panels:
        raise ValueError(f"need an (H, W) image and at least one panel, got {image.shape}.")
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.2), squeeze=False)
    for ax, (title, labels) in zip(axes[0], panels.items()):
        if labels is None:
            ax.imshow(image, cmap="gray")
            ax.set(title=title, xlabel="x (pixels)", ylabel="y (pixels)")
        else:
            overlay(image, labels, ax=ax, title=title)
    fig.tight_layout()
    return fig


def show_dice_vs_iou(scores: Mapping[str, Mapping[str, float]]) -> Figure:
    """Pixel Dice against pixel IoU for several predictions, on the curve Dice = 2 IoU / (1 + IoU).

    Parameters
    ----------
    scores : dict of str to dict
        Prediction name -> its ``metrics.pixel_metrics`` (needs ``"iou"`` and ``"dice"``).

    Returns
    -------
    Figure

    Introduced in notebook 07.
    """
    if not scores or any({"iou", "dice"} - set(s) for s in scores.values()):
        raise ValueError("scores must map names to dicts with 'iou' and 'dice'.")
    iou = np.linspace(0, 1, 101)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(iou, 2 * iou / (1 + iou), "k-", label="Dice = 2 IoU / (1 + IoU)")
    ax.plot(iou, iou, ":", color="gray", label="Dice = IoU")
    for name, s in scores.items():
        ax.plot(s["iou"], s["dice"], "o", label=name)
    ax.set(xlabel="pixel IoU", ylabel="pixel Dice", title="Dice is a fixed function of IoU")
    ax.legend(fontsize=7)
    return fig


def show_small_objects(radii: Any, shift_iou: Any, areas: Any) -> Figure:
    """The IoU of a disk with its copy shifted by one pixel, and the radii of real nuclei.

    Parameters
    ----------
    radii : np.ndarray, (n,)
        Disk radii in pixels.
    shift_iou : np.ndarray, float, (n,)
        IoU of each disk with its copy shifted by one pixel.
    areas : np.ndarray, int, (m,)
        Areas in pixels of the true nuclei (histogram of their equivalent radii).

    Returns
    -------
    Figure

    Introduced in notebook 07.
    """
    radii, shift_iou = np.asarray(radii, dtype=float), np.asarray(shift_iou, dtype=float)
    if radii.ndim != 1 or shift_iou.shape != radii.shape:
        raise ValueError(f"need one IoU per radius, got {shift_iou.shape} for {radii.shape}.")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].plot(radii, shift_iou, "o-", label="shifted by 1 px")
    axes[0].axhline(0.5, color="tab:red", ls="--", label="τ = 0.5")
    title = "The same 1-pixel error costs small objects more"
    axes[0].set(xlabel="disk radius (pixels)", ylabel="IoU with the unshifted disk", title=title)
    axes[0].legend()
    axes[1].hist(np.sqrt(np.asarray(areas) / np.pi), bins=30, color="tab:gray")
    axes[1].set(xlabel="equivalent radius of the true nuclei (pixels)", ylabel="number of nuclei")
    axes[1].set_title("Nuclei in the test image")
    fig.tight_layout()
    return fig


def show_masks(truth: Any, preds: Mapping[str, Any], *, title: str) -> Figure:
    """A true mask and predictions of it, each panel showing ``truth + pred`` (0, 1 or 2).

    Parameters
    ----------
    truth : np.ndarray, bool, (H, W)
        The true mask.
    preds : dict of str to np.ndarray, bool, (H, W)
        Panel title -> predicted mask.
    title : str
        Title of the whole figure.

    Returns
    -------
    Figure

    Introduced in notebook 07.
    """
    truth = np.asarray(truth, dtype=bool)
    if not preds or any(np.shape(p) != truth.shape for p in preds.values()):
        raise ValueError(f"need at least one prediction of the truth's shape {truth.shape}.")
    fig, axes = plt.subplots(1, len(preds), figsize=(11 / 3 * len(preds), 4), squeeze=False)
    for ax, (name, pred) in zip(axes[0], preds.items()):
        ax.imshow(truth.astype(int) + np.asarray(pred, bool), cmap="viridis", vmin=0, vmax=2)
        ax.set(title=name, xlabel="x (pixels)", ylabel="y (pixels)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _worst_window(truths, preds, size: int, step: int, thresh: float) -> tuple[int, ...]:
    """(errors, image index, y, x) of the ``size`` x ``size`` window with the most unmatched
    objects (missed true nuclei plus unmatched predictions)."""
    worst = (-1, 0, 0, 0)
    for k, (t, p) in enumerate(zip(truths, preds)):
        missed, extra = error_masks(t, p, thresh)
        for y in range(0, t.shape[0] - size + 1, step):
            for x in range(0, t.shape[1] - size + 1, step):
                win = np.s_[y : y + size, x : x + size]
                n = len(np.unique(t[win][missed[win]])) + len(np.unique(p[win][extra[win]]))
                worst = max(worst, (n, k, y, x))
    return worst


def show_worst_windows(
    images: Sequence[Any],
    truths: Sequence[Any],
    predictions: Mapping[str, Sequence[Any]],
    *,
    names: Mapping[str, str] | None = None,
    size: int = 128,
    step: int = 32,
    thresh: float = 0.5,
) -> Figure:
    """Each row's worst window: truth above, prediction below (red: missed, yellow: unmatched).

    Parameters
    ----------
    images, truths : list of np.ndarray, (H, W)
        The test images (float) and their true labels (int).
    predictions : dict of str to list of np.ndarray, int, (H, W)
        Row -> its label images, in the order of ``images``.
    names : dict, optional
        Row -> panel title.
    size, step : int
        Side of the square window and the step between windows, in pixels.
    thresh : float
        The IoU a match needs.

    Returns
    -------
    Figure

    Introduced in notebook 07b.
    """
    lengths = {len(images), len(truths), *(len(p) for p in predictions.values())}
    if not images or not predictions or len(lengths) > 1:
        raise ValueError(f"need as many label images as images ({len(images)}) in every row.")
    names = {row: (names or {}).get(row, row) for row in predictions}
    n = len(predictions)
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 9), squeeze=False, layout="constrained")
    for col, (row, preds) in enumerate(predictions.items()):
        errors, k, y, x = _worst_window(truths, preds, size, step, thresh)
        win = np.s_[y : y + size, x : x + size]
        missed, extra = error_masks(truths[k], preds[k], thresh)
        title = f"truth (test image {k}, y={y}, x={x})"
        overlay(images[k][win], truths[k][win], ax=axes[0, col], title=title)
        title = f"{names[row]}\n{errors} errors in this window"
        overlay(images[k][win], preds[k][win], ax=axes[1, col], title=title)
        axes[1, col].contour(missed[win], levels=[0.5], colors="red", linewidths=1.2)
        axes[1, col].contour(extra[win], levels=[0.5], colors="yellow", linewidths=1.2)
    title = f"The worst {size} x {size} window of each method (red: missed, yellow: unmatched)"
    fig.suptitle(title)
    return fig
