"""Intersection area of two polygons (numba kernels), exact for simple polygons.

Used by the StarDist non-maximum suppression, whose polygons have integer vertices and, for
noisy predictions, degenerate shapes: repeated vertices, spikes that run out and back along
the same segment, edges lying on edges of the other polygon. A vertical-slab sweep handles all
of them without special cases: cut the plane at every vertex x and at every x where an edge of
one polygon crosses an edge of the other. Inside such a slab no two edges of different polygons
cross, so the length of the vertical line x = const that lies in both polygons changes linearly
with x, and the slab adds (width x length at its middle). A point is inside a polygon when the
polygon winds around it (non-zero rule, as the reference's Clipper library is used); spikes
wind zero times and drop out. The result is exact for simple polygons; a polygon that crosses
itself inside a slab makes it approximate there.

Polygons are passed closed: ``x``/``y`` of length n + 1 with the first vertex repeated last.

Introduced in notebook 06 (through ``non_maximum_suppression``).
"""

from __future__ import annotations

import numpy as np

from .._shared.jit import numba
from .._shared.validate import check_finite


def make_buffers(n_max: int):
    """Scratch arrays for polygons of up to ``n_max`` vertices (slab positions, crossings)."""
    return (
        np.empty(2 * n_max + n_max * n_max + 2),
        np.empty((2, n_max + 1)),
        np.empty((2, n_max + 1), np.int64),
    )


@numba.njit(cache=True, nogil=True)
def _slab_edges(ax, ay, bx, by, lo, hi, xs):  # pragma: no cover
    """Sorted x positions in [lo, hi] where the slabs start and end; returns their count."""
    k = 0
    for px in (ax, bx):
        for v in range(len(px) - 1):
            if lo <= px[v] <= hi:
                xs[k] = px[v]
                k += 1
    for e in range(len(ax) - 1):
        x0, y0, x1, y1 = ax[e], ay[e], ax[e + 1], ay[e + 1]
        if max(x0, x1) < lo or min(x0, x1) > hi:
            continue
        rx, ry = x1 - x0, y1 - y0
        for f in range(len(bx) - 1):
            fx0, fy0, fx1, fy1 = bx[f], by[f], bx[f + 1], by[f + 1]
            if max(fx0, fx1) <= min(x0, x1) or min(fx0, fx1) >= max(x0, x1):
                continue
            if max(fy0, fy1) <= min(y0, y1) or min(fy0, fy1) >= max(y0, y1):
                continue
            sx, sy = fx1 - fx0, fy1 - fy0
            den = rx * sy - ry * sx
            if den == 0:
                continue
            tn = (fx0 - x0) * sy - (fy0 - y0) * sx
            un = (fx0 - x0) * ry - (fy0 - y0) * rx
            if den < 0:
                den, tn, un = -den, -tn, -un
            # Crossings at a vertex are slab edges already.
            if 0 < tn < den and 0 < un < den:
                x = x0 + tn / den * rx
                if lo <= x <= hi:
                    xs[k] = x
                    k += 1
    shell_sort(xs, k)
    return k


@numba.njit(cache=True, nogil=True)
def shell_sort(a, n):  # pragma: no cover
    """Sort a[:n] in place (a few dozen values; compiles much faster than np.sort)."""
    gap = n // 2
    while gap > 0:
        for i in range(gap, n):
            v = a[i]
            j = i
            while j >= gap and a[j - gap] > v:
                a[j] = a[j - gap]
                j -= gap
            a[j] = v
        gap //= 2


@numba.njit(cache=True, nogil=True)
def _crossings(px, py, x, ys, ws):  # pragma: no cover
    """Where the vertical line at ``x`` (no vertex on it) meets the closed polygon, sorted by
    y, with +1/-1 for edges running right/left. Returns their count."""
    c = 0
    for e in range(len(px) - 1):
        x0, x1 = px[e], px[e + 1]
        if (x0 < x) != (x1 < x):
            y = py[e] + (x - x0) * (py[e + 1] - py[e]) / (x1 - x0)
            w = 1 if x1 > x0 else -1
            q = c
            while q > 0 and ys[q - 1] > y:
                ys[q], ws[q] = ys[q - 1], ws[q - 1]
                q -= 1
            ys[q], ws[q] = y, w
            c += 1
    return c


@numba.njit(cache=True, nogil=True)
def _common_length(ya, wa, na, yb, wb, nb):  # pragma: no cover
    """Length of the line inside both polygons, from their sorted crossings."""
    ia = ib = 0
    wind_a = wind_b = 0
    length = 0.0
    last = 0.0
    while ia < na or ib < nb:
        take_a = ib >= nb or (ia < na and ya[ia] <= yb[ib])
        y = ya[ia] if take_a else yb[ib]
        if wind_a != 0 and wind_b != 0:
            length += y - last
        last = y
        if take_a:
            wind_a += wa[ia]
            ia += 1
        else:
            wind_b += wb[ib]
            ib += 1
    return length


@numba.njit(cache=True, nogil=True)
def intersection_area(ax, ay, a_box, bx, by, b_box, xs, ys, ws):  # pragma: no cover
    """Area of the intersection of closed polygons A and B (see the module docstring).

    Boxes are (x_min, x_max, y_min, y_max); ``xs``, ``ys``, ``ws`` from :func:`make_buffers`.
    """
    lo, hi = max(a_box[0], b_box[0]), min(a_box[1], b_box[1])
    if hi <= lo or max(a_box[2], b_box[2]) >= min(a_box[3], b_box[3]):
        return 0.0
    k = _slab_edges(ax, ay, bx, by, lo, hi, xs)
    total = 0.0
    for s in range(k - 1):
        width = xs[s + 1] - xs[s]
        if width <= 0:
            continue
        mid = xs[s] + 0.5 * width
        na = _crossings(ax, ay, mid, ys[0], ws[0])
        nb = _crossings(bx, by, mid, ys[1], ws[1])
        total += width * _common_length(ys[0], ws[0], na, ys[1], ws[1], nb)
    return total


@numba.njit(cache=True, nogil=True)
def polygon_area(x, y):  # pragma: no cover
    """Signed shoelace area of a closed polygon (positive for counter-clockwise in (x, y))."""
    s = 0.0
    for k in range(len(x) - 1):
        s += x[k] * y[k + 1] - y[k] * x[k + 1]
    return 0.5 * s


def intersection_area_np(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area of two polygons given as (n, 2) arrays of (x, y) vertices.

    A small wrapper for tests and notebooks.
    """
    closed = []
    for p in (a, b):
        p = np.asarray(p, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
            raise ValueError(f"polygons must have shape (n >= 3, 2), got {p.shape}")
        check_finite(p, "polygon vertices")
        closed.append(np.ascontiguousarray(np.concatenate([p, p[:1]]).T))
    boxes = [np.array([c[0].min(), c[0].max(), c[1].min(), c[1].max()]) for c in closed]
    bufs = make_buffers(max(c.shape[1] for c in closed))
    (ax, ay), (bx, by) = closed
    return float(intersection_area(ax, ay, boxes[0], bx, by, boxes[1], *bufs))
