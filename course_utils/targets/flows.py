"""Cellpose flow targets: instance labels -> unit vector fields pointing to each cell's centre.

Every cell is heated at its centre while the heat diffuses inside the cell only; the normalised
spatial gradient of the resulting heat map is the flow (Stringer et al., Nature Methods 2021).
Following the flows from any pixel of a cell leads to that cell's centre, which is how
``course_utils.postprocess.flows_to_masks`` turns predicted flows back into instances.

The definitions follow the reference implementation (cellpose 4), so that flows agree with it:

- centre: the cell's mean pixel position, rounded half-to-even in coordinates relative to the
  cell's bounding box; when that pixel lies outside the cell (a crescent, a ring), the cell pixel
  nearest to it (the first in raster order on ties);
- diffusion: ``niter`` Jacobi steps; each step adds 1 at every centre, then replaces each cell
  pixel by the sum of itself and its 8 neighbours *of the same cell*, divided by 9 (pixels of
  other cells and background count as 0, so heat leaks out at the border);
- default ``niter``: twice the largest ``height + width + 2`` of a cell's bounding box;
- flow: central differences of the heat map, ``(T[y+1,x] - T[y-1,x], T[y,x+1] - T[y,x-1])``,
  divided by their length.

All cells are processed at once: a compiled stencil over the whole image on the CPU (numba),
tensor slicing on a GPU. Introduced in notebook 05.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._shared import jit
from .._shared.device import resolve_device
from .._shared.jit import numba
from .._shared.relabel import relabel_consecutive
from .._shared.validate import check_labels, is_tensor

#: Scale of the flows a Cellpose network is trained on: targets are ``FLOW_SCALE * unit flows``.
FLOW_SCALE = 5.0


@numba.njit(cache=True)
def _centres_numba(lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (row, col) and bounding-box ``height + width + 2`` of cells 1..n of ``lab``."""
    H, W = lab.shape
    count = np.zeros(n + 1, np.int64)
    sy = np.zeros(n + 1, np.int64)
    sx = np.zeros(n + 1, np.int64)
    y0 = np.full(n + 1, H, np.int64)
    y1 = np.full(n + 1, -1, np.int64)
    x0 = np.full(n + 1, W, np.int64)
    x1 = np.full(n + 1, -1, np.int64)
    for y in range(H):
        for x in range(W):
            k = lab[y, x]
            if k > 0:
                count[k] += 1
                sy[k] += y
                sx[k] += x
                y0[k] = min(y0[k], y)
                y1[k] = max(y1[k], y)
                x0[k] = min(x0[k], x)
                x1[k] = max(x1[k], x)
    cy = np.zeros(n + 1, np.int64)
    cx = np.zeros(n + 1, np.int64)
    best = np.full(n + 1, -1, np.int64)  # -1: the rounded mean is inside the cell
    for k in range(1, n + 1):
        if count[k] == 0:
            continue
        # Rounding happens in bounding-box coordinates, as in the reference (half-to-even).
        cy[k] = y0[k] + np.int64(np.rint((sy[k] - count[k] * y0[k]) / count[k]))
        cx[k] = x0[k] + np.int64(np.rint((sx[k] - count[k] * x0[k]) / count[k]))
        if lab[cy[k], cx[k]] != k:
            best[k] = np.iinfo(np.int64).max
    ny = cy.copy()
    nx = cx.copy()
    for y in range(H):  # nearest cell pixel for the cells whose mean falls outside them
        for x in range(W):
            k = lab[y, x]
            if k > 0 and best[k] >= 0:
                d2 = (y - cy[k]) ** 2 + (x - cx[k]) ** 2
                if d2 < best[k]:  # strict: the first pixel in raster order wins ties
                    best[k] = d2
                    ny[k] = y
                    nx[k] = x
    ext = (y1 - y0 + 1) + (x1 - x0 + 1) + 2
    return ny[1:], nx[1:], ext[1:]


@numba.njit(cache=True)
def _cell_runs(lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row runs ``(y, x_start, x_stop)`` of each cell 1..n of ``lab``, grouped by cell.

    Returns ``runs`` (m, 3) int64 and ``first`` (n + 1,): cell k's runs are
    ``runs[first[k - 1]:first[k]]``.
    """
    H, W = lab.shape
    count = np.zeros(n + 1, np.int64)
    for y in range(H):
        for x in range(W):
            k = lab[y, x]
            if k > 0 and (x == 0 or lab[y, x - 1] != k):
                count[k] += 1
    first = np.zeros(n + 1, np.int64)
    first[1:] = np.cumsum(count[1:])
    fill = first.copy()
    runs = np.empty((first[n], 3), np.int64)
    for y in range(H):
        x = 0
        while x < W:
            k = lab[y, x]
            start = x
            while x < W and lab[y, x] == k:
                x += 1
            if k > 0:
                runs[fill[k - 1], 0] = y
                runs[fill[k - 1], 1] = start
                runs[fill[k - 1], 2] = x
                fill[k - 1] += 1
    return runs, first


@numba.njit(parallel=True, cache=True)
def _diffuse_numba(lab: np.ndarray, cy: np.ndarray, cx: np.ndarray, niter: int) -> np.ndarray:
    """Heat map (H+2, W+2) float64 after ``niter`` steps; ``lab`` is zero-padded by one pixel.

    Cells never exchange heat, so each cell runs all its steps on its own (one parallel loop
    over cells, no synchronisation between steps, and a cell's pixels stay in cache).
    """
    n = cy.size
    runs, first = _cell_runs(lab, n)
    T = np.zeros(lab.shape, np.float64)
    Tn = np.zeros(lab.shape, np.float64)
    for k in numba.prange(n):
        c = k + 1
        for step in range(niter):
            src, dst = (T, Tn) if step % 2 == 0 else (Tn, T)
            src[cy[k], cx[k]] += 1.0
            for r in range(first[k], first[k + 1]):
                y = runs[r, 0]
                for x in range(runs[r, 1], runs[r, 2]):
                    s = src[y, x]
                    for dy in range(-1, 2):
                        for dx in range(-1, 2):
                            if (dy != 0 or dx != 0) and lab[y + dy, x + dx] == c:
                                s += src[y + dy, x + dx]
                    dst[y, x] = s / 9.0
    return T if niter % 2 == 0 else Tn


@numba.njit(cache=True)
def _flows_from_heat(T: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Unit (2, H, W) float32 flows from a padded heat map; zero where ``lab`` is 0."""
    H, W = lab.shape
    flows = np.zeros((2, H, W), np.float32)
    for y in range(H):
        for x in range(W):
            if lab[y, x] != 0:
                dy = T[y + 2, x + 1] - T[y, x + 1]
                dx = T[y + 1, x + 2] - T[y + 1, x]
                norm = np.sqrt(dy * dy + dx * dx) + 1e-60  # exact zeros stay zero
                flows[0, y, x] = dy / norm
                flows[1, y, x] = dx / norm
    return flows


def _diffuse_torch(lab: np.ndarray, cy: np.ndarray, cx: np.ndarray, niter: int, device: Any):
    """Same as :func:`_diffuse_numba` with tensor slicing, for GPUs (float32 on MPS)."""
    import torch

    dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
    L = torch.as_tensor(lab, device=device)
    Hp, Wp = lab.shape
    inner = L[1:-1, 1:-1]
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    # Which of the 8 neighbours belongs to the same cell, for every pixel (computed once).
    same = [
        ((L[1 + dy : Hp - 1 + dy, 1 + dx : Wp - 1 + dx] == inner) & (inner > 0)).to(dtype)
        for dy, dx in shifts
    ]
    fg = (inner > 0).to(dtype)
    T = torch.zeros((Hp, Wp), dtype=dtype, device=device)
    flat = torch.as_tensor(cy * Wp + cx, device=device)
    for _ in range(niter):
        T.view(-1)[flat] += 1.0
        s = T[1:-1, 1:-1] * fg
        for (dy, dx), w in zip(shifts, same, strict=True):
            s = s + w * T[1 + dy : Hp - 1 + dy, 1 + dx : Wp - 1 + dx]
        T = torch.nn.functional.pad(s / 9.0, (1, 1, 1, 1))
    return T


def _heat_map(lab: np.ndarray, n: int, niter: int | None, device: Any) -> np.ndarray:
    """Heat map (H+2, W+2) float64, zero-padded, of consecutive int32 labels 1..n (n >= 1)."""
    cy, cx, ext = _centres_numba(lab, int(n))  # int: one compiled signature
    steps = int(2 * ext.max()) if niter is None else int(niter)
    padded = np.pad(lab, 1)
    if jit.use_numba(device):
        return _diffuse_numba(padded, cy + 1, cx + 1, steps)
    # To the CPU first: MPS has no float64.
    return _diffuse_torch(padded, cy + 1, cx + 1, steps, device).cpu().double().numpy()


def unit_flows(lab: np.ndarray, n: int, niter: int | None, device: Any) -> np.ndarray:
    """Unit flows (2, H, W) float32 of labels that are already consecutive, without checks.

    The core of :func:`masks_to_flows`, shared with ``postprocess.flows_to_masks`` (which
    recomputes the flows of its own masks for the flow check). ``lab``: int32 (H, W) with ids
    exactly 1..n (see ``_shared.relabel``); ``niter``: diffusion steps, ``None`` for the default;
    ``device``: a ``torch.device`` (the CPU runs the numba kernels).
    """
    if n == 0:
        return np.zeros((2, *lab.shape), np.float32)
    return _flows_from_heat(_heat_map(lab, n, niter, device), lab)


def masks_to_flows(labels: Any, *, niter: int | None = None, device: Any = None) -> Any:
    """Cellpose flows of an instance label image: unit vectors pointing to each cell's centre.

    Parameters
    ----------
    labels : numpy.ndarray or torch.Tensor, shape (H, W), integer
        Instance labels, 0 = background. Ids need not be consecutive; pixels sharing an id form
        one cell even when disconnected.
    niter : int, optional
        Diffusion steps. Default: twice the largest ``height + width + 2`` of a cell's
        bounding box (the reference's choice, enough for heat to cross every cell).
    device : str or torch.device, optional
        Where to compute. Default: the tensor's device for tensor input; for numpy input,
        ``COURSE_DEVICE`` when set, else CUDA when available, else the CPU. The CPU path is a
        compiled (numba) stencil over the whole image, the GPU path the same stencil with
        tensor slicing.

    Returns
    -------
    flows : numpy.ndarray or torch.Tensor, shape (2, H, W), float32
        ``(dy, dx)``: unit length on cell pixels (except where the gradient vanishes exactly),
        0 on background. Same kind as ``labels``; a tensor comes back on ``labels``' device.
        A Cellpose network is trained on ``FLOW_SCALE * flows``.

    Raises
    ------
    TypeError
        If ``labels`` is not an integer array.
    ValueError
        If ``labels`` is not 2D, is empty or has negative ids, or ``niter`` is negative.

    Notes
    -----
    Introduced in notebook 05.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((5, 7), np.int32)
    >>> labels[1:4, 1:6] = 1
    >>> flows = masks_to_flows(labels, device="cpu")
    >>> flows.shape, flows.dtype
    ((2, 5, 7), dtype('float32'))
    >>> bool(flows[1, 2, 1] > 0)  # left of the centre (2, 3): the flow points right
    True
    """
    if niter is not None and int(niter) < 0:
        raise ValueError(f"niter must be >= 0, got {niter}")
    arr = check_labels(labels)
    dev = resolve_device(device, like=labels)
    lab, n = relabel_consecutive(arr)
    flows = unit_flows(lab, n, niter, dev)
    if is_tensor(labels):
        import torch

        return torch.from_numpy(flows).to(labels.device)
    return flows


def cellpose_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of the Cellpose-style method: scaled flows and the cell mask.

    ``labels`` integer (h, w). Returns ``FLOW_SCALE`` x :func:`masks_to_flows` (float32
    (2, h, w)) and the foreground (float32 (h, w), 1 inside cells). Computed on the CPU:
    DataLoader workers are forked processes, which must not touch a GPU.
    """
    flows = FLOW_SCALE * masks_to_flows(labels, device="cpu")
    return flows.astype(np.float32), (np.asarray(labels) > 0).astype(np.float32)
