"""Star-convex polyhedra (StarDist-3D): the rays' faces, a label volume from them, and NMS.

A StarDist-3D prediction is a set of polyhedra: a centre voxel and ``n_rays`` distances along
the rays of :func:`course_utils.targets.rays_golden_spiral`. The triangles of the rays' convex
hull (:func:`ray_faces`) make polyhedron i the union of the tetrahedra (centre, three vertices
``centre + dist * ray``). A voxel lies in one triangle's cone seen from the centre (looked up
in a table of integer offsets, built once for the rays), so one plane test decides it.

Both functions follow the reference ``stardist`` (``geometry.polyhedron_to_label``, "full"
mode, and ``nms.non_maximum_suppression_3d``): vertices and plane test in float32, the same
order of ties, the same cheap bounds in NMS. Where stardist bounds an overlap by the exact
(qhull) volumes of the kernels' and convex hulls' intersections, this module counts voxels, as
stardist does for the pairs those bounds leave open.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from .._shared.validate import check_finite, check_int
from ._polyhedron_kernels import face_table_kernel, nms_stats, paint, suppress

__all__ = ["non_maximum_suppression_3d", "polyhedra_to_label", "ray_faces"]

_TABLE_MAX_RADIUS = 48  # face tables up to 97**3 offsets; farther voxels search the faces
_TABLES: dict[bytes, np.ndarray] = {}


def _check_rays(rays: Any) -> np.ndarray:
    rays = np.asarray(rays)
    if rays.ndim != 2 or rays.shape[1] != 3 or len(rays) < 4:
        raise ValueError(f"rays must have shape (n_rays >= 4, 3) in (z, y, x), got {rays.shape}")
    if not np.issubdtype(rays.dtype, np.floating):
        raise TypeError(f"rays must be a float array, got dtype {rays.dtype}")
    if not np.all(np.isfinite(rays)) or not np.allclose(np.linalg.norm(rays, axis=1), 1, atol=1e-3):
        raise ValueError("rays must be finite unit vectors (z, y, x), e.g. rays_golden_spiral(n)")
    return np.ascontiguousarray(rays, dtype=np.float32)


def ray_faces(rays: Any, anisotropy: Any = None) -> np.ndarray:
    """The triangles between the rays: the faces of their convex hull, oriented alike.

    Parameters
    ----------
    rays : np.ndarray, float, shape (n_rays, 3)
        Unit directions (z, y, x), e.g. :func:`~course_utils.targets.rays_golden_spiral`.
    anisotropy : sequence of 3 positive floats, optional
        The anisotropy the rays were made with. ``stardist.Rays_GoldenSpiral`` takes the hull
        of the directions divided by the anisotropy *before* normalising them, which is
        another triangulation than the hull of the unit rays; given the anisotropy, those
        points are recovered (``ray / |anisotropy * ray|``) and the faces are stardist's.

    Returns
    -------
    np.ndarray, int64, shape (n_faces, 3)
        Ray indices of each triangle (``2 * n_rays - 4`` of them), ordered so that
        ``det(rays[face]) < 0``, in qhull's order: ``stardist``'s ``Rays_*.faces``.
    """
    rays = _check_rays(rays)
    points = rays.astype(np.float64)
    if anisotropy is not None:
        factors = np.asarray(anisotropy, dtype=np.float64)
        if factors.shape != (3,) or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
            raise ValueError(f"anisotropy must be 3 positive numbers (z, y, x), got {anisotropy!r}")
        points = points / np.linalg.norm(points * factors, axis=1, keepdims=True)
    try:
        hull = ConvexHull(points)
    except QhullError as err:
        raise ValueError("rays must point in all directions (their hull is flat)") from err
    if len(hull.vertices) != len(points):
        raise ValueError("every ray must be a corner of the rays' convex hull")
    faces = hull.simplices.astype(np.int64)
    flip = np.linalg.det(points[faces]) > 0
    faces[flip] = faces[flip, ::-1]
    return faces


def _cone_normals(rays: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(n_faces, 3, 3) unit normals: a direction d is in face (a, b, c)'s cone iff
    ``d . n <= 0`` for the three normals ``b x c``, ``c x a``, ``a x b``."""
    r = rays.astype(np.float64)
    a, b, c = r[faces[:, 0]], r[faces[:, 1]], r[faces[:, 2]]
    normals = np.stack([np.cross(b, c), np.cross(c, a), np.cross(a, b)], axis=1)
    return normals / np.linalg.norm(normals, axis=2, keepdims=True)


def _face_table(rays: np.ndarray, faces: np.ndarray, normals: np.ndarray, radius: int):
    """The face of every integer offset within ``radius`` (kept for the next call)."""
    radius = int(min(max(radius, 1), _TABLE_MAX_RADIUS))
    key = rays.tobytes() + faces.tobytes()
    table = _TABLES.get(key)
    if table is None or table.shape[0] < 2 * radius + 1:
        if len(_TABLES) >= 4:
            _TABLES.clear()
        table = _TABLES[key] = face_table_kernel(normals, radius)
    return table


def _polyhedra(dist: np.ndarray, points: np.ndarray, rays: np.ndarray, anisotropy: Any):
    """float32 centres, vertices (n, n_rays, 3) and inclusive boxes (z0, z1, y0, y1, x0, x1)
    of the rounded vertices, with the geometry tuple ``_inside`` reads."""
    centres = np.ascontiguousarray(points, dtype=np.float32)
    dist32 = np.ascontiguousarray(dist, dtype=np.float32)
    verts = centres[:, None, :] + dist32[:, :, None] * rays[None]  # float32, as the reference
    rounded = np.rint(verts).astype(np.int64)
    bbox = np.empty((len(dist), 6), np.int64)
    bbox[:, 0::2] = rounded.min(axis=1)
    bbox[:, 1::2] = np.maximum(rounded.max(axis=1), -1)  # the reference starts its max at -1
    faces = ray_faces(rays, anisotropy)
    normals = _cone_normals(rays, faces)
    radius = int(np.ceil(dist32.max(initial=0.0))) + 2
    integral = bool(np.all(centres == np.round(centres)))
    table = _face_table(rays, faces, normals, radius if integral else 1)
    return centres, verts, bbox, (faces, normals, table, integral)


def _check_dist_points(dist: Any, points: Any, n_rays: int) -> tuple[np.ndarray, np.ndarray]:
    dist, points = np.asarray(dist), np.asarray(points)
    if dist.ndim != 2 or dist.shape[1] != n_rays:
        raise ValueError(f"dist must have shape (N, n_rays={n_rays}), got {dist.shape}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3) (z, y, x), got {points.shape}")
    if len(dist) != len(points):
        raise ValueError(f"dist and points disagree in N: {len(dist)} vs {len(points)}")
    if not (np.issubdtype(dist.dtype, np.number) and np.issubdtype(points.dtype, np.number)):
        raise TypeError("dist and points must be numeric arrays")
    check_finite(points, "points")
    return _check_dist(dist), points


def _check_dist(dist: np.ndarray) -> np.ndarray:
    check_finite(dist, "dist")
    if dist.size and dist.min() < 0:
        raise ValueError(f"dist must be >= 0 (distances along the rays), min is {dist.min()}")
    return dist


def polyhedra_to_label(
    dist: Any,
    points: Any,
    rays: Any,
    shape: tuple[int, int, int],
    prob: Any = None,
    thresh: float = -np.inf,
    *,
    anisotropy: Any = None,
) -> np.ndarray:
    """Paint star-convex polyhedra into an instance label volume.

    Parameters
    ----------
    dist : np.ndarray, float, shape (N, n_rays)
        Distances along the rays from each centre, >= 0 (stardist refuses 0 too).
    points : np.ndarray, shape (N, 3)
        Centres (z, y, x) in voxels.
    rays : np.ndarray, float, shape (n_rays, 3)
        Unit ray directions (z, y, x), e.g. :func:`~course_utils.targets.rays_golden_spiral`.
    shape : (int, int, int)
        Output shape (Z, Y, X); parts of polyhedra outside are cut off.
    prob : np.ndarray, shape (N,), optional
        Scores: where polyhedra overlap, the most probable one wins. Without it, all are equal.
    thresh : float
        Only polyhedra with ``prob >= thresh`` are painted.
    anisotropy : sequence of 3 floats, optional
        The rays' anisotropy, for stardist's faces (see :func:`ray_faces`).

    Returns
    -------
    np.ndarray, int32, shape (Z, Y, X)
        Polyhedron i (input order) gets id i + 1; a voxel belongs to the most probable
        polyhedron that holds its centre (ties as ``stardist.geometry.polyhedron_to_label``,
        whose "full" mode this reproduces), 0 to none.

    Introduced in notebook 11.
    """
    rays = _check_rays(rays)
    dist, points = _check_dist_points(dist, points, len(rays))
    try:
        shape = tuple(check_int(s, "shape", minimum=1) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be 3 positive ints (Z, Y, X), got {shape!r}") from None
    if len(shape) != 3:
        raise ValueError(f"shape must be 3 positive ints (Z, Y, X), got {shape!r}")
    if np.isnan(thresh):
        raise ValueError("thresh must be a number, got NaN")
    prob = np.ones(len(dist)) if prob is None else np.asarray(prob)
    if prob.shape != (len(dist),):
        raise ValueError(f"prob must have shape ({len(dist)},), got {prob.shape}")
    check_finite(prob, "prob")
    out = np.zeros(shape, np.int32)
    keep = np.flatnonzero(prob >= thresh)
    if len(keep) == 0:
        return out
    order = keep[np.argsort(prob[keep])[::-1]]  # the reference's order, ties included
    centres, verts, bbox, geo = _polyhedra(dist[order], points[order], rays, anisotropy)
    paint((order + 1).astype(np.int32), centres, verts, bbox, geo, out)
    return out


def _border_mask(shape: tuple[int, ...], b: Any) -> np.ndarray:
    """Where candidates may be: at least ``b`` voxels from the border (stardist's ``b``)."""
    pairs = ((0, 0),) * 3 if b is None else ((b, b),) * 3 if np.isscalar(b) else b
    try:
        pairs = [(check_int(lo, "b", minimum=0), check_int(hi, "b", minimum=0)) for lo, hi in pairs]
        assert len(pairs) == 3
    except (TypeError, ValueError, AssertionError):
        raise ValueError(f"b must be an int >= 0, 3 pairs (before, after) or None: {b!r}") from None
    mask = np.zeros(shape, bool)
    mask[tuple(slice(lo, n - hi) for (lo, hi), n in zip(pairs, shape))] = True
    return mask


def non_maximum_suppression_3d(
    dist: Any,
    prob: Any,
    rays: Any,
    prob_thresh: float = 0.5,
    nms_thresh: float = 0.4,
    grid: tuple[int, int, int] = (1, 1, 1),
    *,
    b: Any = 2,
    anisotropy: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the best of every group of overlapping StarDist-3D polyhedron candidates.

    Parameters
    ----------
    dist : np.ndarray, float, shape (Z, Y, X, n_rays)
        Predicted distances along the rays (in voxels of the full volume), >= 0.
    prob : np.ndarray, float, shape (Z, Y, X)
        Predicted object probabilities. NaN or infinity in either map raises ``ValueError``.
    rays : np.ndarray, float, shape (n_rays, 3)
        Unit ray directions (z, y, x), e.g. :func:`~course_utils.targets.rays_golden_spiral`.
    prob_thresh : float
        Voxels with ``prob > prob_thresh`` are candidates.
    nms_thresh : float
        A candidate is suppressed when its intersection with a kept, more probable polyhedron
        exceeds ``nms_thresh`` times the smaller of the two volumes (not the IoU).
    grid : (int, int, int)
        Subsampling of ``dist``/``prob``: candidate (i, j, k) is centred at
        (i * grid[0], j * grid[1], k * grid[2]).
    b : int, 3 pairs (before, after) or None
        Candidates closer than ``b`` grid voxels to the border are ignored.
    anisotropy : sequence of 3 floats, optional
        The rays' anisotropy, for stardist's faces (see :func:`ray_faces`).

    Returns
    -------
    points : np.ndarray, int64, shape (M, 3)
        Centres (z, y, x) of the kept polyhedra in volume coordinates, most probable first.
    prob : np.ndarray, shape (M,)
        Their probabilities (dtype of the input).
    dist : np.ndarray, shape (M, n_rays)
        Their distances (dtype of the input).

    Same semantics as ``stardist.nms.non_maximum_suppression_3d``, tied probabilities
    included; the overlaps its cheap bounds (spheres, boxes) leave open are measured by
    counting the voxel centres in both polyhedra.
    """
    rays = _check_rays(rays)
    grid = tuple(check_int(g, "grid", minimum=1) for g in np.broadcast_to(grid, (3,)).tolist())
    for name, v in (("prob_thresh", prob_thresh), ("nms_thresh", nms_thresh)):
        if not np.isscalar(v) or not np.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    dist, prob = np.asarray(dist), np.asarray(prob)
    if prob.ndim != 3 or dist.shape != (*prob.shape, len(rays)):
        raise ValueError(
            f"prob must be (Z, Y, X) and dist (Z, Y, X, n_rays={len(rays)}), "
            f"got {prob.shape} and {dist.shape}"
        )
    for name, arr in (("prob", prob), ("dist", dist)):
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"{name} must be a float array, got dtype {arr.dtype}")
    _check_dist(dist)
    check_finite(prob, "prob")  # a NaN probability is not "below the threshold"
    mask = (prob > prob_thresh) & _border_mask(prob.shape, b)
    scores, dists = prob[mask], dist[mask]
    order = np.argsort(scores)[::-1]
    points = np.argwhere(mask)[order] * np.array(grid, np.int64)
    scores, dists = scores[order], dists[order]
    inner = np.argsort(scores)[::-1]  # stardist sorts a second time (ties may move)
    keep = np.zeros(len(scores), bool)
    if len(scores):
        centres, verts, bbox, geo = _polyhedra(dists[inner], points[inner], rays, anisotropy)
        dist32 = np.ascontiguousarray(dists[inner], dtype=np.float32)
        stats = nms_stats(dist32, rays, geo[0], bbox)
        radius = dist32.max(axis=1).astype(np.float64)
        thresh = float(np.float32(nms_thresh))  # the reference compares with a float32
        keep[inner] = suppress(centres, verts, bbox, geo, stats, radius, thresh)
    return points[keep], scores[keep], dists[keep]
