"""The classical nuclei segmentation baseline: Otsu threshold, distance transform, watershed.

Every deep-learning method in the course has to beat this pipeline::

    image -> Gaussian smoothing -> threshold (Otsu 1979) -> foreground mask
          -> markers (local maxima of the distance transform, or of the intensity)
          -> marker-based watershed (Beucher & Lantuéjoul 1979) -> instance labels

Besides :func:`segment_classical`, the pieces are public so that notebook 01 can show each
step: :func:`intensity_histogram`, :func:`otsu_threshold`, :func:`foreground_mask`,
:func:`find_markers`, and :func:`merge_split_counts`, which counts the ground-truth nuclei that
a segmentation merges or splits.

Introduced in notebook 01.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential, watershed

from ._shared.relabel import relabel_consecutive
from ._shared.validate import check_finite, check_int, check_labels, check_real

Method = Literal["shape", "intensity"]

__all__ = [
    "BASELINE",
    "baseline",
    "find_markers",
    "foreground_mask",
    "intensity_histogram",
    "merge_split_counts",
    "otsu_threshold",
    "segment_classical",
]


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"{name} must be a 2D (H, W) array, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    if image.dtype == bool or not (
        np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
    ):
        raise TypeError(f"{name} must hold real numbers (int or float), got dtype {image.dtype}")
    return check_finite(image, name)


def _check_positive_int(value: int, name: str, minimum: int) -> int:
    return check_int(value, name, minimum=minimum)


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    # a bincount of areas instead of skimage's remove_small_objects, whose size argument changed
    # name in scikit-image 0.26
    if min_size <= 1:
        return labels
    small = np.bincount(labels.ravel()) < min_size
    small[0] = False
    return np.where(small[labels], 0, labels)


#: Widest integer range (max - min) that gets one histogram bin per value.
_MAX_INTEGER_BINS = 2**16


def intensity_histogram(image: np.ndarray, nbins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of an image over its own intensity range, binned like scikit-image.

    Float images get ``nbins`` equal bins from ``image.min()`` to ``image.max()``; integer
    images get one bin per integer value between their minimum and maximum (``nbins`` is then
    ignored), as in :func:`skimage.exposure.histogram`, while that range is at most
    ``2**16`` (always for uint8 and uint16 images). An integer image spanning more (an int64
    or uint32 image from 0 to 1e10, say) gets ``nbins`` equal bins like a float image, instead
    of billions of one-value bins that would not fit in memory.

    Parameters
    ----------
    image : ndarray, shape (H, W), int or float
        Grey-level image.
    nbins : int
        Number of bins for float images, and for integer images spanning more than ``2**16``
        values (>= 2).

    Returns
    -------
    counts : ndarray, shape (n,), int64
        Number of pixels per bin.
    centers : ndarray, shape (n,), float
        Intensity at the centre of each bin.

    Introduced in notebook 01.
    """
    image = _check_image(image)
    nbins = _check_positive_int(nbins, "nbins", 2)
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if high - low <= _MAX_INTEGER_BINS:
            values = image.ravel()
            # unsigned: subtract in the own dtype (never negative; uint64 may not fit int64);
            # signed: in int64, as int8 - int8 can overflow
            shifted = (
                values - values.dtype.type(low)
                if image.dtype.kind == "u"
                else (values.astype(np.int64) - low)
            )
            counts = np.bincount(shifted.astype(np.int64, copy=False)).astype(np.int64)
            return counts, np.arange(low, low + counts.size, dtype=np.float64)
    # np.histogram picks the bin edges from min/max in the image dtype, exactly as skimage does,
    # so that the Otsu threshold below agrees with skimage.filters.threshold_otsu to the bit.
    counts, edges = np.histogram(image.ravel(), bins=nbins)
    return counts.astype(np.int64), (edges[:-1] + edges[1:]) / 2.0


def otsu_threshold(image: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold (Otsu 1979): the cut that maximises the between-class variance.

    For a cut after bin ``k`` the two classes have weights ``w0 = sum(p[:k+1])``,
    ``w1 = sum(p[k+1:])`` and means ``m0``, ``m1``; Otsu picks the ``k`` maximising
    ``w0 * w1 * (m0 - m1) ** 2``. Pixels ``> threshold`` are foreground.

    Parameters
    ----------
    image : ndarray, shape (H, W), int or float
        Grey-level image, finite.
    nbins : int
        Number of histogram bins for float images, and for integer images spanning more than
        ``2**16`` values (see :func:`intensity_histogram`).

    Returns
    -------
    float
        The threshold, the centre of the last background bin; the single value of a constant
        image. Equals :func:`skimage.filters.threshold_otsu` on the same input.

    Introduced in notebook 01.
    """
    image = _check_image(image)
    first = image.flat[0]
    if np.all(image == first):
        return float(first)
    counts, centers = intensity_histogram(image, nbins)
    weight0 = np.cumsum(counts)
    weight1 = np.cumsum(counts[::-1])[::-1]
    mass = counts * centers
    mean0 = np.cumsum(mass) / weight0
    mean1 = (np.cumsum(mass[::-1]) / weight1[::-1])[::-1]
    # cut after bin k: class 0 is bins[:k+1], class 1 is bins[k+1:]
    between = weight0[:-1] * weight1[1:] * (mean0[:-1] - mean1[1:]) ** 2
    return float(centers[int(np.argmax(between))])


def _resolve_threshold(smoothed: np.ndarray, threshold: str | float) -> float:
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"threshold must be 'otsu' or a number, got {threshold!r}")
        return otsu_threshold(smoothed)
    return check_real(threshold, "threshold ('otsu' or a number)")


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    sigma = check_real(sigma, "smooth_sigma", minimum=0)
    image = image.astype(np.float32, copy=False)
    return ndi.gaussian_filter(image, float(sigma)) if sigma > 0 else image


def foreground_mask(
    image: np.ndarray,
    threshold: str | float = "otsu",
    *,
    smooth_sigma: float = 1.0,
    min_size: int = 0,
) -> np.ndarray:
    """Smooth, threshold and clean an image into a foreground mask.

    Parameters
    ----------
    image : ndarray, shape (H, W), int or float
        Grey-level image with bright objects on a dark background.
    threshold : "otsu" or float
        ``"otsu"`` computes :func:`otsu_threshold` on the smoothed image; a number is used as is
        (in the units of ``image``).
    smooth_sigma : float
        Standard deviation in pixels of the Gaussian smoothing applied first (0: none).
    min_size : int
        Connected components smaller than this many pixels are removed; holes are filled.

    Returns
    -------
    ndarray, shape (H, W), bool
        ``True`` on foreground pixels (smoothed intensity ``> threshold``).

    Introduced in notebook 01.
    """
    image = _check_image(image)
    min_size = _check_positive_int(min_size, "min_size", 0)
    smoothed = _smooth(image, smooth_sigma)
    mask = smoothed > _resolve_threshold(smoothed, threshold)
    # nuclei are solid: a hole is a dim nucleolus or noise, not background
    mask = ndi.binary_fill_holes(mask)
    components, _ = ndi.label(mask)
    return _remove_small(components, min_size) > 0


def find_markers(landscape: np.ndarray, mask: np.ndarray, min_distance: int = 5) -> np.ndarray:
    """Watershed seeds: local maxima of ``landscape`` inside ``mask``, one label per seed.

    Parameters
    ----------
    landscape : ndarray, shape (H, W), float
        High where object centres are: the distance transform of the mask (shape-based) or the
        smoothed intensity (intensity-based).
    mask : ndarray, shape (H, W), bool
        Foreground; every connected component of it gets at least one marker.
    min_distance : int
        Minimum distance in pixels between two maxima (>= 1). Small values split nuclei into
        pieces; large values merge touching nuclei.

    Returns
    -------
    ndarray, shape (H, W), int32
        0 everywhere except the seeds, labelled 1..n.
    """
    landscape = _check_image(landscape, "landscape")
    mask = np.asarray(mask)
    if mask.shape != landscape.shape:
        raise ValueError(f"mask shape {mask.shape} != landscape shape {landscape.shape}")
    if mask.dtype != bool:
        raise TypeError(f"mask must be a bool array, got dtype {mask.dtype}")
    min_distance = _check_positive_int(min_distance, "min_distance", 1)
    components, n = ndi.label(mask)
    seeds = np.zeros(mask.shape, dtype=bool)
    if n == 0:
        return seeds.astype(np.int32)
    # shift the landscape so that it is > 0 inside the mask: peak_local_max ignores values not
    # above the per-object minimum, and the intensity landscape can be negative after normalising
    shifted = (landscape - landscape[mask].min() + 1.0).astype(np.float32)
    shifted[~mask] = 0
    peaks = peak_local_max(
        shifted, min_distance=min_distance, labels=components, exclude_border=False
    )
    seeds[tuple(peaks.T)] = True
    # a component whose landscape is one flat plateau may get no peak: seed its maximum
    has_seed = np.zeros(n + 1, dtype=bool)
    has_seed[components[seeds]] = True
    for index in np.flatnonzero(~has_seed[1:]) + 1:
        where = np.flatnonzero(components.ravel() == index)
        seeds.flat[where[np.argmax(shifted.flat[where])]] = True
    markers, _ = ndi.label(seeds)
    return markers.astype(np.int32)


def segment_classical(
    image: np.ndarray,
    *,
    threshold: str | float = "otsu",
    min_distance: int = 10,
    method: Method = "shape",
    smooth_sigma: float = 1.0,
    min_size: int = 30,
) -> np.ndarray:
    """Segment bright nuclei: smoothing, threshold, markers and marker-based watershed.

    Parameters
    ----------
    image : ndarray, shape (H, W), int or float
        Grey-level image with bright nuclei on a dark background (e.g. a normalised BBBC039
        image from ``course_utils.data.load_split``).
    threshold : "otsu" or float
        Foreground threshold on the smoothed image (see :func:`foreground_mask`).
    min_distance : int
        Minimum distance in pixels between two watershed markers (see :func:`find_markers`).
    method : "shape" or "intensity"
        ``"shape"``: markers at maxima of the distance transform of the mask, watershed on its
        negative (splits touching convex blobs at their neck). ``"intensity"``: markers at
        maxima of the smoothed intensity, watershed on the negative intensity (splits along the
        dim line between two bright nuclei).
    smooth_sigma : float
        Gaussian smoothing (pixels) before thresholding and marker detection.
    min_size : int
        Objects smaller than this many pixels are removed, before and after the watershed.

    Returns
    -------
    ndarray, shape (H, W), int32
        Instance labels, 0 = background, objects numbered 1..n.

    Introduced in notebook 01.
    """
    image = _check_image(image)
    if method not in ("shape", "intensity"):
        raise ValueError(f"method must be 'shape' or 'intensity', got {method!r}")
    mask = foreground_mask(image, threshold, smooth_sigma=smooth_sigma, min_size=min_size)
    if method == "shape":
        distance = ndi.distance_transform_edt(mask).astype(np.float32)
        landscape = distance
    else:
        landscape = _smooth(image, smooth_sigma)
    markers = find_markers(landscape, mask, min_distance)
    labels = watershed(-landscape, markers, mask=mask)
    labels, _, _ = relabel_sequential(_remove_small(labels, min_size))
    return labels.astype(np.int32)


def merge_split_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """Count the ground-truth objects that a segmentation merges or splits.

    Each object is assigned to the object of the other image that covers more than half of
    its pixels, if any. A true object is *merged* when its assigned predicted object also has
    another true object assigned to it; it is *split* when two or more predicted objects are
    assigned to it.

    Parameters
    ----------
    y_true, y_pred : ndarray, shape (H, W), int
        Ground-truth and predicted instance labels (0 = background), same shape.

    Returns
    -------
    dict
        ``n_true``, ``n_pred`` (object counts), ``merged`` (true objects that share their
        predicted object with another), ``split`` (true objects cut into >= 2 predicted objects).

    Introduced in notebook 01.
    """
    y_true = check_labels(y_true, "y_true")
    y_pred = check_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true shape {y_true.shape} != y_pred shape {y_pred.shape}")
    # consecutive ids keep the contingency table small whatever the original ids are (also
    # huge uint64 ids, on which skimage's relabel_sequential fails)
    t, n_t = relabel_consecutive(y_true)
    p, n_p = relabel_consecutive(y_pred)
    overlap = np.bincount(
        t.ravel().astype(np.int64) * (n_p + 1) + p.ravel(), minlength=(n_t + 1) * (n_p + 1)
    ).reshape(n_t + 1, n_p + 1)[1:, 1:]
    area_t = np.bincount(t.ravel(), minlength=n_t + 1)[1:]
    area_p = np.bincount(p.ravel(), minlength=n_p + 1)[1:]
    # true i -> predicted j when j covers > half of i; predicted j -> true i likewise
    true_to_pred = (2 * overlap > area_t[:, None]).sum(axis=0)  # per predicted object
    pred_to_true = (2 * overlap > area_p[None, :]).sum(axis=1)  # per true object
    merged = int(true_to_pred[true_to_pred >= 2].sum())
    split = int((pred_to_true >= 2).sum())
    return {"n_true": n_t, "n_pred": n_p, "merged": merged, "split": split}


#: The course's classical baseline: the settings of :func:`segment_classical` tuned on all 50
#: BBBC039 validation images (F1@0.5 0.874 with ``min_distance`` 10; 0.873 with 12, 0.867 with
#: 14, 0.848 with 7). Notebook 01 tunes it by hand; every later comparison uses this one recipe.
BASELINE = {
    "threshold": "otsu",
    "min_distance": 10,
    "method": "shape",
    "smooth_sigma": 1.0,
    "min_size": 30,
}


def baseline(image: np.ndarray, **overrides: object) -> np.ndarray:
    """:func:`segment_classical` with the course's tuned settings (:data:`BASELINE`), updated
    by ``overrides`` (e.g. ``min_distance=5`` for an image with nuclei half the size).
    Returns int32 (H, W) labels. Introduced in notebook 01."""
    return segment_classical(image, **{**BASELINE, **overrides})  # type: ignore[arg-type]
