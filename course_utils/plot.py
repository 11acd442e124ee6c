"""Plot helpers: label colour maps, overlays, image grids and flow fields.

Instance labels are shown with a random bright colour per id on black, so that touching
objects are told apart; images are shown in grey. Every helper returns the matplotlib object it
drew on, so a notebook can add to it.

Introduced in notebook 00.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, hsv_to_rgb
from matplotlib.figure import Figure
from skimage.segmentation import find_boundaries

from ._shared.validate import check_finite, check_labels, check_real, to_numpy


def _to_numpy(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x)
    if arr.dtype == object:
        raise TypeError(f"{name} cannot be read as a numeric array.")
    return arr


def label_cmap(n_labels: int = 256, seed: int = 0) -> ListedColormap:
    """A colour map for instance labels: black at 0, random bright colours for the ids.

    Parameters
    ----------
    n_labels : int
        Number of colours including the background (>= 2). Ids beyond it wrap around when
        the map is used with ``vmin=0, vmax=n_labels - 1`` (see :func:`overlay`).
    seed : int
        Seed of the random colours; the same seed gives the same map.

    Returns
    -------
    ListedColormap
        ``n_labels`` RGBA colours; colour 0 is opaque black, the others have HSV
        saturation and value in [0.6, 1] (bright) and random hues.

    Introduced in notebook 05.
    """
    if int(n_labels) != n_labels or n_labels < 2:
        raise ValueError(f"n_labels must be an integer >= 2, got {n_labels!r}.")
    n_labels = int(n_labels)
    rng = np.random.default_rng(seed)
    hsv = np.column_stack([rng.uniform(low, 1.0, n_labels) for low in (0.0, 0.6, 0.6)])  # h s v
    rgba = np.ones((n_labels, 4))
    rgba[:, :3] = hsv_to_rgb(hsv)
    rgba[0, :3] = 0.0
    return ListedColormap(rgba, name=f"labels_{seed}")


def _label_colours(labels: np.ndarray, cmap: ListedColormap) -> np.ndarray:
    """RGB image (H, W, 3) of the labels; ids wrap around the colour map (0 stays black)."""
    n = cmap.N
    index = np.where(labels > 0, (labels - 1) % (n - 1) + 1, 0)
    return np.asarray(cmap.colors)[index][..., :3]


def _check_labels_2d(labels: Any, name: str = "labels") -> np.ndarray:
    """Integer (H, W) labels; a boolean mask is shown as one object."""
    arr = check_labels(labels, name, allow_bool=True, allow_empty=True)
    return arr.astype(np.int32) if arr.dtype == bool else arr


def _panel(arr: np.ndarray, name: str) -> tuple[bool, np.ndarray]:
    """(is_labels, array) for one grid panel; integer 2D arrays are label images."""
    if arr.ndim == 2 and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        return True, _check_labels_2d(arr, name)
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        return False, arr
    raise ValueError(f"{name} must be (H, W) or (H, W, 3|4), got shape {arr.shape}.")


def overlay(
    image: Any,
    labels: Any,
    ax: Axes | None = None,
    *,
    contours: bool = True,
    alpha: float = 0.35,
    title: str | None = None,
) -> Axes:
    """Draw a grey image with its instance labels coloured on top and their contours.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W)`` grey image, any real dtype (shown with its own min/max).
    labels : np.ndarray
        ``(H, W)`` integer labels, 0 = background (left uncoloured).
    ax : Axes, optional
        Where to draw; a new figure is made when omitted.
    contours : bool
        Also draw the object boundaries (``skimage.segmentation.find_boundaries``) opaque.
    alpha : float
        Opacity of the label colours, in [0, 1].
    title : str, optional
        Axes title.

    Returns
    -------
    Axes

    Introduced in notebook 00.
    """
    img = _to_numpy(image, "image")
    if img.ndim != 2:
        raise ValueError(f"image must be 2D (H, W), got shape {img.shape}.")
    lab = _check_labels_2d(labels)
    if lab.shape != img.shape:
        raise ValueError(f"image {img.shape} and labels {lab.shape} have different shapes.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    ax = ax or plt.subplots()[1]
    ax.imshow(img, cmap="gray", interpolation="nearest")
    rgba = np.zeros((*lab.shape, 4))
    rgba[..., :3] = _label_colours(lab, label_cmap())
    rgba[..., 3] = np.where(lab > 0, alpha, 0.0)
    if contours:
        edge = find_boundaries(lab, mode="inner") & (lab > 0)
        rgba[edge, 3] = 1.0
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax


def show_grid(
    images: Sequence[Any],
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 4,
    cmap: str = "gray",
    figsize: tuple[float, float] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """Show images side by side: integer arrays as labels, the others in ``cmap``.

    Parameters
    ----------
    images : sequence of np.ndarray
        ``(H, W)`` arrays (or ``(H, W, 3|4)`` RGB(A)); shapes may differ. Integer 2D arrays are
        drawn with :func:`label_cmap` and nearest interpolation, others with ``cmap``.
    titles : sequence of str, optional
        One title per image.
    ncols : int
        Images per row (fewer when there are fewer images).
    cmap : str
        Colour map of the non-label images.
    figsize : (float, float), optional
        Default: 3 inches per panel.
    suptitle : str, optional
        Title of the whole figure.

    Returns
    -------
    Figure
        Unused panels are hidden.

    Introduced in notebook 00.
    """
    arrays = [_to_numpy(im, f"images[{i}]") for i, im in enumerate(images)]
    if not arrays:
        raise ValueError("images is empty.")
    if titles is not None and len(titles) != len(arrays):
        raise ValueError(f"got {len(titles)} titles for {len(arrays)} images.")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}.")
    # Check every panel before drawing, so bad input leaves no half-made figure behind.
    panels = [_panel(arr, f"images[{i}]") for i, arr in enumerate(arrays)]
    ncols = min(ncols, len(arrays))
    nrows = -(-len(arrays) // ncols)
    figsize = figsize or (3.0 * ncols, 3.0 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= len(panels):
            continue
        is_labels, arr = panels[i]
        if is_labels:
            ax.imshow(_label_colours(arr, label_cmap()), interpolation="nearest")
        else:
            ax.imshow(arr, cmap=cmap)
        if titles is not None:
            ax.set_title(titles[i])
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def flow_to_rgb(flows: Any, max_magnitude: float | None = None) -> np.ndarray:
    """Colour a 2D vector field with the HSV colour wheel (Cellpose's flow display).

    Parameters
    ----------
    flows : np.ndarray
        ``(2, H, W)`` field, channel 0 = dy (down is positive), channel 1 = dx (right is
        positive), as made by ``course_utils.targets.masks_to_flows``. NaN or infinity raises
        ``ValueError`` (it has no colour).
    max_magnitude : float, optional
        Magnitude shown at full brightness (finite, > 0); default: the largest magnitude in
        the field.

    Returns
    -------
    np.ndarray
        float32 ``(H, W, 3)`` RGB in [0, 1]. Hue = direction angle ``atan2(dy, dx) / 2 pi``
        (right = red, down = yellow-green at 1/4, left = cyan, up = purple at 3/4), saturation
        1, value = magnitude / max_magnitude clipped to [0, 1]; zero vectors are black.

    Introduced in notebook 05.
    """
    arr = _to_numpy(flows, "flows")
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise ValueError(f"flows must have shape (2, H, W), got {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(f"flows must be a real numeric array, got dtype {arr.dtype}.")
    dy, dx = check_finite(arr, "flows").astype(np.float64)
    magnitude = np.hypot(dy, dx)
    if max_magnitude is None:
        scale = float(magnitude.max())
    elif (scale := check_real(max_magnitude, "max_magnitude")) <= 0:
        raise ValueError(f"max_magnitude must be > 0, got {max_magnitude}.")
    value = np.clip(magnitude / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(magnitude)
    hue = np.mod(np.arctan2(dy, dx) / (2 * np.pi), 1.0)
    hsv = np.stack((hue, np.ones_like(hue), value), axis=-1)
    return hsv_to_rgb(hsv).astype(np.float32)


STATIC_ENV = "COURSE_STATIC_FIGURES"


def widgets_available() -> bool:
    """``True`` in a live Jupyter kernel, unless ``COURSE_STATIC_FIGURES=1`` asks for figures only.

    The course's test and website builds set ``COURSE_STATIC_FIGURES=1``: there is nobody to move a
    slider, and a widget would only show as text.
    """
    if os.environ.get(STATIC_ENV, "").strip() not in ("", "0"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _default(control: Any) -> Any:
    if hasattr(control, "value"):  # an ipywidgets widget
        return control.value
    if isinstance(control, list | tuple) and control and not isinstance(control[0], int | float):
        return control[0]  # a list of options, as ipywidgets.interact reads it
    return control


def interactive(fn: Any, **controls: Any) -> Any:
    """Call ``fn`` with sliders when a person can move them, else draw it once with the defaults.

    Parameters
    ----------
    fn : callable
        Draws one figure for given keyword values.
    **controls
        Name -> an ipywidgets widget (its ``value`` is the default), a list of options (the first
        is the default), or a fixed value.

    Returns
    -------
    The ipywidgets ``interactive`` object in a live notebook, otherwise what ``fn`` returns.

    Introduced in notebook 01.
    """
    if widgets_available():
        from ipywidgets import interact

        return interact(fn, **controls)
    return fn(**{name: _default(control) for name, control in controls.items()})
