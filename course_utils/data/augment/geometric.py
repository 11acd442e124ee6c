"""Geometric augmentations: one sampling grid for the image (bilinear) and the labels (nearest
neighbour): ``remap``, rotations, zoom and shear, elastic deformation.

Introduced in notebook 04.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from scipy import ndimage as ndi

from ..._shared.validate import check_finite
from .core import (
    INT64_MAX,
    Augment,
    Named,
    Range,
    as_output,
    check_mode,
    check_pair,
    check_rng,
    draw,
    parse_span,
)

__all__ = [
    "elastic",
    "elastic_deform",
    "elastic_displacement",
    "random_affine",
    "random_rotation",
    "remap",
]


def _fold(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mirror ``index`` into ``[0, n)`` (edge pixel not repeated) and number the copy it hits."""
    if n == 1:
        return np.zeros_like(index), np.zeros_like(index)
    period = 2 * (n - 1)
    m = np.mod(index, period)
    folded = np.where(m >= n, period - m, m)
    # Copy 0 is [0, n-1], copy 1 is [n, 2n-2], copy -1 is [-(n-1), -1], and so on.
    copy = np.where(
        index >= 0, np.maximum(0, (index - 1) // (n - 1)), -((-index - 1) // (n - 1)) - 1
    )
    return folded, copy


def _nearest_labels(labels: np.ndarray, coords: np.ndarray, mode: str) -> np.ndarray:
    """Labels at the pixel nearest to each (row, col) of ``coords``; borders as in the module."""
    h, w = labels.shape
    r, c = np.floor(coords + 0.5).astype(np.int64)  # round half up, as scipy's order=0 does
    if mode == "constant":
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        return np.where(inside, labels[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)], 0)
    (r, copy_r), (c, copy_c) = _fold(r, h), _fold(c, w)
    out = labels[r, c].astype(np.int64)
    max_id = int(labels.max())
    if max_id == 0 or not (copy_r.any() or copy_c.any()):
        return out
    # Number the mirrored copies (kr, kc) present 1, 2, ...; the original (0, 0) keeps 0.
    keys = copy_r * (2 * int(np.abs(copy_c).max()) + 1) + copy_c
    uniq, code = np.unique(keys, return_inverse=True)
    code = code.reshape(keys.shape)
    zero = int(np.searchsorted(uniq, 0))
    if zero < len(uniq) and uniq[zero] == 0:
        code = np.where(code == zero, 0, np.where(code < zero, code + 1, code))
    else:
        code = code + 1
    # Python ints: the test itself must not overflow. The copies' ids are int64.
    if max_id * (int(code.max()) + 1) > INT64_MAX:
        raise ValueError(
            f"the {int(code.max())} mirrored copies would need ids up to "
            f"{max_id * (int(code.max()) + 1)}, above 2**63 - 1 (largest id {max_id}): "
            "relabel the labels to small ids first (skimage.segmentation.relabel_sequential)."
        )
    return np.where(out > 0, out + code.astype(np.int64) * max_id, 0)


def remap(
    image: np.ndarray,
    labels: np.ndarray,
    coords: np.ndarray,
    *,
    mode: str = "reflect",
    cval: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample the image (bilinear) and the labels (nearest neighbour) at the same positions.

    ``out[i, j] = in[coords[0, i, j], coords[1, i, j]]``: every output pixel pulls from one
    (row, col) position of the input, the same for image and labels.

    Parameters
    ----------
    image : np.ndarray, float, (H, W) or (C, H, W)
    labels : np.ndarray, integer, (H, W)
    coords : np.ndarray, float, (2, H_out, W_out)
        Input row and column of every output pixel.
    mode : {"reflect", "constant"}
        Borders: "constant" gives the image ``cval`` and the labels 0; "reflect" mirrors both
        and gives mirrored objects new ids ``id + k * max_id`` (see the module docstring).
    cval : float
        Image value outside the input for ``mode="constant"``.

    Returns
    -------
    image : np.ndarray, float32, (H_out, W_out) or (C, H_out, W_out)
    labels : np.ndarray, int32 (int64 when an id, mirrored copies included, does not fit
        int32), (H_out, W_out)

    Introduced in notebook 04.
    """
    x, y, was_2d = check_pair(image, labels)
    mode = check_mode(mode)
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[0] != 2:
        raise ValueError(f"coords must be (2, H_out, W_out), got shape {coords.shape}")
    check_finite(coords, "coords")
    # "grid-constant" blends towards cval beyond the edge (as OpenCV does); "mirror" is the
    # reflection that does not repeat the edge pixel, the one _fold computes for the labels.
    nd_mode = "grid-constant" if mode == "constant" else "mirror"
    out = [ndi.map_coordinates(ch, coords, order=1, mode=nd_mode, cval=cval) for ch in x]
    return as_output(np.stack(out), _nearest_labels(y, coords, mode), was_2d)


def _affine_coords(shape: tuple[int, int], matrix: np.ndarray) -> np.ndarray:
    """Input (row, col) of every output pixel: ``centre + matrix @ (out - centre)``."""
    h, w = shape
    centre = np.array([[(h - 1) / 2.0], [(w - 1) / 2.0]])
    grid = np.indices((h, w), dtype=np.float64).reshape(2, -1) - centre
    return (matrix @ grid + centre).reshape(2, h, w)


def random_rotation(
    max_angle: Range = 180.0, *, mode: str = "reflect", cval: float = 0.0
) -> Augment:
    """Factory: rotate about the centre by an angle drawn from ``±max_angle`` degrees.

    Positive is counter-clockwise on screen, as in ``scipy.ndimage.rotate``. Same output size;
    ``max_angle`` may be a pair (low, high); ``mode`` and ``cval`` as in :func:`remap`.
    Returns ``augment(image, labels, rng) -> (image, labels)``.

    Introduced in notebook 04.
    """
    span, mode = parse_span(max_angle, "max_angle", "sym"), check_mode(mode)
    fn = partial(_rotate, span=span, mode=mode, cval=cval)
    return Named(fn, f"random_rotation(max_angle={max_angle!r}, mode={mode!r})")


def _rotate(image, labels, rng, *, span, mode, cval):
    # Minus: positive angles turn counter-clockwise on screen (rows point down), as in
    # scipy.ndimage.rotate, np.rot90 and torchvision.
    a = -math.radians(draw(check_rng(rng), span))
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    coords = _affine_coords(np.shape(labels)[-2:], rotation)
    return remap(image, labels, coords, mode=mode, cval=cval)


def random_affine(
    scale: Range = (0.8, 1.25), shear: Range = 0.0, *, mode: str = "reflect", cval: float = 0.0
) -> Augment:
    """Factory: zoom by ``s`` (log-uniform in ``scale``), then shear by an angle in ``±shear``.

    ``s > 1`` magnifies; a number ``scale=v`` means ``(1/v, v)``. The shear (degrees) slants
    the rows. ``mode`` and ``cval`` as in :func:`remap`. Returns an augment.

    Introduced in notebook 04.
    """
    zoom, shears = parse_span(scale, "scale", "ratio"), parse_span(shear, "shear", "sym")
    fn = partial(_affine, zoom=zoom, shears=shears, mode=check_mode(mode), cval=cval)
    return Named(fn, f"random_affine(scale={scale!r}, shear={shear!r}, mode={mode!r})")


def _affine(image, labels, rng, *, zoom, shears, mode, cval):
    rng = check_rng(rng)
    s, t = draw(rng, zoom, log=True), math.tan(math.radians(draw(rng, shears)))
    forward = np.array([[s, 0.0], [s * t, s]])  # output position = forward @ input position
    coords = _affine_coords(np.shape(labels)[-2:], np.linalg.inv(forward))
    return remap(image, labels, coords, mode=mode, cval=cval)


def elastic_displacement(
    shape: tuple[int, int], rng: np.random.Generator, *, alpha: float, sigma: float
) -> np.ndarray:
    """Smoothed random displacement field (Simard et al. 2003).

    Uniform noise in [-1, 1] per pixel and direction, smoothed by a Gaussian of width ``sigma``
    pixels (``scipy.ndimage.gaussian_filter``, border "nearest"), times ``alpha``. Its standard
    deviation is ``alpha / (sigma * sqrt(12 pi)) ~ 0.16 * alpha / sigma`` pixels (a little more
    within ``sigma`` of the border). The noise is one ``rng.uniform(-1, 1, (2, H, W))``, x
    (column) first, as ``albumentations.ElasticTransform(noise_distribution="uniform")`` draws.

    Returns
    -------
    np.ndarray, float64, (2, H, W)
        Row (y) and column (x) displacement in pixels.

    Introduced in notebook 04.
    """
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise ValueError(f"shape must be a positive (H, W), got {shape!r}")
    if not (math.isfinite(alpha) and alpha >= 0 and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"need alpha >= 0 and sigma > 0, got alpha={alpha!r}, sigma={sigma!r}")
    noise = check_rng(rng).uniform(-1.0, 1.0, size=(2, h, w))
    dx, dy = (ndi.gaussian_filter(n, sigma, mode="nearest") for n in noise)
    return alpha * np.stack([dy, dx])


def elastic_deform(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    alpha: float,
    sigma: float,
    mode: str = "reflect",
    cval: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Elastic deformation: each pixel pulls from its position plus ``elastic_displacement``.

    ``alpha`` (0 gives the identity) and ``sigma`` as in :func:`elastic_displacement`; the
    labels by nearest neighbour, ``mode`` and ``cval`` as in :func:`remap`.

    Returns
    -------
    image : np.ndarray, float32, same layout
    labels : np.ndarray, int32 (int64 when an id does not fit int32), (H, W)

    Introduced in notebook 04.
    """
    shape = np.shape(labels)
    if len(shape) != 2:
        raise ValueError(f"labels must be (H, W), got shape {shape}")
    field = elastic_displacement(shape, rng, alpha=alpha, sigma=sigma)
    coords = np.indices(shape, dtype=np.float64) + field
    return remap(image, labels, coords, mode=mode, cval=cval)


def elastic(
    alpha: float = 300.0, sigma: float = 12.0, *, mode: str = "reflect", cval: float = 0.0
) -> Augment:
    """Factory: :func:`elastic_deform` with fixed ``alpha`` and ``sigma``, as an augment.

    Introduced in notebook 04.
    """
    elastic_displacement((1, 1), np.random.default_rng(0), alpha=alpha, sigma=sigma)  # checks
    fn = partial(elastic_deform, alpha=alpha, sigma=sigma, mode=check_mode(mode), cval=cval)
    return Named(fn, f"elastic(alpha={alpha!r}, sigma={sigma!r}, mode={mode!r})")


# --- The U-Net paper's elastic deformation: a coarse grid of displacements -------------------

__all__ += ["elastic_grid", "grid_displacement"]


def grid_displacement(
    shape: tuple[int, int], rng: np.random.Generator, *, points: int = 3, sigma: float = 10.0
) -> np.ndarray:
    """Random displacements on a coarse grid, interpolated to every pixel (Ronneberger 2015).

    A ``points x points`` grid spans the image, its corner points on the corner pixels; each
    grid point draws a displacement (dy, dx) from a Gaussian of standard deviation ``sigma``
    pixels (one ``rng.normal(0, sigma, (2, points, points))``, dy first); a bicubic spline
    through the grid values (``scipy.ndimage.map_coordinates(order=3)``) gives every pixel its
    displacement. The U-Net paper used 3 points and 10 px on 572 x 572 tiles. Unlike
    :func:`elastic_displacement` (Simard et al. 2003: per-pixel noise, smoothed), the field
    bends the whole image smoothly, with no smaller scale than the grid spacing.

    Returns
    -------
    np.ndarray, float64, (2, H, W)
        Row (y) and column (x) displacement in pixels.

    Introduced in notebook 04.
    """
    h, w = (int(s) for s in shape)
    if h < 1 or w < 1:
        raise ValueError(f"shape must be a positive (H, W), got {shape!r}")
    if isinstance(points, bool) or int(points) != points or points < 2:
        raise ValueError(f"points must be an integer >= 2, got {points!r}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
    points = int(points)
    coarse = check_rng(rng).normal(0.0, sigma, size=(2, points, points))
    rows, cols = (np.linspace(0.0, points - 1.0, n) for n in (h, w))
    coords = np.stack(np.meshgrid(rows, cols, indexing="ij"))
    return np.stack([ndi.map_coordinates(c, coords, order=3, mode="mirror") for c in coarse])


def elastic_grid(
    points: int = 3, sigma: float = 10.0, *, mode: str = "reflect", cval: float = 0.0
) -> Augment:
    """Factory: the U-Net paper's elastic deformation, each pixel pulled from its position plus
    :func:`grid_displacement` (labels by nearest neighbour; ``mode``, ``cval`` as in
    :func:`remap`). ``sigma=0`` gives the identity. Returns an augment.

    Introduced in notebook 04.
    """
    grid_displacement((1, 1), np.random.default_rng(0), points=points, sigma=sigma)  # checks
    fn = partial(_grid_elastic, points=int(points), sigma=sigma, mode=check_mode(mode), cval=cval)
    return Named(fn, f"elastic_grid(points={points!r}, sigma={sigma!r}, mode={mode!r})")


def _grid_elastic(image, labels, rng, *, points, sigma, mode, cval):
    shape = np.shape(labels)
    if len(shape) != 2:
        raise ValueError(f"labels must be (H, W), got shape {shape}")
    field = grid_displacement(shape, rng, points=points, sigma=sigma)
    coords = np.indices(shape, dtype=np.float64) + field
    return remap(image, labels, coords, mode=mode, cval=cval)
