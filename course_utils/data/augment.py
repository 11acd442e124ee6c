"""Augmentations that move an image and its instance labels together.

Every augmentation has the signature that ``PatchDataset(..., augment=...)`` takes::

    augment(image, labels, rng) -> (image, labels)

``image`` float ``(H, W)`` or ``(C, H, W)`` (returned float32 in the same layout), ``labels``
integer ``(H, W)`` (returned int32), ``rng`` a ``numpy.random.Generator``, the only source of
randomness. The factories (``random_rotation(max_angle=30)``, ...) return such callables and
``compose`` chains them. Three rules keep the labels right:

- a geometric transform computes one sampling grid and applies it to both arrays (``remap``);
- labels are resampled by nearest neighbour only, since interpolated ids are invented ids;
- intensity transforms (``intensity``, ``gaussian_noise``, ``gaussian_blur``) leave labels alone.

Borders (``mode``): ``"constant"`` fills the image with ``cval`` and the labels with 0
(background). ``"reflect"`` mirrors both about the edge pixel (numpy's ``"reflect"``, scipy's
``"mirror"``). A mirrored nucleus is another object, so each mirrored copy of the image gets its
own ids ``id + k * max_id`` (``k >= 1`` numbers the copies, as ``PatchDataset`` does when it
pads); ``(new_id - 1) % max_id + 1`` is the original id.

Introduced in notebook 04.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._shared.validate import check_image, check_labels

__all__ = [
    "compose",
    "elastic",
    "elastic_deform",
    "elastic_displacement",
    "flip_rot90",
    "gaussian_blur",
    "gaussian_noise",
    "intensity",
    "random_affine",
    "random_rotation",
    "remap",
]

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
Range = float | Sequence[float]
_MODES = ("reflect", "constant")


def _check_pair(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Image as float32 (C, H, W), labels as an integer array, and whether the image was 2-D."""
    x = check_image(image)
    y = check_labels(labels, "labels", allow_bool=True)
    if y.shape != x.shape[-2:]:
        raise ValueError(f"labels have shape {y.shape}, expected the image's (H, W) {x.shape[-2:]}")
    return np.asarray(x if x.ndim == 3 else x[None], np.float32), y, x.ndim == 2


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    return mode


def _span(value: Any, name: str, kind: str) -> tuple[float, float]:
    """Parse a range. A number ``v`` means ``(-v, v)`` for kind "sym", ``(1/v, v)`` for
    "ratio" and ``(v, v)`` for "fixed"; a pair (low, high) is taken as it is."""
    if np.ndim(value) == 0:
        v = float(value)
        if not math.isfinite(v) or v < (1.0 if kind == "ratio" else 0.0):
            raise ValueError(f"{name} must be {'>= 1' if kind == 'ratio' else '>= 0'}: {value!r}")
        return (-v, v) if kind == "sym" else (1.0 / v, v) if kind == "ratio" else (v, v)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number or a pair (low, high), got {value!r}") from err
    positive = {"sym": -math.inf, "ratio": 1e-12, "fixed": 0.0}[kind]
    if not (math.isfinite(lo) and math.isfinite(hi) and positive <= lo <= hi):
        raise ValueError(f"{name} must be a finite range low <= high (low >= 0 for widths and "
                         f"> 0 for ratios), got {value!r}")  # fmt: skip
    return lo, hi


def _draw(rng: np.random.Generator, span: tuple[float, float], *, log: bool = False) -> float:
    lo, hi = span
    if log:  # zooming in by 2 is then as likely as zooming out by 2
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


class _Named:
    """An augmentation that prints as the call that made it; picklable, so that DataLoader
    workers started with "spawn" (macOS, Windows) can receive it."""

    def __init__(self, fn: Augment, text: str) -> None:
        self.fn, self.text = fn, text

    def __call__(self, image, labels, rng):
        return self.fn(image, labels, rng)

    def __repr__(self) -> str:
        return self.text


def _out(x: np.ndarray, y: np.ndarray, was_2d: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return (x[0] if was_2d else x), np.ascontiguousarray(y, dtype=np.int32)


def flip_rot90(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries of the square: ``k`` quarter turns, then maybe a left-right flip.

    Exact (no resampling, ids unchanged). A non-square input comes back with H and W swapped
    after an odd ``k``.

    Parameters
    ----------
    image : np.ndarray, float, (H, W) or (C, H, W)
    labels : np.ndarray, integer, (H, W)
    rng : np.random.Generator
        Draws ``k = rng.integers(4)``, then ``flip = rng.integers(2)``.

    Returns
    -------
    image : np.ndarray, float32, same layout
    labels : np.ndarray, int32

    Introduced in notebook 04.
    """
    x, y, was_2d = _check_pair(image, labels)
    rng = _check_rng(rng)
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k)
    if flip:
        x, y = x[..., ::-1], y[:, ::-1]
    return _out(x, y, was_2d)


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
    if max_id * (int(code.max()) + 1) > np.iinfo(np.int32).max:
        raise ValueError("too many mirrored copies for int32 ids; use mode='constant'")
    return np.where(out > 0, out + code * max_id, 0)


def remap(
    image: np.ndarray, labels: np.ndarray, coords: np.ndarray, *, mode: str = "reflect",
    cval: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
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
    labels : np.ndarray, int32, (H_out, W_out)

    Introduced in notebook 04.
    """
    x, y, was_2d = _check_pair(image, labels)
    mode = _check_mode(mode)
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 3 or coords.shape[0] != 2:
        raise ValueError(f"coords must be (2, H_out, W_out), got shape {coords.shape}")
    if not np.isfinite(coords).all():
        raise ValueError("coords must be finite")
    # "grid-constant" blends towards cval beyond the edge (as OpenCV does); "mirror" is the
    # reflection that does not repeat the edge pixel, the one _fold computes for the labels.
    nd_mode = "grid-constant" if mode == "constant" else "mirror"
    out = [ndi.map_coordinates(ch, coords, order=1, mode=nd_mode, cval=cval) for ch in x]
    return _out(np.stack(out), _nearest_labels(y, coords, mode), was_2d)


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
    span, mode = _span(max_angle, "max_angle", "sym"), _check_mode(mode)
    fn = partial(_rotate, span=span, mode=mode, cval=cval)
    return _Named(fn, f"random_rotation(max_angle={max_angle!r}, mode={mode!r})")


def _rotate(image, labels, rng, *, span, mode, cval):
    # Minus: positive angles turn counter-clockwise on screen (rows point down), as in
    # scipy.ndimage.rotate, np.rot90 and torchvision.
    a = -math.radians(_draw(_check_rng(rng), span))
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
    zoom, shears = _span(scale, "scale", "ratio"), _span(shear, "shear", "sym")
    fn = partial(_affine, zoom=zoom, shears=shears, mode=_check_mode(mode), cval=cval)
    return _Named(fn, f"random_affine(scale={scale!r}, shear={shear!r}, mode={mode!r})")


def _affine(image, labels, rng, *, zoom, shears, mode, cval):
    rng = _check_rng(rng)
    s, t = _draw(rng, zoom, log=True), math.tan(math.radians(_draw(rng, shears)))
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
    noise = _check_rng(rng).uniform(-1.0, 1.0, size=(2, h, w))
    dx, dy = (ndi.gaussian_filter(n, sigma, mode="nearest") for n in noise)
    return alpha * np.stack([dy, dx])


def elastic_deform(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *, alpha: float,
    sigma: float, mode: str = "reflect", cval: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Elastic deformation: each pixel pulls from its position plus ``elastic_displacement``.

    ``alpha`` (0 gives the identity) and ``sigma`` as in :func:`elastic_displacement`; the
    labels by nearest neighbour, ``mode`` and ``cval`` as in :func:`remap`.

    Returns
    -------
    image : np.ndarray, float32, same layout
    labels : np.ndarray, int32, (H, W)

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
    fn = partial(elastic_deform, alpha=alpha, sigma=sigma, mode=_check_mode(mode), cval=cval)
    return _Named(fn, f"elastic(alpha={alpha!r}, sigma={sigma!r}, mode={mode!r})")


def intensity(brightness: Range = 0.1, contrast: Range = 0.2, gamma: Range = 1.25) -> Augment:
    """Factory: gamma, then contrast about the mean, then a brightness offset; labels untouched.

    ``x -> lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g`` with each channel's min ``lo`` and
    max ``hi`` (defined for normalised images that dip below 0), then
    ``(x - mean) * c + mean + b``. Numbers mean ``b`` in ``±brightness``, ``c`` in
    ``1 ± contrast``, ``g`` log-uniform in ``(1/gamma, gamma)``; pairs give the ranges of
    ``b``, ``c`` and ``g`` directly. One draw per call for all channels.

    Introduced in notebook 04.
    """
    b_span, g_span = _span(brightness, "brightness", "sym"), _span(gamma, "gamma", "ratio")
    c_span = _span(contrast, "contrast", "sym")
    c_span = (1.0 + c_span[0], 1.0 + c_span[1]) if np.ndim(contrast) == 0 else c_span
    if c_span[0] <= 0:
        raise ValueError(f"contrast must keep the factor above 0, got {contrast!r}")
    text = f"intensity(brightness={brightness!r}, contrast={contrast!r}, gamma={gamma!r})"
    return _Named(partial(_intensity, spans=(g_span, c_span, b_span)), text)


def _intensity(image, labels, rng, *, spans):
    x, y, was_2d = _check_pair(image, labels)
    rng = _check_rng(rng)
    g, c, b = _draw(rng, spans[0], log=True), _draw(rng, spans[1]), _draw(rng, spans[2])
    lo = x.min(axis=(-2, -1), keepdims=True)
    width = x.max(axis=(-2, -1), keepdims=True) - lo
    width = np.where(width > 0, width, 1.0)
    x = lo + width * ((x - lo) / width) ** g
    mean = x.mean(axis=(-2, -1), keepdims=True)
    return _out((x - mean) * c + mean + b, y, was_2d)


def gaussian_noise(sigma: Range = 0.05) -> Augment:
    """Factory: add Gaussian noise of standard deviation ``sigma`` (a pair: drawn uniformly).

    Introduced in notebook 04.
    """
    fn = partial(_noise, span=_span(sigma, "sigma", "fixed"))
    return _Named(fn, f"gaussian_noise(sigma={sigma!r})")


def _noise(image, labels, rng, *, span):
    x, y, was_2d = _check_pair(image, labels)
    rng = _check_rng(rng)
    std = _draw(rng, span)
    return _out(x + rng.normal(0.0, std, size=x.shape), y, was_2d)


def gaussian_blur(sigma: Range = (0.0, 1.0)) -> Augment:
    """Factory: blur every channel by a Gaussian of width ``sigma`` pixels (a pair: drawn).

    Introduced in notebook 04.
    """
    fn = partial(_blur, span=_span(sigma, "sigma", "fixed"))
    return _Named(fn, f"gaussian_blur(sigma={sigma!r})")


def _blur(image, labels, rng, *, span):
    x, y, was_2d = _check_pair(image, labels)
    s = _draw(_check_rng(rng), span)
    return _out(ndi.gaussian_filter(x, (0.0, s, s), mode="mirror"), y, was_2d)


def compose(*augments: Augment, p: float | Sequence[float] = 1.0) -> Augment:
    """Chain augmentations; each runs with probability ``p`` (one number, or one per augment).

    For each augment in turn one ``rng.random()`` decides whether it runs, so the same
    generator state gives the same result. Returns an augment.

    Introduced in notebook 04.
    """
    if not augments:
        raise ValueError("compose needs at least one augmentation")
    for k, aug in enumerate(augments):
        if not callable(aug):
            raise TypeError(f"augmentation {k} is not callable: {aug!r}")
    probs = [float(p)] * len(augments) if np.ndim(p) == 0 else [float(q) for q in p]
    if len(probs) != len(augments):
        raise ValueError(f"got {len(probs)} probabilities for {len(augments)} augmentations")
    if not all(0.0 <= q <= 1.0 for q in probs):
        raise ValueError(f"probabilities must be in [0, 1], got {p!r}")
    names = ", ".join(a.__name__ if hasattr(a, "__name__") else repr(a) for a in augments)
    return _Named(partial(_chain, steps=tuple(zip(augments, probs))), f"compose({names}, p={p!r})")


def _chain(image, labels, rng, *, steps):
    rng = _check_rng(rng)
    for aug, q in steps:
        if rng.random() < q:
            image, labels = aug(image, labels, rng)
    return image, labels
