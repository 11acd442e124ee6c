"""Synthetic microscopy images with exact instance labels: the default that needs no network.

``synthetic_nuclei`` imitates a fluorescence nuclear stain (Hoechst/DAPI): elliptical, slightly
irregular nuclei, many of them touching in clusters, varying in size and brightness, blurred by
the optics, on an uneven background, with Poisson (photon) plus Gaussian (read-out) noise.
``synthetic_cells`` adds a cytoplasm channel and labels whole cells, like the two-channel
(cytoplasm + nucleus) images that cell segmentation models take.

Both are deterministic for a given ``seed`` and take well under a second for 256 x 256.

Introduced in notebook 00.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from .._shared.validate import check_int, check_real

__all__ = ["synthetic_cells", "synthetic_nuclei"]

# Benchmarks rely on these densities: 512 x 512 -> ~150 nuclei, 1024 x 1024 -> ~600.
_NUCLEI_PER_PIXEL = 150 / 512**2
_CELLS_PER_PIXEL = 30 / 256**2

_NUCLEI_DEFAULTS: dict[str, Any] = {
    "radius": (6.0, 11.0),  # mean radius range in pixels (BBBC039 nuclei are ~8-15 px)
    "elongation": (1.0, 1.7),  # ratio of the long to the short axis
    "irregularity": 0.08,  # amplitude of the low-order wobble of the outline
    "touching": 0.6,  # probability that a nucleus is placed against an existing one
    "brightness": (0.3, 0.8),  # per-nucleus mean intensity range
    "blur": 1.2,  # Gaussian PSF sigma in pixels
    "peak": 300.0,  # photons at intensity 1 (Poisson noise); None disables
    "read_noise": 0.01,  # Gaussian read-out noise sigma
    "background": 0.08,  # mean background level
    "background_variation": 0.5,  # relative amplitude of the uneven illumination
    "min_area": 12,  # smaller label fragments (cut at the border, covered) are dropped
}


def _n_default(shape: tuple[int, int], per_pixel: float) -> int:
    return max(1, int(round(per_pixel * shape[0] * shape[1])))


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (H, W) of ints, got {shape!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"shape must be at least (8, 8), got {(h, w)}")
    return h, w


def _check_count(n: int | None, name: str, default: int) -> int:
    if n is None:
        return default
    return check_int(n, name, minimum=0)


def _place(
    rng: np.random.Generator,
    shape: tuple[int, int],
    radii: np.ndarray,
    touching: float,
    gap: tuple[float, float],
    min_sep: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Centres (m, 2) and radii (m,) of the m <= n objects that found room.

    Objects are placed one by one; clusters grow by attaching new objects to earlier ones.
    """
    centres = np.empty((len(radii), 2))
    kept = np.empty(len(radii))
    placed = 0
    hi = np.array(shape, dtype=float) - 1
    for r in radii:
        for _ in range(60):
            if placed and rng.random() < touching:
                j = rng.integers(placed)
                angle = rng.uniform(0, 2 * np.pi)
                # Closer than the sum of radii so the outlines overlap and the objects touch.
                dist = (r + kept[j]) * rng.uniform(*gap)
                c = centres[j] + dist * np.array([np.sin(angle), np.cos(angle)])
                if np.any(c < 0) or np.any(c > hi):
                    continue
            else:
                c = rng.uniform(0, hi)
            d = np.hypot(*(centres[:placed] - c).T)
            if np.all(d >= min_sep * (kept[:placed] + r)):
                kept[placed], centres[placed] = r, c
                placed += 1
                break
    return centres[:placed], kept[:placed]


def _outline_params(
    rng: np.random.Generator, radii: np.ndarray, elongation: tuple[float, float], irregular: float
) -> dict[str, np.ndarray]:
    n = len(radii)
    ratio = np.sqrt(rng.uniform(*elongation, size=n))
    amp = irregular * rng.uniform(0, 1, size=(n, 3)) / np.array([1.0, 1.5, 2.0])
    # Semi-axes a = r*sqrt(e), b = r/sqrt(e) keep the area close to pi r^2.
    return {
        "a": radii * ratio,
        "b": radii / ratio,
        "phi": rng.uniform(0, np.pi, size=n),
        "amp": amp,
        "phase": rng.uniform(0, 2 * np.pi, size=(n, 3)),
    }


def _paint(
    shape: tuple[int, int],
    centres: np.ndarray,
    p: dict[str, np.ndarray],
    within: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise star-convex outlines into labels 1..n and a normalised radius map.

    A pixel inside several outlines goes to the object whose outline it is deepest inside
    (smallest r / r_boundary), so overlaps become a shared boundary and the result does not
    depend on the drawing order. With ``within``, object i may only cover ``within == i + 1``.
    """
    labels = np.zeros(shape, dtype=np.int32)
    rho = np.full(shape, np.inf, dtype=np.float32)
    k = np.arange(2, 5)
    for i, (cy, cx) in enumerate(centres):
        a, b, phi = p["a"][i], p["b"][i], p["phi"][i]
        reach = a * (1 + p["amp"][i].sum()) + 1
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, shape[0])
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1)[:, None] - cy
        dx = np.arange(x0, x1)[None, :] - cx
        theta = np.arctan2(dy, dx)
        t = theta - phi
        r_edge = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
        wobble = 1 + np.tensordot(np.cos(theta[..., None] * k + p["phase"][i]), p["amp"][i], 1)
        r = (np.hypot(dy, dx) / (r_edge * wobble)).astype(np.float32)
        best = rho[y0:y1, x0:x1]
        take = (r < 1) & (r < best)
        if within is not None:
            take &= within[y0:y1, x0:x1] == i + 1
        best[take] = r[take]
        labels[y0:y1, x0:x1][take] = i + 1
    return labels, rho


def _clean(labels: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the largest 4-connected piece of each label, drop tiny ones, relabel 1..N.

    Returns the new labels and, for each new id, the old id (so per-object properties follow).
    """
    for old, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        mask = labels[sl] == old
        pieces, n = ndimage.label(mask)  # default structure = 4-connectivity in 2D
        if n > 1:
            largest = 1 + np.argmax(np.bincount(pieces.ravel())[1:])
            labels[sl][mask & (pieces != largest)] = 0
    area = np.bincount(labels.ravel(), minlength=1)
    kept = np.flatnonzero(area >= max(min_area, 1))
    kept = kept[kept > 0]
    lut = np.zeros(len(area), dtype=np.int32)
    lut[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    return lut[labels], kept


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-12)


def _background(rng: np.random.Generator, shape: tuple[int, int], level: float, var: float):
    """Uneven illumination: a tilted plane plus a few broad bumps, mean ``level``."""
    coarse = rng.standard_normal((4, 4))
    bumps = ndimage.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=3, mode="nearest")
    bumps = bumps[: shape[0], : shape[1]]
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    tilt = rng.uniform(-1, 1) * yy / shape[0] + rng.uniform(-1, 1) * xx / shape[1]
    field = 0.5 * bumps / (np.abs(bumps).max() + 1e-12) + 0.5 * (tilt - tilt.mean())
    return level * (1 + var * field)


def _acquire(rng: np.random.Generator, signal: np.ndarray, o: dict[str, Any]) -> np.ndarray:
    """Optics and camera: PSF blur, uneven background, Poisson-Gaussian noise."""
    img = ndimage.gaussian_filter(signal, o["blur"]) if o["blur"] else signal
    img = img + _background(rng, img.shape, o["background"], o["background_variation"])
    img = np.clip(img, 0, None)
    if o["peak"]:
        img = rng.poisson(img * o["peak"]) / o["peak"]
    img = img + rng.normal(0, o["read_noise"], img.shape)
    return img.astype(np.float32)


def _options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(_NUCLEI_DEFAULTS)
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)}; valid options: {sorted(_NUCLEI_DEFAULTS)}"
        )
    return {**_NUCLEI_DEFAULTS, **options}


def synthetic_nuclei(
    shape: tuple[int, int] = (256, 256),
    n_nuclei: int | None = None,
    seed: int = 0,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like image of touching nuclei and its exact instance labels.

    Parameters
    ----------
    shape : (int, int)
        Image size (H, W), at least (8, 8).
    n_nuclei : int, optional
        Number of nuclei to place. Default scales with the area: ~37 for 256 x 256, 150 for
        512 x 512, 600 for 1024 x 1024. A few may be dropped when there is no room or when
        others cover them, so the label count can be slightly lower.
    seed : int
        Seed of the random generator; the same seed gives the same arrays.
    **options
        Override the defaults: ``radius`` (min, max) in px, ``elongation`` (min, max) axis
        ratio, ``irregularity``, ``touching`` (probability of attaching to a placed nucleus),
        ``brightness`` (min, max), ``blur`` (PSF sigma px), ``peak`` (photons at intensity 1,
        None for no Poisson noise), ``read_noise``, ``background``, ``background_variation``,
        ``min_area``.

    Returns
    -------
    image : np.ndarray, float32, shape (H, W)
        Roughly in [0, 1] (noise can stray slightly outside).
    labels : np.ndarray, int32, shape (H, W)
        0 = background, nuclei 1..N consecutive; each label is one 4-connected region and
        touching nuclei have different labels.

    Examples
    --------
    >>> image, labels = synthetic_nuclei((128, 128), seed=1)
    >>> image.dtype, labels.dtype, image.shape
    (dtype('float32'), dtype('int32'), (128, 128))

    Introduced in notebook 00.
    """
    shape = _check_shape(shape)
    n = _check_count(n_nuclei, "n_nuclei", _n_default(shape, _NUCLEI_PER_PIXEL))
    o = _options(options)
    rng = np.random.default_rng(seed)
    radii = rng.uniform(*o["radius"], size=n)
    centres, radii = _place(rng, shape, radii, o["touching"], gap=(0.75, 0.95), min_sep=0.65)
    p = _outline_params(rng, radii, o["elongation"], o["irregularity"])
    labels, rho = _paint(shape, centres, p)
    labels, kept = _clean(labels, o["min_area"])

    brightness = np.zeros(len(kept) + 1)
    brightness[1:] = rng.uniform(*o["brightness"], size=len(kept))
    # Dome profile (brighter centre) with a chromatin-like texture inside each nucleus.
    dome = np.where(labels > 0, 1 - 0.35 * np.minimum(rho, 1) ** 2, 0)
    texture = 1 + 0.12 * _smooth_noise(rng, shape, 1.5)
    signal = brightness[labels] * dome * texture
    return _acquire(rng, signal, o), labels


def synthetic_cells(
    shape: tuple[int, int] = (256, 256),
    n_cells: int | None = None,
    seed: int = 0,
    *,
    touching: float = 0.75,
    cell_contrast: float = 1.0,
    return_nuclei: bool = False,
) -> tuple[np.ndarray, ...]:
    """A two-channel (cytoplasm, nucleus) image of touching cells and whole-cell labels.

    Parameters
    ----------
    shape : (int, int)
        Image size (H, W), at least (8, 8).
    n_cells : int, optional
        Number of cells to place; default scales with the area (~30 for 256 x 256). A few may
        be dropped when there is no room.
    seed : int
        Seed of the random generator; the same seed gives the same arrays.
    touching : float
        Probability in [0, 1] that a cell is placed against one already placed (0.75; near 1
        packs the cells into large clusters, as in a confluent culture).
    cell_contrast : float
        How much the cytoplasm channel tells one cell from its neighbour, in [0, 1]. At 1 (the
        default) each cell has its own stain level, is brighter towards its body and darker
        over its nucleus; at 0 the cytoplasm channel is one even stain over all cells (texture
        and noise only): it shows where cells are, and only the nuclear channel shows where
        one cell ends and the next begins.
    return_nuclei : bool
        Also return the nuclear labels.

    Returns
    -------
    image : np.ndarray, float32, shape (2, H, W)
        Channel 0 the cytoplasm stain, channel 1 the nuclear stain, roughly in [0, 1].
    labels : np.ndarray, int32, shape (H, W)
        Whole-cell instance labels, 0 = background, 1..N consecutive, each one 4-connected
        region. Nuclei lie inside their cells (a cell cut by the image border may lose it).
    nuclei : np.ndarray, int32, shape (H, W)
        Only with ``return_nuclei``: each nucleus carries the id of its cell (a cell may have
        none), 0 elsewhere.

    Introduced in notebook 00.
    """
    shape = _check_shape(shape)
    n = _check_count(n_cells, "n_cells", _n_default(shape, _CELLS_PER_PIXEL))
    touching = check_real(touching, "touching", minimum=0.0, maximum=1.0)
    contrast = check_real(cell_contrast, "cell_contrast", minimum=0.0, maximum=1.0)
    o = _options({"blur": 1.0})
    rng = np.random.default_rng(seed)
    radii = rng.uniform(11.0, 19.0, size=n)
    centres, radii = _place(rng, shape, radii, touching=touching, gap=(0.8, 1.0), min_sep=0.75)
    cells, rho_cell = _paint(shape, centres, _outline_params(rng, radii, (1.0, 1.8), 0.18))
    labels, kept = _clean(cells, min_area=40)

    # Nuclei: smaller ellipses near each kept cell's centre, clipped to their own cell.
    idx = kept - 1
    offset = rng.uniform(-0.15, 0.15, size=(len(idx), 2)) * radii[idx, None]
    nuc_r = radii[idx] * rng.uniform(0.38, 0.5, size=len(idx))
    nuc_p = _outline_params(rng, nuc_r, (1.0, 1.4), 0.05)
    nuclei, rho_nuc = _paint(shape, centres[idx] + offset, nuc_p, within=labels)

    n_kept = len(kept)
    # With contrast 1 these are exactly the original levels and profile (same arrays).
    cyto_level = np.r_[0, (1 - contrast) * 0.5 + contrast * rng.uniform(0.3, 0.7, size=n_kept)]
    nuc_level = np.r_[0, rng.uniform(0.4, 0.95, size=n_kept)]
    inside = labels > 0
    # Cytoplasm: brighter towards the cell body, dimmer where the nucleus excludes the stain.
    low = 1 - 0.4 * contrast
    body = np.where(inside, low + 0.4 * contrast * (1 - np.minimum(rho_cell, 1)), 0)
    cyto = cyto_level[labels] * body * (1 + 0.2 * _smooth_noise(rng, shape, 2.0))
    cyto = np.where(nuclei > 0, (1 - 0.45 * contrast) * cyto, cyto)
    dome = np.where(nuclei > 0, 1 - 0.3 * np.minimum(rho_nuc, 1) ** 2, 0)
    nuc = nuc_level[nuclei] * dome * (1 + 0.1 * _smooth_noise(rng, shape, 1.5))
    image = np.stack([_acquire(rng, cyto, o), _acquire(rng, nuc, o)])
    return (image, labels, nuclei) if return_nuclei else (image, labels)
