"""Training targets from sparse labels: each method's targets and masks of the trusted pixels.

A target pixel is **trusted** when its value follows from the annotated pixels alone, so that it
equals what the dense annotation would give whatever the unknown pixels hold. Each function
below computes the method record's own (dense) targets on the annotated objects (unknown
pixels counted as background) and says which pixels are trusted (1.0) or not (0.0):

- **cell / object probability** and **classes**: known on every annotated pixel (an object's
  pixel is foreground, annotated background is background), unknown on the unknown pixels;
- **Cellpose flows**: on annotated background (the flow there is 0) and on an object's pixel
  whose four neighbours are all annotated. The flow is the gradient of the heat map by central
  differences, which reads the heat of the four neighbours: an unknown neighbour may be a
  pixel of an unlabelled nucleus, with heat of its own, so the flow at a contact pixel with
  one is not known;
- **StarDist ray distances and object probability**: on every pixel of an annotated object.
  A ray stops at the first pixel that is not its object, and the object probability is the
  distance to the nearest pixel that is not its object: both depend only on where the
  object itself ends, which a whole object tells. A ray that runs into unknown pixels is
  therefore exact, *as long as the object is whole*; if it may continue into the unknown
  region (an outline cut by the unknown), that ray is only a lower bound.

All labels here follow the convention of :mod:`course_utils.sparse` (objects are whole).
``whole_objects=False`` is for annotations that break it: every pixel of an object that
touches an unknown pixel is then left out of the targets that depend on its extent (flows,
distances, object probability, interior/boundary classes).

Introduced in notebook 09.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._shared.validate import check_int, check_labels
from ..methods import get

__all__ = [
    "cellpose_sparse_targets",
    "next_to_unknown",
    "stardist_sparse_targets",
    "unet_3class_sparse_targets",
]


def _sparse(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked sparse labels (any integer dtype, ids of any size), and the annotated objects
    alone (unknown -> 0), which the records' dense targets take as they are."""
    lab = check_labels(labels, "labels", allow_unknown=True)
    return lab, np.where(lab > 0, lab, 0)


def next_to_unknown(labels: Any) -> np.ndarray:
    """Pixels with an unknown (-1) pixel among their four neighbours (up, down, left, right).

    Parameters
    ----------
    labels : numpy.ndarray, integer, (H, W)
        Sparse labels (-1 unknown, 0 background, ids > 0 objects).

    Returns
    -------
    numpy.ndarray, bool, (H, W)
        Outside the image counts as known (the dense targets treat it as background too).
    """
    unknown = check_labels(labels, "labels", allow_unknown=True) < 0
    cross = ndi.generate_binary_structure(2, 1)
    return ndi.binary_dilation(unknown, structure=cross) & ~unknown


def _cut_objects(lab: np.ndarray) -> np.ndarray:
    """Pixels of the objects that touch an unknown pixel (for ``whole_objects=False``)."""
    touching = np.unique(lab[next_to_unknown(lab) & (lab > 0)])
    return np.isin(lab, touching) & (lab > 0)


def _trust(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.float32)


def cellpose_sparse_targets(
    labels: Any, *, whole_objects: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Targets of the Cellpose-style method from sparse labels, with their trusted pixels.

    Parameters
    ----------
    labels : numpy.ndarray, integer, (h, w)
        Sparse labels: -1 unknown, 0 annotated background, ids > 0 whole annotated objects.
    whole_objects : bool
        With ``False``, the flows of objects that touch an unknown pixel are not trusted.

    Returns
    -------
    flows : numpy.ndarray, float32, (2, h, w)
        ``FLOW_SCALE`` x the unit flows of the annotated objects (the record's targets).
    cellprob : numpy.ndarray, float32, (h, w)
        1 on annotated objects, 0 elsewhere.
    flow_mask : numpy.ndarray, float32, (h, w)
        1 where the flows are trusted: annotated background, and object pixels with no
        unknown pixel among their four neighbours.
    prob_mask : numpy.ndarray, float32, (h, w)
        1 where the cell probability is trusted: every annotated pixel (``labels >= 0``).

    Labels without -1 give exactly the record's targets and masks of ones.

    Introduced in notebook 09.
    """
    lab, objects = _sparse(labels)
    flows, cellprob = get("cellpose").targets(objects)
    untrusted = (lab < 0) | (next_to_unknown(lab) & (lab > 0))
    if not whole_objects:
        untrusted |= _cut_objects(lab)
    return flows, cellprob, _trust(~untrusted), _trust(lab >= 0)


def stardist_sparse_targets(
    labels: Any, n_rays: int = 32, grid: int = 1, *, whole_objects: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets of the StarDist-style method from sparse labels, with their trusted pixels.

    Parameters
    ----------
    labels : numpy.ndarray, integer, (h, w)
        Sparse labels (-1 unknown, 0 background, ids > 0 whole objects), h and w divisible
        by ``grid``.
    n_rays, grid : int
        As the network predicts them (the record's ``target_args``).
    whole_objects : bool
        With ``False``, nothing of an object that touches an unknown pixel is trusted (its
        rays into the unknown may be cut short, and its probability's normalisation with them).

    Returns
    -------
    prob : numpy.ndarray, float32, (1, h/grid, w/grid)
        Object probability of the annotated objects (the record's targets).
    dist : numpy.ndarray, float32, (n_rays, h/grid, w/grid)
        Their ray distances.
    mask : numpy.ndarray, float32, (1, h/grid, w/grid)
        1 on the annotated pixels, where both are trusted: the probability on objects and
        background, the distances on objects (on the background the distance loss weighs
        them by their probability, 0, as in the dense loss).

    Labels without -1 give exactly the record's targets and a mask of ones.

    Introduced in notebook 09.
    """
    grid = check_int(grid, "grid", minimum=1)
    lab, objects = _sparse(labels)
    prob, dist = get("stardist").targets(objects, n_rays=n_rays, grid=grid)
    known = lab >= 0
    if not whole_objects:
        known &= ~_cut_objects(lab)
    return prob, dist, _trust(known[::grid, ::grid])[None]


def unet_3class_sparse_targets(
    labels: Any, *, whole_objects: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Targets of the 3-class U-Net from sparse labels: classes and their trusted pixels.

    A pixel of an annotated object is a boundary pixel when another label lies next to it;
    an unknown neighbour is never the object itself, so the classes of whole objects are
    exact. Returns the classes (int64 (h, w): 0 background, 1 interior, 2 boundary) and the
    mask (float32 (h, w), 1 on annotated pixels).
    """
    lab, objects = _sparse(labels)
    classes = get("unet_3class").targets(objects)
    known = lab >= 0
    if not whole_objects:
        known &= ~_cut_objects(lab)
    return classes, _trust(known)
