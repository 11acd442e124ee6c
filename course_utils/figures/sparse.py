"""The figures of notebook 09 (sparse annotations): sparse labels drawn over their image, the
trusted Cellpose flows, and the curves and bars of the experiment.

A sparse label image (int32 ``(H, W)``, the convention of :mod:`course_utils.sparse`) holds
object ids (> 0), annotated background (0) and unknown pixels (-1). The figures draw annotated
nuclei orange, annotated background blue and leave the unknown grey.

Introduced in notebook 09.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import ndimage as ndi

from ..metrics import matching
from ..plot import flow_to_rgb, overlay

__all__ = [
    "show_background_curves",
    "show_backgrounds",
    "show_nuclei_counts",
    "show_predictions",
    "show_selection_bars",
    "show_selections",
    "show_sparse_row",
    "show_trusted_flows",
]

PIXELS = {"xlabel": "x (pixels)", "ylabel": "y (pixels)"}
BACKGROUNDS = {"band": ("o-", "with"), "none": ("s--", "without")}
LEGEND = (
    ((1.0, 0.6, 0.2), "annotated nucleus (id > 0)"),
    ((0.3, 0.5, 0.9), "annotated background (0)"),
    ((0.5, 0.5, 0.5), "unknown (-1)"),
)


def _image_and_sparse(image: Any, sparse: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    img, lab = np.asarray(image, dtype=np.float64), np.asarray(sparse)
    if img.ndim != 2 or lab.shape != img.shape or lab.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: need an (H, W) image and integer labels of its shape, got an image of "
            f"shape {img.shape} and {lab.dtype} labels of shape {lab.shape}."
        )
    return img, lab


def _draw_sparse(ax: Axes, image: np.ndarray, sparse: np.ndarray, title: str) -> None:
    """The image (clipped to [0, 1]) with annotated nuclei orange, background blue."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2) * 0.8
    rgb[sparse == 0] = 0.5 * rgb[sparse == 0] + [0.0, 0.2, 0.5]
    rgb[sparse > 0] = 0.4 * rgb[sparse > 0] + [0.6, 0.3, 0.0]
    ax.imshow(rgb)
    ax.set_title(title)
    ax.set(**PIXELS)


def show_nuclei_counts(counts: Any) -> Figure:
    """A bar per training image: how many nuclei it holds.

    Parameters
    ----------
    counts : array_like
        ``(N,)`` integer numbers of nuclei, one per image.

    Returns
    -------
    Figure

    Introduced in notebook 09.
    """
    values = np.asarray(counts)
    if values.ndim != 1 or not values.size:
        raise ValueError(f"counts must be a non-empty (N,) array, got shape {values.shape}.")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(values)), values, color="tab:orange")
    ax.set_title("Nuclei to outline in each training image")
    ax.set_xlabel("training image")
    ax.set_ylabel("number of nuclei")
    fig.tight_layout()
    return fig


def show_sparse_row(panels: Mapping[str, tuple[Any, Any]], *, legend_on: int = 0) -> Figure:
    """Sparse labels side by side, each over its image, with a legend of the three kinds.

    Parameters
    ----------
    panels : mapping of str to (np.ndarray, np.ndarray)
        Title -> ``(image, sparse)``: an ``(H, W)`` float image (values in [0, 1]) and its
        ``(H, W)`` int sparse labels (id > 0 annotated nucleus, 0 background, -1 unknown).
    legend_on : int
        The panel that carries the legend.

    Returns
    -------
    Figure

    Introduced in notebook 09.
    """
    n = len(panels)
    if not n:
        raise ValueError("panels is empty.")
    if not 0 <= legend_on < n:
        raise ValueError(f"legend_on must be in [0, {n}) for {n} panels, got {legend_on}.")
    pairs = [_image_and_sparse(*pair, f"panel {title!r}") for title, pair in panels.items()]
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 5), squeeze=False)
    for ax, (img, lab), title in zip(axes[0], pairs, panels):
        _draw_sparse(ax, img, lab, title)
    handles = [Patch(color=colour, label=label) for colour, label in LEGEND]
    axes[0, legend_on].legend(handles=handles, loc="lower left", fontsize=8 if n < 4 else 7)
    fig.tight_layout()
    return fig


def show_backgrounds(
    image: Any, labels: Any, examples: Mapping[str, Any], fraction: float
) -> Figure:
    """The same annotated nuclei with each way of marking background, titled with the number
    of nuclei kept and the share of pixels annotated.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image.
    labels : np.ndarray
        ``(H, W)`` int dense labels the sparse ones were made from.
    examples : mapping of str to np.ndarray
        ``background`` option (``"band"``, ``"none"``, ``"all"``) -> ``(H, W)`` int sparse labels.
    fraction : float
        The share of nuclei kept, for the titles.

    Returns
    -------
    Figure

    Introduced in notebook 09.
    """
    img, lab = _image_and_sparse(image, labels, "show_backgrounds")
    panels = {}
    for background, sparse in examples.items():
        s = np.asarray(sparse)
        title = (
            f"{100 * fraction:g} % of the nuclei ({np.unique(s[s > 0]).size} of {lab.max()}), "
            f'background="{background}"\n{np.mean(s >= 0):.1%} of the pixels annotated'
        )
        panels[title] = (img, s)
    return show_sparse_row(panels)


def show_selections(image: Any, labels: Any, selected: Mapping[str, Any]) -> Figure:
    """The nuclei each selection rule keeps, titled with their mean intensity.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image.
    labels : np.ndarray
        ``(H, W)`` int dense labels the sparse ones were made from.
    selected : mapping of str to np.ndarray
        Selection rule (``"random"``, ``"dim"``, ...) -> ``(H, W)`` int sparse labels.

    Returns
    -------
    Figure

    Introduced in notebook 09.
    """
    img, lab = _image_and_sparse(image, labels, "show_selections")
    panels = {}
    for rule, sparse in selected.items():
        s = np.asarray(sparse)
        mean = ndi.mean(img, lab, np.unique(s[s > 0])).mean() if (s > 0).any() else np.nan
        panels[f'select="{rule}": mean intensity {mean:.2f}'] = (img, s)
    return show_sparse_row(panels)


def show_trusted_flows(
    image: Any, sparse: Any, dense_flows: Any, sparse_flows: Any, trusted: Any, half: int = 24
) -> Figure:
    """A window of sparse labels, the dense flows, the sparse flows on trusted pixels, and
    where the two differ, with the edge of the trusted region.

    The window is centred on the first (raster order) pixel of an annotated nucleus that is
    not trusted and whose flow differs from the dense one by more than 0.1 (next to a nucleus
    nobody annotated), else on the first untrusted pixel of an annotated nucleus.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image.
    sparse : np.ndarray
        ``(H, W)`` int sparse labels (-1 unknown).
    dense_flows, sparse_flows : np.ndarray
        ``(2, H, W)`` float flows (y, x) of the dense and of the sparse labels.
    trusted : np.ndarray
        ``(H, W)`` bool, the pixels whose sparse flow is trusted.
    half : int
        Half the side of the window (pixels).

    Returns
    -------
    Figure
        Four panels.

    Introduced in notebook 09.
    """
    img, lab = _image_and_sparse(image, sparse, "show_trusted_flows")
    dense, flows = np.asarray(dense_flows), np.asarray(sparse_flows)
    mask = np.asarray(trusted, dtype=bool)
    if dense.shape != (2, *lab.shape) or flows.shape != dense.shape or mask.shape != lab.shape:
        raise ValueError(
            f"need flows (2, H, W) and trusted (H, W) for sparse {lab.shape}, got dense_flows "
            f"{dense.shape}, sparse_flows {flows.shape} and trusted {mask.shape}."
        )
    gap = np.abs(flows - dense).max(axis=0)
    contact = (lab > 0) & ~mask
    if not contact.any():
        raise ValueError("no annotated nucleus touches an unknown pixel: nothing to show.")
    touching = contact & (gap > 0.1)
    cy, cx = np.argwhere(touching if touching.any() else contact)[0]
    rows, cols = slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half)
    gap = gap[rows, cols]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    _draw_sparse(axes[0], img[rows, cols], lab[rows, cols], "sparse labels (window)")
    axes[1].imshow(flow_to_rgb(dense[:, rows, cols]))
    axes[1].set_title("flows of the dense labels")
    axes[2].imshow(flow_to_rgb(flows[:, rows, cols] * mask[rows, cols]))
    axes[2].set_title("sparse flows on trusted pixels")
    axes[3].imshow(gap, cmap="magma", vmin=0, vmax=1)
    edge = mask[rows, cols] | (lab[rows, cols] < 0)
    axes[3].contour(edge, levels=[0.5], colors="cyan", linewidths=0.8)
    axes[3].set_title("|sparse - dense| (cyan: edge of the trusted region)")
    for ax in axes:
        ax.set_xlabel("x (pixels, window)")
        ax.set_ylabel("y (pixels, window)")
    fig.tight_layout()
    return fig


def show_background_curves(
    curves: Mapping[str, Mapping[str, tuple]], dense_ap: Mapping[str, float], n_test: int
) -> Figure:
    """Test AP@0.5 (top) and the probability predicted on the test background (bottom) against
    the share of annotated nuclei, with and without background annotation, one column per
    method.

    Parameters
    ----------
    curves : mapping
        ``curves[method title][background] = (fractions, ap, prob)``, ``background`` in
        ``"band"`` (with background) and ``"none"`` (without); three ``(K,)`` float arrays:
        annotated share in (0, 1], AP@0.5 and mean probability on the test background.
    dense_ap : mapping of str to float
        AP@0.5 of each method's dense run (NaN: not run, no line).
    n_test : int
        Number of test images (for the titles).

    Returns
    -------
    Figure
        ``2 x len(curves)`` panels.

    Introduced in notebook 09.
    """
    if not curves:
        raise ValueError("curves is empty.")
    for method, by_background in curves.items():
        for background, arrays in by_background.items():
            shapes = [np.shape(a) for a in arrays]
            if background not in BACKGROUNDS or len(shapes) != 3 or len(set(shapes)) != 1:
                raise ValueError(
                    f"{method}: need 'band' or 'none' -> 3 arrays of one length, got "
                    f"{background!r} -> arrays of shapes {shapes}."
                )
    fig, axes = plt.subplots(2, len(curves), figsize=(7 * len(curves), 9), sharex=True)
    axes = np.asarray(axes).reshape(2, -1)
    for col, (method, by_background) in enumerate(curves.items()):
        for background, (fractions, *values) in by_background.items():
            style, word = BACKGROUNDS[background]
            for row, y in enumerate(values):
                x = 100 * np.asarray(fractions)
                label = f"{word} background annotation"
                axes[row, col].plot(x, y, style, label=label, ms=7)
        if np.isfinite(dense_ap.get(method, np.nan)):
            axes[0, col].axhline(dense_ap[method], color="k", ls=":", label="dense annotation")
        axes[0, col].set_title(f"{method}: {n_test} BBBC039 test images")
        axes[0, col].set_ylabel("test AP@0.5")
        axes[1, col].set_title("what it predicts where there is no nucleus")
        axes[1, col].set_ylabel("mean predicted probability\non the test background")
        for ax in axes[:, col]:
            ax.axvline(5, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_xticks([1, 5, 25, 100], ["1", "5", "25", "100"])
            ax.set_xlim(0.7, 140)
            ax.set_ylim(0, 1)
            ax.legend(loc="center right", fontsize=9)
        axes[1, col].set_xlabel("annotated nuclei (% of each image's nuclei, log scale)")
    fig.tight_layout()
    return fig


def show_predictions(
    image: Any, truth: Any, predictions: Mapping[str, Any], suptitle: str
) -> Figure:
    """Predicted labels over one test image, each titled with its count and AP@0.5.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image.
    truth : np.ndarray
        ``(H, W)`` int true labels.
    predictions : mapping of str to np.ndarray
        Panel title -> ``(H, W)`` int predicted labels.
    suptitle : str
        Title of the whole figure.

    Returns
    -------
    Figure

    Introduced in notebook 09.
    """
    shapes = {np.shape(image), np.shape(truth), *(np.shape(p) for p in predictions.values())}
    if not predictions or len(shapes) != 1:
        raise ValueError(f"need predictions, truth and image of one shape, got {shapes}.")
    fig, axes = plt.subplots(1, len(predictions), figsize=(6 * len(predictions), 5), squeeze=False)
    for ax, (title, pred) in zip(axes[0], predictions.items()):
        ap = matching(truth, pred, thresh=0.5).accuracy
        title = f"{title}: {np.max(pred)} masks ({np.max(truth)} nuclei), AP@0.5 {ap:.2f}"
        overlay(image, pred, ax=ax, title=title)
        ax.set_axis_on()
        ax.set(**PIXELS)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_selection_bars(
    ap: Mapping[float, Mapping[str, float]], dense_ap: float, method_title: str
) -> Figure:
    """Test AP@0.5 of the networks trained on nuclei chosen by each rule, a group of bars per
    rule and a bar per annotated share, against the dense run.

    Parameters
    ----------
    ap : mapping
        ``ap[fraction][rule]``: AP@0.5 (float) of the network trained on the share
        ``fraction`` (in (0, 1]) of the nuclei chosen by ``rule`` (``"random"``, ``"dim"``,
        ...); every fraction has the same rules.
    dense_ap : float
        AP@0.5 of the dense run (a dotted line).
    method_title : str
        The method's title, for the figure's title.

    Returns
    -------
    Figure

    Introduced in notebook 09.
    """
    if not ap:
        raise ValueError("ap is empty.")
    fractions = list(ap)
    rules = list(ap[fractions[0]])
    if any(list(ap[f]) != rules for f in fractions):
        raise ValueError(f"every fraction needs the same rules {rules}, got {dict(ap)}.")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(fractions)
    for k, fraction in enumerate(fractions):
        label = f"{fraction:.0%} annotated, with background"
        values = [ap[fraction][rule] for rule in rules]
        ax.bar(np.arange(len(rules)) + k * width, values, width, label=label)
    ax.axhline(dense_ap, color="k", ls=":", label="dense annotation")
    ax.set_xticks(np.arange(len(rules)) + width * (len(fractions) - 1) / 2, rules)
    ax.set_xlabel("which nuclei were annotated")
    ax.set_ylabel("test AP@0.5")
    ax.set_ylim(0, 1)
    ax.set_title(f"{method_title}: the same number of annotated nuclei, chosen differently")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
