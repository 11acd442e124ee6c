"""The figures of the CNN building blocks chapters (02 and 02b): kernels, receptive fields,
activations, upsampling, training curves and feature maps.

The notebook computes what it teaches (a convolution, a gradient, a training run) and hands the
numbers to these functions, which only draw them: ``cu.figures.blocks.show_activations(...)``.

Introduced in notebook 02.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ._common import as_array, pixel_axes


def _not_empty(mapping: Mapping, name: str) -> None:
    if len(mapping) == 0:
        raise ValueError(f"{name} is empty: give at least one entry.")


def show_crop(image: Any, top: int, left: int, size: int, name: str = "image") -> Figure:
    """An image with a square crop outlined, and the crop itself.

    Parameters
    ----------
    image : array_like, float, (H, W)
        A grey image normalised to about [0, 1] (shown with ``vmin=0, vmax=1``).
    top, left, size : int
        The crop is ``image[top : top + size, left : left + size]``; it must lie inside.
    name : str
        What the image is, for the first panel's title.

    Returns
    -------
    Figure
        Two panels: the image with the crop's outline, and the crop.

    Introduced in notebook 02.
    """
    arr = as_array(image, "image", 2, dtype=np.float64)
    if size < 1 or top < 0 or left < 0 or top + size > arr.shape[0] or left + size > arr.shape[1]:
        raise ValueError(f"the crop ({top}, {left}, size {size}) is not inside {arr.shape}.")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].imshow(arr, cmap="gray", vmin=0, vmax=1)
    outline = plt.Rectangle((left, top), size, size, fill=False, color="tab:orange", lw=2)
    axes[0].add_patch(outline)
    pixel_axes(axes[0], f"{name} {arr.shape}")
    axes[1].imshow(arr[top : top + size, left : left + size], cmap="gray", vmin=0, vmax=1)
    pixel_axes(axes[1], f"the {size} x {size} crop used below")
    fig.tight_layout()
    return fig


def show_learning_curves(
    curves: Mapping[str, Sequence[float]], title: str, ylabel: str = "loss"
) -> Figure:
    """Loss curves of several training runs, one line each, on a log scale.

    Parameters
    ----------
    curves : mapping of str to sequence of float
        The legend label of each run and its loss after each step (step 1, 2, ...).
    title, ylabel : str
        The title and the y-axis label.

    Returns
    -------
    Figure
        One panel; non-finite losses (a run that diverged) are left out of the lines.

    Introduced in notebook 02.
    """
    _not_empty(curves, "curves")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, losses in curves.items():
        values = as_array(losses, f"curves[{label!r}]", 1, dtype=np.float64)
        ax.plot(np.arange(1, len(values) + 1), values, label=label)
    ax.set(yscale="log", xlabel="step", ylabel=ylabel, title=title)
    ax.legend()
    return fig


def show_kernel_footprints() -> Figure:
    """Which input pixels a 3 x 3 kernel covers: plain, with dilation 2, and with stride 2.

    Returns
    -------
    Figure
        Three panels on a 9 x 9 input grid; in the third, two neighbouring output pixels of a
        stride-2 convolution, their overlap in yellow.

    Introduced in notebook 02.
    """
    grid = np.zeros((3, 9, 9))
    grid[0, 3:6, 3:6] = 1  # 3x3 kernel
    grid[1, 2:7:2, 2:7:2] = 1  # 3x3 kernel, dilation 2
    grid[2, 3:6, 1:4] += 1  # stride 2: two neighbouring output pixels, 2 pixels apart
    grid[2, 3:6, 3:6] += 2
    titles = [
        "3x3 kernel",
        "3x3, dilation 2 (covers 5x5)",
        "stride 2: two outputs (overlap yellow)",
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, g, title in zip(axes, grid, titles):
        ax.imshow(g, cmap="viridis", vmin=0, vmax=3)
        ax.set_xticks(np.arange(-0.5, 9), minor=True)
        ax.set_yticks(np.arange(-0.5, 9), minor=True)
        ax.grid(which="minor", color="w", lw=0.5)
        ax.set(title=title, xlabel="input x", ylabel="input y")
    fig.tight_layout()
    return fig


def show_filter_responses(image: Any, responses: Mapping[str, Any]) -> Figure:
    """An image and its responses to fixed filters, three panels a row.

    Parameters
    ----------
    image : array_like, float, (H, W)
        The input, shown in grey.
    responses : mapping of str to array_like, float, (H', W')
        Each filter's name and its output. Signed outputs (any value below 0, e.g. edges) are
        shown in red (positive) and blue (negative) around a white 0; the others in grey.

    Returns
    -------
    Figure
        ``1 + len(responses)`` panels; unused places in the last row are hidden.

    Introduced in notebook 02.
    """
    _not_empty(responses, "responses")
    panels = [("input", as_array(image, "image", 2, dtype=np.float64))]
    panels += [
        (name, as_array(r, f"responses[{name!r}]", 2, dtype=np.float64))
        for name, r in responses.items()
    ]
    nrows = -(-len(panels) // 3)
    fig, axes = plt.subplots(nrows, 3, figsize=(12, 4 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_axis_off()
    for ax, (title, img) in zip(axes.ravel(), panels):
        if img.min() < 0:  # signed responses: white = 0, red = positive, blue = negative
            limit = np.abs(img).max()
            ax.imshow(img, cmap="RdBu_r", vmin=-limit, vmax=limit)
        else:
            ax.imshow(img, cmap="gray")
        pixel_axes(ax, title)
    fig.tight_layout()
    return fig


def _field_size(mask: np.ndarray) -> int:
    rows = np.flatnonzero(mask.any(1))
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def show_effective_field(theory: Any, effective: Any) -> Figure:
    """The theoretical receptive field of one output pixel next to its effective field.

    Parameters
    ----------
    theory : array_like, bool, (H, W)
        True where the output pixel depends on the input (the theoretical field).
    effective : array_like, float, (H, W)
        Mean |gradient| of the output pixel with respect to each input pixel.

    Returns
    -------
    Figure
        Three panels: the two fields as images, and their profiles through the middle row
        (the effective one divided by its peak).

    Introduced in notebook 02.
    """
    mask = as_array(theory, "theory", 2, dtype=np.float64) > 0
    erf = as_array(effective, "effective", 2, dtype=np.float64)
    if mask.shape != erf.shape:
        raise ValueError(f"theory {mask.shape} and effective {erf.shape} differ in shape.")
    size, middle = _field_size(mask), mask.shape[0] // 2
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].imshow(mask, cmap="gray")
    pixel_axes(axes[0], f"theoretical field: {size} x {size}", "input ")
    axes[1].imshow(erf, cmap="magma")
    pixel_axes(axes[1], "effective field: mean |gradient|, random weights", "input ")
    axes[2].plot(erf[middle] / erf[middle].max(), label="effective (random weights)")
    axes[2].plot(mask[middle], label="theoretical")
    axes[2].set(title="profile through the centre", xlabel="input x", ylabel="relative gradient")
    axes[2].legend()
    fig.tight_layout()
    return fig


def show_activations(x: Any, curves: Mapping[str, tuple[Any, Any]]) -> Figure:
    """Activation functions and their derivatives, one panel each.

    Parameters
    ----------
    x : array_like, float, (n,)
        The inputs.
    curves : mapping of str to (array_like, array_like), each float (n,)
        The activation's name, its values f(x) and its derivative f'(x).

    Returns
    -------
    Figure
        ``len(curves)`` panels, f solid and f' dashed.

    Introduced in notebook 02.
    """
    _not_empty(curves, "curves")
    xs = as_array(x, "x", 1, dtype=np.float64)
    fig, axes = plt.subplots(1, len(curves), figsize=(4.3 * len(curves), 3.6), squeeze=False)
    for ax, (name, (values, derivative)) in zip(axes[0], curves.items()):
        f, df = (
            as_array(values, f"{name} values", 1, dtype=np.float64),
            as_array(derivative, f"{name} derivative", 1, dtype=np.float64),
        )
        if f.shape != xs.shape or df.shape != xs.shape:
            raise ValueError(
                f"{name}: {f.shape} values and {df.shape} derivatives for {xs.shape} x."
            )
        ax.plot(xs, f, label="f(x)")
        ax.plot(xs, df, "--", label="f'(x) (autograd)")
        ax.set(title=name, xlabel="x", ylabel="value")
        ax.legend()
    fig.tight_layout()
    return fig


def show_checkerboards(outputs: Mapping[str, Any], margin: int = 3) -> Figure:
    """The interiors of upsampled images, each with the distinct values it holds.

    Parameters
    ----------
    outputs : mapping of str to array_like, float, (H, W)
        The name of each upsampling and its output.
    margin : int
        Pixels cut from every side, so that the borders do not hide the interior's pattern.

    Returns
    -------
    Figure
        One panel (with a colour bar) per output.

    Introduced in notebook 02.
    """
    _not_empty(outputs, "outputs")
    fig, axes = plt.subplots(1, len(outputs), figsize=(4.3 * len(outputs), 4), squeeze=False)
    for ax, (title, out) in zip(axes[0], outputs.items()):
        arr = as_array(out, f"outputs[{title!r}]", 2, dtype=np.float64)
        if min(arr.shape) <= 2 * margin:
            raise ValueError(f"{title}: {arr.shape} has no interior inside a margin of {margin}.")
        inner = arr[margin:-margin, margin:-margin] if margin else arr
        im = ax.imshow(inner, cmap="viridis")
        values = sorted(set(np.round(inner, 6).ravel().tolist()))
        shown = values if len(values) <= 6 else f"{len(values)} distinct"
        ax.set(title=f"{title}\ninterior values {shown}", xlabel="output x", ylabel="output y")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Upsampling a constant image: uneven overlap makes a checkerboard")
    fig.tight_layout()
    return fig


def show_overfitting(steps: Sequence[int], curves: Mapping[str, Mapping[str, Sequence]]) -> Figure:
    """Loss and Dice of a training run, measured on several sets of crops.

    Parameters
    ----------
    steps : sequence of int, (n,)
        The training steps at which the sets were measured.
    curves : mapping of str to {"loss": sequence of float, "dice": sequence of float}
        Each set's name and its ``n`` losses and Dice scores.

    Returns
    -------
    Figure
        Two panels: the losses (log scale) and the Dice scores, one line per set.

    Introduced in notebook 02b.
    """
    _not_empty(curves, "curves")
    x = as_array(steps, "steps", 1, dtype=np.float64)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for name, curve in curves.items():
        for ax, key in zip(axes, ("loss", "dice")):
            values = as_array(curve[key], f"curves[{name!r}][{key!r}]", 1, dtype=np.float64)
            if values.shape != x.shape:
                raise ValueError(f"{name}: {values.size} {key} values for {x.size} steps.")
            ax.plot(x, values, marker=".", label=name)
    axes[0].set(title="Loss (BCE)", xlabel="training step", ylabel="loss", yscale="log")
    axes[1].set(title="Dice of the thresholded prediction", xlabel="training step", ylabel="Dice")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    return fig


def show_feature_maps(maps: Mapping[str, Any], n_channels: int = 8, title: str = "") -> Figure:
    """The first channels of some layers' outputs, one row per layer.

    Parameters
    ----------
    maps : mapping of str to array_like, float, (C, H, W)
        A name per layer (the row's label) and its output for one image (C >= ``n_channels``).
    n_channels : int
        Channels shown per layer.
    title : str
        The title of the figure.

    Returns
    -------
    Figure
        ``len(maps)`` rows of ``n_channels`` panels, each titled with its channel.

    Introduced in notebook 02b.
    """
    _not_empty(maps, "maps")
    arrays = {name: as_array(m, f"maps[{name!r}]", 3, dtype=np.float64) for name, m in maps.items()}
    for name, arr in arrays.items():
        if arr.shape[0] < n_channels:
            raise ValueError(f"{name} has {arr.shape[0]} channels, fewer than {n_channels}.")
    size = (2 * n_channels, 2.3 * len(arrays))
    fig, axes = plt.subplots(len(arrays), n_channels, figsize=size, squeeze=False)
    for row, (name, arr) in zip(axes, arrays.items()):
        for c, ax in enumerate(row):
            ax.imshow(arr[c], cmap="viridis")
            ax.set_title(f"channel {c}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
