"""A classical 3-D baseline: smoothing, Otsu's threshold and a seeded watershed, voxel-aware.

The 2-D baseline of notebook 01 carried to volumes. Every step that measures a distance takes
the voxel size into account: the smoothing is narrower along z by the anisotropy, the distance
transform is in physical units, and the seeds must be ``min_distance`` apart in those units.
With ``anisotropy=1`` on an anisotropic stack the same code treats the voxels as cubes, which
is the mistake notebook 11 measures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from .._shared.relabel import relabel_consecutive
from .._shared.validate import check_real

__all__ = ["watershed_3d"]


def watershed_3d(
    image: Any,
    anisotropy: float = 1.0,
    *,
    sigma: float = 2.0,
    min_distance: float = 10.0,
    min_size: int = 100,
) -> np.ndarray:
    """Instance labels of a (Z, Y, X) stack of nuclei without any training.

    Parameters
    ----------
    image : np.ndarray, float, shape (Z, Y, X)
        Bright nuclei on a dark background.
    anisotropy : float
        z step / in-plane pixel (1 = treat the voxels as cubes).
    sigma : float
        Gaussian smoothing in in-plane pixels (``sigma / anisotropy`` planes along z).
    min_distance : float
        Smallest distance between two seeds, in in-plane pixels.
    min_size : int
        Objects with fewer voxels are dropped.

    Returns
    -------
    np.ndarray, int32, shape (Z, Y, X)

    Introduced in notebook 11.
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be a (Z, Y, X) stack, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or infinite values")
    a = check_real(anisotropy, "anisotropy", minimum=1.0)
    sigma = check_real(sigma, "sigma", minimum=0.0)
    smooth = ndi.gaussian_filter(image, (sigma / a, sigma, sigma))
    mask = smooth > threshold_otsu(smooth)
    distance = ndi.distance_transform_edt(mask, sampling=(a, 1.0, 1.0))
    radius = check_real(min_distance, "min_distance", minimum=1.0)
    footprint = np.ones([2 * max(int(radius / a), 1) + 1] + [2 * int(radius) + 1] * 2, bool)
    peaks = peak_local_max(distance, footprint=footprint, labels=ndi.label(mask)[0])
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=mask)
    sizes = np.bincount(labels.ravel())
    small = np.flatnonzero(sizes < min_size)
    labels[np.isin(labels, small[small > 0])] = 0
    return relabel_consecutive(labels.astype(np.int32))[0]
