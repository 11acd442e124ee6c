"""The compiled kernels of :mod:`course_utils.postprocess.polyhedra` (StarDist-3D).

Polyhedron i is given by its float32 centre ``centres[i]`` (z, y, x), its vertices
``verts[i]`` (n_rays, 3) and its inclusive box ``bbox[i]`` (z0, z1, y0, y1, x0, x1) of the
rounded vertices; ``geo`` is (faces, cone normals, face table, whether the centres are
integers). The float32 arithmetic follows the reference ``stardist``'s C++ code.
"""

from __future__ import annotations

import numpy as np

from .._shared.jit import numba


@numba.njit(cache=True, nogil=True)
def _find_face(normals, dz, dy, dx):  # pragma: no cover - compiled
    """The face whose cone holds direction (dz, dy, dx); on rounding ties the nearest one."""
    best, best_score = 0, -np.inf
    for f in range(normals.shape[0]):
        score = np.inf
        for k in range(3):
            s = -(normals[f, k, 0] * dz + normals[f, k, 1] * dy + normals[f, k, 2] * dx)
            score = min(score, s)
        if score >= 0.0:
            return f
        if score > best_score:
            best, best_score = f, score
    return best


@numba.njit(cache=True, nogil=True, parallel=True)
def face_table_kernel(normals, radius):  # pragma: no cover - compiled
    side = 2 * radius + 1
    table = np.empty((side, side, side), np.int32)
    for iz in numba.prange(side):
        for iy in range(side):
            for ix in range(side):
                table[iz, iy, ix] = _find_face(normals, iz - radius, iy - radius, ix - radius)
    return table


@numba.njit(cache=True, nogil=True)
def _inside(z, y, x, i, centres, verts, geo):  # pragma: no cover - compiled
    """Whether voxel (z, y, x) is in polyhedron i: the plane test of the face whose cone holds
    it, in float32 exactly as stardist's ``inside_halfspace``."""
    faces, normals, table, integral = geo
    r = (table.shape[0] - 1) // 2
    if integral:
        dz = z - int(centres[i, 0])
        dy = y - int(centres[i, 1])
        dx = x - int(centres[i, 2])
        if abs(dz) <= r and abs(dy) <= r and abs(dx) <= r:
            f = table[dz + r, dy + r, dx + r]
        else:
            f = _find_face(normals, dz, dy, dx)
    else:
        f = _find_face(normals, z - centres[i, 0], y - centres[i, 1], x - centres[i, 2])
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    az, ay, ax = verts[i, a, 0], verts[i, a, 1], verts[i, a, 2]
    m00, m01, m02 = verts[i, b, 0] - az, verts[i, b, 1] - ay, verts[i, b, 2] - ax
    m10, m11, m12 = verts[i, c, 0] - az, verts[i, c, 1] - ay, verts[i, c, 2] - ax
    m20, m21, m22 = np.float32(z) - az, np.float32(y) - ay, np.float32(x) - ax
    det = (
        m00 * (m11 * m22 - m21 * m12)
        - m01 * (m10 * m22 - m12 * m20)
        + m02 * (m10 * m21 - m11 * m20)
    )
    return det >= 0


@numba.njit(cache=True, nogil=True, parallel=True)
def paint(labels, centres, verts, bbox, geo, out):  # pragma: no cover - compiled
    """Label every voxel with the first polyhedron (in the given order) that holds it."""
    nz, ny, nx = out.shape
    for z in numba.prange(nz):
        for i in range(len(labels)):
            if z < bbox[i, 0] or z > bbox[i, 1]:
                continue
            for y in range(max(0, bbox[i, 2]), min(ny - 1, bbox[i, 3]) + 1):
                for x in range(max(0, bbox[i, 4]), min(nx - 1, bbox[i, 5]) + 1):
                    if out[z, y, x] == 0 and _inside(z, y, x, i, centres, verts, geo):
                        out[z, y, x] = labels[i]


@numba.njit(cache=True, nogil=True)
def nms_stats(dist, rays, faces, bbox):  # pragma: no cover - compiled
    """Volumes (float32, as the reference's), the mean box anisotropy, and the outer and inner
    radii of each polyhedron in those isotropic units."""
    n = dist.shape[0]
    aniso = np.zeros(3, np.float32)
    for i in range(n):
        for k in range(3):
            aniso[k] += np.float32(bbox[i, 2 * k + 1] - bbox[i, 2 * k]) / np.float32(n)
    aniso = np.where(aniso > 0, aniso.max() / aniso, np.float32(1.0))
    vol, r_out, r_in = np.zeros(n, np.float32), np.zeros(n), np.full(n, np.inf)
    zero, p = (
        np.zeros(3, np.float32),
        np.empty((3, 3), np.float32),
    )  # p: a face's corners A, B, C relative to the centre
    for i in range(n):
        for m in range(rays.shape[0]):
            r_out[i] = max(r_out[i], dist[i, m] * np.sqrt(_dist2(rays[m], zero, aniso)))
        for f in range(faces.shape[0]):
            for q in range(3):
                for k in range(3):
                    p[q, k] = dist[i, faces[f, q]] * rays[faces[f, q], k]
            b0, b1, b2 = p[1, 0] - p[0, 0], p[1, 1] - p[0, 1], p[1, 2] - p[0, 2]
            c0, c1, c2 = p[2, 0] - p[0, 0], p[2, 1] - p[0, 1], p[2, 2] - p[0, 2]
            r0, r1, r2 = -p[0, 0], -p[0, 1], -p[0, 2]
            det = b0 * (c1 * r2 - r1 * c2) - b1 * (c0 * r2 - c2 * r0) + b2 * (c0 * r1 - c1 * r0)
            vol[i] += det / np.float32(6.0)
            s0, s1, s2 = aniso[0] * b0, aniso[1] * b1, aniso[2] * b2
            t0, t1, t2 = aniso[0] * c0, aniso[1] * c1, aniso[2] * c2
            n0, n1, n2 = t1 * s2 - t2 * s1, t2 * s0 - t0 * s2, t0 * s1 - t1 * s0
            dot = aniso[0] * p[0, 0] * n0 + aniso[1] * p[0, 1] * n1 + aniso[2] * p[0, 2] * n2
            r_in[i] = min(r_in[i], dot / (np.sqrt(float(n0 * n0 + n1 * n1 + n2 * n2)) + 1e-10))
    return vol, aniso, r_out, r_in


@numba.njit(cache=True, nogil=True)
def _dist2(c1, c2, scale):  # pragma: no cover - compiled
    return sum([(scale[k] * (c1[k] - c2[k])) ** 2 for k in range(3)])


@numba.njit(cache=True, nogil=True)
def _sphere_overlap(r1, r2, c1, c2, aniso):  # pragma: no cover - compiled
    """The reference's intersection volume of two spheres in isotropic units (it does not
    rescale it when one sphere holds the other: kept, for the same decisions)."""
    d = np.sqrt(_dist2(c1, c2, aniso))
    rmin, rmax = min(r1, r2), max(r1, r2)
    if d > r1 + r2:
        return 0.0
    if rmax >= d + rmin - 1e-10:
        return np.pi * 4.0 / 3.0 * rmin**3
    t = (r1 + r2 - d) / 2.0 / d
    h1, h2 = (r2 - r1 + d) * t, (r1 - r2 + d) * t
    v = np.pi / 3.0 * (h1 * h1 * (3 * r1 - h1) + h2 * h2 * (3 * r2 - h2))
    return v / (aniso[0] * aniso[1] * aniso[2])


@numba.njit(cache=True, nogil=True)
def _pretest(i, j, centres, bbox, stats, thresh):  # pragma: no cover - compiled
    """The reference's cheap bounds: 0 keeps j, 1 suppresses it, 2 leaves it to counting."""
    vol, aniso, r_out, r_in = stats
    a_min = min(vol[i], vol[j]) + 1e-10
    box = 1.0
    for k in range(0, 6, 2):
        box *= max(0, min(bbox[i, k + 1], bbox[j, k + 1]) - max(bbox[i, k], bbox[j, k]))
    upper = min(_sphere_overlap(r_out[i], r_out[j], centres[i], centres[j], aniso), box)
    if upper < 1e-10 or min(1.0, upper / a_min) <= thresh:
        return 0
    lower = _sphere_overlap(r_in[i], r_in[j], centres[i], centres[j], aniso)
    return 1 if lower / a_min > thresh else 2


@numba.njit(cache=True, nogil=True)
def _render_box(i, centres, verts, bbox, geo):  # pragma: no cover - compiled
    """Polyhedron i on the voxels of its box (bool, shape of the box)."""
    shape = [max(bbox[i, k + 1] - bbox[i, k] + 1, 0) for k in range(0, 6, 2)]
    buf = np.zeros((shape[0], shape[1], shape[2]), np.bool_)
    for z in range(shape[0]):
        for y in range(shape[1]):
            for x in range(shape[2]):
                buf[z, y, x] = _inside(
                    z + bbox[i, 0], y + bbox[i, 2], x + bbox[i, 4], i, centres, verts, geo
                )
    return buf


@numba.njit(cache=True, nogil=True)
def _count_overlap(i, j, buf, limit, centres, verts, bbox, geo):  # pragma: no cover - compiled
    """Voxels of polyhedron i's box in both i and j, counted until ``limit`` is passed."""
    count = 0
    for z in range(max(bbox[i, 0], bbox[j, 0]), min(bbox[i, 1], bbox[j, 1]) + 1):
        for y in range(max(bbox[i, 2], bbox[j, 2]), min(bbox[i, 3], bbox[j, 3]) + 1):
            for x in range(max(bbox[i, 4], bbox[j, 4]), min(bbox[i, 5], bbox[j, 5]) + 1):
                if buf[z - bbox[i, 0], y - bbox[i, 2], x - bbox[i, 4]]:
                    count += _inside(z, y, x, j, centres, verts, geo)
                    if count > limit:
                        return count
    return count


@numba.njit(cache=True, nogil=True, parallel=True)
def suppress(centres, verts, bbox, geo, stats, radius, thresh):  # pragma: no cover - compiled
    """Greedy suppression of polyhedra sorted by decreasing score; returns the kept mask.

    For each kept i, the candidates j > i with centres closer than ``radius[i] + max(radius)``
    (the reference's k-d tree search; here a sweep along the longest axis) go through
    ``_pretest``; the pairs it leaves open are counted on the voxels of i's box, in parallel.
    """
    n, ones = len(centres), np.ones(3, np.float32)
    axis = np.argmax(np.array([np.ptp(centres[:, k]) for k in range(3)]))
    by_axis = np.argsort(centres[:, axis], kind="mergesort")
    keys = centres[by_axis, axis]
    suppressed = np.zeros(n, np.bool_)
    open_pairs = np.empty(n, np.int64)
    for i in range(n - 1):
        if suppressed[i]:
            continue
        reach = radius[i] + radius.max()
        lo = np.searchsorted(keys, centres[i, axis] - reach, side="left")
        hi = np.searchsorted(keys, centres[i, axis] + reach, side="right")
        m = 0
        for q in range(lo, hi):
            j = by_axis[q]
            if j <= i or suppressed[j] or _dist2(centres[i], centres[j], ones) >= reach**2:
                continue
            verdict = _pretest(i, j, centres, bbox, stats, thresh)
            suppressed[j] = verdict == 1
            if verdict == 2:
                open_pairs[m] = j
                m += 1
        if m == 0:
            continue
        buf = _render_box(i, centres, verts, bbox, geo)
        for q in numba.prange(m):
            j = open_pairs[q]
            a_min = min(stats[0][i], stats[0][j]) + 1e-10
            count = _count_overlap(i, j, buf, a_min * thresh, centres, verts, bbox, geo)
            suppressed[j] = count / a_min > thresh
    return ~suppressed
