"""The figures of the StarDist chapters' results: number of rays and object probability
(notebook 06); prediction, thresholds, scores and 3-D (notebook 06b).

The notebook runs the network, the NMS and the scores; these functions only draw what it
computed. Images are ``(H, W)`` float arrays, labels ``(H, W)`` integer arrays (0 =
background). Every function returns the ``Figure`` it drew.

Introduced in notebook 06.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from ..metrics import matching
from ..plot import overlay
from ..postprocess import dist_to_coord

PIXELS = {"xlabel": "x (pixels)", "ylabel": "y (pixels)"}


def _check_pair(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    image, labels = np.asarray(image), np.asarray(labels)
    if image.ndim != 2 or labels.shape != image.shape:
        raise ValueError(f"need a 2-D image and labels alike, got {image.shape}, {labels.shape}.")
    return image, labels


def show_ray_sweep(ious: Mapping[int, Sequence[float]], n_rays: int) -> Figure:
    """Mean and 10th percentile of the polygons' IoU with the true masks, per number of rays.

    Parameters
    ----------
    ious : dict of int -> sequence of float
        Number of rays -> the IoU of every nucleus's polygon with its mask.
    n_rays : int
        The number of rays used later, marked by a vertical line.

    Returns
    -------
    Figure
        One axes with two lines (mean, 10th percentile), x on a log2 scale.

    Introduced in notebook 06.
    """
    counts = sorted(ious)
    if not counts or any(len(ious[n]) == 0 for n in counts):
        raise ValueError("ious needs at least one number of rays, each with some IoU values.")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(counts, [np.mean(ious[n]) for n in counts], "o-", label="mean IoU")
    ax.plot(counts, [np.percentile(ious[n], 10) for n in counts], "s--", label="10th percentile")
    ax.axvline(n_rays, color="gray", ls=":", label=f"{n_rays} rays (used below)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set(xlabel="number of rays", ylabel="IoU of polygon and true mask")
    ax.set_title(f"Star-convex polygons vs BBBC039 nuclei ({len(ious[counts[-1]])} nuclei)")
    ax.legend()
    return fig


def show_object_probability(
    image: Any, labels: Any, prob: Any, pixel_prob: Any, pixel_iou: Any, n_bins: int = 5
) -> Figure:
    """The labels, the object probability, and the mean IoU of pixels' polygons per
    probability bin (the bars carry their values).

    Parameters
    ----------
    image : np.ndarray, float (H, W)
    labels : np.ndarray, int (H, W)
    prob : np.ndarray, float (H, W)
        The object probability (``edt_prob``) of every pixel.
    pixel_prob, pixel_iou : np.ndarray, float (M,)
        For M sampled pixels: their probability, and the IoU of their polygon with the nucleus.
    n_bins : int
        Equal bins of probability in [0, 1].

    Returns
    -------
    Figure
        Two image axes (one colour bar) and one bar chart of ``n_bins`` bars.

    Introduced in notebook 06.
    """
    image, labels = _check_pair(image, labels)
    pixel_prob, pixel_iou = np.asarray(pixel_prob), np.asarray(pixel_iou)
    if np.shape(prob) != image.shape or pixel_prob.shape != pixel_iou.shape:
        raise ValueError("prob must be the image's shape, pixel_prob and pixel_iou alike.")
    bins = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(pixel_prob, bins) - 1, 0, n_bins - 1)
    per_bin = [pixel_iou[which == b].mean() if np.any(which == b) else 0.0 for b in range(n_bins)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    overlay(image, labels, ax=axes[0], title="labels")
    shown = axes[1].imshow(prob, cmap="viridis")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="object probability")
    axes[1].set(title="edt_prob: normalised distance to the background", **PIXELS)
    bars = axes[2].bar((bins[:-1] + bins[1:]) / 2, per_bin, width=0.75 / n_bins)
    axes[2].bar_label(bars, fmt="%.2f")
    axes[2].set_ylim(min(per_bin) - 0.05, 1.06)
    axes[2].set(xlabel="object probability of the pixel", ylabel="mean IoU of the pixel's polygon")
    axes[2].set_title(f"Central pixels draw better polygons ({len(pixel_prob)} pixels)")
    fig.tight_layout()
    return fig


def show_prediction_steps(
    image: Any,
    prob: Any,
    points: Any,
    dists: Any,
    labels: Any,
    *,
    grid: int,
    prob_thresh: float,
    size: int = 256,
) -> Figure:
    """The three steps of prediction in the top-left ``size`` x ``size`` pixels of an image:
    probability, candidates, polygons kept by NMS, rendered labels.

    Parameters
    ----------
    image : np.ndarray, float (H, W)
    prob : np.ndarray, float (H / grid, W / grid)
        The predicted object probability on the output grid.
    points : np.ndarray, int (K, 2)
        (row, col) in image pixels of the K polygons kept by NMS.
    dists : np.ndarray, float (K, n_rays)
        Their distances.
    labels : np.ndarray, int (H, W)
        The rendered labels.
    grid : int
        The output grid; a candidate at output pixel (i, j) sits at (grid i, grid j).
    prob_thresh : float
        The pixels with ``prob > prob_thresh`` are the candidates.
    size : int
        Side of the window shown.

    Returns
    -------
    Figure
        Four image axes.

    Introduced in notebook 06b.
    """
    image, labels = _check_pair(image, labels)
    points, dists = np.asarray(points).reshape(-1, 2), np.asarray(dists)
    if len(dists) != len(points) or np.ndim(prob) != 2:
        raise ValueError(f"need one row of dists per point and a 2-D prob, got {dists.shape}.")
    window = np.asarray(prob)[: -(-size // grid), : -(-size // grid)]
    candidates = np.argwhere(window > prob_thresh) * grid
    kept = (points[:, 0] < size) & (points[:, 1] < size)
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.2))
    axes[0].imshow(
        window, cmap="viridis", vmin=0, vmax=1, extent=(-0.5, size - 0.5, size - 0.5, -0.5)
    )
    axes[0].set_title("predicted probability")
    axes[1].imshow(image[:size, :size], cmap="gray")
    axes[1].plot(candidates[:, 1], candidates[:, 0], ".", color="tab:orange", ms=1)
    axes[1].set_title(f"{len(candidates)} candidates (prob > {prob_thresh})")
    axes[2].imshow(image[:size, :size], cmap="gray")
    for poly in dist_to_coord(dists[kept], points[kept]) if kept.any() else []:
        axes[2].add_patch(Polygon(poly[::-1].T, fill=False, color="cyan", lw=1))
    axes[2].set_title(f"{kept.sum()} polygons kept by NMS")
    for ax in axes[:3]:
        ax.set(xlim=(-0.5, size - 0.5), ylim=(size - 0.5, -0.5), **PIXELS)
    overlay(image[:size, :size], labels[:size, :size], ax=axes[3], title="rendered labels")
    fig.tight_layout()
    return fig


def show_threshold_choice(
    image: Any, truth: Any, pred: Any, prob_thresh: float, nms_thresh: float, size: int = 256
) -> Figure:
    """The true labels and the prediction at these thresholds, in the top-left ``size`` x
    ``size`` pixels; the title counts TP, FP and FN (IoU 0.5) over the whole image.

    Parameters
    ----------
    image : np.ndarray, float (H, W)
    truth, pred : np.ndarray, int (H, W)
        True and predicted labels.
    prob_thresh, nms_thresh : float
        The thresholds that gave ``pred``, for the title.
    size : int
        Side of the window shown.

    Returns
    -------
    Figure
        Two image axes.

    Introduced in notebook 06b.
    """
    image, truth = _check_pair(image, truth)
    _, pred = _check_pair(image, pred)
    score = matching(truth, pred, 0.5)
    view = (slice(0, size), slice(0, size))
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    overlay(image[view], truth[view], ax=axes[0], title="ground truth")
    title = f"prob > {prob_thresh:.2f}, NMS {nms_thresh:.2f}: whole image "
    title += f"{score.tp} TP, {score.fp} FP, {score.fn} FN"
    overlay(image[view], pred[view], ax=axes[1], title=title)
    fig.tight_layout()
    return fig


def show_threshold_search(search: Any, prob_grid: Sequence, nms_grid: Sequence) -> Figure:
    """The validation score of every pair of thresholds, as a table of coloured cells.

    Parameters
    ----------
    search : np.ndarray, float (len(prob_grid), len(nms_grid))
        The score (AP at IoU 0.5) of each pair.
    prob_grid, nms_grid : sequence of float
        The thresholds tried (rows, columns).

    Returns
    -------
    Figure
        One image axes with a colour bar, one number per cell.

    Introduced in notebook 06b.
    """
    search = np.asarray(search, dtype=float)
    if search.shape != (len(prob_grid), len(nms_grid)):
        raise ValueError(f"search must be ({len(prob_grid)}, {len(nms_grid)}), got {search.shape}.")
    fig, ax = plt.subplots(figsize=(5, 4.5))
    shown = ax.imshow(search, cmap="viridis", origin="lower")
    for (i, j), v in np.ndenumerate(search):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < search.max() else "k")
    ax.set_xticks(range(len(nms_grid)), [str(v) for v in nms_grid])
    ax.set_yticks(range(len(prob_grid)), [str(v) for v in prob_grid])
    ax.set(xlabel="nms_thresh", ylabel="prob_thresh", title="validation AP at IoU 0.5")
    fig.colorbar(shown, ax=ax, fraction=0.046)
    return fig


def show_strict_iou(
    ap: Mapping[str, Sequence[float]],
    thresholds: Sequence[float],
    image: Any,
    truth: Any,
    preds: Mapping[str, Any],
    n_images: int,
) -> Figure:
    """AP against the IoU threshold per curve, and a few predictions on one image.

    Parameters
    ----------
    ap : dict of str -> sequence of float
        Curve name -> its AP at each of ``thresholds``.
    thresholds : sequence of float
        The IoU thresholds.
    image : np.ndarray, float (H, W)
    truth : np.ndarray, int (H, W)
        The true labels of ``image``, against which each panel's F1 at IoU 0.5 is computed.
    preds : dict of str -> np.ndarray, int (H, W)
        Name -> predicted labels of ``image``, one panel each.
    n_images : int
        The number of images the curves were scored on, for the title.

    Returns
    -------
    Figure
        One line axes, and one image axes per prediction.

    Introduced in notebook 06b.
    """
    image, truth = _check_pair(image, truth)
    if any(len(v) != len(thresholds) for v in ap.values()):
        raise ValueError(f"every curve needs one AP per threshold ({len(thresholds)}).")
    fig, axes = plt.subplots(1, 1 + len(preds), figsize=(6 * (1 + len(preds)), 5.5))
    for (name, values), style in zip(ap.items(), ("o-", "^-", "s--", "d:", "v-.")):
        axes[0].plot(thresholds, values, style, label=name)
    axes[0].set(xlabel="IoU threshold", ylabel="AP = TP / (TP + FP + FN)", ylim=(0, 1.02))
    axes[0].set_title(f"{n_images} BBBC039 test images")
    axes[0].legend()
    for ax, (name, pred) in zip(axes[1:], preds.items()):
        f1 = matching(truth, _check_pair(image, pred)[1]).f1
        overlay(image, pred, ax=ax, title=f"test image 0, {name} (F1@0.5 {f1:.3f})")
    fig.tight_layout()
    return fig


def show_ray_errors(rays: Mapping[str, Any], budget: float) -> Figure:
    """Histogram of the ray errors at the nuclei's centres, and predicted against true size.

    Parameters
    ----------
    rays : dict of str -> np.ndarray, float (N, 3)
        Model name -> per nucleus (mean |predicted - true| ray, true mean ray, predicted mean
        ray), in pixels.
    budget : float
        The largest error per ray that still allows an IoU of 0.9, drawn as a line.

    Returns
    -------
    Figure
        Two axes: the histograms, and a scatter plot with the diagonal.

    Introduced in notebook 06b.
    """
    rays = {name: np.asarray(r, dtype=float) for name, r in rays.items()}
    if not rays or any(r.ndim != 2 or r.shape[1] != 3 or not len(r) for r in rays.values()):
        raise ValueError("rays needs one non-empty (N, 3) array per model.")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    bins = np.linspace(0, max(r[:, 0].max() for r in rays.values()), 30)
    for name, r in rays.items():
        axes[0].hist(r[:, 0], bins=bins, histtype="step", lw=2, label=name)
        axes[1].plot(r[:, 1], r[:, 2], ".", ms=5, label=name)
    axes[0].axvline(budget, color="k", ls=":", label=f"IoU 0.9 budget ({budget:.2f} px)")
    axes[0].set(xlabel="mean |predicted - true| ray length at the centre (px)", ylabel="nuclei")
    axes[0].set_title("How far off are the rays?")
    top = max(r[:, 1:].max() for r in rays.values())
    axes[1].plot([0, top], [0, top], "k:", lw=1, label="perfect")
    axes[1].set(xlabel="true mean ray length (px): the nucleus's size")
    axes[1].set(ylabel="predicted mean ray length (px)")
    axes[1].set_title("Small nuclei get rays that are too long")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    return fig


def show_3d_rays(
    points: Mapping[str, Any], exact: Mapping[str, Any], dist: Any, rays: Any
) -> Figure:
    """Measured against exact 3-D distances, and the polyhedron's vertices from each point.

    Parameters
    ----------
    points : dict of str -> (int, int, int)
        Name -> the (z, y, x) voxel the rays start from.
    exact : dict of str -> np.ndarray, float (n_rays,)
        Name -> the exact distance along each ray to the surface.
    dist : np.ndarray, float (Z, Y, X, n_rays)
        The measured distances (``star_distances_3d``).
    rays : np.ndarray, float (n_rays, 3)
        The unit rays (z, y, x).

    Returns
    -------
    Figure
        One line axes and one 3-D axes per point.

    Introduced in notebook 06b.
    """
    dist, rays = np.asarray(dist), np.asarray(rays, dtype=float)
    if dist.ndim != 4 or rays.shape != (dist.shape[-1], 3) or set(points) != set(exact):
        raise ValueError(f"need dist (Z, Y, X, n) and rays (n, 3), got {dist.shape}, {rays.shape}.")
    fig = plt.figure(figsize=(16, 5))
    ax = fig.add_subplot(1, 1 + len(points), 1)
    for name, p in points.items():
        measured = dist[tuple(p)]
        err = np.abs(measured - exact[name])
        label = f"{name}: error mean {err.mean():.2f}, max {err.max():.2f}"
        ax.plot(exact[name], measured, "o", ms=4, label=label)
    top = max(float(np.max(e)) for e in exact.values())
    ax.plot([0, top], [0, top], "k:", lw=1)
    ax.set(xlabel="exact distance to the surface (voxels)", ylabel="star_distances_3d (voxels)")
    ax.set_title(f"{len(rays)} rays on a synthetic ellipsoid")
    ax.legend()
    for k, (name, p) in enumerate(points.items()):
        ax3 = fig.add_subplot(1, 1 + len(points), k + 2, projection="3d")
        ends = np.asarray(p) + dist[tuple(p)][:, None] * rays
        ax3.scatter(ends[:, 2], ends[:, 1], ends[:, 0], c=dist[tuple(p)], cmap="viridis", s=12)
        ax3.scatter([p[2]], [p[1]], [p[0]], color="red", s=30)
        ax3.set(xlabel="x", ylabel="y", zlabel="z", title=f"polyhedron vertices from the {name}")
    fig.tight_layout()
    return fig
