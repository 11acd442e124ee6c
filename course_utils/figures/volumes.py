"""Figures of notebook 11: a stack seen from three sides, and rays on a sphere.

A (Z, Y, X) stack is read on a screen as three cuts through one voxel: the XY plane (what the
microscope images at once), and the XZ and YZ planes across the stack. Shown with square
pixels, the cuts across the stack look squashed by the anisotropy; ``orthogonal_views`` shows
them with the physical aspect (``aspect=anisotropy``), or without it to make the point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..plot import overlay

__all__ = ["orthogonal_views", "rays_on_sphere"]


def orthogonal_views(
    image: Any,
    labels: Any = None,
    *,
    anisotropy: float = 1.0,
    centre: tuple[int, int, int] | None = None,
    title: str = "",
) -> Figure:
    """The XY, XZ and YZ cuts of a stack through ``centre``, with labels on top if given.

    Parameters
    ----------
    image : np.ndarray, float, shape (Z, Y, X)
    labels : np.ndarray, integer, shape (Z, Y, X), optional
    anisotropy : float
        z step / in-plane pixel: the XZ and YZ cuts are stretched by it (1: square voxels).
    centre : (z, y, x), optional
        The voxel the cuts go through (default: the middle).
    title : str
        The figure's title.

    Returns
    -------
    Figure
        Three panels titled "XY (z = ...)", "XZ (y = ...)", "YZ (x = ...)", axes in voxels.

    Introduced in notebook 11.
    """
    import matplotlib.pyplot as plt

    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be a (Z, Y, X) stack, got shape {image.shape}")
    if labels is not None and np.shape(labels) != image.shape:
        raise ValueError(f"labels {np.shape(labels)} and image {image.shape} differ in shape")
    if not anisotropy > 0:
        raise ValueError(f"anisotropy must be positive, got {anisotropy!r}")
    z, y, x = (s // 2 for s in image.shape) if centre is None else centre
    cuts = [
        (f"XY (z = {z})", image[z], None if labels is None else labels[z], 1.0, ("x", "y")),
        (
            f"XZ (y = {y})",
            image[:, y],
            None if labels is None else labels[:, y],
            anisotropy,
            ("x", "z"),
        ),
        (
            f"YZ (x = {x})",
            image[:, :, x],
            None if labels is None else labels[:, :, x],
            anisotropy,
            ("y", "z"),
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), layout="constrained")
    for ax, (name, img, lab, aspect, (h, v)) in zip(axes, cuts):
        if lab is None:
            ax.imshow(img, cmap="gray", aspect=aspect, interpolation="nearest")
        else:
            overlay(img, lab, ax=ax)
            ax.set_aspect(aspect)
        ax.set(title=name, xlabel=f"{h} (voxels)", ylabel=f"{v} (voxels)")
    fig.suptitle(title or f"three cuts through one voxel (aspect of z: {anisotropy:g})")
    return fig


def rays_on_sphere(rays: dict[str, Any]) -> Figure:
    """Ray directions as points on the unit sphere, one 3-D panel per named set.

    Parameters
    ----------
    rays : dict of str to np.ndarray (n, 3)
        Named sets of unit directions (z, y, x), e.g. isotropic and anisotropic golden spirals.

    Introduced in notebook 11.
    """
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(5 * len(rays), 5), layout="constrained")
    for k, (name, r) in enumerate(rays.items()):
        r = np.asarray(r, float)
        if r.ndim != 2 or r.shape[1] != 3:
            raise ValueError(f"rays {name!r} must have shape (n, 3), got {r.shape}")
        ax = fig.add_subplot(1, len(rays), k + 1, projection="3d")
        ax.scatter(r[:, 2], r[:, 1], r[:, 0], c=r[:, 0], cmap="viridis", s=12)
        for end in r:
            ax.plot([0, end[2]], [0, end[1]], [0, end[0]], lw=0.3, color="grey")
        ax.set(title=f"{name}: {len(r)} rays", xlabel="x", ylabel="y", zlabel="z")
        ax.set_box_aspect((1, 1, 1))
    fig.suptitle("ray directions (colour: z component)")
    return fig
