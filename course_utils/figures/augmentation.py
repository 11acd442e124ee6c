"""The longer figures of the augmentation chapter: a crop and its labels, invented ids, rows of
overlays, warped grids, the albumentations seam, weight maps before and after a transform, and
the curves and predictions of the training experiment.

The notebook computes what it teaches (the transforms, the counts, the training runs) and hands
the arrays to these functions, which only draw them (``show_warps`` also applies the given
displacement fields, with ``course_utils.data.augment.remap``, to a grid and to the crop).

Introduced in notebook 04.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..data.augment import remap
from ..plot import label_cmap, overlay
from ..plot_methods import show_deformations, show_maps
from ._common import as_array, pixel_axes

__all__ = [
    "plot_seam",
    "plot_validation",
    "show_crop",
    "show_grey",
    "show_invented_ids",
    "show_overlays",
    "show_warps",
    "show_weight_maps",
]


def _same_length(titles: Sequence[str], n: int, what: str) -> None:
    if n == 0:
        raise ValueError(f"{what} is empty.")
    if len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} {what}.")


def show_crop(image: Any, labels: Any) -> Figure:
    """A normalised crop beside its instance labels (overlaid), with the number of nuclei.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` float image, normalised to about [0, 1].
    labels : np.ndarray
        ``(H, W)`` integer instance labels, 0 = background.

    Returns
    -------
    Figure
        Two panels: the image (grey, 0 to 1) and the labels over it.

    Introduced in notebook 04.
    """
    img, lab = as_array(image, "image", 2), as_array(labels, "labels", 2)
    if img.shape != lab.shape:
        raise ValueError(f"image {img.shape} and labels {lab.shape} differ in shape.")
    n = len(np.unique(lab[lab > 0]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained")
    axes[0].imshow(img, cmap="gray", vmin=0, vmax=1)
    pixel_axes(axes[0], "BBBC039 crop (normalised)")
    overlay(img, lab, ax=axes[1], title=f"its {n} instance labels")
    return fig


def show_invented_ids(
    cast: Any, nearest: Any, invented_ids: Sequence[int], *, angle: float
) -> Figure:
    """Labels rotated two ways: interpolated and cast to int (with its invented ids), and nearest.

    Parameters
    ----------
    cast : np.ndarray
        ``(H, W)`` integer labels rotated with bilinear interpolation, then cast to integers.
    nearest : np.ndarray
        ``(H, W)`` integer labels rotated with nearest-neighbour resampling.
    invented_ids : sequence of int
        The ids of ``cast`` that are not ids of the labels before the rotation.
    angle : float
        The rotation, in degrees (for the title).

    Returns
    -------
    Figure
        Three panels: ``cast``, the pixels of ``cast`` that hold an invented id, ``nearest``.

    Introduced in notebook 04.
    """
    cast, nearest = as_array(cast, "cast", 2), as_array(nearest, "nearest", 2)
    if cast.shape != nearest.shape:
        raise ValueError(f"cast {cast.shape} and nearest {nearest.shape} differ in shape.")
    ghost = np.isin(cast, list(invented_ids))
    style = {"cmap": label_cmap(), "vmin": 0, "vmax": 255, "interpolation": "nearest"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), layout="constrained")
    axes[0].imshow(cast, **style)
    pixel_axes(axes[0], f"bilinear, cast to int ({len(invented_ids)} invented ids)")
    axes[1].imshow(ghost, cmap="magma", interpolation="nearest")
    pixel_axes(axes[1], f"pixels with an invented id ({int(ghost.sum())})")
    axes[2].imshow(nearest, **style)
    pixel_axes(axes[2], "nearest neighbour: only ids of the crop")
    fig.suptitle(f"The crop's labels rotated by {angle:g} degrees")
    return fig


def show_overlays(
    pairs: Sequence[tuple[Any, Any]], titles: Sequence[str], *, suptitle: str | None = None
) -> Figure:
    """A row of images, each with its instance labels overlaid.

    Parameters
    ----------
    pairs : sequence of (np.ndarray, np.ndarray)
        ``(image, labels)``: an ``(H, W)`` float image and its ``(H, W)`` integer labels (the
        shapes may differ from pair to pair).
    titles : sequence of str
        One title per pair.
    suptitle : str, optional
        Title of the whole figure.

    Returns
    -------
    Figure

    Introduced in notebook 04.
    """
    _same_length(titles, len(pairs), "pairs")
    n = len(pairs)
    fig, axes = plt.subplots(1, n, figsize=(4 * n + 2, 5), squeeze=False, layout="constrained")
    for ax, (img, lab), title in zip(axes[0], pairs, titles):
        overlay(np.asarray(img), np.asarray(lab), ax=ax, title=title)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def show_warps(
    fields: Mapping[str, Any], image: Any, labels: Any, *, suptitle: str, spacing: int = 16
) -> Figure:
    """Displacement fields side by side: each one applied to a grid and to the crop.

    A grid of lines ``spacing`` pixels apart is warped with a constant border (so that it shows
    the deformation alone); the image and its labels with mirrored borders.

    Parameters
    ----------
    fields : mapping of str to np.ndarray
        A title and a ``(2, H, W)`` float displacement field ``(dy, dx)`` in pixels.
    image : np.ndarray
        ``(H, W)`` float image.
    labels : np.ndarray
        ``(H, W)`` integer instance labels.
    suptitle : str
        Title of the whole figure.
    spacing : int
        Pixels between the lines of the grid.

    Returns
    -------
    Figure
        One column per field: the warped grid above, the warped crop below.

    Introduced in notebook 04.
    """
    img, lab = as_array(image, "image", 2), as_array(labels, "labels", 2)
    if not fields:
        raise ValueError("fields is empty.")
    grid = np.zeros(img.shape, np.float32)
    grid[::spacing, :] = grid[:, ::spacing] = 1.0
    warped = []
    for name, field in fields.items():
        field = np.asarray(field)
        if field.shape != (2, *img.shape):
            raise ValueError(f"field {name!r} must be (2, *image.shape), got {field.shape}.")
        coords = np.indices(img.shape) + field
        warped_grid = remap(grid, lab, coords, mode="constant")[0]
        warped.append((warped_grid, *remap(img, lab, coords, mode="reflect")))
    grids, images, warped_labels = zip(*warped)
    return show_deformations(grids, images, warped_labels, list(fields), suptitle=suptitle)


def plot_seam(row_diff: Any) -> Figure:
    """The largest difference per row between two displacement fields, for dx and for dy.

    Parameters
    ----------
    row_diff : np.ndarray
        ``(2, H)`` float: for dy (row 0) and dx (row 1), the largest absolute difference (in
        pixels) between albumentations' field and ours along each image row.

    Returns
    -------
    Figure

    Introduced in notebook 04.
    """
    diff = np.asarray(row_diff, dtype=float)
    if diff.ndim != 2 or diff.shape[0] != 2:
        raise ValueError(f"row_diff must be (2, H), got shape {diff.shape}.")
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    ax.plot(diff[1], label="x displacement")
    ax.plot(diff[0], label="y displacement")
    ax.set_xlabel("row (y)")
    ax.set_ylabel("max |albumentations - ours| (pixels)")
    ax.set_title("Same seed, same noise: the fields agree except near one seam")
    ax.legend()
    return fig


def show_weight_maps(wrong: Any, right: Any, *, suptitle: str) -> Figure:
    """A weight map transformed as an image, the one recomputed, and their difference.

    Parameters
    ----------
    wrong : np.ndarray
        ``(H, W)`` float weight map computed first, then transformed with the labels.
    right : np.ndarray
        ``(H, W)`` float weight map computed from the transformed labels.
    suptitle : str
        Title of the whole figure.

    Returns
    -------
    Figure
        Three panels on one colour scale (0 to the largest weight), with colour bars.

    Introduced in notebook 04.
    """
    wrong, right = as_array(wrong, "wrong", 2), as_array(right, "right", 2)
    if wrong.shape != right.shape:
        raise ValueError(f"wrong {wrong.shape} and right {right.shape} differ in shape.")
    return show_maps(
        [wrong, right, np.abs(right - wrong)],
        [
            "wrong: weight map computed, then transformed",
            "right: labels transformed, then weight map",
            "|right - wrong|",
        ],
        cmap=["viridis", "viridis", "magma"],
        vmin=0,
        vmax=float(max(right.max(), wrong.max())),
        suptitle=suptitle,
    )


def show_grey(images: Sequence[Any], titles: Sequence[str]) -> Figure:
    """Normalised images or masks in a row, grey from 0 to 1, with pixel axes.

    Parameters
    ----------
    images : sequence of np.ndarray
        ``(H, W)`` float images in [0, 1] or boolean masks.
    titles : sequence of str
        One title per image.

    Returns
    -------
    Figure

    Introduced in notebook 04.
    """
    _same_length(titles, len(images), "images")
    arrays = [as_array(x, f"images[{i}]", 2) for i, x in enumerate(images)]
    size = (5.5 * len(arrays), 4.7)
    return show_maps(arrays, titles, cmap="gray", vmin=0, vmax=1, colorbar=False, figsize=size)


def plot_validation(histories: Mapping[str, Any], metric: str = "iou") -> Figure:
    """A validation metric per epoch, one line per training run.

    Parameters
    ----------
    histories : mapping of str to History
        Each run's name and its ``course_utils.train.History`` (or a mapping with an
        ``"epoch"`` list and a ``metric`` list of the same length).
    metric : str
        The key of the validation metric.

    Returns
    -------
    Figure

    Introduced in notebook 04.
    """
    if not histories:
        raise ValueError("histories is empty.")
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    for name, history in histories.items():
        epochs, values = list(history["epoch"]), list(history[metric])
        if len(epochs) != len(values):
            raise ValueError(f"{name!r}: {len(epochs)} epochs but {len(values)} values.")
        ax.plot(epochs, values, marker="o", label=name)
    name = "IoU" if metric == "iou" else metric
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{name} on validation patches")
    ax.set_title(f"Validation {name} during training")
    ax.legend()
    return fig
