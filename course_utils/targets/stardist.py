"""StarDist training targets: radial distances along rays and the object probability.

StarDist (Schmidt et al., MICCAI 2018) describes every object by a star-convex polygon: from a
pixel inside the object, ``n_rays`` rays at the angles ``2 pi k / n_rays`` run until they leave
the object, and the network learns these ``n_rays`` distances for every pixel, together with an
object probability (the distance to the background, normalised per object). StarDist 3D
(Weigert et al., WACV 2020) does the same in a volume with rays spread over the sphere
(``targets.stardist3d``).

``star_dist`` follows the reference ``stardist`` package step for step (float32 steps of length
one along the ray, rounding to the nearest pixel, a half-pixel correction at the exit), so the
two agree to float precision; it runs in numba on numpy arrays and in PyTorch on tensors (any
device). Ray k points along (row, col) = (sin phi_k, cos phi_k).

Introduced in notebook 06.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._shared.jit import numba
from .._shared.relabel import relabel_consecutive
from .._shared.validate import check_grid, check_int

__all__ = ["edt_prob", "ray_angles", "star_dist", "stardist_targets"]


def ray_angles(n_rays: int = 32) -> np.ndarray:
    """Angles of the ``n_rays`` rays, ``2 pi k / n_rays`` for k = 0 .. n_rays - 1.

    Returns
    -------
    np.ndarray, float64, shape (n_rays,)
        Ray k points along (row, col) = (sin phi_k, cos phi_k).

    Introduced in notebook 06.
    """
    n_rays = _check_n_rays(n_rays)
    return np.linspace(0, 2 * np.pi, n_rays, endpoint=False)


def _check_n_rays(n_rays: Any) -> int:
    return check_int(n_rays, "n_rays", minimum=3)


def _check_labels_np(labels: Any, ndim: int, name: str = "labels") -> np.ndarray:
    """Checked labels as int32: relabelled 1..n when an id does not fit (the results carry no
    ids, and the kernels only compare ids)."""
    labels = np.asarray(labels)
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(
            f"{name} must be an integer label image (0 = background), got dtype {labels.dtype}"
        )
    if labels.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {labels.shape}")
    if labels.size == 0:
        raise ValueError(f"{name} is empty (shape {labels.shape})")
    if labels.min() < 0:
        raise ValueError(f"{name} has negative ids (min {labels.min()}); ids must be >= 0")
    if labels.max() > np.iinfo(np.int32).max:
        return relabel_consecutive(labels)[0]
    return labels.astype(np.int32, copy=False)


def _ray_tables(n_rays: int, n_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ray: the row/col offsets after each step and the distance when stopping there.

    Returns ``off_r, off_c`` (n_rays, n_steps) float32, where ``off[k, n]`` is the offset after
    n + 1 steps, and ``dist`` (n_rays, n_steps) float32, the reported distance when the ray
    leaves the object at step n + 1. The offsets do not depend on the pixel, so the float32
    accumulation of the reference (``x += dx`` every step) is done once here, in the same order.
    """
    # Same float32 arithmetic as the reference: the angle step is rounded to float32 once, the
    # angle is k * step in float32, sin/cos are rounded to float32.
    step = np.float32(2 * np.pi / n_rays)
    phi = np.arange(n_rays, dtype=np.float32) * step
    d_r = np.sin(phi.astype(np.float64)).astype(np.float32)
    d_c = np.cos(phi.astype(np.float64)).astype(np.float32)
    # add.accumulate adds sequentially, exactly like the running sum along the ray.
    off_r = np.cumsum(np.repeat(d_r[:, None], n_steps, axis=1), axis=1, dtype=np.float32)
    off_c = np.cumsum(np.repeat(d_c[:, None], n_steps, axis=1), axis=1, dtype=np.float32)
    # Leaving at step n overshoots the boundary: go back to half a pixel past the last inside one.
    t_corr = np.float32(0.5) / np.maximum(np.abs(d_r), np.abs(d_c))
    back = t_corr - np.float32(1)
    y = off_r + (back * d_r)[:, None]
    x = off_c + (back * d_c)[:, None]
    return off_r, off_c, np.sqrt(y * y + x * x).astype(np.float32)


# Marks a step whose pixel offset depends on the start pixel (see ``_flat_offsets``).
_EXACT = np.iinfo(np.int64).min


def _flat_offsets(off_r: np.ndarray, off_c: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Offsets (n_rays, n_steps) into the flattened, one-pixel-padded label image.

    rint(float32(r0) + off) equals r0 + rint(off) for every start row r0 of the image unless
    the fraction of ``off`` lies within float32 rounding error of one half: those steps are
    marked ``_EXACT`` and computed per pixel, as the reference does for every step.
    """
    width = shape[1] + 2
    big = max(shape) + off_r.shape[1] + 2
    margin = 2.0 ** (math.ceil(math.log2(big)) - 22)  # two float32 ulps at that magnitude
    flat = np.rint(off_r).astype(np.int64) * width + np.rint(off_c).astype(np.int64)
    for off in (off_r, off_c):
        frac = off.astype(np.float64) - np.floor(off)
        flat[np.abs(frac - 0.5) <= margin] = _EXACT
    return flat


@numba.njit(cache=True, nogil=True, parallel=True)
def _star_dist_kernel(
    padded, flat, off_r, off_c, dist_tab, grid_y, grid_x, out
):  # pragma: no cover
    width = padded.shape[1]
    lab = padded.ravel()
    n_rays = off_r.shape[0]
    for i in numba.prange(out.shape[0]):  # rows in parallel: each writes its own output row
        for j in range(out.shape[1]):
            r0 = i * grid_y
            c0 = j * grid_x
            base = (r0 + 1) * width + c0 + 1
            value = lab[base]
            if value == 0:  # ``out`` starts at zero
                continue
            for k in range(n_rays):
                n = 0
                while True:
                    step = flat[k, n]
                    if step == _EXACT:
                        # float32 sum, then round half to even, as the reference does.
                        ii = int(np.rint(np.float32(r0) + off_r[k, n]))
                        jj = int(np.rint(np.float32(c0) + off_c[k, n]))
                        at = (ii + 1) * width + jj + 1
                    else:
                        at = base + step
                    # The padding (-1) stops every ray: a step moves less than one pixel
                    # along each axis unless it is an exact axis step, so it cannot skip it.
                    if lab[at] != value:
                        break
                    n += 1
                out[i, j, k] = dist_tab[k, n]


@functools.lru_cache(maxsize=16)
def _tables_for(n_rays: int, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """``_ray_tables`` and ``_flat_offsets`` of an image shape, read-only, made once: training
    computes the distances of many patches of one size."""
    off_r, off_c, dist_tab = _ray_tables(n_rays, _n_steps(shape))
    tables = (off_r, off_c, dist_tab, _flat_offsets(off_r, off_c, shape))
    for table in tables:
        table.flags.writeable = False
    return tables


def _n_steps(shape: tuple[int, ...]) -> int:
    # Each step moves >= 1/sqrt(2) along one axis, so every ray leaves the image before this.
    return int(math.ceil(math.sqrt(2) * (max(shape) + 2))) + 2


def star_dist(labels: Any, n_rays: int = 32, grid: tuple[int, int] = (1, 1)) -> Any:
    """Distances from every pixel to its object's boundary along ``n_rays`` rays.

    Parameters
    ----------
    labels : np.ndarray or torch.Tensor, integer, shape (H, W)
        Instance labels, 0 = background.
    n_rays : int
        Number of rays (>= 3), at the angles of :func:`ray_angles`.
    grid : (int, int)
        Subsampling of the output (as StarDist's ``grid``): pixel (i, j) of the output is
        pixel (i * grid[0], j * grid[1]) of ``labels``.

    Returns
    -------
    np.ndarray or torch.Tensor, float32, shape (ceil(H / grid[0]), ceil(W / grid[1]), n_rays)
        0 on the background. The image border counts as background. A tensor input gives a
        tensor on the same device (a PyTorch implementation that runs on the GPU).

    Notes
    -----
    Same semantics as ``stardist.geometry.star_dist`` (which casts labels to uint16; ids here
    may be any non-negative integers, also 64-bit).

    Introduced in notebook 06.
    """
    n_rays = _check_n_rays(n_rays)
    grid = check_grid(grid)
    if type(labels).__module__.startswith("torch"):
        return _star_dist_torch(labels, n_rays, grid)
    labels = np.ascontiguousarray(_check_labels_np(labels, 2), dtype=np.int32)
    off_r, off_c, dist_tab, flat = _tables_for(n_rays, labels.shape)
    padded = np.pad(labels, 1, constant_values=-1)
    out_shape = ((labels.shape[0] - 1) // grid[0] + 1, (labels.shape[1] - 1) // grid[1] + 1)
    # np.zeros hands back memory that is zero already (calloc): the kernel writes the foreground.
    out = np.zeros((*out_shape, n_rays), np.float32)
    _star_dist_kernel(padded, flat, off_r, off_c, dist_tab, grid[0], grid[1], out)
    return out


def _star_dist_torch(labels: Any, n_rays: int, grid: tuple[int, int]) -> Any:
    """PyTorch version: (pixel, ray) pairs step together; finished pairs drop out."""
    import torch

    if labels.dtype == torch.bool or labels.dtype.is_floating_point or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.ndim != 2 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 2-D tensor, got shape {tuple(labels.shape)}")
    if labels.min() < 0:
        raise ValueError("labels has negative ids; ids must be >= 0")
    dev = labels.device
    lab = labels.to(torch.int64)
    sub = lab[:: grid[0], :: grid[1]]
    out = torch.zeros((*sub.shape, n_rays), dtype=torch.float32, device=dev)
    tables = [torch.from_numpy(t).to(dev) for t in _ray_tables(n_rays, _n_steps(lab.shape))]
    fg = torch.nonzero(sub)
    # Chunks keep the temporaries small: on the CPU, fresh large buffers cost page faults.
    chunk = 1 << 22 if dev.type == "cuda" else 1 << 15
    flat = out.view(-1, n_rays)
    for start in range(0, len(fg), chunk):
        rc = fg[start : start + chunk] * torch.tensor(grid, device=dev)
        steps = _torch_steps(lab, rc, tables[0], tables[1])
        pix = fg[start : start + chunk, 0] * sub.shape[1] + fg[start : start + chunk, 1]
        flat[pix] = torch.gather(tables[2], 1, steps.T).T
    return out


def _torch_steps(lab: Any, rc: Any, off_r: Any, off_c: Any) -> Any:
    """Step index (n_pixels, n_rays) int64 at which each ray from pixels ``rc`` leaves."""
    import torch

    height, width = lab.shape
    n_rays, n_steps = off_r.shape
    n_pix = len(rc)
    # Entry e = (pixel e // n_rays, ray e % n_rays); only unfinished entries are kept.
    ent = torch.arange(n_pix * n_rays, device=lab.device)
    k = ent % n_rays
    r0 = rc[:, 0].to(torch.float32).repeat_interleave(n_rays)
    c0 = rc[:, 1].to(torch.float32).repeat_interleave(n_rays)
    value = lab[rc[:, 0], rc[:, 1]].repeat_interleave(n_rays)
    result = torch.zeros(n_pix * n_rays, dtype=torch.int64, device=lab.device)
    lab_flat = lab.reshape(-1)
    n = 0
    while len(ent):
        # float32 add and round half to even, as the reference does.
        ii = torch.round(r0 + off_r[k, n]).to(torch.int64)
        jj = torch.round(c0 + off_c[k, n]).to(torch.int64)
        inside = (ii >= 0) & (ii < height) & (jj >= 0) & (jj < width)
        at = ii.clamp(0, height - 1) * width + jj.clamp(0, width - 1)
        same = inside & (lab_flat[at] == value)
        result[ent[~same]] = n
        ent, k, r0, c0, value = ent[same], k[same], r0[same], c0[same], value[same]
        n += 1
    return result.view(n_pix, n_rays)


def edt_prob(labels: np.ndarray) -> np.ndarray:
    """Object probability: each pixel's distance to the nearest pixel of another label (or the
    background), divided by the largest such distance in its object.

    Parameters
    ----------
    labels : np.ndarray, integer, shape (H, W)
        Instance labels, 0 = background; any ids (relabelled 1..n inside).

    Returns
    -------
    np.ndarray, float32, shape (H, W)
        In [0, 1], 0 on the background, 1 at each object's most central pixel(s). As in
        ``stardist.utils.edt_prob``, the image border does not count as background (a label
        image that is one single object is treated as surrounded by background).

    Introduced in notebook 06.
    """
    # find_objects allocates one entry per id up to the largest: ids 1..n keep it small.
    labels, _ = relabel_consecutive(_check_labels_np(labels, 2))
    whole = labels.min() == labels.max() and labels.flat[0] > 0
    if whole:
        labels = np.pad(labels, 1)
    prob = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        # Grow the box by one pixel inside the image, so pixels of other labels surround the
        # object there; at the image border the box is not grown (the border is not background).
        grown = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(sl, labels.shape)
        )
        mask = labels[grown] == i
        dist = ndi.distance_transform_edt(mask)
        vals = dist[mask]
        prob[grown][mask] = vals / (vals.max() + 1e-10)
    return prob[1:-1, 1:-1].copy() if whole else prob


def stardist_targets(
    labels: np.ndarray, n_rays: int = 32, grid: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of the StarDist-style method, on the network's output grid.

    ``labels`` integer (h, w) with h and w divisible by ``grid``. Returns the object
    probability :func:`edt_prob` (float32 (1, h/grid, w/grid)) and the ray distances
    :func:`star_dist` (float32 (n_rays, h/grid, w/grid), channels first as the network
    predicts them).
    """
    grid = check_int(grid, "grid", minimum=1)
    prob = edt_prob(labels)[::grid, ::grid]
    dist = star_dist(labels, n_rays, grid=(grid, grid))
    return prob[None].astype(np.float32), np.ascontiguousarray(np.moveaxis(dist, -1, 0))
