"""Network outputs to instance labels: the U-Nets' classes and StarDist's maps.

- :func:`foreground_to_labels`: a 2-class output (background / nucleus with gaps, notebook 03)
  -> connected components;
- :func:`classes_to_labels`: a background / interior / boundary output (notebook 03) ->
  interior components grown over the predicted boundary;
- :func:`stardist_to_labels`: StarDist's probability and distance maps (notebook 06) ->
  non-maximum suppression, then the kept polygons painted.

Cellpose's flows go through :func:`course_utils.postprocess.flows_to_masks`. Every function
returns int32 ``(H, W)`` labels, 0 = background, and refuses NaN or infinite scores (one rule
for the whole course: ``_shared.validate.check_finite``).

Introduced in notebook 03.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.measure import label as connected_components
from skimage.segmentation import expand_labels

from .._shared.validate import check_finite, check_grid, check_int, check_real, to_numpy
from .nms import non_maximum_suppression
from .polygons import polygons_to_label

__all__ = ["classes_to_labels", "foreground_to_labels", "stardist_to_labels"]


def _check_scores(scores: Any, channels: int) -> np.ndarray:
    arr = to_numpy(scores)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"scores must hold real numbers, got dtype {arr.dtype}.")
    if arr.ndim != 3 or arr.shape[0] != channels:
        raise ValueError(f"scores must have shape ({channels}, H, W), got {arr.shape}.")
    return check_finite(arr, "scores")


def foreground_to_labels(scores: Any) -> np.ndarray:
    """Instances of a 2-class output: connected components (4-connected) of class 1.

    ``scores`` (2, H, W): logits or probabilities. Returns int32 (H, W) labels, ids 1..N.
    Touching nuclei stay apart only where the network predicts the gap between them (notebook
    03's foreground-with-gaps target).
    """
    classes = _check_scores(scores, 2).argmax(0)
    return connected_components(classes == 1, connectivity=1).astype(np.int32)


def classes_to_labels(scores: Any, *, expand: int = 2) -> np.ndarray:
    """Instances of a background / interior / boundary output (notebook 03).

    Seeds are the connected components (4-connected) of the interior class; they grow by up to
    ``expand`` pixels over the predicted foreground (interior or boundary). ``scores``
    (3, H, W): logits or probabilities. Returns int32 (H, W) labels.
    """
    expand = check_int(expand, "expand", minimum=0)
    classes = _check_scores(scores, 3).argmax(0)
    seeds = connected_components(classes == 1, connectivity=1)
    return np.where(classes > 0, expand_labels(seeds, distance=expand), 0).astype(np.int32)


def stardist_to_labels(
    prob: Any,
    dist: Any,
    prob_thresh: float = 0.5,
    nms_thresh: float = 0.4,
    *,
    grid: int = 1,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Instance labels from StarDist maps: non-maximum suppression, then the polygons painted.

    Parameters
    ----------
    prob : array, float, shape (H', W')
        Object probabilities (the sigmoid of the network's logits), ``H' = ceil(H / grid)``.
    dist : array, float, shape (H', W', n_rays)
        Ray lengths in pixels of the image (the layout of ``targets.star_dist``).
    prob_thresh : float
        Pixels with ``prob > prob_thresh`` propose their polygon.
    nms_thresh : float
        A polygon overlapping a more probable kept one by more than this fraction of the
        smaller area is dropped.
    grid : int
        Output subsampling of the network (StarDist's ``grid``); 1 = full resolution.
    shape : (int, int), optional
        The image's (H, W); default ``(H' * grid, W' * grid)``. Must agree with ``prob``'s
        shape and ``grid``.

    Returns
    -------
    numpy.ndarray, int32, shape (H, W)
        0 = background; the most probable polygon owns the pixels where two overlap.
    """
    prob, dist = check_finite(to_numpy(prob), "prob"), check_finite(to_numpy(dist), "dist")
    gy, gx = check_grid(grid)
    check_real(prob_thresh, "prob_thresh")
    check_real(nms_thresh, "nms_thresh")
    if prob.ndim != 2:
        raise ValueError(f"prob must be (H', W'), got shape {prob.shape}.")
    if shape is None:
        shape = (prob.shape[0] * gy, prob.shape[1] * gx)
    height, width = (check_int(s, "shape", minimum=1) for s in shape)
    expected = (-(-height // gy), -(-width // gx))
    if prob.shape != expected:
        raise ValueError(
            f"prob has shape {prob.shape}, but an image of {(height, width)} on grid "
            f"{(gy, gx)} gives maps of {expected}: check the grid and the image shape."
        )
    points, scores, dists = non_maximum_suppression(
        np.asarray(dist, np.float32),
        np.asarray(prob, np.float32),
        prob_thresh=prob_thresh,
        nms_thresh=nms_thresh,
        grid=(gy, gx),
    )
    return polygons_to_label(dists, points, (height, width), prob=scores)
