"""Diagrams the course draws from numbers, not from pictures: the U-Net's levels with their
sizes, and the overlap-tile strategy on an image.

Introduced in notebook 03.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._shared.validate import to_numpy

__all__ = ["overlap_tile_diagram", "unet_diagram"]


def _arrow(ax: Axes, start, end, colour: str, style: str = "->", shrink: float = 0) -> None:
    props = {"arrowstyle": style, "color": colour, "shrinkA": shrink, "shrinkB": shrink}
    ax.annotate("", end, start, arrowprops=props)


def _level(ax: Axes, xy, text: str, colour: str) -> None:
    box = {"boxstyle": "round", "fc": "white", "ec": colour}
    ax.text(*xy, text, bbox=box, ha="center", va="center", fontsize=8)


def unet_diagram(
    depth: int = 4,
    input_size: int = 572,
    base_channels: int = 64,
    n_classes: int = 2,
    ax: Axes | None = None,
) -> Axes:
    """Draw the original U-Net (valid convolutions) with the size of every feature map.

    Each box is one level's two 3x3 convolutions: channels, and side before and after them.
    Arrows: 2x2 max pooling, 2x2 up-convolution, skip connection (copy, crop the centre).

    Parameters
    ----------
    depth, input_size : int
        Poolings and input side (the paper: 4, 572); a size that
        ``course_utils.models.unet_output_size`` rejects raises its ``ValueError``.
    base_channels, n_classes : int
        Channels of the first level (doubling per level) and of the output.
    ax : Axes, optional
        Where to draw (default: a new figure).

    Returns
    -------
    Axes
        Titled ``"... {input_size} x {input_size} in -> {out} x {out} out"``.

    Introduced in notebook 03.
    """
    from .models import unet_output_size

    out, side, down = unet_output_size(input_size, depth), input_size, []
    ax = ax or plt.subplots(figsize=(13, 5.5))[1]
    note = {"va": "bottom", "fontsize": 7}
    for i in range(depth + 1):  # the encoder levels, then the bottleneck
        c, a, side, x = base_channels * 2**i, side, side - 4, i + 0.5 * (i == depth)
        down.append(side)
        _level(ax, (x, -i), f"{c // 2 if i else 1} → {c} ch\n{a}² → {side}²", "tab:blue")
        if i < depth:
            _arrow(ax, (i, -i), (i + 1 + 0.5 * (i == depth - 1), -i - 1), "tab:red", shrink=20)
            ax.text(i + 0.42, -i - 0.55, "max pool 2x2 ", color="tab:red", **note, ha="right")
            side //= 2
    for i in reversed(range(depth)):  # the decoder, from the bottom up
        c, x, a, side = base_channels * 2**i, 2 * depth + 1 - i, 2 * side, 2 * side - 4
        _level(ax, (x, -i), f"{2 * c} → {c} ch\n{a}² → {side}²", "tab:green")
        _arrow(ax, (x - 1 - 0.5 * (i == depth - 1), -i - 1), (x, -i), "tab:green", shrink=20)
        ax.text(x - 0.42, -i - 0.55, " up-conv 2x2", color="tab:green", **note, ha="left")
        _arrow(ax, (i, -i), (x, -i), "grey", shrink=36)
        skip = f"copy, crop {down[i]}² → {a}²"
        ax.text(depth + 0.5, -i + 0.06, skip, color="grey", ha="center", **note)
    _level(ax, (2 * depth + 2, 0), f"1x1 conv\n{n_classes} x {out}²", "black")
    _arrow(ax, (2 * depth + 1, 0), (2 * depth + 2, 0), "black", shrink=34)
    ax.set(xlim=(-0.6, 2 * depth + 2.6), ylim=(-depth - 0.4, 0.4))
    ax.set_axis_off()
    ax.set_title(
        f"Original U-Net, depth {depth}: {input_size} x {input_size} in -> {out} x {out} out"
    )
    return ax


def _box(ax: Axes, box, **style) -> None:
    y0, x0, y1, x1 = box  # pixel coordinates
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, **style))


def overlap_tile_diagram(image: Any, tiles: Sequence[dict]) -> Figure:
    """Draw overlap-tile prediction on an image: every tile's output box, and one tile's input.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` grey image.
    tiles : sequence of dict
        From ``course_utils.predict.tile_grid``: ``input`` and ``output`` boxes (y0, x0, y1, x1).

    Returns
    -------
    Figure
        Left: the mirror-padded image, its edge white, the output boxes (cyan) covering it
        once. Right: tile 0, its input (dashed) a margin beyond its output (solid).

    Introduced in notebook 03.
    """
    img = to_numpy(image)
    if img.dtype == object:
        raise TypeError("image cannot be read as a numeric array.")
    if img.ndim != 2 or not tiles:
        raise ValueError(f"need a 2D image and tiles, got shape {img.shape}, {len(tiles)} tiles.")
    (h, w), inputs = img.shape, np.array([t["input"] for t in tiles])
    top, left = max(0, -inputs[:, 0].min()), max(0, -inputs[:, 1].min())
    bottom, right = max(0, inputs[:, 2].max() - h), max(0, inputs[:, 3].max() - w)
    padded = np.pad(img, ((top, bottom), (left, right)), mode="reflect")
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    for ax in axes:
        extent = (-left - 0.5, w + right - 0.5, h + bottom - 0.5, -top - 0.5)
        ax.imshow(padded, cmap="gray", extent=extent)
        _box(ax, (0, 0, h, w), color="white", lw=2)
        ax.set(xlabel="x (pixels, image coordinates)", ylabel="y (pixels)")
    for t in tiles:
        _box(axes[0], t["output"], color="tab:cyan", lw=1.5)
    (y0, x0, y1, x1), output = tiles[0]["input"], tiles[0]["output"]
    margin, middle = output[0] - y0, (y0 + y1) / 2
    _box(axes[1], (y0, x0, y1, x1), color="tab:orange", lw=2, ls="--", label="input of tile 0")
    _box(axes[1], output, color="tab:orange", lw=2, label="its output")
    _arrow(axes[1], (x0, middle), (x0 + margin, middle), "yellow", "<->")
    axes[1].text(x0 + margin + 4, middle, f"margin {margin} px", color="yellow", va="center")
    axes[1].set(xlim=(x0 - 20, x1 + 20), ylim=(y1 + 20, y0 - 20))
    axes[1].legend(loc="lower right")
    axes[0].set_title(f"{len(tiles)} output tiles (cyan) cover the image (white) once")
    axes[1].set_title("tile 0: its input reaches into the mirrored border")
    fig.tight_layout()
    return fig
