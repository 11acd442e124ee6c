"""Training targets from 3-D instance labels: three classes, StarDist-3D's and Cellpose's maps.

The 2-D targets of notebooks 03 and 06 carried over to volumes. Two things change: the
neighbourhood is 3-D (6 face neighbours), and the object probability of StarDist-3D measures
the distance to the boundary in physical units, so that a nucleus sampled every 2.2 in-plane
pixels along z is as "central" in its middle plane as a round one (``stardist.utils.edt_prob``
with its ``anisotropy``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._shared.relabel import relabel_consecutive
from ..targets.stardist3d import labels_3d, star_distances_3d

__all__ = ["boundary_classes_3d", "cellpose3d_targets", "edt_prob_3d", "stardist3d_targets"]


def boundary_classes_3d(labels: Any) -> np.ndarray:
    """Background (0) / interior (1) / boundary (2) per voxel of a (Z, Y, X) label volume.

    A voxel of an object is boundary when one of its 6 face neighbours belongs to another
    label (the background or another object); the volume's faces are not a boundary, as in
    the 2-D ``targets.boundary_classes``.

    Returns
    -------
    np.ndarray, uint8, shape (Z, Y, X)

    Introduced in notebook 11.
    """
    labels = relabel_consecutive(labels_3d(labels))[0]
    footprint = ndi.generate_binary_structure(3, 1)
    high = ndi.maximum_filter(labels, footprint=footprint, mode="nearest")
    low = ndi.minimum_filter(labels, footprint=footprint, mode="nearest")
    classes = (labels > 0).astype(np.uint8)
    classes[(labels > 0) & ((high != labels) | (low != labels))] = 2
    return classes


def edt_prob_3d(labels: Any, anisotropy: Any = None) -> np.ndarray:
    """Each voxel's distance to the nearest voxel of another label, over its object's largest.

    Parameters
    ----------
    labels : np.ndarray, integer, shape (Z, Y, X)
    anisotropy : 3 positive floats, optional
        Voxel size ratio (z, y, x): the distances are measured in these units, as
        ``stardist.utils.edt_prob(labels, anisotropy)`` does.

    Returns
    -------
    np.ndarray, float32, shape (Z, Y, X)
        In [0, 1]; 0 on the background, 1 at the most central voxel(s) of each object. The
        volume's faces do not count as background.

    Introduced in notebook 11.
    """
    labels = relabel_consecutive(labels_3d(labels))[0]
    sampling = None if anisotropy is None else tuple(float(a) for a in anisotropy)
    if sampling is not None and (len(sampling) != 3 or min(sampling) <= 0):
        raise ValueError(f"anisotropy must be 3 positive numbers (z, y, x), got {anisotropy!r}")
    prob = np.zeros(labels.shape, np.float32)
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, labels.shape)
        )
        mask = labels[grown] == i
        # pad with the object itself where the box meets the volume's face: not background
        pads = [(int(g.start == 0), int(g.stop == n)) for g, n in zip(grown, labels.shape)]
        padded = np.pad(mask, pads, mode="edge")
        dist = ndi.distance_transform_edt(padded, sampling=sampling)
        dist = dist[tuple(slice(a, d - b) for (a, b), d in zip(pads, padded.shape))]
        values = dist[mask]
        prob[grown][mask] = values / (values.max() + 1e-10)
    return prob


def stardist3d_targets(
    labels: Any, rays: Any, anisotropy: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """StarDist-3D's targets: the object probability (1, Z, Y, X) and distances (R, Z, Y, X).

    ``rays`` from ``targets.rays_golden_spiral(n, anisotropy)``; the distances are in voxels
    along each ray (``targets.star_distances_3d``), float32.

    Introduced in notebook 11.
    """
    prob = edt_prob_3d(labels, anisotropy)[None]
    dist = np.moveaxis(star_distances_3d(labels, rays), -1, 0)
    return prob, np.ascontiguousarray(dist)


def cellpose3d_targets(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cellpose's 3-D targets: ``FLOW_SCALE`` x the flows (3, Z, Y, X) and the cell
    probability (Z, Y, X), both float32 (``losses.cellpose_loss``).

    The flows (``targets.flows_3d``, on the CPU) diffuse on the voxel grid as it is: on
    anisotropic stacks they point to each nucleus's centre in voxels, which is what following
    them (``postprocess.flows_to_masks_3d``) needs. The ``cellpose3d`` record's targets.
    """
    from ..targets.flows import FLOW_SCALE
    from ..targets.flows3d import flows_3d

    labels = np.asarray(labels)
    flows = FLOW_SCALE * flows_3d(labels, device="cpu")
    return flows.astype(np.float32), (labels > 0).astype(np.float32)
