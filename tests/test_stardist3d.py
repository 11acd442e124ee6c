"""StarDist-3D's representation: golden-spiral rays and 3-D ray distances, checked by hand and
against the reference stardist on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

from course_utils.targets import rays_golden_spiral, star_distances_3d


def _ball(shape=(15, 17, 19), centre=(7, 8, 9), radius=5.0, value=3) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    inside = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
    return np.where(inside, value, 0).astype(np.int32)


def test_rays_are_unit_vectors_from_pole_to_pole_turning_by_the_golden_angle():
    rays = rays_golden_spiral(50)
    assert rays.shape == (50, 3) and rays.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(rays[[0, -1], 0], [-1, 1], atol=1e-6)  # z runs from pole to pole
    azimuth = np.unwrap(np.arctan2(rays[1:-1, 1], rays[1:-1, 2]))
    np.testing.assert_allclose(np.diff(azimuth) % (2 * np.pi), (3 - np.sqrt(5)) * np.pi, atol=1e-4)


def test_anisotropy_divides_the_directions_before_normalising():
    plain, flat = rays_golden_spiral(40), rays_golden_spiral(40, anisotropy=(2.0, 1.0, 1.0))
    expected = plain / np.array([2.0, 1.0, 1.0], np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(flat, expected, atol=1e-6)
    assert np.abs(flat[:, 0]).max() < np.abs(plain[:, 0]).max() + 1e-6


@pytest.mark.parametrize(
    ("args", "error"),
    [((3,), ValueError), ((10, (1, 1)), ValueError), ((10, (0, 1, 1)), ValueError)],
)
def test_bad_rays_are_refused(args, error):
    with pytest.raises(error):
        rays_golden_spiral(*args)


def test_distances_by_hand_on_a_ball():
    labels = _ball()
    axis_rays = np.eye(3, dtype=np.float32)  # +z, +y, +x
    dist = star_distances_3d(labels, axis_rays)
    assert dist.shape == (*labels.shape, 3) and dist.dtype == np.float32
    assert np.all(dist[labels == 0] == 0)
    # From the centre, 5 voxels are inside along each axis: the 6th step leaves the ball.
    np.testing.assert_array_equal(dist[7, 8, 9], [6, 6, 6])
    # The last voxel inside along +z (z = 12, 5 above the centre): one step leaves.
    assert dist[12, 8, 9, 0] == 1 and dist[11, 8, 9, 0] == 2


def test_the_volume_border_counts_as_background_and_ids_are_kept_apart():
    labels = np.zeros((4, 5, 6), np.int32)
    labels[:, :, :3], labels[:, :, 3:] = 1, 2  # two objects touching, filling the volume
    dist = star_distances_3d(labels, np.array([[0, 0, 1], [0, 0, -1]], np.float32))
    np.testing.assert_array_equal(dist[0, 0, :, 0], [3, 2, 1, 3, 2, 1])
    np.testing.assert_array_equal(dist[0, 0, :, 1], [1, 2, 3, 1, 2, 3])
    big = labels.astype(np.int64)
    big[big == 2] = 2**40  # an id beyond int32
    np.testing.assert_array_equal(star_distances_3d(big, [[0, 0, 1]]), dist[..., :1])


@pytest.mark.parametrize(
    ("labels", "rays", "error"),
    [
        (np.zeros((4, 4), np.int32), np.eye(3), ValueError),
        (np.zeros((4, 4, 4), np.float32), np.eye(3), TypeError),
        (np.zeros((4, 4, 4), np.int32), np.ones((3, 2)), ValueError),
        (np.zeros((4, 4, 4), np.int32), 2 * np.eye(3), ValueError),
        (-np.ones((4, 4, 4), np.int32), np.eye(3), ValueError),
    ],
)
def test_bad_inputs_are_refused(labels, rays, error):
    with pytest.raises(error):
        star_distances_3d(labels, rays)


@pytest.mark.reference
@pytest.mark.parametrize("anisotropy", [None, (2.2, 1.0, 1.0)])
def test_same_rays_and_distances_as_stardist(anisotropy):
    rays3d = pytest.importorskip("stardist.rays3d")
    geometry = pytest.importorskip("stardist.geometry")
    data = pytest.importorskip("stardist.data")
    for n in (4, 33, 96):
        reference = rays3d.Rays_GoldenSpiral(n, anisotropy=anisotropy)
        np.testing.assert_allclose(rays_golden_spiral(n, anisotropy), reference.vertices, atol=1e-7)
    _, labels = data.test_image_nuclei_3d(return_mask=True)
    labels = labels[:, :48, :48]
    reference = rays3d.Rays_GoldenSpiral(64, anisotropy=anisotropy)
    ours = star_distances_3d(labels, rays_golden_spiral(64, anisotropy))
    np.testing.assert_allclose(ours, geometry.star_dist3D(labels, reference), atol=1e-4)


def test_distances_at_points_equal_the_whole_volume():
    from course_utils.targets import star_distances_3d_at

    rng = np.random.default_rng(0)
    labels = np.zeros((12, 20, 20), np.int32)
    labels[2:10, 3:15, 4:16] = 1
    labels[4:8, 14:19, 2:12] = 2
    rays = rays_golden_spiral(24, (2.0, 1.0, 1.0))
    whole = star_distances_3d(labels, rays)
    points = np.stack([rng.integers(0, s, 30) for s in labels.shape], axis=1)
    np.testing.assert_array_equal(
        star_distances_3d_at(labels, points, rays), whole[tuple(points.T)]
    )
    with pytest.raises(ValueError, match="inside"):
        star_distances_3d_at(labels, [[12, 0, 0]], rays)
    with pytest.raises(ValueError, match="integer"):
        star_distances_3d_at(labels, [[1.0, 0.0, 0.0]], rays)
