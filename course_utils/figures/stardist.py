"""The figures of the first StarDist chapter (06): diagrams, boxes against polygons, rays.

The notebook computes the numbers (distances, polygons, box overlaps) and teaches them; these
functions draw them, and make the synthetic cluster that boxes fail on. Images are ``(H, W)``
float arrays and labels ``(H, W)`` integer arrays (0 = background); a polygon is
``(2, n_rays)`` rows and columns, as ``course_utils.postprocess.dist_to_coord`` returns it.
Every figure returns its ``Figure``.

Introduced in notebook 06.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle
from scipy.ndimage import find_objects

from ..plot import label_cmap, overlay
from ..postprocess import dist_to_coord
from ..targets import star_dist

PIXELS = {"xlabel": "x (pixels)", "ylabel": "y (pixels)"}

FAMILIES = [
    (
        ["image", "CNN features\n(coarse map)", "anchors: 9 boxes\nper position"]
        + ["proposals: scored,\ncorrected boxes", "box NMS\n(box IoU > 0.7, 0.5)"]
        + ["mask head: a 28 x 28\nmask inside each box", "instances"],
        "#dbe9f6",
        "top-down (Faster / Mask R-CNN): detect boxes, suppress duplicates, segment inside",
    ),
    (
        ["image", "U-Net features\n(on a grid of 2)", "every pixel: a polygon\n+ its probability"]
        + ["candidates:\nprob > threshold", "polygon NMS\n(overlap of polygons)"]
        + ["paint the polygons", "instances"],
        "#fde2c8",
        "top-down with star-convex polygons (StarDist, this notebook)",
    ),
    (
        ["image", "CNN features\n(full resolution)", "every pixel: a class,\nflow or affinity"]
        + ["foreground mask\n+ borders or flows", "grouping: components,\nwatershed, flows"]
        + ["small objects\nremoved", "instances"],
        "#dcefd9",
        "bottom-up (U-Net 03-04, Cellpose 05): classify pixels, then group them",
    ),
]


def _pipeline(n_rays: int, grid: int) -> list[tuple[list[str], str, str]]:
    net = f"U-Net, grid {grid}: prob\n+ "
    training = [
        "label image\n(nuclei 1..N)",
        f"targets per pixel:\n{n_rays} ray distances\n+ object probability",
        f"targets on the grid\n(every {grid}nd pixel)" if grid == 2 else "targets on the grid",
        net + "distance heads",
        "loss: BCE (prob) +\nweighted MAE (rays)",
    ]
    prediction = ["image", net + f"{n_rays} distances", "candidates: pixels\nwith prob > threshold"]
    prediction += ["polygon NMS: best\nfirst, drop overlaps", "paint polygons\n-> label image"]
    return [
        (training, "#fde2c8", "training (sections 2-5)"),
        (prediction, "#dbe9f6", "prediction (section 6)"),
    ]


def _flow_diagram(rows: Sequence[tuple[Sequence[str], str, str]], title: str, width: float):
    """Rows of boxes joined by arrows, one row per (steps, colour, name), top to bottom."""
    fig, ax = plt.subplots(figsize=(width, 1.35 * len(rows) + 0.4))
    for k, (steps, colour, name) in enumerate(rows):
        y = -1.25 * k
        for x, text in enumerate(steps):
            box = FancyBboxPatch((x - 0.42, y - 0.3), 0.84, 0.6, boxstyle="round,pad=0.02")
            box.set(facecolor=colour, edgecolor="0.3", linewidth=1)
            ax.add_patch(box)
            ax.text(x, y, text, ha="center", va="center", fontsize=8.5, wrap=True)
            if x:
                arrow = FancyArrowPatch((x - 0.58, y), (x - 0.42, y), arrowstyle="-|>")
                arrow.set(mutation_scale=12, color="0.25")
                ax.add_patch(arrow)
        ax.text(-0.5, y + 0.45, name, ha="left", va="bottom", fontsize=10, weight="bold")
    ax.set_xlim(-0.55, max(len(r[0]) for r in rows) - 0.45)
    ax.set_ylim(-1.25 * (len(rows) - 1) - 0.45, 0.85)
    ax.set_title(title)
    ax.axis("off")
    return fig


def families_diagram() -> Figure:
    """The two families of instance segmentation, with StarDist between them: one row of boxes
    and arrows each for Faster / Mask R-CNN, StarDist, and the bottom-up methods.

    Returns
    -------
    Figure
        One axes (no data axes: a diagram) with 3 rows of 7 steps.

    Introduced in notebook 06.
    """
    return _flow_diagram(FAMILIES, "Two families of instance segmentation", 15)


def pipeline_diagram(n_rays: int = 32, grid: int = 2) -> Figure:
    """The StarDist pipeline: training (targets, network, loss) and prediction (candidates,
    NMS, painting), one row of 5 steps each.

    Parameters
    ----------
    n_rays : int
        Rays per pixel, written into the boxes.
    grid : int
        The output grid of the network (1 or more), written into the boxes.

    Returns
    -------
    Figure

    Introduced in notebook 06.
    """
    if n_rays < 3 or grid < 1:
        raise ValueError(f"need n_rays >= 3 and grid >= 1, got {n_rays} and {grid}.")
    return _flow_diagram(_pipeline(int(n_rays), int(grid)), "The StarDist pipeline", 13)


def _check_image(image: Any, labels: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    image = np.asarray(image)
    image = image.astype(np.float32) if image.dtype == bool else image
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}.")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != image.shape:
            raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape.")
    return image, labels


def _polygons(ax: Axes, polygons: np.ndarray, colours: Any, lw: float = 1.5) -> None:
    polygons = np.asarray(polygons, dtype=float)
    if polygons.ndim != 3 or polygons.shape[1] != 2:
        raise ValueError(f"polygons must have shape (N, 2, n_rays), got {polygons.shape}.")
    for i, poly in enumerate(polygons):
        colour = colours if isinstance(colours, str) else colours[i]
        ax.add_patch(Polygon(poly[::-1].T, fill=False, color=colour, lw=lw))


def elongated_nuclei(
    n: int = 4,
    shape: tuple[int, int] = (100, 130),
    half_axes: tuple[float, float] = (30, 5),
    spacing: float = 10,
    angle: float = np.pi / 4,
) -> np.ndarray:
    """Labels of ``n`` touching ellipses side by side, tilted by ``angle`` (radians): the
    crowded, elongated nuclei that box NMS fails on.

    Each pixel belongs to the ellipse in whose own (normalised) coordinates it is closest to
    the centre, so neighbours touch along a straight line and never overlap.

    Parameters
    ----------
    n : int
        Number of ellipses (ids 1..n).
    shape : (int, int)
        (H, W) of the label image.
    half_axes : (float, float)
        Half the long and the short axis, in pixels.
    spacing : float
        Distance between the centres of neighbours, across their long axis.
    angle : float
        Tilt of the long axis from the x axis.

    Returns
    -------
    np.ndarray, int32 (H, W)

    Introduced in notebook 06.
    """
    if n < 1 or min(half_axes) <= 0:
        raise ValueError(f"need n >= 1 and positive half_axes, got {n} and {half_axes}.")
    yy, xx = np.indices(shape, dtype=float)
    radii = []
    for k in range(n):
        offset = (k - (n - 1) / 2) * spacing  # across the long axis
        cy, cx = shape[0] / 2 + offset * np.cos(angle), shape[1] / 2 - offset * np.sin(angle)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        radii.append((u / half_axes[0]) ** 2 + (v / half_axes[1]) ** 2)
    radii = np.stack(radii)
    return np.where(radii.min(0) <= 1, radii.argmin(0) + 1, 0).astype(np.int32)


def show_boxes(
    image: Any, labels: Any, boxes: Any, pair_iou: Any, pairs: Sequence, titles: Sequence[str]
) -> Figure:
    """The labels, and the image with every object's bounding box; the touching pair whose
    boxes overlap most in red.

    Parameters
    ----------
    image : np.ndarray, float (H, W)
    labels : np.ndarray, int (H, W)
        Objects 1..N.
    boxes : np.ndarray, int (N, 4)
        (top, left, bottom, right) of objects 1..N, bottom and right exclusive.
    pair_iou : np.ndarray, float (P,)
        The box IoU of each pair of touching objects.
    pairs : sequence of (int, int)
        The P pairs of ids.
    titles : (str, str)
        Titles of the two panels.

    Returns
    -------
    Figure
        Two image axes: the labels over the image, the boxes over the image.

    Introduced in notebook 06.
    """
    image, labels = _check_image(image, labels)
    boxes, pair_iou = np.asarray(boxes), np.asarray(pair_iou, dtype=float)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != labels.max():
        raise ValueError(f"boxes must be (N, 4) for N = {labels.max()} ids, got {boxes.shape}.")
    if len(pair_iou) != len(pairs) or not len(pairs):
        raise ValueError(f"need one IoU per pair, got {len(pair_iou)} for {len(pairs)} pairs.")
    worst = pairs[int(np.argmax(pair_iou))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    overlay(image, labels, ax=axes[0], title=titles[0])
    axes[1].imshow(image, cmap="gray")
    colours = label_cmap(len(boxes) + 1).colors
    for i, (top, left, bottom, right) in enumerate(boxes, start=1):
        colour, lw = ("red", 3) if i in worst else (colours[i], 1.5)
        corner = (left - 0.5, top - 0.5)
        box = Rectangle(corner, right - left, bottom - top, fill=False, color=colour, lw=lw)
        axes[1].add_patch(box)
    title = f"{titles[1]}\nred: touching pair with box IoU {pair_iou.max():.2f}"
    axes[1].set(title=title, **PIXELS)
    fig.tight_layout()
    return fig


def show_ray_polygon(image: Any, pixel: tuple[int, int], vertices: Any, dist: Any) -> Figure:
    """The rays from one pixel and their polygon, and the distance along two rays everywhere.

    Parameters
    ----------
    image : np.ndarray, float (H, W)
    pixel : (int, int)
        The (row, col) the rays start from.
    vertices : np.ndarray, float (2, n_rays)
        Rows and columns of the polygon's vertices.
    dist : np.ndarray, float (H, W, n_rays)
        Distances of every pixel (``star_dist``); rays 0 (right) and n_rays / 4 (down) are shown.

    Returns
    -------
    Figure
        Three image axes (and two colour bars).

    Introduced in notebook 06.
    """
    image, _ = _check_image(image)
    vertices, dist = np.asarray(vertices), np.asarray(dist)
    if vertices.shape != (2, dist.shape[-1]) or dist.shape[:2] != image.shape:
        raise ValueError(
            f"need vertices (2, n_rays) and dist (H, W, n_rays) of the image {image.shape}, "
            f"got {vertices.shape} and {dist.shape}."
        )
    n_rays = dist.shape[-1]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    axes[0].imshow(image, cmap="gray")
    for r, c in vertices.T:
        axes[0].plot([pixel[1], c], [pixel[0], r], color="tab:orange", lw=0.8)
    _polygons(axes[0], vertices[None], "cyan")
    axes[0].plot(pixel[1], pixel[0], "r.", ms=8)
    axes[0].set(title=f"{n_rays} rays from one pixel and their polygon", **PIXELS)
    for ax, k, way in zip(axes[1:], (0, n_rays // 4), ("right", "down")):
        shown = ax.imshow(dist[..., k], cmap="magma")
        fig.colorbar(shown, ax=ax, fraction=0.046, label="distance (pixels)")
        angle = 360 * k / n_rays
        ax.set(title=f"distance along ray {k} ({angle:.0f}°, {way}) for every pixel", **PIXELS)
    fig.tight_layout()
    return fig


def show_polygons(
    image: Any, polygons: Any, title: str, *, centres: Any = None, colour: str | None = None
) -> Figure:
    """Polygons over an image, each in its label colour (that of ``cu.plot.overlay``) or one.

    Parameters
    ----------
    image : np.ndarray, float or bool (H, W)
    polygons : np.ndarray, float (N, 2, n_rays)
        Rows and columns of the vertices of polygons 1..N.
    title : str
    centres : np.ndarray, int (N, 2), optional
        (row, col) of the points the polygons start from, drawn as white dots.
    colour : str, optional
        One colour for all; default: the colour of id i for polygon i.

    Returns
    -------
    Figure
        One image axes.

    Introduced in notebook 06.
    """
    image, _ = _check_image(image)
    polygons = np.asarray(polygons)
    if centres is not None and np.shape(centres) != (len(polygons), 2):
        raise ValueError(f"centres must be ({len(polygons)}, 2), got {np.shape(centres)}.")
    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1] + 0.5))
    ax.imshow(image, cmap="gray")
    _polygons(ax, polygons, colour or label_cmap(len(polygons) + 1).colors[1:])
    if centres is not None:
        ax.plot(np.asarray(centres)[:, 1], np.asarray(centres)[:, 0], "w.", ms=3)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set(title=title, **PIXELS)
    return fig


def show_polygon_fits(labels: Any, centres: Any, ious: Any, rays: Sequence[int]) -> Figure:
    """The worst-fitting and a typical (median IoU) object alone, with their polygons for a few
    numbers of rays (computed here with ``star_dist``).

    Parameters
    ----------
    labels : np.ndarray, int (H, W)
        Objects 1..N.
    centres : np.ndarray, int (N, 2)
        The (row, col) each object's polygons start from.
    ious : np.ndarray, float (N,)
        The IoU of each object's polygon with ``rays[-1]`` rays: picks the two objects, and
        is written in the titles.
    rays : sequence of int
        The numbers of rays to draw (orange, then cyan, ...).

    Returns
    -------
    Figure
        Two image axes.

    Introduced in notebook 06.
    """
    labels = np.asarray(labels)
    centres, ious = np.asarray(centres), np.asarray(ious)
    if len(centres) != labels.max() or len(ious) != len(centres):
        raise ValueError(f"need {labels.max()} centres and IoUs, got {len(centres)}, {len(ious)}.")
    examples = {"worst fit": int(np.argmin(ious)), "typical": int(np.argsort(ious)[len(ious) // 2])}
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in find_objects(labels)]
    for ax, (name, k) in zip(axes, examples.items()):
        top, left = max(boxes[k][0] - 4, 0), max(boxes[k][1] - 4, 0)
        view = labels[top : boxes[k][2] + 4, left : boxes[k][3] + 4]
        extent = (left - 0.5, left + view.shape[1] - 0.5, top + view.shape[0] - 0.5, top - 0.5)
        ax.imshow(view == k + 1, cmap="gray", extent=extent)
        for n, colour in zip(rays, ("tab:orange", "cyan", "tab:green", "tab:pink")):
            d = star_dist(view, n)[centres[k, 0] - top, centres[k, 1] - left]
            poly = dist_to_coord(d[None], centres[k][None])[0]
            ax.add_patch(Polygon(poly[::-1].T, fill=False, color=colour, lw=2, label=f"{n} rays"))
        ax.plot(centres[k, 1], centres[k, 0], "r.", ms=8)
        ax.set(title=f"{name}: IoU {ious[k]:.2f} with {rays[-1]} rays", **PIXELS)
        ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
