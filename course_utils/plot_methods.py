"""Longer figures of the method notebooks (04 augmentation, 05 Cellpose), kept out of the cells.

The cells that teach stay in the notebooks; the figures that only *show* a result (rows of maps
with colour bars, warped grids, flow fields, trajectories, failure crops) live here, so that a
student scrolls past a one-line call instead of thirty lines of matplotlib. Every helper returns
the figure it drew (or the RGB array it made), and checks its input before drawing.

Introduced in notebook 05.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from .plot import flow_to_rgb, overlay

PIXELS = {"xlabel": "x (pixels)", "ylabel": "y (pixels)"}


def _same_length(name: str, items: Sequence[Any], other: str, expected: int) -> None:
    if len(items) != expected:
        raise ValueError(f"got {len(items)} {name} for {expected} {other}.")


def show_maps(
    maps: Sequence[Any],
    titles: Sequence[str],
    *,
    cmap: str | Colormap | Sequence[str | Colormap] = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    suptitle: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A row of maps with titles, pixel axes and colour bars (scalar maps) or none (RGB).

    Parameters
    ----------
    maps : sequence of np.ndarray
        ``(H, W)`` real maps, drawn with ``cmap``, or ``(H, W, 3)`` RGB images in [0, 1].
    titles : sequence of str
        One title per map.
    cmap : str or Colormap, or a list or tuple of them
        One colour map for all scalar maps, or one per map.
    vmin, vmax : float, optional
        Shared colour limits of the scalar maps; default: each map's own range.
    colorbar : bool
        A colour bar beside every scalar map.
    suptitle : str, optional
        Title of the whole figure.
    figsize : (float, float), optional
        Default: 4.5 by 4 inches per map.

    Returns
    -------
    Figure
    """
    arrays = [np.asarray(m) for m in maps]
    if not arrays:
        raise ValueError("maps is empty.")
    _same_length("titles", titles, "maps", len(arrays))
    cmaps = list(cmap) if isinstance(cmap, list | tuple) else [cmap] * len(arrays)
    _same_length("colour maps", cmaps, "maps", len(arrays))
    for i, arr in enumerate(arrays):
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
            raise ValueError(f"maps[{i}] must be (H, W) or (H, W, 3), got shape {arr.shape}.")
    n = len(arrays)
    fig, axes = plt.subplots(
        1, n, figsize=figsize or (4.5 * n, 4.0), squeeze=False, layout="constrained"
    )
    for ax, arr, title, name in zip(axes[0], arrays, titles, cmaps):
        if arr.ndim == 3:  # RGB: no colour map, no colour bar
            ax.imshow(arr, interpolation="nearest")
        else:
            im = ax.imshow(arr, cmap=name, vmin=vmin, vmax=vmax, interpolation="nearest")
            if colorbar:
                fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set(title=title, **PIXELS)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def show_deformations(
    grids: Sequence[Any],
    images: Sequence[Any],
    labels: Sequence[Any],
    titles: Sequence[str],
    *,
    suptitle: str | None = None,
) -> Figure:
    """Deformations side by side: a warped grid above, the warped image with its labels below.

    Parameters
    ----------
    grids, images : sequence of np.ndarray, (H, W)
        A grid image and an image, both warped by the same deformation, one per column.
    labels : sequence of np.ndarray, integer, (H, W)
        The labels warped with them.
    titles : sequence of str
        One title per column (above the grid).
    suptitle : str, optional

    Returns
    -------
    Figure
    """
    n = len(grids)
    if n == 0:
        raise ValueError("grids is empty.")
    for name, items in (("images", images), ("labels", labels), ("titles", titles)):
        _same_length(name, items, "grids", n)
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 8.4), squeeze=False, layout="constrained")
    for col in range(n):
        axes[0, col].imshow(grids[col], cmap="gray", vmin=0, vmax=1)
        axes[0, col].set(title=titles[col], **PIXELS)
        overlay(images[col], labels[col], ax=axes[1, col], title="the crop, deformed")
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def show_flow_field(flows: Any, image: Any, mask: Any, *, step: int = 4) -> Figure:
    """A flow field four ways: dy and dx, colours (with the colour wheel), and arrows.

    Parameters
    ----------
    flows : np.ndarray, float, (2, H, W)
        (dy, dx), unit vectors in the cells (as ``course_utils.targets.masks_to_flows`` gives).
    image : np.ndarray, float, (H, W)
        Drawn under the arrows, grey in [0, 1].
    mask : np.ndarray, bool, (H, W)
        Where to draw arrows (the cells).
    step : int
        One arrow every ``step`` pixels in each direction.

    Returns
    -------
    Figure

    Introduced in notebook 05.
    """
    flows, image, mask = np.asarray(flows), np.asarray(image), np.asarray(mask, bool)
    if flows.ndim != 3 or flows.shape[0] != 2 or flows.shape[1:] != image.shape:
        raise ValueError(
            f"flows must be (2, H, W) with image (H, W), got {flows.shape}, {image.shape}."
        )
    if mask.shape != image.shape or step < 1:
        raise ValueError(f"mask must be (H, W) like image and step >= 1, got {mask.shape}, {step}")
    yy, xx = np.mgrid[-20:21, -20:21]
    wheel = np.where(np.hypot(yy, xx) <= 20, 1.0, 0.0) * np.stack([yy, xx]) / 20.0
    fig, axes = plt.subplots(
        1, 5, figsize=(20, 4.3), width_ratios=[1, 1, 1, 0.4, 1], layout="constrained"
    )
    for ax, component, name in zip(axes[:2], flows, ["dy (vertical)", "dx (horizontal)"]):
        fig.colorbar(ax.imshow(component, cmap="RdBu_r", vmin=-1, vmax=1), ax=ax, shrink=0.8)
        ax.set(title=f"flow {name}", **PIXELS)
    axes[2].imshow(flow_to_rgb(flows))
    axes[2].set(title="flows as colours", **PIXELS)
    axes[3].imshow(flow_to_rgb(wheel))
    axes[3].set(title="colour = direction", xlabel="dx", ylabel="dy")
    axes[3].set_xticks([0, 20, 40], ["-1", "0", "1"])
    axes[3].set_yticks([0, 20, 40], ["-1", "0", "1"])
    gy, gx = np.mgrid[0 : image.shape[0] : step, 0 : image.shape[1] : step]
    keep = mask[gy, gx]
    axes[4].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[4].quiver(
        gx[keep],
        gy[keep],
        flows[1][gy, gx][keep],
        flows[0][gy, gx][keep],
        color="tab:orange",
        angles="xy",
        scale_units="xy",
        scale=0.3,
        width=0.006,
    )
    axes[4].set(title=f"flows as arrows (every {step}th pixel)", **PIXELS)
    return fig


def show_trajectories(
    image: Any,
    path: Any,
    colours: Sequence[Any],
    *,
    every: int = 5,
    offset: tuple[int, int] = (0, 0),
) -> Figure:
    """Flow-following paths on an image (left) and where they end (right).

    Parameters
    ----------
    image : np.ndarray, float, (h, w)
        The window the paths are drawn on, grey in [0, 1].
    path : np.ndarray, float, (T, N, 2)
        Positions (y, x) of N pixels over T steps, in the coordinates of the whole image.
    colours : sequence of colours, length N
        One matplotlib colour per path (e.g. the colour of the mask it ends in).
    every : int
        Draw every ``every``-th path (all end points are drawn).
    offset : (int, int)
        (row, column) of the window's top-left pixel in the whole image.

    Returns
    -------
    Figure

    Introduced in notebook 05.
    """
    image, path = np.asarray(image), np.asarray(path)
    if path.ndim != 3 or path.shape[2] != 2:
        raise ValueError(f"path must be (T, N, 2), got shape {path.shape}.")
    _same_length("colours", colours, "paths", path.shape[1])
    oy, ox = offset
    h, w = image.shape
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.3), layout="constrained")
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    for i in range(0, path.shape[1], max(1, int(every))):
        axes[0].plot(path[:, i, 1] - ox, path[:, i, 0] - oy, lw=0.6, color=colours[i])
    axes[1].scatter(path[-1, :, 1] - ox, path[-1, :, 0] - oy, s=12, c="tab:orange")
    axes[0].set_title("trajectories of flow following")
    axes[1].set_title(f"end points after {path.shape[0] - 1} steps")
    for ax in axes:
        ax.set(
            xlim=(-0.5, w - 0.5),
            ylim=(h - 0.5, -0.5),
            xlabel="x (pixels, window)",
            ylabel="y (pixels, window)",
        )
    return fig


def failure_crop(
    image: Any, truth: Any, pred: Any, holder: Any, k: int, *, size: int = 80
) -> np.ndarray:
    """RGB crop around object ``k`` of ``holder``: true outlines green, predicted orange.

    Parameters
    ----------
    image : np.ndarray, float, (H, W)
        Grey image in [0, 1] (clipped).
    truth, pred : np.ndarray, integer, (H, W)
        True and predicted instance labels.
    holder : np.ndarray, integer, (H, W)
        The label image that holds the object in question (``truth`` for a missed nucleus,
        ``pred`` for a wrong mask); the object is tinted blue.
    k : int
        Its id (present in ``holder``).
    size : int
        Side of the square crop, centred on the object where the image allows.

    Returns
    -------
    np.ndarray, float, (size, size, 3)
    """
    image, holder = np.asarray(image), np.asarray(holder)
    if not (image.shape == np.shape(truth) == np.shape(pred) == holder.shape):
        raise ValueError("image, truth, pred and holder must have the same (H, W) shape.")
    obj = holder == k
    if not obj.any():
        raise ValueError(f"object {k} is not in holder.")
    h, w = holder.shape
    cy, cx = (int(np.mean(c)) for c in np.nonzero(obj))
    y0 = int(np.clip(cy - size // 2, 0, max(0, h - size)))
    x0 = int(np.clip(cx - size // 2, 0, max(0, w - size)))
    box = np.s_[y0 : y0 + size, x0 : x0 + size]
    rgb = np.repeat(np.clip(image[box], 0, 1)[..., None], 3, axis=2)
    rgb[obj[box]] = 0.6 * rgb[obj[box]] + [0.0, 0.0, 0.4]
    rgb[find_boundaries(np.asarray(truth)[box], mode="inner")] = [0.2, 1.0, 0.2]
    rgb[find_boundaries(np.asarray(pred)[box], mode="inner")] = [1.0, 0.6, 0.0]
    return rgb
