"""Cellpose flow targets in 3-D: instance label volumes -> unit vector fields to each cell's centre.

The 3-D counterpart of :mod:`course_utils.targets.flows`: every cell is heated at its centre
voxel while the heat diffuses inside the cell only, and the normalised spatial gradient of the
heat is the flow ``(dz, dy, dx)``. The definitions follow the reference implementation
(cellpose 4, ``dynamics.masks_to_flows_gpu_3d``) so that flows agree with it:

- centre: the cell voxel nearest to the cell's mean voxel position (not rounded; the first voxel
  in raster order on ties), distances computed in bounding-box coordinates as the reference does;
- diffusion: ``niter`` Jacobi steps; each step adds 1 at every centre, then replaces each cell
  voxel by the sum of itself and its 6 face neighbours *of the same cell*, divided by 7 (voxels
  of other cells and background count as 0);
- default ``niter``: six times the largest ``depth + height + width + 3`` of a cell's bounding
  box;
- flow: central differences of the heat, ``(T[z+1] - T[z-1], T[y+1] - T[y-1], T[x+1] - T[x-1])``
  (neighbours of any cell count), divided by ``1e-60 + `` their length.

The heat is kept in float64 (the reference switches to float32 above 4e7 voxels). Cells are
stored one after the other in a compact array with a table of their neighbours, so that each cell
diffuses on its own: a parallel loop over cells on the CPU (numba), a gather over the table with
torch on other devices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._shared import jit
from .._shared.device import resolve_device
from .._shared.jit import numba
from .._shared.relabel import relabel_consecutive
from .._shared.validate import check_labels, is_tensor

__all__ = ["flows_3d", "unit_flows_3d"]


@numba.njit(cache=True)
def _group_voxels(lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels of cells 1..n grouped by cell, raster order within a cell.

    ``lab``: int32 (Z, Y, X) zero-padded by one voxel. Returns ``flat`` (N,) int64 padded flat
    indices, ``first`` (n + 1,) int64 (cell k: ``flat[first[k - 1]:first[k]]``) and ``where``
    (lab.size,) int64: each voxel's position in ``flat``, ``N`` (the sentinel) off cells.
    """
    lf = lab.ravel()
    count = np.zeros(n + 1, np.int64)
    for i in range(lf.size):
        count[lf[i]] += 1
    first = np.zeros(n + 1, np.int64)
    first[1:] = np.cumsum(count[1:])
    total = first[n]
    fill = first.copy()
    flat = np.empty(total, np.int64)
    where = np.full(lf.size, total, np.int64)
    for i in range(lf.size):
        k = lf[i]
        if k > 0:
            flat[fill[k - 1]] = i
            where[i] = fill[k - 1]
            fill[k - 1] += 1
    return flat, first, where


@numba.njit(cache=True)
def _centres(lab: np.ndarray, flat: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, int]:
    """Compact index (n,) of each cell's centre voxel and the default number of steps."""
    _, Yp, Xp = lab.shape
    n = first.size - 1
    centre = np.zeros(n, np.int64)
    longest = 0
    for k in range(n):
        lo, hi = first[k], first[k + 1]
        z0, y0, x0 = 1 << 40, 1 << 40, 1 << 40
        z1, y1, x1 = -1, -1, -1
        for j in range(lo, hi):
            z, r = divmod(flat[j], Yp * Xp)
            y, x = divmod(r, Xp)
            z0, z1 = min(z0, z), max(z1, z)
            y0, y1 = min(y0, y), max(y1, y)
            x0, x1 = min(x0, x), max(x1, x)
        sz, sy, sx = 0, 0, 0
        for j in range(lo, hi):  # bounding-box coordinates + 1, as in the reference
            z, r = divmod(flat[j], Yp * Xp)
            y, x = divmod(r, Xp)
            sz += z - z0 + 1
            sy += y - y0 + 1
            sx += x - x0 + 1
        cnt = hi - lo
        mz, my, mx = sz / cnt, sy / cnt, sx / cnt
        best = np.inf
        for j in range(lo, hi):
            z, r = divmod(flat[j], Yp * Xp)
            y, x = divmod(r, Xp)
            dz, dy, dx = (z - z0 + 1) - mz, (y - y0 + 1) - my, (x - x0 + 1) - mx
            d2 = dz * dz + dx * dx + dy * dy  # the reference's order of the terms
            if d2 < best:  # strict: the first voxel in raster order wins ties
                best = d2
                centre[k] = j
        longest = max(longest, (z1 - z0 + 2) + (y1 - y0 + 2) + (x1 - x0 + 2))
    return centre, 6 * longest


@numba.njit(cache=True)
def _neighbour_table(lab: np.ndarray, flat: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(7, N) int64 compact indices of self, z+1, z-1, y+1, y-1, x+1, x-1 (same cell, else N)."""
    _, Yp, Xp = lab.shape
    lf = lab.ravel()
    N = flat.size
    steps = (0, Yp * Xp, -Yp * Xp, Xp, -Xp, 1, -1)
    nb = np.full((7, N), N, np.int64)
    for j in range(N):
        i = flat[j]
        for s in range(7):
            if lf[i + steps[s]] == lf[i]:
                nb[s, j] = where[i + steps[s]]
    return nb


@numba.njit(parallel=True, cache=True)
def _diffuse_numba(nb: np.ndarray, first: np.ndarray, centre: np.ndarray, niter: int) -> np.ndarray:
    """Heat (N + 1,) float64 after ``niter`` steps; entry N (the sentinel) stays 0.

    Cells never exchange heat, so each cell runs all its steps on its own (one parallel loop
    over cells, no synchronisation between steps, and a cell's voxels stay in cache).
    """
    N = nb.shape[1]
    T = np.zeros(N + 1, np.float64)
    Tn = np.zeros(N + 1, np.float64)
    for k in numba.prange(first.size - 1):
        for step in range(niter):
            src, dst = (T, Tn) if step % 2 == 0 else (Tn, T)
            src[centre[k]] += 1.0
            for j in range(first[k], first[k + 1]):
                s = src[nb[0, j]]
                for m in range(1, 7):  # the reference's order of the terms
                    s += src[nb[m, j]]
                dst[j] = s / 7.0
    return T if niter % 2 == 0 else Tn


def _diffuse_torch(nb: np.ndarray, centre: np.ndarray, niter: int, device: Any) -> np.ndarray:
    """Same as :func:`_diffuse_numba` with a gather over the table (float32 on MPS)."""
    import torch

    dtype = torch.float32 if device.type == "mps" else torch.float64
    N = nb.shape[1]
    idx = torch.as_tensor(nb, device=device)
    ctr = torch.as_tensor(centre, device=device)
    T = torch.zeros(N + 1, dtype=dtype, device=device)
    for _ in range(niter):
        T[ctr] += 1.0
        T[:N] = T[idx].sum(dim=0) / 7.0
    return T.cpu().double().numpy()


@numba.njit(cache=True)
def _flows_from_heat(
    T: np.ndarray, where: np.ndarray, flat: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """Unit (3, Z, Y, X) float32 flows at the cell voxels ``flat`` of the padded volume."""
    Z, Y, X = shape
    Yp, Xp = Y + 2, X + 2
    steps = (Yp * Xp, Xp, 1)
    out = np.zeros((3, Z, Y, X), np.float32)
    g = np.zeros(3, np.float64)
    for j in range(flat.size):
        i = flat[j]
        for a in range(3):
            g[a] = T[where[i + steps[a]]] - T[where[i - steps[a]]]
        norm = 1e-60 + np.sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2])
        z, r = divmod(i, Yp * Xp)
        y, x = divmod(r, Xp)
        for a in range(3):
            out[a, z - 1, y - 1, x - 1] = g[a] / norm
    return out


def unit_flows_3d(lab: np.ndarray, n: int, niter: int | None, device: Any) -> np.ndarray:
    """Unit flows (3, Z, Y, X) float32 of consecutive int32 labels 1..n, without checks.

    The core of :func:`flows_3d`; ``device`` is a ``torch.device`` (the CPU runs the numba
    kernels, other devices the torch gather).
    """
    if n == 0:
        return np.zeros((3, *lab.shape), np.float32)
    padded = np.pad(np.ascontiguousarray(lab, np.int32), 1)
    flat, first, where = _group_voxels(padded, int(n))
    centre, default = _centres(padded, flat, first)
    steps = int(default) if niter is None else int(niter)
    nb = _neighbour_table(padded, flat, where)
    if jit.use_numba(device):
        T = _diffuse_numba(nb, first, centre, steps)
    else:
        T = _diffuse_torch(nb, centre, steps, device)
    return _flows_from_heat(T, where, flat, lab.shape)


def flows_3d(labels: Any, device: Any = None, *, niter: int | None = None) -> Any:
    """Cellpose flows of a 3-D instance label volume: unit vectors pointing to each cell's centre.

    Parameters
    ----------
    labels : numpy.ndarray or torch.Tensor, shape (Z, Y, X), integer
        Instance labels, 0 = background. Ids need not be consecutive (huge ids are relabelled);
        voxels sharing an id form one cell even when disconnected.
    device : str or torch.device, optional
        Where to diffuse. Default: the tensor's device for tensor input; for numpy input,
        ``COURSE_DEVICE`` when set, else CUDA when available, else the CPU (compiled numba
        loop over cells there, a torch gather elsewhere).
    niter : int, optional
        Diffusion steps. Default: six times the largest ``depth + height + width + 3`` of a
        cell's bounding box (the reference's choice).

    Returns
    -------
    flows : numpy.ndarray or torch.Tensor, shape (3, Z, Y, X), float32
        ``(dz, dy, dx)``: unit length on cell voxels (except where the gradient vanishes
        exactly), 0 on background. Same kind as ``labels``; a tensor comes back on
        ``labels``' device. A Cellpose network is trained on ``FLOW_SCALE * flows``.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array.
    ValueError
        If ``labels`` is not 3-D, is empty or has negative ids, or ``niter`` is negative.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((5, 5, 7), np.int32)
    >>> labels[1:4, 1:4, 1:6] = 1
    >>> flows = flows_3d(labels, device="cpu")
    >>> flows.shape, flows.dtype
    ((3, 5, 5, 7), dtype('float32'))
    >>> bool(flows[2, 2, 2, 1] > 0.99)  # left of the centre (2, 2, 3): the flow points right
    True

    Introduced in notebook 11.
    """
    if niter is not None and int(niter) < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    arr = check_labels(labels, ndim=(3,))
    dev = resolve_device(device, like=labels)
    lab, n = relabel_consecutive(arr)
    flows = unit_flows_3d(lab, n, niter, dev)
    if is_tensor(labels):
        import torch

        return torch.from_numpy(flows).to(labels.device)
    return flows
