"""Volumes: synthetic 3-D nuclei with an anisotropic voxel, and the GoNuclear crops.

A confocal or light-sheet stack is a (Z, Y, X) array whose z step is usually 2-5 times the
in-plane pixel: the *anisotropy*. ``synthetic_nuclei_3d`` imitates such a stack of a nuclear
stain (touching ellipsoids, a point-spread function longer along z than in-plane, Poisson and
read-out noise), with exact labels, so that 3-D networks can be trained on a CPU without any
file. ``read_h5_volume`` reads an HDF5 volume with its voxel size; ``load_volumes`` returns the
registered GoNuclear crops (Vijayan 2024: Arabidopsis ovule nuclei, voxel 0.28 x 0.127 x 0.127
um, anisotropy 2.2) or synthetic volumes with the same interface.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from .._shared.validate import check_int, check_real
from .registry import DataUnavailableError, fetch, split_names

__all__ = ["load_volumes", "read_h5_volume", "synthetic_nuclei_3d"]

#: What ``synthetic_nuclei_3d`` imitates: GoNuclear's nuclei are about 30 px across in-plane
#: and 14-18 planes deep at an anisotropy of 2.2; its background is a third of the nuclei.
_DEFAULTS: dict[str, Any] = {
    "radius": (11.0, 17.0),  # in-plane radius range, pixels
    "elongation": (1.0, 1.4),  # long / short axis of each ellipsoid
    "touching": 0.7,  # probability that a nucleus is placed against an earlier one
    "brightness": (0.5, 1.0),
    "texture": 0.25,  # relative amplitude of the chromatin texture inside a nucleus
    "psf": (2.4, 0.8),  # Gaussian PSF sigma (z, in-plane) in in-plane pixels: z is longer
    "background": 0.3,
    "peak": 40.0,  # photons at intensity 1: low light, as in the GoNuclear crops
    "read_noise": 0.03,
    "min_voxels": 60,
}


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random rotation matrices (n, 3, 3) from normalised Gaussian quaternions."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    ).transpose(2, 0, 1)


def _place(rng, extent: np.ndarray, radii: np.ndarray, touching: float) -> np.ndarray:
    """Centres (physical units of in-plane pixels) of the nuclei that found room, NaN if none."""
    centres = np.full((len(radii), 3), np.nan)
    for i, r in enumerate(radii):
        placed = np.flatnonzero(~np.isnan(centres[:, 0]))
        for _ in range(80):
            if len(placed) and rng.random() < touching:
                j = rng.choice(placed)
                v = rng.standard_normal(3)
                c = centres[j] + (r + radii[j]) * rng.uniform(0.8, 0.95) * v / np.linalg.norm(v)
            else:
                c = rng.uniform(0, 1, 3) * extent
            gap = np.linalg.norm(centres[placed] - c, axis=1)
            if np.all(gap >= 0.8 * (radii[placed] + r)):
                centres[i] = c
                break
    return centres


def _paint(shape, anisotropy: float, centres, axes, rotations) -> np.ndarray:
    """Labels: a voxel goes to the ellipsoid it is deepest inside (touching nuclei share a face)."""
    labels = np.zeros(shape, np.int32)
    depth = np.full(shape, np.inf, np.float32)
    for i in np.flatnonzero(~np.isnan(centres[:, 0])):
        reach = axes[i].max() + 1
        lo = np.floor((centres[i] - reach) / [anisotropy, 1, 1]).astype(int).clip(0)
        hi = np.ceil((centres[i] + reach) / [anisotropy, 1, 1]).astype(int) + 1
        hi = np.minimum(hi, shape)
        if np.any(lo >= hi):
            continue
        grid = np.stack(
            np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1
        )
        offset = grid * np.array([anisotropy, 1.0, 1.0]) - centres[i]  # physical, pixels
        local = offset @ rotations[i]  # coordinates along the ellipsoid's own axes
        rho = np.sqrt(((local / axes[i]) ** 2).sum(-1)).astype(np.float32)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        take = (rho < 1) & (rho < depth[box])
        depth[box][take] = rho[take]
        labels[box][take] = i + 1
    return labels


def _relabel(labels: np.ndarray, min_voxels: int) -> np.ndarray:
    """Ids 1..N in order, objects smaller than ``min_voxels`` (cut by the border) dropped."""
    size = np.bincount(labels.ravel())
    keep = np.flatnonzero(size >= min_voxels)
    keep = keep[keep > 0]
    lut = np.zeros(len(size), np.int32)
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[labels]


def _acquire(rng, labels: np.ndarray, anisotropy: float, o: dict[str, Any]) -> np.ndarray:
    """Stain, optics and camera: texture, anisotropic blur, background, Poisson-Gaussian noise."""
    n = int(labels.max())
    bright = np.concatenate([[0.0], rng.uniform(*o["brightness"], n)])
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape), (0.7, 1.5, 1.5))
    texture /= texture.std() + 1e-12
    signal = bright[labels] * (1 + o["texture"] * texture) * (labels > 0)
    sigma_z, sigma_xy = o["psf"]
    img = ndimage.gaussian_filter(signal, (sigma_z / anisotropy, sigma_xy, sigma_xy))  # voxels
    img = np.clip(img + o["background"], 0, None)
    if o["peak"]:
        img = rng.poisson(img * o["peak"]) / o["peak"]
    img = img + rng.normal(0, o["read_noise"], img.shape)
    return img.astype(np.float32)


def synthetic_nuclei_3d(
    shape: tuple[int, int, int] = (40, 96, 96),
    *,
    anisotropy: float = 2.2,
    n: int | None = None,
    seed: int = 0,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic anisotropic stack of touching nuclei with exact labels.

    Nuclei are randomly oriented ellipsoids in physical space, placed so that most touch an
    earlier one; the stack samples them every ``anisotropy`` pixels along z, so that a
    nucleus of 25 px in-plane spans about 11 planes at anisotropy 2.2. The point-spread
    function is longer along z than in-plane (``psf``), as in a confocal microscope.

    Parameters
    ----------
    shape : (Z, Y, X) ints
        Size of the stack in voxels, each at least 8.
    anisotropy : float
        z step / in-plane pixel size, at least 1 (1 = isotropic voxels).
    n : int, optional
        Number of nuclei to try to place (default: as many as would fill 45 % of the stack's
        physical volume at the mean radius, so that it is crowded like GoNuclear's crops; those
        that find no room are left out).
    seed : int
        Seed of the random generator: the same seed gives the same stack.
    **options
        Overrides of the defaults: ``radius`` (in-plane pixels, a range), ``elongation``,
        ``touching``, ``brightness``, ``texture``, ``psf`` ((z, in-plane) sigma in in-plane
        pixels), ``background``, ``peak`` (photons at intensity 1; None for no shot noise),
        ``read_noise``, ``min_voxels``.

    Returns
    -------
    image : np.ndarray, float32, shape (Z, Y, X)
    labels : np.ndarray, int32, shape (Z, Y, X)
        0 = background, nuclei 1..N.
    """
    zyx = _check_shape(shape)
    anisotropy = check_real(anisotropy, "anisotropy", minimum=1.0)
    unknown = set(options) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; choose from {sorted(_DEFAULTS)}")
    o = {**_DEFAULTS, **options}
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    extent = np.array(zyx, float) * [anisotropy, 1, 1]  # physical size, in-plane pixels
    mean_r = float(np.mean(o["radius"]))
    default_n = int(round(0.45 * np.prod(extent) / (4 / 3 * np.pi * mean_r**3))) + 1
    count = default_n if n is None else check_int(n, "n", minimum=0)
    radii = rng.uniform(*o["radius"], count)
    stretch = np.sqrt(rng.uniform(*o["elongation"], count))
    axes = np.stack([radii * stretch, radii / np.sqrt(stretch), radii / np.sqrt(stretch)], 1)
    centres = _place(rng, extent, radii, float(o["touching"]))
    labels = _paint(zyx, anisotropy, centres, axes, _random_rotations(rng, count))
    labels = _relabel(labels, int(o["min_voxels"]))
    return _acquire(rng, labels, anisotropy, o), labels


def _check_shape(shape: Any) -> tuple[int, int, int]:
    try:
        zyx = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (Z, Y, X) ints, got {shape!r}") from None
    if len(zyx) != 3 or min(zyx) < 8:
        raise ValueError(f"shape must be (Z, Y, X), each at least 8, got {shape!r}")
    return zyx  # type: ignore[return-value]


def read_h5_volume(
    path: str | Path, raw: str = "raw", label: str | None = "label"
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float] | None]:
    """Read a (Z, Y, X) volume, its labels and its voxel size from an HDF5 file.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` file.
    raw, label : str
        Dataset names of the image and of the instance labels (``label=None``: no labels).

    Returns
    -------
    image : np.ndarray, shape (Z, Y, X), as stored
    labels : np.ndarray, int32, shape (Z, Y, X), or None
    voxel_size : (z, y, x) floats in um from the ``element_size_um`` attribute, or None

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, missing dataset (the message lists those present), not 3-D, labels of
        another shape, float or negative labels.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no HDF5 file at {path}")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file ({err})") from None
    with handle:
        names = [k for k in (raw, label) if k is not None]
        missing = [k for k in names if k not in handle]
        if missing:
            raise ValueError(f"{path} has no dataset {missing}; it holds {sorted(handle)}")
        image = handle[raw][()]
        voxel = handle[raw].attrs.get("element_size_um")
        labels = None if label is None else handle[label][()]
    if image.ndim != 3:
        raise ValueError(f"{path}:{raw} must be a (Z, Y, X) volume, got shape {image.shape}")
    if labels is not None:
        if labels.shape != image.shape:
            raise ValueError(f"{path}: labels {labels.shape} and image {image.shape} differ")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError(f"{path}:{label} must hold integer ids >= 0, got {labels.dtype}")
        labels = labels.astype(np.int32)
    if voxel is not None:
        voxel = tuple(float(v) for v in np.ravel(voxel))
        if len(voxel) != 3 or min(voxel) <= 0:
            raise ValueError(f"{path}: element_size_um must be 3 positive sizes, got {voxel}")
    return image, labels, voxel


def load_volumes(
    name: str, split: str, *, normalize: bool = True, download: bool | None = None
) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[float, float, float]]]:
    """The volumes of one split, their labels and voxel sizes (z, y, x) in um.

    Parameters
    ----------
    name : {"go_nuclear", "synthetic3d"}
        ``"go_nuclear"``: two 100^3 crops of Arabidopsis ovule nuclei (Vijayan 2024), ``train``
        = crop 1136 (32 nuclei, to fine-tune on), ``test`` = crop 1135 (54 nuclei).
        ``"synthetic3d"``: ``synthetic_nuclei_3d`` stacks (40 x 96 x 96, anisotropy 2.2,
        voxel 0.28 x 0.127 x 0.127 like GoNuclear): train 8, val 2, test 2, seeded by split.
    split : {"train", "val", "test"}
    normalize : bool
        Map the 1st and 99.8th percentiles of each volume to 0 and 1 (float32).
    download : bool, optional
        Passed to ``fetch``.

    Introduced in notebook 11.
    """
    from .loaders import normalize_percentile

    if name == "synthetic3d":
        sizes = {"train": 8, "val": 2, "test": 2}
        if split not in sizes:
            raise ValueError(f"unknown split {split!r}; choose one of {list(sizes)}")
        base = {"train": 1000, "val": 2000, "test": 3000}[split]
        pairs = [synthetic_nuclei_3d(seed=base + i) for i in range(sizes[split])]
        voxels = [(0.28, 0.127, 0.127)] * len(pairs)
    elif name == "go_nuclear":
        stems = split_names(name, split)
        pairs, voxels = [], []
        for stem in stems:
            try:
                path = fetch(name, f"{stem}.h5", download=download)
            except DataUnavailableError as err:
                raise DataUnavailableError(
                    f"{err}\nFor stacks that need no file: load_volumes('synthetic3d', split)."
                ) from None
            image, labels, voxel = read_h5_volume(path)
            pairs.append((image, labels))
            voxels.append(voxel)
    else:
        raise ValueError(f"unknown volume dataset {name!r}; choose 'go_nuclear' or 'synthetic3d'")
    images = [
        normalize_percentile(x, 1, 99.8) if normalize else x.astype(np.float32) for x, _ in pairs
    ]
    return images, [lab for _, lab in pairs], voxels
