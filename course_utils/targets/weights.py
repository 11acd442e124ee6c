"""Training targets for the U-Net: the weight map of Ronneberger 2015 and 3-class targets.

``unet_weight_map`` gives the per-pixel loss weight of eq. 2 of the U-Net paper,

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2)),

where ``w_c`` balances the class frequencies and ``d1``, ``d2`` are the distances from a
background pixel to the nearest and the second-nearest cell. The border term makes the thin
background gaps between touching cells expensive to get wrong.

The notebook builds it by hand with one distance transform of the whole image per cell (28 s
for 600 cells at 1024x1024). Here each cell's distance transform is computed only inside its
bounding box grown by the distance beyond which the border term is negligible (below 1e-6),
which gives the same numbers about a hundred times faster.

``boundary_classes`` turns instance labels into the 0/1/2 (background/interior/boundary) target
of the 3-class U-Net. ``with_gaps`` cuts the background gap between touching nuclei that a
2-class target needs; ``unet_2class_targets`` and ``unet_3class_targets`` are the two U-Net
methods' training targets (``course_utils.methods``), each defined here once.

Introduced in notebook 03.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .._shared.relabel import relabel_consecutive, relabel_with_ids, restore_ids
from .._shared.validate import check_int, check_labels, is_tensor

__all__ = [
    "boundary_classes",
    "unet_2class_targets",
    "unet_3class_targets",
    "unet_weight_map",
    "with_gaps",
]

# Absolute error allowed on the border term where it is cut off (far from any pair of cells).
_TRUNCATE_ATOL = 1e-6


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 2-D integer numpy array, or raise a clear error."""
    # The weight maps are numpy in, numpy out: a tensor would come back as another type.
    if is_tensor(labels):
        raise TypeError(f"{name} must be a numpy array, not a torch tensor; use .numpy().")
    return check_labels(labels, name)


def _class_weights(
    labels: np.ndarray, class_weights: str | Sequence[float] | None
) -> tuple[float, float]:
    """Return ``(w_bg, w_fg)`` for the class-balancing term ``w_c``."""
    if class_weights is None:
        return 1.0, 1.0
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"class_weights must be 'balanced', (w_bg, w_fg) or None, got {class_weights!r}."
            )
        n = labels.size
        n_fg = int(np.count_nonzero(labels))
        n_bg = n - n_fg
        # w = N / (2 N_class): each class then carries half of the total weight. A class that
        # is absent gets no pixels, so its weight never enters the map.
        w_bg = n / (2 * n_bg) if n_bg else 0.0
        w_fg = n / (2 * n_fg) if n_fg else 0.0
        return w_bg, w_fg
    values = tuple(class_weights)
    if len(values) != 2:
        raise ValueError(f"class_weights must have two values (w_bg, w_fg), got {values!r}.")
    w_bg, w_fg = (float(v) for v in values)
    if not (math.isfinite(w_bg) and math.isfinite(w_fg)) or min(w_bg, w_fg) < 0:
        raise ValueError(f"class_weights must be finite and >= 0, got {values!r}.")
    return w_bg, w_fg


def _nearest_two_distances(labels: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``d1 <= d2`` (float64, (H, W)) to the nearest and second-nearest object.

    Exact wherever the true ``d2`` is at most ``radius``; elsewhere a distance may be ``inf``.
    An object's distance transform is only needed where it can be one of the two nearest
    objects within ``radius``, i.e. in its bounding box grown by ``radius``.
    """
    shape = labels.shape
    d1 = np.full(shape, np.inf)
    d2 = np.full(shape, np.inf)
    # find_objects allocates one entry per id up to the largest: relabel huge sparse ids first.
    if labels.max() > labels.size:
        labels, _ = relabel_consecutive(labels)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:  # ids need not be consecutive
            continue
        window = tuple(
            slice(max(s.start - radius, 0), min(s.stop + radius, n))
            for s, n in zip(box, shape, strict=True)
        )
        # The whole object lies inside its window, so the distance to it is exact there.
        dist = ndi.distance_transform_edt(labels[window] != index)
        near, second = d1[window], d2[window]  # views: updated in place
        second[...] = np.where(dist < near, near, np.minimum(second, dist))
        np.minimum(near, dist, out=near)
    return d1, d2


def _border_term(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` (float64, (H, W)), 0 where below 1e-6."""
    # Beyond d1 + d2 = cutoff the term is below _TRUNCATE_ATOL, and a pixel below the cutoff
    # has both of its nearest cells within the cutoff: only those distances must be exact.
    cutoff = sigma * math.sqrt(2.0 * math.log(w0 / _TRUNCATE_ATOL))
    d1, d2 = _nearest_two_distances(labels, radius=math.ceil(cutoff))
    return w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))  # inf distances give 0


def unet_weight_map(
    labels: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | Sequence[float] | None = "balanced",
) -> np.ndarray:
    """Per-pixel loss weights of the U-Net paper (Ronneberger 2015, eq. 2).

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))``, the second (border) term
    on background pixels only, where ``d1`` and ``d2`` are the Euclidean distances to the
    nearest and the second-nearest cell (as ``scipy.ndimage.distance_transform_edt(labels !=
    i)`` gives them, one cell ``i`` at a time). With fewer than two cells there is no border
    term.

    Parameters
    ----------
    labels : numpy.ndarray, shape (H, W), integer
        Instance labels, 0 = background; ids need not be consecutive.
    w0 : float, default 10.0
        Height of the border term (>= 0).
    sigma : float, default 5.0
        Width of the border term in pixels (> 0).
    class_weights : "balanced", (w_bg, w_fg) or None, default "balanced"
        ``w_c``. ``"balanced"``: ``N / (2 N_class)`` for background and foreground (``N``
        pixels in all, ``N_class`` in the class), so both classes weigh the same in total
        (an image of one class only gets 0.5 everywhere).
        A pair gives the two weights directly; ``None`` means ``w_c = 1`` everywhere.

    Returns
    -------
    numpy.ndarray, shape (H, W), float32
        The weight map; equal to the one-distance-transform-per-cell definition within 1e-6
        (the border term is dropped only where it is below 1e-6).

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array.
    ValueError
        For labels that are not 2-D, empty or negative, ``w0 < 0``, ``sigma <= 0`` or
        another ``class_weights``.

    Examples
    --------
    >>> labels = np.zeros((32, 32), np.int32)
    >>> labels[8:16, 4:14], labels[8:16, 16:28] = 1, 2
    >>> bool(unet_weight_map(labels)[12, 15] > unet_weight_map(labels)[2, 2])  # gap > far
    True

    Introduced in notebook 03.
    """
    labels = _check_labels(labels)
    w_bg, w_fg = _class_weights(labels, class_weights)
    if not (math.isfinite(w0) and w0 >= 0 and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"need finite w0 >= 0 and sigma > 0, got w0={w0!r}, sigma={sigma!r}.")
    background = labels == 0
    weights = np.where(background, w_bg, w_fg)
    if w0 > _TRUNCATE_ATOL:
        weights += np.where(background, _border_term(labels, w0, sigma), 0.0)
    return weights.astype(np.float32)


def boundary_classes(labels: np.ndarray, *, boundary_width: int = 1) -> np.ndarray:
    """Three-class target: 0 background, 1 cell interior, 2 cell boundary.

    A cell pixel is a boundary pixel when a pixel of another label (background or another
    cell) lies within ``boundary_width`` steps (city-block distance) of it, so both sides of a
    border between touching cells are marked, as well as the outer rim of each cell. The
    image edge is not a boundary: a cell cut by it keeps its interior there. With
    ``boundary_width=1`` this equals ``skimage.segmentation.find_boundaries(labels,
    mode="inner")`` on the cells.

    Parameters
    ----------
    labels : numpy.ndarray, shape (H, W), integer
        Instance labels, 0 = background; any ids (relabelled 1..n inside, so that ids above
        2**53, which scipy's filters would round to float64, stay apart).
    boundary_width : int, default 1
        Thickness of the boundary, in pixels (>= 1).

    Returns
    -------
    numpy.ndarray, shape (H, W), uint8
        Class per pixel; use ``.astype(np.int64)`` for ``torch.nn.CrossEntropyLoss``.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array or ``boundary_width`` is not an int.
    ValueError
        If ``labels`` is not 2-D, is empty or has negative ids, or ``boundary_width < 1``.

    Examples
    --------
    >>> labels = np.array([[1, 1, 2, 2, 2]] * 3)
    >>> boundary_classes(labels)[1]
    array([1, 2, 2, 1, 1], dtype=uint8)

    Introduced in notebook 03.
    """
    labels, _ = relabel_consecutive(_check_labels(labels))
    boundary_width = check_int(boundary_width, "boundary_width", minimum=1)
    # A diamond of radius boundary_width: its max and min differ from the centre exactly when
    # some label within that city-block distance differs. "nearest" keeps the edge neutral.
    footprint = ndi.generate_binary_structure(2, 1)
    footprint = ndi.iterate_structure(footprint, int(boundary_width))
    local_max = ndi.maximum_filter(labels, footprint=footprint, mode="nearest")
    local_min = ndi.minimum_filter(labels, footprint=footprint, mode="nearest")
    cells = labels > 0
    classes = np.zeros(labels.shape, np.uint8)
    classes[cells] = 1
    classes[cells & ((local_max != labels) | (local_min != labels))] = 2
    return classes


def with_gaps(labels: np.ndarray) -> np.ndarray:
    """Labels with every pixel that touches another nucleus (8-neighbourhood) set to 0.

    BBBC039 draws touching nuclei without a gap; a 2-class target needs one (notebook 03).
    ``labels`` integer (H, W), any ids; returns the caller's ids, same dtype and shape (the
    filters run on ids relabelled 1..n: scipy's filters compute in float64, which merges ids
    above 2**53 and overflows int64's maximum). Introduced in notebook 03.
    """
    labels, ids = relabel_with_ids(_check_labels(labels))
    others_max = ndi.maximum_filter(labels, size=3, mode="nearest")
    as_high = np.where(labels == 0, np.iinfo(labels.dtype).max, labels)  # ignore background
    others_min = ndi.minimum_filter(as_high, size=3, mode="nearest")
    touching = (labels > 0) & ((others_max > labels) | (others_min < labels))
    return restore_ids(np.where(touching, 0, labels), ids)


def unet_2class_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets of the weighted 2-class U-Net: the foreground with gaps and its weight map.

    ``labels`` integer (h, w). Returns ``(classes, weights)``: int64 (h, w), 1 on nuclei with
    the gaps of :func:`with_gaps` cut, 0 elsewhere; float32 (h, w), :func:`unet_weight_map` of
    the gapped labels (computed on the whole patch, so that the distances see its context).
    """
    gapped = with_gaps(labels)
    return (gapped > 0).astype(np.int64), unet_weight_map(gapped)


def unet_3class_targets(labels: np.ndarray) -> np.ndarray:
    """Target of the 3-class U-Net: :func:`boundary_classes` as int64 (h, w) (0 background,
    1 interior, 2 boundary)."""
    return boundary_classes(labels).astype(np.int64)
