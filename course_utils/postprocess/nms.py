"""Non-maximum suppression of StarDist polygons.

Every pixel with an object probability above ``prob_thresh`` proposes a star-convex polygon.
The candidates are visited from the most to the least probable; a kept polygon suppresses every
later one that overlaps it by more than ``nms_thresh``, where the overlap of two polygons is
their intersection area divided by the smaller of the two areas (not the IoU). This is the
semantics of the reference ``stardist`` package, including its details: candidates closer than
``b`` pixels to the image border are dropped, and the polygons are compared with their vertices
truncated to integer pixel coordinates. The intersection areas here are exact for simple
polygons (see ``_polygon_overlap``), where the reference rounds the corners of each
intersection to integers, so the two differ only on overlaps within about a pixel of the
threshold. Cheap octagon bounds settle most pairs without any area computation, and a uniform
grid of buckets finds the polygons whose boxes meet.

Introduced in notebook 06.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._shared.jit import numba
from .._shared.validate import check_finite, check_grid, to_numpy
from ._polygon_overlap import intersection_area, make_buffers, polygon_area

__all__ = ["non_maximum_suppression"]


def _polygon_table(dist: np.ndarray, points: np.ndarray):
    """Closed integer polygons (x = col, y = row) with their boxes, octagons, radii and areas.

    ``dist`` (N, n_rays) and ``points`` (N, 2) are float32: the vertices follow the reference's
    float32 arithmetic and its truncation towards zero.
    """
    n_rays = dist.shape[1]
    step = np.float32(2 * np.pi / n_rays)
    phi = (np.arange(n_rays, dtype=np.float32) * step).astype(np.float64)
    sin, cos = np.sin(phi).astype(np.float32), np.cos(phi).astype(np.float32)
    return _polygon_table_kernel(dist, points, sin, cos)


@numba.njit(cache=True, nogil=True)
def _widen(ranges, q, v):  # pragma: no cover
    ranges[q], ranges[q + 1] = min(ranges[q], v), max(ranges[q + 1], v)


@numba.njit(cache=True, nogil=True)
def _polygon_table_kernel(dist, points, sin, cos):  # pragma: no cover
    n, n_rays = dist.shape
    # Closed polygons (first vertex repeated) keep the kernels free of index wrap-around.
    vx = np.empty((n, n_rays + 1))
    vy = np.empty((n, n_rays + 1))
    fbox = np.empty((n, 4))  # float vertices (x_min, x_max, y_min, y_max): the reference's box
    octa = np.empty((n, 8))  # x, y, x + y, x - y ranges of the integer vertices (``_overlaps``)
    radius = np.empty(n)
    area = np.empty(n)
    for i in range(n):
        fbox[i, 0] = fbox[i, 2] = octa[i, 0] = octa[i, 2] = octa[i, 4] = octa[i, 6] = np.inf
        fbox[i, 1] = fbox[i, 3] = octa[i, 1] = octa[i, 3] = octa[i, 5] = octa[i, 7] = -np.inf
        radius[i] = 0.0
        for k in range(n_rays):
            d = dist[i, k]
            fy = points[i, 0] + d * sin[k]  # float32, as the reference
            fx = points[i, 1] + d * cos[k]
            x, y = float(int(fx)), float(int(fy))  # truncation towards zero
            vx[i, k], vy[i, k] = x, y
            radius[i] = max(radius[i], d)
            fbox[i, 0], fbox[i, 1] = min(fbox[i, 0], fx), max(fbox[i, 1], fx)
            fbox[i, 2], fbox[i, 3] = min(fbox[i, 2], fy), max(fbox[i, 3], fy)
            _widen(octa[i], 0, x)
            _widen(octa[i], 2, y)
            _widen(octa[i], 4, x + y)
            _widen(octa[i], 6, x - y)
        vx[i, n_rays], vy[i, n_rays] = vx[i, 0], vy[i, 0]
        area[i] = abs(polygon_area(vx[i], vy[i]))
    return vx, vy, fbox, octa, radius, area


@numba.njit(cache=True, nogil=True)
def _cell_range(box, i, ox, oy, cell):  # pragma: no cover
    """Grid cells (row_0, row_1, col_0, col_1), inclusive, that box i meets."""
    return (
        int((box[i, 2] - oy) // cell),
        int((box[i, 3] - oy) // cell),
        int((box[i, 0] - ox) // cell),
        int((box[i, 1] - ox) // cell),
    )


@numba.njit(cache=True, nogil=True)
def _bucket_grid(box, cell):  # pragma: no cover
    """Buckets of a uniform grid (cell x cell pixels): CSR lists of the polygons whose box
    meets each cell. Returns (start, members, origin_x, origin_y, n_cols)."""
    ox, oy, ex, ey = box[0, 0], box[0, 2], box[0, 1], box[0, 3]
    for i in range(len(box)):
        ox, oy = min(ox, box[i, 0]), min(oy, box[i, 2])
        ex, ey = max(ex, box[i, 1]), max(ey, box[i, 3])
    n_cols = int((ex - ox) // cell) + 1
    n_cells = n_cols * (int((ey - oy) // cell) + 1)
    start = np.zeros(n_cells + 1, np.int64)
    for i in range(len(box)):
        r0, r1, c0, c1 = _cell_range(box, i, ox, oy, cell)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                start[r * n_cols + c + 1] += 1
    for q in range(n_cells):
        start[q + 1] += start[q]
    members = np.empty(start[n_cells], np.int64)
    fill = start[:n_cells].copy()
    for i in range(len(box)):
        r0, r1, c0, c1 = _cell_range(box, i, ox, oy, cell)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                members[fill[r * n_cols + c]] = i
                fill[r * n_cols + c] += 1
    return start, members, ox, oy, n_cols


@numba.njit(cache=True, nogil=True)
def _suppress(vx, vy, fbox, octa, area, centre, radius, thresh, cell, bufs):  # pragma: no cover
    """Greedy suppression over polygons sorted by decreasing score; returns the kept mask."""
    n = len(vx)
    suppressed = np.zeros(n, np.bool_)
    if n == 0:
        return ~suppressed
    start, members, ox, oy, n_cols = _bucket_grid(fbox, cell)
    seen = np.empty(n, np.int64)
    seen[:] = -1
    r_max = 0.0
    for i in range(n):
        r_max = max(r_max, radius[i])
    for i in range(n - 1):
        if suppressed[i]:
            continue
        r0, r1, c0, c1 = _cell_range(fbox, i, ox, oy, cell)
        reach = (radius[i] + r_max) ** 2
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                cell_id = r * n_cols + c
                for q in range(start[cell_id], start[cell_id + 1]):
                    j = members[q]
                    if j <= i or suppressed[j] or seen[j] == i:
                        continue
                    seen[j] = i
                    if _overlaps(i, j, vx, vy, fbox, octa, area, centre, reach, thresh, bufs):
                        suppressed[j] = True
    return ~suppressed


@numba.njit(cache=True, nogil=True)
def _octagon_area(x0, x1, y0, y1, s0, s1, d0, d1):  # pragma: no cover
    """Area of {x0<=x<=x1, y0<=y<=y1, s0<=x+y<=s1, d0<=x-y<=d1} and whether it is exact.

    The four diagonal cuts remove corner triangles; when two of them would overlap the
    formula does not hold and the box area (an upper bound) is returned with False.
    """
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0 or s1 <= s0 or d1 <= d0:
        return 0.0, True
    a = max(s0 - x0 - y0, 0.0)
    b = max(x1 + y1 - s1, 0.0)
    c = max(x1 - y0 - d1, 0.0)
    d = max(d0 - x0 + y1, 0.0)
    if a + c > w or b + d > w or a + d > h or b + c > h:
        return w * h, False
    return w * h - 0.5 * (a * a + b * b + c * c + d * d), True


@numba.njit(cache=True, nogil=True)
def _overlaps(i, j, vx, vy, fbox, octa, area, centre, reach, thresh, bufs):  # pragma: no cover
    """Whether polygon j overlaps polygon i by more than ``thresh`` of the smaller area."""
    # Centres too far apart for the polygons to meet (the reference's k-d tree search).
    if (centre[i, 0] - centre[j, 0]) ** 2 + (centre[i, 1] - centre[j, 1]) ** 2 >= reach:
        return False
    if not (
        fbox[j, 0] <= fbox[i, 1]
        and fbox[i, 0] <= fbox[j, 1]
        and fbox[j, 2] <= fbox[i, 3]
        and fbox[i, 2] <= fbox[j, 3]
    ):
        return False
    limit = thresh * min(area[i] + 1e-10, area[j] + 1e-10)
    # Each polygon lies in its octagon (box cut by the diagonal extents of its vertices), so
    # the two octagons bound the intersection from above, and the octagon around both bounds
    # the union, hence the intersection from below. Exact areas only when the bounds straddle.
    oi, oj = octa[i], octa[j]
    upper, _ = _octagon_area(
        max(oi[0], oj[0]),
        min(oi[1], oj[1]),
        max(oi[2], oj[2]),
        min(oi[3], oj[3]),
        max(oi[4], oj[4]),
        min(oi[5], oj[5]),
        max(oi[6], oj[6]),
        min(oi[7], oj[7]),
    )
    if upper <= limit:
        return False
    hull, exact = _octagon_area(
        min(oi[0], oj[0]),
        max(oi[1], oj[1]),
        min(oi[2], oj[2]),
        max(oi[3], oj[3]),
        min(oi[4], oj[4]),
        max(oi[5], oj[5]),
        min(oi[6], oj[6]),
        max(oi[7], oj[7]),
    )
    if exact and area[i] + area[j] - hull > limit:
        return True
    return intersection_area(vx[j], vy[j], oj[:4], vx[i], vy[i], oi[:4], *bufs) > limit


def _border_mask(shape: tuple[int, int], b: Any) -> np.ndarray:
    mask = np.zeros(shape, bool)
    if b is None:
        mask[...] = True
        return mask
    if np.isscalar(b):
        b = ((b, b), (b, b))
    try:
        (t, bo), (le, ri) = ((int(x) for x in pair) for pair in b)
    except (TypeError, ValueError):
        raise ValueError(
            f"b must be an int, ((top, bottom), (left, right)) or None: {b!r}"
        ) from None
    if min(t, bo, le, ri) < 0:
        raise ValueError(f"b must be >= 0, got {b!r}")
    mask[t : shape[0] - bo, le : shape[1] - ri] = True
    return mask


def non_maximum_suppression(
    dist: Any,
    prob: Any,
    *,
    prob_thresh: float = 0.5,
    nms_thresh: float = 0.4,
    b: Any = 2,
    grid: tuple[int, int] = (1, 1),
) -> tuple[Any, Any, Any]:
    """Keep the best of every group of overlapping StarDist polygon candidates.

    Parameters
    ----------
    dist : np.ndarray or torch.Tensor, float, shape (H, W, n_rays)
        Predicted radial distances (in pixels of the full-resolution image).
    prob : np.ndarray or torch.Tensor, float, shape (H, W)
        Predicted object probabilities. NaN or infinity in either map raises ``ValueError``.
    prob_thresh : float
        Pixels with ``prob > prob_thresh`` are candidates.
    nms_thresh : float
        A candidate is suppressed when its intersection with a kept, more probable polygon
        exceeds ``nms_thresh`` times the smaller of the two areas.
    b : int, ((top, bottom), (left, right)) or None
        Candidates closer than ``b`` pixels to the border of the (H, W) grid are ignored.
    grid : (int, int)
        Subsampling of ``dist``/``prob`` relative to the image (StarDist's ``grid``): the
        candidate at (i, j) is centred at (i * grid[0], j * grid[1]).

    Returns
    -------
    points : np.ndarray, int64, shape (N, 2)
        Centres (row, col) of the kept polygons in image coordinates, most probable first.
    prob : np.ndarray, shape (N,)
        Their probabilities (dtype of the input).
    dist : np.ndarray, shape (N, n_rays)
        Their distances (dtype of the input).

    Tensors in give tensors out on the same device; the thresholding runs there and the
    greedy suppression on the CPU (it is sequential). Same semantics as
    ``stardist.nms.non_maximum_suppression``, also in the order of tied probabilities.

    Introduced in notebook 06.
    """
    grid = check_grid(grid)
    for name, v in (("prob_thresh", prob_thresh), ("nms_thresh", nms_thresh)):
        if not np.isscalar(v) or not np.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if type(prob).__module__.startswith("torch"):
        return _nms_torch(dist, prob, prob_thresh, nms_thresh, b, grid)
    dist, prob = np.asarray(dist), np.asarray(prob)
    _check_dist_prob(dist.shape, prob.shape, dist.dtype, prob.dtype)
    check_finite(prob, "prob")  # a NaN probability is not "below the threshold"
    check_finite(dist, "dist")
    mask = (prob > prob_thresh) & _border_mask(prob.shape, b)
    points = np.stack(np.nonzero(mask), axis=1)
    return _nms_candidates(points, prob[mask], dist[mask], nms_thresh, grid)


def _check_dist_prob(dist_shape, prob_shape, dist_dtype, prob_dtype) -> None:
    if len(prob_shape) != 2:
        raise ValueError(f"prob must be 2-D (H, W), got shape {tuple(prob_shape)}")
    if len(dist_shape) != 3 or tuple(dist_shape[:2]) != tuple(prob_shape):
        raise ValueError(
            f"dist must have shape (H, W, n_rays) matching prob {tuple(prob_shape)}, "
            f"got {tuple(dist_shape)}"
        )
    if dist_shape[2] < 3:
        raise ValueError(f"dist needs n_rays >= 3, got {dist_shape[2]}")
    for name, dt in (("dist", dist_dtype), ("prob", prob_dtype)):
        if "float" not in str(dt):
            raise TypeError(f"{name} must be a float array, got dtype {dt}")


def _nms_candidates(points, scores, dists, nms_thresh, grid):
    """Sort candidates by decreasing score (ties as the reference) and suppress."""
    order = np.argsort(scores)[::-1]
    points = points[order] * np.array(grid).reshape(1, 2)
    scores, dists = scores[order], dists[order]
    keep = _keep(dists.astype(np.float32), points.astype(np.float32), nms_thresh)
    return points[keep], scores[keep], dists[keep]


def _keep(dist: np.ndarray, points: np.ndarray, nms_thresh: float) -> np.ndarray:
    if len(dist) == 0:
        return np.zeros(0, bool)
    vx, vy, fbox, octa, radius, area = _polygon_table(dist, points)
    extent = np.maximum(fbox[:, 1] - fbox[:, 0], fbox[:, 3] - fbox[:, 2])
    cell = max(4.0, float(np.median(extent)))
    # A few huge (bad) polygons must not blow up the grid: cap the number of cells.
    span_x, span_y = np.ptp(fbox[:, :2]), np.ptp(fbox[:, 2:])
    cap = 4 * len(dist) + 4096
    if (span_x / cell + 1) * (span_y / cell + 1) > cap:
        cell = max(cell, float(np.sqrt(span_x * span_y / cap)) + 1.0)
    thresh = float(np.float32(nms_thresh))  # the reference compares against a float32
    centre = points.astype(np.float64)
    bufs = make_buffers(dist.shape[1] + 1)
    return _suppress(vx, vy, fbox, octa, area, centre, radius, thresh, cell, bufs)


def _nms_torch(dist, prob, prob_thresh, nms_thresh, b, grid):
    import torch

    _check_dist_prob(tuple(dist.shape), tuple(prob.shape), dist.dtype, prob.dtype)
    for name, t in (("prob", prob), ("dist", dist)):
        if not bool(torch.isfinite(t).all()):  # on the device; the message from the CPU copy
            check_finite(to_numpy(t), name)
    border = torch.from_numpy(_border_mask(tuple(prob.shape), b)).to(prob.device)
    mask = (prob > prob_thresh) & border
    idx = torch.nonzero(mask)  # row-major, like np.nonzero
    scores = prob[idx[:, 0], idx[:, 1]]
    dists = dist[idx[:, 0], idx[:, 1]]
    pts, sc, di = _nms_candidates(
        idx.cpu().numpy(), scores.cpu().numpy(), dists.cpu().numpy(), nms_thresh, grid
    )
    dev = prob.device
    return (
        torch.from_numpy(pts).to(dev),
        torch.from_numpy(sc).to(dev),
        torch.from_numpy(di).to(dev),
    )
