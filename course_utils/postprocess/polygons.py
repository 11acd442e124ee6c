"""Star-convex polygons: from (centre, radial distances) to vertices and to a label image.

A StarDist prediction is a set of polygons, each given by a centre pixel and ``n_rays``
distances along the rays of :func:`course_utils.targets.ray_angles`. ``dist_to_coord`` turns
them into vertices and ``polygons_to_label`` paints them into an instance label image, the
lowest probability first so that a more confident polygon wins where two overlap (as the
reference ``stardist`` package does).

Introduced in notebook 06.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._shared.jit import numba
from .._shared.validate import check_finite
from ..targets.stardist import ray_angles
from ._polygon_overlap import shell_sort

__all__ = ["dist_to_coord", "polygons_to_label"]


def _check_dist_points(dist: Any, points: Any) -> tuple[np.ndarray, np.ndarray]:
    dist = np.asarray(dist)
    points = np.asarray(points)
    if dist.ndim != 2 or dist.shape[1] < 3:
        raise ValueError(f"dist must have shape (N, n_rays) with n_rays >= 3, got {dist.shape}")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2) (row, col), got {points.shape}")
    if len(dist) != len(points):
        raise ValueError(f"dist and points disagree in N: {len(dist)} vs {len(points)}")
    if not (np.issubdtype(dist.dtype, np.number) and np.issubdtype(points.dtype, np.number)):
        raise TypeError("dist and points must be numeric arrays")
    return check_finite(dist, "dist"), check_finite(points, "points")


def dist_to_coord(dist: Any, points: Any) -> np.ndarray:
    """Vertices of the star-convex polygons given by radial distances around centre points.

    Parameters
    ----------
    dist : np.ndarray, float, shape (N, n_rays)
        Distances along the rays of :func:`~course_utils.targets.ray_angles`.
    points : np.ndarray, shape (N, 2)
        Centres (row, col).

    Returns
    -------
    np.ndarray, float32, shape (N, 2, n_rays)
        ``coord[i, 0]`` are the rows, ``coord[i, 1]`` the columns of polygon i's vertices:
        ``row = point_row + dist * sin(phi)``, ``col = point_col + dist * cos(phi)``.

    Introduced in notebook 06.
    """
    dist, points = _check_dist_points(dist, points)
    phi = ray_angles(dist.shape[1])
    # Same rounding as the reference: offsets in float64 rounded to float32, then the centre.
    offsets = (dist[:, None, :] * np.stack([np.sin(phi), np.cos(phi)])).astype(np.float32)
    return offsets + points[:, :, None].astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _fill_polygon(out, rows, cols, value):  # pragma: no cover
    """Set ``out`` to ``value`` at the pixel centres inside the polygon or on its boundary.

    Scanline fill: on each image row, the columns between pairs of edge crossings (an edge
    counts on the rows y0 <= r < y1, so a vertex on the row is counted once).
    """
    height, width = out.shape
    n = len(rows)
    r_lo = max(0, int(np.ceil(rows.min())))
    r_hi = min(height - 1, int(np.floor(rows.max())))
    xs = np.empty(n, np.float64)
    for r in range(r_lo, r_hi + 1):
        m = 0
        for e in range(n):
            y0, x0 = rows[e], cols[e]
            y1, x1 = rows[(e + 1) % n], cols[(e + 1) % n]
            if (y0 <= r < y1) or (y1 <= r < y0):
                xs[m] = x0 + (r - y0) * (x1 - x0) / (y1 - y0)
                m += 1
        shell_sort(xs, m)
        for q in range(0, m - 1, 2):
            c_lo = max(0, int(np.ceil(xs[q])))
            c_hi = min(width - 1, int(np.floor(xs[q + 1])))
            for c in range(c_lo, c_hi + 1):
                out[r, c] = value


@numba.njit(cache=True, nogil=True)
def _paint(coord, order, out):  # pragma: no cover
    for i in order:
        _fill_polygon(out, coord[i, 0].astype(np.float64), coord[i, 1].astype(np.float64), i + 1)


def polygons_to_label(
    dist: Any,
    points: Any,
    shape: tuple[int, int],
    prob: Any = None,
) -> np.ndarray:
    """Paint star-convex polygons into an instance label image.

    Parameters
    ----------
    dist : np.ndarray, float, shape (N, n_rays)
        Radial distances of each polygon.
    points : np.ndarray, shape (N, 2)
        Centres (row, col).
    shape : (int, int)
        Output shape (H, W); polygon parts outside are cut off.
    prob : np.ndarray, shape (N,), optional
        Scores: polygons are painted from the lowest to the highest, so where two overlap the
        more probable one wins. Without it, they are painted in the given order. NaN or
        infinity here, in ``dist`` or in ``points`` raises ``ValueError``.

    Returns
    -------
    np.ndarray, int32, shape (H, W)
        Polygon i (in the input order) gets id i + 1, so ids are consecutive 1..N (an id
        whose polygon is covered completely by better ones, or lies outside, is absent).
        A pixel belongs to a polygon when its centre is inside the polygon or on its edge.

    Introduced in notebook 06.
    """
    dist, points = _check_dist_points(dist, points)
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (H, W), got {shape!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    if prob is None:
        order = np.arange(len(dist))
    else:
        prob = np.asarray(prob)
        if prob.shape != (len(dist),):
            raise ValueError(f"prob must have shape ({len(dist)},), got {prob.shape}")
        check_finite(prob, "prob")  # argsort would put a NaN last: it would win every overlap
        order = np.argsort(prob, kind="stable")
    out = np.zeros((height, width), np.int32)
    if len(dist):
        _paint(dist_to_coord(dist, points), order.astype(np.int64), out)
    return out
