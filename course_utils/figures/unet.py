"""The longer figures of the U-Net chapter: the weight map, the 3-class target, loss curves side
by side, and the predictions of several networks on one crowded crop.

The notebook computes what it teaches (the gaps, the weight map, the training runs) and hands
the arrays to these functions, which only draw them. ``busiest_window`` picks the crop worth
looking at: the one where most nuclei touch.

Introduced in notebook 03.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..plot import overlay
from ..targets import with_gaps
from ._common import as_array, pixel_axes

__all__ = [
    "busiest_window",
    "compare_predictions",
    "plot_curves",
    "show_three_classes",
    "show_weight_map",
]


def _same_shape(arrays: Mapping[str, Any]) -> list[np.ndarray]:
    """The arrays as 2D numpy arrays, or a ValueError naming the one whose shape differs."""
    checked = [as_array(x, name, 2) for name, x in arrays.items()]
    first_name, first = next(iter(arrays)), checked[0]
    for name, arr in zip(arrays, checked):
        if arr.shape != first.shape:
            raise ValueError(f"{name} {arr.shape} and {first_name} {first.shape} differ in shape.")
    return checked


def busiest_window(labels: Any, size: int, step: int = 40) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the most touching pixels.

    A pixel is touching when it belongs to a nucleus and touches another one (the pixels that
    :func:`course_utils.targets.with_gaps` sets to background). Windows are tried on a grid of
    ``step`` pixels; ties go to the last window of the grid (bottom-right).

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` integer instance labels, 0 = background, with ``H, W >= size``.
    size : int
        Side of the window, in pixels.
    step : int
        Spacing of the windows tried, in pixels.

    Returns
    -------
    (int, int)
        ``(y, x)`` of the window's top-left pixel.

    Introduced in notebook 03.
    """
    lab = as_array(labels, "labels", 2)
    if size < 1 or step < 1:
        raise ValueError(f"size and step must be >= 1, got {size} and {step}.")
    height, width = lab.shape
    if size > min(height, width):
        raise ValueError(f"a {size} x {size} window does not fit in labels {lab.shape}.")
    touch = (lab > 0) & (with_gaps(lab) == 0)
    windows = [
        (int(touch[y : y + size, x : x + size].sum()), y, x)
        for y in range(0, height - size + 1, step)
        for x in range(0, width - size + 1, step)
    ]
    _, y, x = max(windows)
    return y, x


def show_weight_map(
    image: Any, labels: Any, gapped: Any, class_weights: Any, weights: Any
) -> Figure:
    """The U-Net weight map beside what it is made of: labels, gap target, class balance.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float grey image.
    labels : np.ndarray
        ``(H, W)`` integer instance labels of ``image``.
    gapped : np.ndarray
        ``(H, W)`` the labels with the gaps between touching nuclei (``with_gaps``).
    class_weights : np.ndarray
        ``(H, W)`` float32 class-balance term :math:`w_c` alone (the weight map with ``w0=0``).
    weights : np.ndarray
        ``(H, W)`` float32 whole weight map :math:`w_c` + border term.

    Returns
    -------
    Figure
        Four panels: the overlay, the foreground target, :math:`w_c` and :math:`w`.

    Introduced in notebook 03.
    """
    arrays = {
        "image": image,
        "labels": labels,
        "gapped": gapped,
        "class_weights": class_weights,
        "weights": weights,
    }
    img, lab, gap, w_class, w = _same_shape(arrays)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6), layout="constrained")
    overlay(img, lab, ax=axes[0], title="BBBC039 crop and its labels")
    axes[1].imshow(gap > 0, cmap="gray")
    pixel_axes(axes[1], "foreground target with gaps")
    im = axes[2].imshow(w_class, cmap="viridis")
    pixel_axes(axes[2], "class balance $w_c$")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    im = axes[3].imshow(w, cmap="magma")
    pixel_axes(axes[3], "weight map $w = w_c$ + border term")
    fig.colorbar(im, ax=axes[3], fraction=0.046, label="loss weight")
    return fig


def plot_curves(
    curves: Mapping[str, Sequence[float]], *, title: str, ylabel: str, xlabel: str = "step"
) -> Figure:
    """One line per named curve (a loss per step, say), steps counted from 1.

    Parameters
    ----------
    curves : mapping of str to sequence of float
        The legend label of each curve and its values, one per step.
    title, ylabel, xlabel : str
        Title and axis labels.

    Returns
    -------
    Figure

    Introduced in notebook 03.
    """
    if not curves:
        raise ValueError("curves is empty.")
    values = {name: np.asarray(curve, dtype=float) for name, curve in curves.items()}
    for name, curve in values.items():
        if curve.ndim != 1 or curve.size == 0:
            raise ValueError(f"curve {name!r} must be a non-empty 1D sequence.")
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    for name, curve in values.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="upper right")
    return fig


def show_three_classes(image: Any, labels: Any, classes: Any) -> Figure:
    """Labels beside the 3-class target made from them.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float grey image.
    labels : np.ndarray
        ``(H, W)`` integer instance labels.
    classes : np.ndarray
        ``(H, W)`` integer target: 0 background, 1 interior, 2 boundary.

    Returns
    -------
    Figure
        Two panels, the second with a colour bar ticked 0, 1, 2.

    Introduced in notebook 03.
    """
    img, lab, cls = _same_shape({"image": image, "labels": labels, "classes": classes})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    overlay(img, lab, ax=axes[0], title="labels")
    im = axes[1].imshow(cls, cmap="viridis", interpolation="nearest", vmin=0, vmax=2)
    pixel_axes(axes[1], "3-class target: 0 background, 1 interior, 2 boundary")
    fig.colorbar(im, ax=axes[1], ticks=[0, 1, 2], fraction=0.046)
    return fig


def compare_predictions(
    image: Any,
    truth: Any,
    predictions: Mapping[str, Any],
    scores: Mapping[str, Mapping[str, float]] | None = None,
    *,
    n_touching: int = 0,
    window: tuple[int, int, int] | None = None,
    suptitle: str = "",
) -> Figure:
    """Ground truth and each network's instances on the same crop, one colour per object.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float grey image.
    truth : np.ndarray
        ``(H, W)`` integer true instance labels.
    predictions : mapping of str to np.ndarray
        Each network's name and its ``(H, W)`` integer instance labels of ``image``.
    scores : mapping of str to mapping, optional
        A network's scores, ``"f1@0.5"`` and ``"touching apart"`` (a count), written under its
        name in its panel's title.
    n_touching : int
        The number of touching nuclei, that ``"touching apart"`` is out of.
    window : (int, int, int), optional
        ``(y, x, size)``: show only that square crop of every array.
    suptitle : str
        Title of the whole figure.

    Returns
    -------
    Figure
        ``1 + len(predictions)`` panels, the ground truth first.

    Introduced in notebook 03.
    """
    if not predictions:
        raise ValueError("predictions is empty.")
    scores = dict(scores or {})
    if unknown := set(scores) - set(predictions):
        raise ValueError(f"scores of networks that have no prediction: {sorted(unknown)}.")
    arrays = _same_shape({"image": image, "truth": truth, **predictions})
    crop = (slice(None), slice(None))
    if window is not None:
        y, x, size = window
        crop = (slice(y, y + size), slice(x, x + size))
    n = len(arrays) - 1
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 5), layout="constrained")
    overlay(arrays[0][crop], arrays[1][crop], ax=axes[0], title="ground truth")
    for ax, (name, pred) in zip(axes[1:], zip(predictions, arrays[2:])):
        title = name
        if name in scores:
            found = scores[name]["touching apart"]
            title += f"\nF1 {scores[name]['f1@0.5']:.2f}, touching apart {found}/{n_touching}"
        overlay(arrays[0][crop], pred[crop], ax=ax, title=title)
    fig.suptitle(suptitle)
    return fig
