"""Cellpose post-processing: predicted flows + cell probability -> instance labels.

Every foreground pixel is moved along the flow field (Euler steps, bilinear interpolation) and
ends near its cell's centre; pixels whose end points gather around the same peak form one mask
(Stringer et al., Nature Methods 2021). The steps follow the reference implementation
(cellpose 4) so that masks agree with it:

1. foreground = ``cellprob > cellprob_threshold``; flows are zeroed elsewhere and divided by
   ``FLOW_SCALE`` (network output -> unit flows);
2. ``niter`` Euler steps ``p <- clip(p + flows(p))`` from every foreground pixel;
3. a histogram of the end points (truncated to whole pixels); seeds are its local maxima in a
   5 x 5 window holding more than 10 end points; each seed grows 5 times by one pixel (3 x 3)
   through histogram pixels holding more than 2 end points, and where two grown seeds overlap
   the one with more end points wins; a pixel takes the mask of the bin its end point fell in;
4. masks larger than 40 % of the image are dropped;
5. flow check: flows are recomputed from the masks (``masks_to_flows``); a mask whose mean
   squared difference to the given (unit) flows exceeds ``flow_threshold`` is dropped (a
   ``UserWarning`` when it drops nearly all: unit flows passed without ``FLOW_SCALE``?);
6. masks smaller than ``min_size`` are dropped and holes inside masks are filled.

Introduced in notebook 05.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import ndimage

from .._shared import jit
from .._shared.device import resolve_device
from .._shared.jit import numba
from .._shared.relabel import relabel_consecutive
from .._shared.validate import check_finite, is_tensor, to_numpy
from ..targets.flows import FLOW_SCALE, unit_flows
from ._end_points import find_peaks, grow_seeds

#: Masks covering more than this fraction of the image are dropped (a failed segmentation).
MAX_SIZE_FRACTION = 0.4


def as_real_array(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real-valued numeric array, got dtype {arr.dtype}")
    return arr


def _check_flows(flows: Any, name: str = "flows") -> np.ndarray:
    arr = as_real_array(flows, name)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, H, W) holding (dy, dx), got {arr.shape}")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    check_finite(arr, name)
    return np.ascontiguousarray(arr, dtype=np.float32)


@numba.njit(inline="always")
def _bilinear(f, y, x):  # pragma: no cover - compiled
    H, W = f.shape
    y0 = int(y)  # y, x >= 0: truncation is floor
    x0 = int(x)
    y1 = min(y0 + 1, H - 1)
    x1 = min(x0 + 1, W - 1)
    wy = y - np.float32(y0)
    wx = x - np.float32(x0)
    top = f[y0, x0] + wx * (f[y0, x1] - f[y0, x0])
    bottom = f[y1, x0] + wx * (f[y1, x1] - f[y1, x0])
    return top + wy * (bottom - top)


@numba.njit(parallel=True, cache=True)
def _follow_numba(fy, fx, pos, niter, step, path, keep_path):  # pragma: no cover - compiled
    H, W = fy.shape
    ymax, xmax = np.float32(H - 1), np.float32(W - 1)
    step, zero = np.float32(step), np.float32(0.0)
    K = 4  # cycles up to this period are detected
    for i in numba.prange(pos.shape[0]):
        ring = np.empty((K, 2), np.float32)
        y, x = pos[i, 0], pos[i, 1]
        ring[0, 0], ring[0, 1] = y, x
        if keep_path:
            path[0, i, 0], path[0, i, 1] = y, x
        for t in range(1, niter + 1):
            vy = _bilinear(fy, y, x)
            vx = _bilinear(fx, y, x)
            y = min(max(y + step * vy, zero), ymax)
            x = min(max(x + step * vx, zero), xmax)
            if keep_path:
                path[t, i, 0], path[t, i, 1] = y, x
                continue
            # Points end up cycling near a fixed point. The float32 state repeats exactly,
            # so the position after niter steps is known without taking them.
            period = 0
            for k in range(1, min(K, t) + 1):
                if ring[(t - k) % K, 0] == y and ring[(t - k) % K, 1] == x:
                    period = k
                    break
            if period:
                j = (t - period + (niter - t) % period) % K
                y, x = ring[j, 0], ring[j, 1]
                break
            ring[t % K, 0], ring[t % K, 1] = y, x
        pos[i, 0], pos[i, 1] = y, x


def _follow_torch(flows, pos, niter: int, step: float, keep_path: bool):
    """Euler steps with ``grid_sample`` (bilinear, pixel centres on the grid), for GPUs."""
    import torch
    import torch.nn.functional as F

    H, W = flows.shape[1:]
    image = flows[None]
    # align_corners=True maps -1 and 1 to the first and last pixel centres.
    scale = torch.tensor(
        [2.0 / max(H - 1, 1), 2.0 / max(W - 1, 1)], dtype=pos.dtype, device=pos.device
    )
    upper = torch.tensor([H - 1.0, W - 1.0], dtype=pos.dtype, device=pos.device)
    path = [pos.clone()] if keep_path else None
    for _ in range(niter):
        grid = (pos * scale - 1.0).flip(-1)[None, None]  # grid_sample wants (x, y)
        v = F.grid_sample(image, grid, mode="bilinear", align_corners=True)[0, :, 0].T
        pos = torch.minimum(torch.clamp(pos + step * v, min=0.0), upper)
        if keep_path:
            path.append(pos)
    return torch.stack(path) if keep_path else pos


def follow_flows(
    flows: Any,
    mask: Any,
    *,
    niter: int = 200,
    step: float = 1.0,
    device: Any = None,
    return_path: bool = False,
) -> Any:
    """Move pixels along a flow field: ``p <- clip(p + step * flows(p))``, ``niter`` times.

    Parameters
    ----------
    flows : numpy.ndarray or torch.Tensor, shape (2, H, W), float
        ``(dy, dx)`` in pixels per step, sampled bilinearly between pixel centres. Pass unit
        flows (``masks_to_flows``' output, or a network's output divided by ``FLOW_SCALE``).
    mask : array or tensor, shape (H, W), bool
        Pixels to start from; their start points are taken in raster order (``np.nonzero``).
    niter : int
        Number of Euler steps (default 200).
    step : float
        Multiplies the flows at every step (1.0: one pixel per step on unit flows).
    device : str or torch.device, optional
        Where to compute. Default: the tensor's device, else ``COURSE_DEVICE``, else CUDA when
        available, else the CPU (a compiled loop over points there; ``grid_sample`` on a GPU).
    return_path : bool
        Return every intermediate position too (memory: ``(niter + 1) * N * 8`` bytes).

    Returns
    -------
    positions : numpy.ndarray or torch.Tensor, float32
        ``(N, 2)`` end points ``(y, x)`` of the ``N = mask.sum()`` pixels, clipped to the image;
        ``(niter + 1, N, 2)`` with ``return_path=True`` (the start points first). Same kind as
        ``flows``; a tensor comes back on ``flows``' device.

    Notes
    -----
    Introduced in notebook 05.
    """
    import torch

    arr = _check_flows(flows)
    m = to_numpy(mask)
    if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
        # A float map (a probability) would start from every pixel that is not exactly 0.
        raise TypeError(f"mask must be a boolean array, got dtype {m.dtype}; threshold it first")
    if m.shape != arr.shape[1:]:
        raise ValueError(f"mask has shape {m.shape}, expected {arr.shape[1:]} like flows")
    if int(niter) < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    start = np.stack(np.nonzero(m), axis=1).astype(np.float32)
    dev = resolve_device(device, like=flows)
    if jit.use_numba(dev):
        path = np.zeros((int(niter) + 1 if return_path else 0, len(start), 2), np.float32)
        _follow_numba(arr[0], arr[1], start, int(niter), float(step), path, return_path)
        out = path if return_path else start
    else:
        out = _follow_torch(
            torch.from_numpy(arr).to(dev),
            torch.from_numpy(start).to(dev),
            int(niter),
            float(step),
            return_path,
        )
        out = out if is_tensor(flows) else out.cpu().numpy()
    if is_tensor(flows) and not is_tensor(out):
        out = torch.from_numpy(out).to(flows.device)
    return out


def _cluster_end_points(ends: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Mask id (int32, 0 = none) of each end point (N, 2), from the histogram of end points."""
    flat = ends[:, 0].astype(np.int64) * shape[1] + ends[:, 1].astype(np.int64)
    hist = np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape)
    peaks = find_peaks(hist)
    seeds = peaks[np.argsort(hist.ravel()[peaks], kind="stable")]
    return grow_seeds(hist, seeds).ravel()[flat]


def _flow_errors(labels: np.ndarray, n: int, unit: np.ndarray, device: Any) -> np.ndarray:
    """Mean squared difference (n,) between the masks' own flows and ``unit`` flows, per mask."""
    own = unit_flows(labels, n, None, device)
    err = ((own - unit) ** 2).sum(axis=0)
    total = np.bincount(labels.ravel(), weights=err.ravel(), minlength=n + 1)[1:]
    count = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return total / np.maximum(count, 1)


def _fill_holes(labels: np.ndarray) -> np.ndarray:
    """Give each background region enclosed by a single mask (not touching the border) to it."""
    regions, n = ndimage.label(labels == 0)  # 4-connected background regions
    inner = np.ones(n + 1, bool)
    inner[0] = False
    inner[regions[[0, -1]]] = False
    inner[regions[:, [0, -1]]] = False
    if not inner.any():
        return labels
    keys = []  # region * (max id + 1) + id, for every region pixel next to a mask pixel
    base = np.int64(labels.max()) + 1
    for a, b in (
        (regions[1:], labels[:-1]),
        (regions[:-1], labels[1:]),
        (regions[:, 1:], labels[:, :-1]),
        (regions[:, :-1], labels[:, 1:]),
    ):
        touch = inner[a] & (b > 0)
        keys.append(a[touch] * base + b[touch])
    keys = np.unique(np.concatenate(keys))
    region, first, n_owners = np.unique(keys // base, return_index=True, return_counts=True)
    owner = np.zeros(n + 1, labels.dtype)
    single = n_owners == 1  # a region between two masks is a gap, not a hole
    owner[region[single]] = keys[first[single]] % base
    return np.where(owner[regions] > 0, owner[regions], labels)


def drop_ids(labels: np.ndarray, drop: np.ndarray) -> tuple[np.ndarray, int]:
    """Zero the ids where ``drop`` (indexed by id, entry 0 ignored) is True and renumber."""
    drop = drop.copy()
    drop[0] = False
    return relabel_consecutive(np.where(drop[labels], 0, labels))


def _warn_if_flow_check_dropped_most(before: int, after: int, flow_threshold: float) -> None:
    """A flow check that drops every mask, or > 90 % of 5 or more, points at the inputs."""
    if before == 0 or not (after == 0 or (before >= 5 and before - after > 0.9 * before)):
        return
    warnings.warn(
        f"flows_to_masks: the flow check (flow_threshold={flow_threshold}) dropped "
        f"{before - after} of {before} masks. Likely causes: flows that are not at the "
        f"network's scale (FLOW_SCALE = {FLOW_SCALE:g} times unit flows; pass "
        "FLOW_SCALE * masks_to_flows(labels), not the unit flows of masks_to_flows), or a "
        "flow_threshold too strict for these flows (flow_threshold=None turns the check off).",
        UserWarning,
        stacklevel=3,
    )


def _check_masks_args(flows, cellprob, niter, min_size, flow_threshold) -> tuple:
    arr = _check_flows(flows)
    prob = as_real_array(cellprob, "cellprob")
    if prob.shape != arr.shape[1:]:
        raise ValueError(f"cellprob has shape {prob.shape}, expected {arr.shape[1:]} like flows")
    check_finite(prob, "cellprob")  # a NaN logit is not background: refuse it like NaN flows
    if int(niter) < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    if int(min_size) < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if flow_threshold is not None and flow_threshold < 0:
        raise ValueError(f"flow_threshold must be >= 0 or None, got {flow_threshold}")
    return arr, prob


def flows_to_masks(
    flows: Any,
    cellprob: Any,
    *,
    cellprob_threshold: float = 0.0,
    flow_threshold: float | None = 0.4,
    niter: int = 200,
    min_size: int = 15,
    device: Any = None,
) -> Any:
    """Instance labels from Cellpose network outputs: follow the flows, group the end points.

    Parameters
    ----------
    flows : numpy.ndarray or torch.Tensor, shape (2, H, W), float
        Predicted ``(dy, dx)`` at the **network's scale**: ``FLOW_SCALE`` (5) times unit flows,
        the scale Cellpose networks are trained on and that the reference's ``compute_masks``
        takes. For flows from ``masks_to_flows`` pass ``FLOW_SCALE * flows``.
    cellprob : numpy.ndarray or torch.Tensor, shape (H, W), float
        Cell probability as a **logit** (the network's raw output); pixels above
        ``cellprob_threshold`` are followed.
    cellprob_threshold : float
        Logit threshold for foreground (0.0 is probability 0.5).
    flow_threshold : float or None
        Drop masks whose mean squared error between their own recomputed unit flows and the
        given flows / ``FLOW_SCALE`` exceeds this; ``None`` or 0 turns the check off.
    niter : int
        Euler steps of flow following (one pixel per step on unit flows).
    min_size : int
        Drop masks with fewer pixels (0 keeps all).
    device : str or torch.device, optional
        Where to follow flows and recompute them. Default: the tensor's device, else
        ``COURSE_DEVICE``, else CUDA when available, else the CPU.

    Returns
    -------
    labels : numpy.ndarray or torch.Tensor, shape (H, W), int32
        0 = background, masks 1..N consecutive. Same kind as ``flows``; a tensor comes back on
        ``flows``' device.

    Raises
    ------
    TypeError
        If an input is not numeric.
    ValueError
        On shape mismatches, NaN or infinite flows or cellprob, or negative ``niter`` /
        ``min_size``.

    Warns
    -----
    UserWarning
        When the flow check drops every mask, or more than 90 % of 5 or more: usually unit
        flows passed without ``FLOW_SCALE``, or a too strict ``flow_threshold``.

    Notes
    -----
    Masks larger than ``MAX_SIZE_FRACTION`` of the image are dropped. Introduced in notebook 05.
    """
    arr, prob = _check_masks_args(flows, cellprob, niter, min_size, flow_threshold)
    dev = resolve_device(device, like=flows)
    fg = prob > cellprob_threshold
    labels = np.zeros(fg.shape, np.int32)
    if fg.any():
        unit = arr / FLOW_SCALE
        ends = follow_flows(unit * fg, fg, niter=niter, device=dev)
        ends = ends.cpu().numpy() if is_tensor(ends) else ends
        labels[fg] = _cluster_end_points(ends, fg.shape)
        sizes = np.bincount(labels.ravel())
        labels, n = drop_ids(labels, sizes > MAX_SIZE_FRACTION * labels.size)
        if n and flow_threshold:
            errors = _flow_errors(labels, n, unit, dev)
            labels, kept = drop_ids(labels, np.concatenate([[False], errors > flow_threshold]))
            _warn_if_flow_check_dropped_most(n, kept, flow_threshold)
            n = kept
        if n and min_size:
            labels, n = drop_ids(labels, np.bincount(labels.ravel()) < min_size)
        labels = _fill_holes(labels)  # keeps the ids 1..n
    if is_tensor(flows):
        import torch

        return torch.from_numpy(labels).to(flows.device)
    return labels
