"""The figures of notebook 10 (whole cells), sections 1 to 3, and the measurements they show:
nuclei against fibroblasts (shapes), the representation ceilings, affinities and a leaky
edge, the synthetic two-channel cells and what the nuclear channel separates. Sections 4 to 6
are in ``cells_results``.

Images are float ``(H, W)`` (two-channel images ``(2, H, W)``: cytoplasm, nucleus), labels
integer ``(H, W)`` with 0 the background; crops are ``(slice, slice)`` of rows and columns.

Introduced in notebook 10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import ndimage as ndi
from skimage.measure import regionprops

from ..methods import get
from ..plot import overlay, show_grid

__all__ = [
    "ceiling_labels",
    "shape_measures",
    "shape_summary",
    "show_affinities",
    "show_ceilings",
    "show_channels",
    "show_leak",
    "show_shapes",
    "show_synthetic",
]

PIXELS = {"xlabel": "x (pixels)", "ylabel": "y (pixels)"}


def _same_shape(**arrays: Any) -> list[np.ndarray]:
    """The arrays, checked to be 2D and of one shape."""
    out = [np.asarray(a) for a in arrays.values()]
    shapes = {name: np.shape(a) for name, a in zip(arrays, out)}
    if len(set(shapes.values())) != 1 or out[0].ndim != 2:
        raise ValueError(f"need 2D arrays of one shape, got {shapes}.")
    return out


def _overlay(ax: Axes, image: np.ndarray, labels: np.ndarray, title: str) -> None:
    """Labels over a grey image, with pixel axes."""
    overlay(image, labels, ax=ax, title=title)
    ax.set_axis_on()
    ax.set(**PIXELS)


def _ap_curves(ax: Axes, thresholds: Any, curves: Mapping[str, Any], title: str) -> None:
    """AP against the IoU threshold, one line per curve; StarDist's dashed."""
    tau = np.asarray(thresholds, dtype=float)
    for label, ap in curves.items():
        if np.shape(ap) != tau.shape:
            raise ValueError(f"curve {label!r} has shape {np.shape(ap)}, thresholds {tau.shape}.")
        ax.plot(tau, ap, "s--" if "stardist" in label.lower() else "o-", label=label)
    ax.set(xlabel="IoU threshold τ", ylabel="AP = TP / (TP + FP + FN)", ylim=(0, 1.02))
    ax.set_title(title)
    ax.legend()


def shape_measures(labels: Sequence[Any]) -> dict[str, np.ndarray]:
    """What makes objects hard to segment, per object of a list of label images: size, how
    convex and how elongated it is, and whether it touches another object.

    Parameters
    ----------
    labels : sequence of np.ndarray
        ``(H, W)`` int label images (0 the background).

    Returns
    -------
    dict of str to np.ndarray
        ``(N,)`` arrays over the N objects of all images: ``"diameter"`` (float, the
        equivalent diameter in pixels), ``"solidity"`` (float, area / convex hull area),
        ``"elongation"`` (float, major / minor axis length) and ``"touching"`` (bool, shares
        an edge with another object in the 4-neighbourhood).

    Introduced in notebook 10.
    """
    rows = []
    for k, lab in enumerate(labels):
        lab = np.asarray(lab)
        if lab.ndim != 2 or lab.dtype.kind not in "iu":
            raise ValueError(f"labels[{k}] must be (H, W) integers, got {lab.dtype} {lab.shape}.")
        touching = set()
        for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1], lab[1:])):
            edge = (a != b) & (a > 0) & (b > 0)
            touching |= set(a[edge].tolist()) | set(b[edge].tolist())
        for r in regionprops(lab):
            axes = (r.axis_major_length, r.axis_minor_length)
            rows.append((r.equivalent_diameter_area, r.solidity, *axes, r.label in touching))
    values = np.array(rows, dtype=float).reshape(-1, 5)
    return {
        "diameter": values[:, 0],
        "solidity": values[:, 1],
        "elongation": values[:, 2] / np.maximum(values[:, 3], 1),
        "touching": values[:, 4] > 0,
    }


def shape_summary(measures: Mapping[str, Any]) -> dict[str, float]:
    """The row of the shape table: how many objects, their median size, solidity and
    elongation, and the percentages that are far from convex and that touch another object.

    Parameters
    ----------
    measures : mapping of str to np.ndarray
        As :func:`shape_measures` returns them.

    Returns
    -------
    dict of str to float

    Introduced in notebook 10.
    """
    missing = {"diameter", "solidity", "elongation", "touching"} - set(measures)
    if missing:
        raise ValueError(f"measures lack {sorted(missing)}: give what shape_measures returns.")
    solidity = np.asarray(measures["solidity"])
    return {
        "objects": len(solidity),
        "median diameter (px)": float(np.median(measures["diameter"])),
        "median solidity": float(np.median(solidity)),
        "solidity < 0.8 (%)": 100 * float(np.mean(solidity < 0.8)),
        "median elongation": float(np.median(measures["elongation"])),
        "touching another (%)": 100 * float(np.mean(measures["touching"])),
    }


def show_shapes(
    crops: Mapping[str, tuple[Any, Any, tuple[slice, slice]]], solidity: Mapping[str, Any]
) -> Figure:
    """A crop of each kind of object, and histograms of their solidity.

    Parameters
    ----------
    crops : mapping of str to (np.ndarray, np.ndarray, (slice, slice))
        Title -> ``(image, labels, crop)``: an ``(H, W)`` float image, its int labels and the
        rows and columns to show.
    solidity : mapping of str to np.ndarray
        Name -> ``(N,)`` float solidities (area / convex hull area, in (0, 1]) of N objects.

    Returns
    -------
    Figure
        One panel per crop, then the histograms.

    Introduced in notebook 10.
    """
    if not crops or not solidity:
        raise ValueError("need at least one crop and one set of solidities.")
    pairs = [_same_shape(image=x, labels=y) for x, y, _ in crops.values()]
    fig, axes = plt.subplots(1, len(crops) + 1, figsize=(5.7 * (len(crops) + 1), 5.2))
    for ax, (title, (*_, crop)), (image, labels) in zip(axes, crops.items(), pairs):
        _overlay(ax, image[crop], labels[crop], title)
    bins = np.linspace(0.3, 1, 36)
    for name, values in solidity.items():
        axes[-1].hist(np.asarray(values), bins=bins, density=True, alpha=0.6, label=name)
    axes[-1].set(xlabel="solidity (area / convex hull area)", ylabel="density")
    axes[-1].set_title("How convex are the objects?")
    axes[-1].legend()
    fig.tight_layout()
    return fig


def _perfect_outputs(method: str, labels: np.ndarray) -> np.ndarray:
    """The raw outputs of a perfect network of ``method`` (as notebook 07b wrote them): its
    record's training targets, certain probabilities as logits of +-10."""
    targets = get(method).target_fn()(labels)
    if method == "cellpose":
        flows, cell = targets
        return np.concatenate([flows, np.where(cell > 0, 10.0, -10.0)[None]])
    if method == "stardist":
        prob, dist = targets  # the probability (1, H/grid, W/grid) becomes a logit
        return np.concatenate([np.log(prob + 1e-6) - np.log1p(1e-6 - prob), dist])
    foreground, affinities, _ = targets
    return np.where(np.concatenate([foreground, affinities]) > 0, 10.0, -10.0)


def ceiling_labels(method: str, labels: Sequence[Any]) -> list[np.ndarray]:
    """The representation ceiling: labels from perfect outputs, through the post-processing
    of the method's record (its defaults), for the ceiling figures and tables.

    Parameters
    ----------
    method : str
        ``"cellpose"``, ``"stardist"`` or ``"affinities"``.
    labels : sequence of np.ndarray
        ``(H, W)`` int true labels.

    Returns
    -------
    list of np.ndarray
        ``(H, W)`` int32 labels, one per label image.

    Introduced in notebook 10.
    """
    if method not in ("cellpose", "stardist", "affinities"):
        raise ValueError(f"method must be cellpose, stardist or affinities, got {method!r}.")
    record = get(method)
    grid = record.config().get("grid", 1)
    return [
        record.outputs_to_labels(_perfect_outputs(method, np.asarray(y)), np.shape(y), grid=grid)
        for y in labels
    ]


def show_affinities(labels: Any, affinities: Any, offsets: Sequence[tuple[int, int]]) -> Figure:
    """The foreground and the affinities of the first two offsets and of the last one.

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` int labels.
    affinities : np.ndarray
        ``(K, H, W)`` affinities (1: same cell) of the K ``offsets`` (dy, dx).
    offsets : sequence of (int, int)
        The offsets of the channels, for the titles.

    Returns
    -------
    Figure

    Introduced in notebook 10.
    """
    aff = np.asarray(affinities)
    if aff.ndim != 3 or aff.shape[1:] != np.shape(labels) or len(aff) != len(offsets):
        raise ValueError(f"need (K, H, W) affinities of K offsets, got {aff.shape}.")
    shown = {"foreground": np.asarray(labels) > 0}
    for k in sorted({0, 1, len(aff) - 1}):
        dy, dx = offsets[k]
        shown[f"affinity {max(abs(dy), abs(dx))} px {'down' if dy else 'right'}"] = aff[k]
    suptitle = (
        "True affinities of the crop (white = same cell): the borders between cells appear as "
        "black lines, thicker for longer offsets"
    )
    return show_grid(list(shown.values()), list(shown), cmap="gray", suptitle=suptitle)


def show_synthetic(image: Any, cells: Any) -> Figure:
    """The two channels of a synthetic image and its cells, counted in clusters.

    Parameters
    ----------
    image : np.ndarray
        ``(2, H, W)`` float image: cytoplasm, nucleus.
    cells : np.ndarray
        ``(H, W)`` int cell labels.

    Returns
    -------
    Figure

    Introduced in notebook 10.
    """
    image, cells = np.asarray(image), np.asarray(cells)
    if image.ndim != 3 or len(image) != 2 or image.shape[1:] != cells.shape:
        raise ValueError(
            f"need a (2, H, W) image and (H, W) cells, got {image.shape}, {cells.shape}."
        )
    clusters = ndi.label(cells > 0)[1]
    return show_grid(
        [image[0], image[1], cells],
        ["channel 0: cytoplasm", "channel 1: nucleus", f"{cells.max()} cells"],
        suptitle=f"A synthetic test image: {cells.max()} cells in {clusters} clusters",
    )


def show_ceilings(
    thresholds: Any,
    curves: Mapping[str, Any],
    image: Any,
    polygons: Any,
    truth: Any,
    crop: tuple[slice, slice],
) -> Figure:
    """AP of perfect outputs against the IoU threshold, and StarDist's polygons on a crop
    with the outline of the true cells in white.

    Parameters
    ----------
    thresholds : array_like
        ``(T,)`` IoU thresholds.
    curves : mapping of str to np.ndarray
        Label -> ``(T,)`` AP at each threshold; labels naming StarDist are drawn dashed.
    image : np.ndarray
        ``(H, W)`` float image.
    polygons, truth : np.ndarray
        ``(H, W)`` int labels of StarDist's perfect polygons and of the true cells.
    crop : (slice, slice)
        The rows and columns to show.

    Returns
    -------
    Figure
        Two panels.

    Introduced in notebook 10.
    """
    image, polygons, truth = _same_shape(image=image, polygons=polygons, truth=truth)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    _ap_curves(axes[0], thresholds, curves, "Perfect outputs through each post-processing")
    title = "StarDist ceiling on the crop: the true 32-ray polygons"
    _overlay(axes[1], image[crop], polygons[crop], title)
    axes[1].contour(truth[crop] > 0, levels=[0.5], colors="white", linewidths=0.8)
    fig.tight_layout()
    return fig


def show_leak(affinity: Any, foreground: Any, components: Any, watershed: Any) -> Figure:
    """An affinity map with a leak, and the cells that each grouping makes of it.

    Parameters
    ----------
    affinity : np.ndarray
        ``(H, W)`` float affinities (to the right) in [0, 1].
    foreground : np.ndarray
        ``(H, W)`` float foreground, shown under the labels.
    components, watershed : np.ndarray
        ``(H, W)`` int labels from connected components and from seeds + watershed.

    Returns
    -------
    Figure
        Three panels.

    Introduced in notebook 10.
    """
    arrays = _same_shape(affinity=affinity, fg=foreground, cc=components, ws=watershed)
    affinity, foreground, components, watershed = arrays
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
    axes[0].imshow(affinity, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("affinity to the right (the leak in grey)")
    axes[0].set(**PIXELS)
    _overlay(axes[1], foreground, components, f"components: {components.max()} cell")
    _overlay(axes[2], foreground, watershed, f"seeds + watershed: {watershed.max()}")
    fig.tight_layout()
    return fig


def show_channels(image: Any, labels: Mapping[str, Any], crop: tuple[slice, slice]) -> Figure:
    """The nuclear channel of a crop, then label images over its cytoplasm channel.

    Parameters
    ----------
    image : np.ndarray
        ``(2, H, W)`` float image: cytoplasm, nucleus.
    labels : mapping of str to np.ndarray
        Title -> ``(H, W)`` int labels (the true cells, each network's cells).
    crop : (slice, slice)
        The rows and columns to show.

    Returns
    -------
    Figure
        ``1 + len(labels)`` panels.

    Introduced in notebook 10.
    """
    image = np.asarray(image)
    if image.ndim != 3 or len(image) != 2:
        raise ValueError(f"image must be (2, H, W) (cytoplasm, nucleus), got {image.shape}.")
    arrays = [_same_shape(cytoplasm=image[0], labels=y)[1] for y in labels.values()]
    fig, axes = plt.subplots(1, len(labels) + 1, figsize=(5 * (len(labels) + 1), 5))
    axes[0].imshow(image[1][crop], cmap="gray")
    axes[0].set_title("nuclear channel")
    axes[0].set(**PIXELS)
    for ax, title, y in zip(axes[1:], labels, arrays):
        _overlay(ax, image[0][crop], y[crop], title)
    fig.suptitle("Where the nuclear channel separates touching cells (cytoplasm image underneath)")
    fig.tight_layout()
    return fig
