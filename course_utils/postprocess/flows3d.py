"""Cellpose post-processing in 3-D: flows + cell probability -> instance label volumes.

Two ways to 3-D masks, as in the reference implementation (cellpose 4):

- :func:`flows_to_masks_3d` follows 3-D flows ``(dz, dy, dx)``: every foreground voxel takes
  ``niter`` Euler steps ``p <- clip(p + flows(p))`` with trilinear interpolation; the end points
  are counted in a histogram of whole voxels; seeds are its local maxima in a 5 x 5 x 5 window
  holding more than 10 end points, each seed grows 5 times by one voxel (3 x 3 x 3) through
  bins holding more than 2 end points, and where grown seeds overlap the one with more end
  points wins. Masks larger than 40 % of the volume are dropped, then masks smaller than
  ``min_size``, then each mask's holes are filled inside its bounding box (the reference's
  ``fill_holes_and_remove_small_masks``). There is no flow check: the reference's is 2-D only.
- :func:`stitch_planes` joins 2-D masks segmented plane by plane: a mask takes the id of the
  mask of the previous plane it overlaps best (IoU at least ``stitch_threshold``), as
  ``cellpose.utils.stitch3D`` does, with the same tie rules and id numbering.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from .._shared import jit
from .._shared.device import resolve_device
from .._shared.jit import numba
from .._shared.validate import check_finite, check_labels, is_tensor
from ..targets.flows import FLOW_SCALE
from .flows import MAX_SIZE_FRACTION, as_real_array, drop_ids

__all__ = ["flows_to_masks_3d", "stitch_planes"]


@numba.njit(inline="always")
def _trilinear(f: np.ndarray, z: float, y: float, x: float) -> float:  # pragma: no cover - compiled
    Z, Y, X = f.shape
    z0, y0, x0 = int(z), int(y), int(x)  # z, y, x >= 0: truncation is floor
    z1, y1, x1 = min(z0 + 1, Z - 1), min(y0 + 1, Y - 1), min(x0 + 1, X - 1)
    wz, wy, wx = z - np.float32(z0), y - np.float32(y0), x - np.float32(x0)
    a = f[z0, y0, x0] + wx * (f[z0, y0, x1] - f[z0, y0, x0])
    b = f[z0, y1, x0] + wx * (f[z0, y1, x1] - f[z0, y1, x0])
    c = f[z1, y0, x0] + wx * (f[z1, y0, x1] - f[z1, y0, x0])
    d = f[z1, y1, x0] + wx * (f[z1, y1, x1] - f[z1, y1, x0])
    top = a + wy * (b - a)
    return top + wz * (c + wy * (d - c) - top)


@numba.njit(parallel=True, cache=True)
def _follow_numba(
    flows: np.ndarray, pos: np.ndarray, niter: int
) -> None:  # pragma: no cover - compiled
    """Move ``pos`` (N, 3) float32 in place along ``flows`` (3, Z, Y, X) float32."""
    top = (np.float32(flows.shape[1] - 1), np.float32(flows.shape[2] - 1))
    top = (top[0], top[1], np.float32(flows.shape[3] - 1))
    K = 4  # cycles up to this period are detected
    for i in numba.prange(pos.shape[0]):
        ring = np.empty((K, 3), np.float32)
        p = pos[i].copy()
        ring[0] = p
        for t in range(1, niter + 1):
            v0 = _trilinear(flows[0], p[0], p[1], p[2])
            v1 = _trilinear(flows[1], p[0], p[1], p[2])
            v2 = _trilinear(flows[2], p[0], p[1], p[2])
            p[0] = min(max(p[0] + v0, np.float32(0.0)), top[0])
            p[1] = min(max(p[1] + v1, np.float32(0.0)), top[1])
            p[2] = min(max(p[2] + v2, np.float32(0.0)), top[2])
            # End points cycle near a fixed point; the float32 state repeats exactly, so the
            # position after niter steps is known without taking them.
            period = 0
            for k in range(1, min(K, t) + 1):
                q = ring[(t - k) % K]
                if q[0] == p[0] and q[1] == p[1] and q[2] == p[2]:
                    period = k
                    break
            if period:
                p[:] = ring[(t - period + (niter - t) % period) % K]
                break
            ring[t % K] = p
        pos[i] = p


def _follow_torch(flows: Any, pos: Any, niter: int) -> Any:
    """Euler steps with ``grid_sample`` (trilinear, voxel centres on the grid), for GPUs."""
    import torch
    import torch.nn.functional as F

    shape = flows.shape[1:]
    image = flows[None]
    size = torch.tensor([max(s - 1, 1) for s in shape], dtype=pos.dtype, device=pos.device)
    upper = torch.tensor([s - 1.0 for s in shape], dtype=pos.dtype, device=pos.device)
    for _ in range(niter):
        grid = (pos * (2.0 / size) - 1.0).flip(-1)[None, None, None]  # (x, y, z) order
        v = F.grid_sample(image, grid, mode="bilinear", align_corners=True)[0, :, 0, 0].T
        pos = torch.minimum(torch.clamp(pos + v, min=0.0), upper)
    return pos


@numba.njit(cache=True)
def _find_peaks(hist: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Flat indices (int64) of the bins holding > 10 points that are 5 x 5 x 5 local maxima."""
    Z, Y, X = hist.shape
    peaks = np.zeros(hist.size, np.int64)
    n = 0
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                h = hist[z, y, x]
                if h <= 10:
                    continue
                w = hist[max(z - 2, 0) : z + 3, max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
                if w.max() <= h:  # ties count as maxima, as in the reference
                    peaks[n] = (z * Y + y) * X + x
                    n += 1
    return peaks[:n]


@numba.njit(cache=True)
def _grow_seeds(hist: np.ndarray, seeds: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Mask id per bin (int32, 0 = none); ``seeds`` (flat indices) sorted by increasing count.

    Each seed grows alone, 5 times by one voxel (3 x 3 x 3) through bins holding > 2 points;
    where grown seeds overlap, the later (larger) one wins.
    """
    Z, Y, X = hist.shape
    ids = np.zeros((Z, Y, X), np.int32)
    grown = np.zeros((11, 11, 11), np.bool_)
    for rank in range(seeds.size):
        s = seeds[rank]
        sz, sy, sx = s // (Y * X) - 5, (s // X) % Y - 5, s % X - 5
        grown[:] = False
        grown[5, 5, 5] = True
        for _ in range(5):
            prev = grown.copy()
            for a in range(11):
                for b in range(11):
                    for c in range(11):
                        z, y, x = sz + a, sy + b, sx + c
                        if grown[a, b, c] or not (0 <= z < Z and 0 <= y < Y and 0 <= x < X):
                            continue
                        if hist[z, y, x] > 2:
                            grown[a, b, c] = prev[
                                max(a - 1, 0) : a + 2, max(b - 1, 0) : b + 2, max(c - 1, 0) : c + 2
                            ].any()
        for a in range(11):
            for b in range(11):
                for c in range(11):
                    if grown[a, b, c]:
                        ids[sz + a, sy + b, sx + c] = max(ids[sz + a, sy + b, sx + c], rank + 1)
    return ids


def _cluster_end_points(ends: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Mask id (int32, 0 = none) of each end point (N, 3), from the histogram of end points."""
    e = ends.astype(np.int64)  # truncation: end points are >= 0
    flat = (e[:, 0] * shape[1] + e[:, 1]) * shape[2] + e[:, 2]
    hist = np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape).astype(np.int32)
    peaks = _find_peaks(hist)
    seeds = peaks[np.argsort(hist.ravel()[peaks], kind="stable")]
    return _grow_seeds(hist, seeds).ravel()[flat]


def _fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill each mask's holes inside its bounding box, in id order (what the reference does)."""
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            labels[box][ndimage.binary_fill_holes(labels[box] == k)] = k
    return labels


def _check_inputs(
    flows: Any, cellprob: Any, niter: int, min_size: int
) -> tuple[np.ndarray, np.ndarray]:
    arr = as_real_array(flows, "flows")
    if arr.ndim != 4 or arr.shape[0] != 3:
        raise ValueError(
            f"flows must have shape (3, Z, Y, X) holding (dz, dy, dx), got {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"flows is empty (shape {arr.shape})")
    check_finite(arr, "flows")
    prob = as_real_array(cellprob, "cellprob")
    if prob.shape != arr.shape[1:]:
        raise ValueError(f"cellprob has shape {prob.shape}, expected {arr.shape[1:]} like flows")
    check_finite(prob, "cellprob")
    if int(niter) < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    if int(min_size) < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    return np.ascontiguousarray(arr, dtype=np.float32), prob


def flows_to_masks_3d(
    flows: Any,
    cellprob: Any,
    cellprob_threshold: float = 0.0,
    niter: int = 200,
    min_size: int = 15,
    device: Any = None,
) -> Any:
    """Instance label volume from 3-D Cellpose outputs: follow the flows, group the end points.

    Parameters
    ----------
    flows : numpy.ndarray or torch.Tensor, shape (3, Z, Y, X), float
        Predicted ``(dz, dy, dx)`` at the **network's scale**: ``FLOW_SCALE`` (5) times unit
        flows, what the reference's ``compute_masks`` takes. For flows from
        ``course_utils.targets.flows3d.flows_3d`` pass ``FLOW_SCALE * flows``.
    cellprob : numpy.ndarray or torch.Tensor, shape (Z, Y, X), float
        Cell probability as a logit; voxels above ``cellprob_threshold`` are followed.
    cellprob_threshold : float
        Logit threshold for foreground (0.0 is probability 0.5).
    niter : int
        Euler steps of flow following (one voxel per step on unit flows).
    min_size : int
        Drop masks with fewer voxels (0 keeps all).
    device : str or torch.device, optional
        Where to follow the flows. Default: the tensor's device, else ``COURSE_DEVICE``, else
        CUDA when available, else the CPU (a compiled loop over voxels; ``grid_sample``
        elsewhere).

    Returns
    -------
    labels : numpy.ndarray or torch.Tensor, shape (Z, Y, X), int32
        0 = background, masks 1..N consecutive. Same kind as ``flows``; a tensor comes back on
        ``flows``' device.

    Raises
    ------
    TypeError
        If an input is not numeric.
    ValueError
        On shape mismatches, empty or non-finite inputs, or negative ``niter`` / ``min_size``.

    Introduced in notebook 11.
    """
    arr, prob = _check_inputs(flows, cellprob, niter, min_size)
    dev = resolve_device(device, like=flows)
    fg = prob > cellprob_threshold
    labels = np.zeros(fg.shape, np.int32)
    if fg.any():
        unit = np.ascontiguousarray(arr * fg / np.float32(FLOW_SCALE), np.float32)
        start = np.stack(np.nonzero(fg), axis=1).astype(np.float32)
        if jit.use_numba(dev):
            _follow_numba(unit, start, int(niter))
            ends = start
        else:
            import torch

            t_unit, t_start = torch.from_numpy(unit).to(dev), torch.from_numpy(start).to(dev)
            ends = _follow_torch(t_unit, t_start, int(niter)).cpu().numpy()
        labels[fg] = _cluster_end_points(ends, fg.shape)
        labels, n = drop_ids(labels, np.bincount(labels.ravel()) > MAX_SIZE_FRACTION * labels.size)
        if n and min_size:
            labels, n = drop_ids(labels, np.bincount(labels.ravel()) < min_size)
        labels = _fill_holes(labels)
        if n and min_size:  # a mask whose bounding box another filled may have shrunk
            labels, n = drop_ids(labels, np.bincount(labels.ravel(), minlength=n + 1) < min_size)
    if is_tensor(flows):
        import torch

        return torch.from_numpy(labels).to(flows.device)
    return labels


def _stitch_ids(
    cur: np.ndarray, prev: np.ndarray, threshold: float, mmax: int
) -> tuple[np.ndarray, int]:
    """New id of each id 0..cur.max() of plane ``cur`` against the stitched plane ``prev``.

    Sparse version of the reference's dense IoU matrix with the same rules: IoUs below
    ``threshold`` are zeroed; for each previous mask only its best current masks (ties kept) keep
    their IoU; a current mask takes the previous id of its largest remaining IoU (the smallest
    id on ties), or, when none remains, a new id ``mmax + 1, mmax + 2, ...`` in id order.
    """
    R, C = int(cur.max()), int(prev.max())
    a, b = cur.ravel().astype(np.int64), prev.ravel().astype(np.int64)
    both = (a > 0) & (b > 0)
    pairs, overlap = np.unique(a[both] * (C + 1) + b[both], return_counts=True)
    r, c = pairs // (C + 1), pairs % (C + 1)
    area_r, area_c = np.bincount(a, minlength=R + 1), np.bincount(b, minlength=C + 1)
    iou = overlap / (area_r[r] + area_c[c] - overlap)
    iou[iou < threshold] = 0.0
    best_of_col = np.zeros(C + 1)
    np.maximum.at(best_of_col, c, iou)
    iou[iou < best_of_col[c]] = 0.0
    keep = iou > 0
    r, c, iou = r[keep], c[keep], iou[keep]
    order = np.lexsort((c, -iou, r))  # per row: the largest IoU first, then the smallest id
    r, c = r[order], c[order]
    first = np.ones(r.size, bool)
    first[1:] = r[1:] != r[:-1]
    table = np.zeros(R + 1, np.int64)
    table[r[first]] = c[first]
    fresh = np.flatnonzero(table[1:] == 0) + 1
    table[fresh] = mmax + 1 + np.arange(fresh.size)
    return table, mmax + fresh.size


def stitch_planes(masks: Any, stitch_threshold: float = 0.25) -> np.ndarray:
    """Join 2-D masks of consecutive planes into 3-D masks by their overlap (IoU).

    Parameters
    ----------
    masks : numpy.ndarray or torch.Tensor, shape (Z, Y, X), integer
        2-D instance labels of each plane (0 = background), each plane numbered on its own,
        ids 1..n per plane (``skimage.measure.label`` output) as the reference expects.
    stitch_threshold : float
        A mask of plane ``z + 1`` takes the id of the mask of (stitched) plane ``z`` it has the
        largest IoU with, if that IoU is at least this and no other mask of plane ``z + 1``
        overlaps that mask more; otherwise it gets a new id.

    Returns
    -------
    stitched : numpy.ndarray, shape (Z, Y, X), int32
        Identical to ``cellpose.utils.stitch3D(masks, stitch_threshold)`` (which changes its
        input in place; this function does not), except for one fix: cellpose lets the masks of
        a plane that follows an empty plane, before any stitching has happened, keep their own
        ids 1..n, which can be the ids of other masks earlier in the stack (two nuclei, one
        id); here they get new ids like every unmatched mask.

    Raises
    ------
    TypeError
        If ``masks`` is not an integer array.
    ValueError
        If ``masks`` is not 3-D, is empty or has negative ids, or ``stitch_threshold`` is not in
        [0, 1].

    Introduced in notebook 11.
    """
    arr = check_labels(masks, "masks", ndim=(3,))
    if not 0.0 <= float(stitch_threshold) <= 1.0:
        raise ValueError(f"stitch_threshold must be in [0, 1], got {stitch_threshold}")
    out = arr.astype(np.int64)
    mmax = int(out[0].max())
    for z in range(out.shape[0] - 1):
        if out[z + 1].max() == 0 or out[z].max() == 0:  # nothing to stitch to: new ids
            count = int(out[z + 1].max())
            table = np.concatenate([[0], np.arange(mmax + 1, mmax + count + 1)])
            mmax += count
        else:
            table, mmax = _stitch_ids(out[z + 1], out[z], float(stitch_threshold), mmax)
        out[z + 1] = table[out[z + 1]]
    if out.max() > np.iinfo(np.int32).max:
        raise ValueError(f"stitching made ids up to {out.max()}, beyond int32")
    return out.astype(np.int32)
