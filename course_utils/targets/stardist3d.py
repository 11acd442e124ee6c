"""StarDist-3D's representation: rays on a golden spiral and the distances along them.

A nucleus in a volume is a star-convex polyhedron: from a voxel inside it, the distance to its
boundary along each of ``n`` rays (Weigert 2020). The rays are spread over the sphere on a
golden spiral; where the z step is coarser than the in-plane pixel (anisotropy, typically 2-5 in
confocal stacks), StarDist divides each direction by the voxel's anisotropy before normalising,
so that the rays are evenly spread in physical space, not in voxels.

Both functions match ``stardist``'s (``Rays_GoldenSpiral(n, anisotropy).vertices`` and
``geometry.star_dist3D(labels, rays)``, its compiled default) on the same inputs: the same rays,
the same walk in float32 unit steps and the same distance (the length of the rounded offset to
the first voxel outside the object), so that a network trained on these targets reads like
stardist's.

Introduced in notebook 06b.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._shared.jit import numba
from .._shared.relabel import relabel_consecutive
from .._shared.validate import check_int

__all__ = ["rays_golden_spiral", "star_distances_3d", "star_distances_3d_at"]


def rays_golden_spiral(n: int, anisotropy: Any = None) -> np.ndarray:
    """``n`` unit ray directions on a golden spiral, in (z, y, x) order.

    Parameters
    ----------
    n : int
        Number of rays, at least 4.
    anisotropy : sequence of 3 positive floats, optional
        Voxel size ratio (z, y, x), e.g. ``(2.2, 1, 1)`` for z steps 2.2 times the pixel size.
        Each direction is divided by it before normalising, as ``stardist.Rays_GoldenSpiral``
        does.

    Returns
    -------
    np.ndarray, float32, shape (n, 3)
        Unit vectors (z, y, x): z from -1 to 1 in equal steps, the azimuth turning by the golden
        angle ``(3 - sqrt(5)) * pi`` from one ray to the next.

    Introduced in notebook 06b.
    """
    n = check_int(n, "n", minimum=4)
    golden = (3.0 - np.sqrt(5.0)) * np.pi
    phi = golden * np.arange(n)
    z = np.linspace(-1, 1, n)
    rho = np.sqrt(1.0 - z**2)
    verts = np.stack([z, rho * np.sin(phi), rho * np.cos(phi)], axis=1)
    if anisotropy is not None:
        factors = np.asarray(anisotropy, dtype=np.float64)
        if factors.shape != (3,) or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
            raise ValueError(f"anisotropy must be 3 positive numbers (z, y, x), got {anisotropy!r}")
        verts = verts / factors
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    return verts.astype(np.float32)


@numba.njit(cache=True, nogil=True, parallel=True)
def _distances_kernel(labels, rays, out):  # pragma: no cover - compiled
    nz, ny, nx = labels.shape
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                value = labels[z, y, x]
                for m in range(rays.shape[0]):
                    if value == 0:
                        out[z, y, x, m] = 0.0
                        continue
                    dz, dy, dx = rays[m, 0], rays[m, 1], rays[m, 2]
                    pz = np.float32(0.0)
                    py = np.float32(0.0)
                    px = np.float32(0.0)
                    while True:
                        pz += dz
                        py += dy
                        px += dx
                        zz = int(np.rint(z + pz))
                        yy = int(np.rint(y + py))
                        xx = int(np.rint(x + px))
                        if not (0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx):
                            break
                        if labels[zz, yy, xx] != value:
                            break
                    # the length of the rounded offset to the first voxel outside
                    rz, ry, rx = np.rint(pz), np.rint(py), np.rint(px)
                    out[z, y, x, m] = np.sqrt(rx * rx + ry * ry + rz * rz)


def star_distances_3d(labels: Any, rays: Any) -> np.ndarray:
    """The distance from every voxel to its object's boundary along each ray, in voxels.

    Parameters
    ----------
    labels : np.ndarray, integer, shape (Z, Y, X)
        Instance labels, 0 = background; the volume's border counts as background.
    rays : np.ndarray, float, shape (n_rays, 3)
        Unit directions (z, y, x), e.g. :func:`rays_golden_spiral`.

    Returns
    -------
    np.ndarray, float32, shape (Z, Y, X, n_rays)
        0 in the background. Inside an object: walk from the voxel in unit steps along the ray
        (positions kept in float32, rounded to the nearest voxel) until the voxel reached is
        not the object's (or outside the volume), and return the length of the rounded offset
        to that voxel, as ``stardist.geometry.star_dist3D`` does.

    Introduced in notebook 06b.
    """
    labels = labels_3d(labels)
    rays = np.asarray(rays, dtype=np.float64)
    if rays.ndim != 2 or rays.shape[1] != 3 or len(rays) == 0:
        raise ValueError(f"rays must have shape (n_rays, 3) in (z, y, x), got {rays.shape}")
    if not np.all(np.isfinite(rays)) or not np.allclose(np.linalg.norm(rays, axis=1), 1, atol=1e-3):
        raise ValueError("rays must be finite unit vectors (z, y, x), e.g. rays_golden_spiral(n)")
    out = np.empty((*labels.shape, len(rays)), np.float32)
    _distances_kernel(labels, rays.astype(np.float32), out)
    return out


@numba.njit(cache=True, nogil=True)
def _distances_at_kernel(labels, points, rays, out):  # pragma: no cover - compiled
    nz, ny, nx = labels.shape
    for i in range(points.shape[0]):
        z, y, x = points[i, 0], points[i, 1], points[i, 2]
        value = labels[z, y, x]
        for m in range(rays.shape[0]):
            if value == 0:
                out[i, m] = 0.0
                continue
            pz = np.float32(0.0)
            py = np.float32(0.0)
            px = np.float32(0.0)
            while True:
                pz += rays[m, 0]
                py += rays[m, 1]
                px += rays[m, 2]
                zz, yy, xx = int(np.rint(z + pz)), int(np.rint(y + py)), int(np.rint(x + px))
                if not (0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx):
                    break
                if labels[zz, yy, xx] != value:
                    break
            rz, ry, rx = np.rint(pz), np.rint(py), np.rint(px)
            out[i, m] = np.sqrt(rx * rx + ry * ry + rz * rz)


def star_distances_3d_at(labels: Any, points: Any, rays: Any) -> np.ndarray:
    """:func:`star_distances_3d` at the voxels ``points`` only (N, 3) ints: (N, n_rays) float32.

    The same walk and the same distances, for a few voxels of a large volume (a representation
    ceiling needs one voxel per object, not every voxel).
    """
    labels = labels_3d(labels)
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.issubdtype(pts.dtype, np.integer):
        raise ValueError(f"points must be (N, 3) integer voxels (z, y, x), got {pts.shape}")
    if len(pts) and (pts.min() < 0 or np.any(pts.max(0) >= labels.shape)):
        raise ValueError(f"points must lie inside the volume {labels.shape}")
    rays = np.asarray(rays, dtype=np.float64)
    if rays.ndim != 2 or rays.shape[1] != 3 or len(rays) == 0:
        raise ValueError(f"rays must have shape (n_rays, 3) in (z, y, x), got {rays.shape}")
    out = np.empty((len(pts), len(rays)), np.float32)
    _distances_at_kernel(labels, pts.astype(np.int64), rays.astype(np.float32), out)
    return out


def labels_3d(labels: Any) -> np.ndarray:
    """Integer (Z, Y, X) labels as contiguous int32 (ids relabelled when they do not fit)."""
    arr = np.asarray(labels)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be an integer label volume, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"labels must be a (Z, Y, X) volume, got shape {arr.shape}")
    if arr.size == 0 or arr.min() < 0:
        raise ValueError(f"labels must be non-empty with ids >= 0, got shape {arr.shape}")
    if arr.max() > np.iinfo(np.int32).max:
        arr = relabel_consecutive(arr)[0]  # the distances carry no ids: 1..n keeps them apart
    return np.ascontiguousarray(arr, dtype=np.int32)
