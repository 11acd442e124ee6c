"""Augmentations on sparse labels (-1 = unknown): ``augment.with_unknown``, against references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from course_utils.data import augment as aug
from course_utils.data import synthetic_nuclei


def _factories(mode: str) -> dict:
    """Geometric transforms of every kind, with border ``mode``."""
    return {
        "rotation 17": aug.random_rotation((17.0, 17.0), mode=mode),
        "rotation random": aug.random_rotation(180, mode=mode),
        "affine zoom out + shear": aug.random_affine((0.6, 0.6), (12.0, 12.0), mode=mode),
        "affine zoom in": aug.random_affine((1.7, 1.7), mode=mode),
        "elastic": aug.elastic(alpha=300, sigma=8, mode=mode),
        "elastic strong": aug.elastic(alpha=2000, sigma=10, mode=mode),
    }


GEOMETRIC = _factories("reflect")


def _with_mode(name: str, mode: str):
    return _factories(mode)[name]


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((96, 112), n_nuclei=30, seed=3)
    assert labels.max() > 5
    return image, labels


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _original_ids(labels: np.ndarray, max_id: int) -> np.ndarray:
    """Undo the mirrored-copy offset ``id + k * max_id`` of mode="reflect"."""
    return np.where(labels > 0, (labels - 1) % max_id + 1, 0)


def _sparse(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Some objects kept, background near them, the rest -1 (unknown)."""
    rng = np.random.default_rng(seed)
    ids = np.unique(labels[labels > 0])
    kept = rng.choice(ids, len(ids) // 2, replace=False)
    near = ndi.binary_dilation(np.isin(labels, kept), iterations=4)
    return np.where(np.isin(labels, kept), labels, np.where(near & (labels == 0), 0, -1))


SPARSE_AUGMENTS = {
    **GEOMETRIC,
    "flip_rot90": aug.flip_rot90,
    "pipeline": aug.compose(
        aug.flip_rot90,
        aug.random_rotation(40),
        aug.intensity(),
        aug.gaussian_noise(0.05),
        aug.elastic(),
        p=[1, 0.8, 0.5, 0.5, 0.5],
    ),
}


@pytest.mark.parametrize("name", sorted(SPARSE_AUGMENTS))
def test_with_unknown_is_the_augmentation_itself_on_dense_labels(nuclei, name):
    image, labels = nuclei
    plain, sparse = SPARSE_AUGMENTS[name], aug.with_unknown(SPARSE_AUGMENTS[name])
    rng_a, rng_b = _rng(7), _rng(7)
    x_a, y_a = plain(image, labels, rng_a)
    x_b, y_b = sparse(image, labels, rng_b)
    np.testing.assert_array_equal(x_a, x_b)
    np.testing.assert_array_equal(y_a, y_b)
    assert y_a.dtype == y_b.dtype
    assert rng_a.random() == rng_b.random(), "the generator must advance as for one call"


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_constant_borders_of_sparse_labels_are_unknown(nuclei, name):
    image, labels = nuclei
    sparse = _sparse(labels)
    transform = _with_mode(name, "constant")
    _, out = aug.with_unknown(transform)(image, sparse, _rng(2))
    # Reference: shift the values up by one (unknown -> 0, which is what the border fills).
    _, shifted = transform(image, sparse + 1, _rng(2))
    np.testing.assert_array_equal(out, shifted.astype(np.int64) - 1)
    assert out.dtype == np.int32


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_reflected_sparse_labels_never_renumber_or_interpolate_unknown(nuclei, name):
    image, labels = nuclei
    sparse = _sparse(labels, seed=1)
    _, out = aug.with_unknown(GEOMETRIC[name])(image, sparse, _rng(3))
    assert out.min() >= -1
    # The unknown pixels are exactly where the transform takes the unknown mask.
    _, unknown = GEOMETRIC[name](image, (sparse < 0).astype(np.int32), _rng(3))
    np.testing.assert_array_equal(out == -1, unknown > 0)
    # Known pixels carry an annotated id (or a mirrored copy of one) or background.
    kept = set(np.unique(sparse[sparse > 0]).tolist())
    originals = _original_ids(np.maximum(out, 0), int(sparse.max()))  # copies: id + k * max
    assert set(np.unique(originals[out > 0]).tolist()) <= kept


def test_with_unknown_by_hand_and_its_errors():
    labels = np.array([[-1, 0, 2], [-1, 0, 2]], np.int32)
    _, flipped = aug.with_unknown(lambda x, y, rng: (x[..., ::-1], y[..., ::-1]))(
        np.zeros((2, 3), np.float32), labels, _rng()
    )
    np.testing.assert_array_equal(flipped, labels[:, ::-1])
    rotate = aug.with_unknown(aug.random_rotation((45, 45), mode="constant"))
    _, out = rotate(np.zeros((9, 9), np.float32), np.zeros((9, 9), np.int32), _rng())
    assert out[0, 0] == -1 and out[4, 4] == 0
    assert aug.with_unknown(rotate) is rotate and "with_unknown" in repr(rotate)
    intensity = aug.with_unknown(aug.intensity())
    np.testing.assert_array_equal(intensity(np.ones((2, 3)), labels, _rng())[1], labels)
    with pytest.raises(TypeError, match="callable"):
        aug.with_unknown("flip")
    with pytest.raises(ValueError, match="below -1"):
        rotate(np.zeros((9, 9)), np.full((9, 9), -2), _rng())
    with pytest.raises(ValueError, match="negative"):  # the plain transforms still refuse -1
        aug.flip_rot90(np.zeros((2, 3)), labels, _rng())


# --- the U-Net paper's coarse-grid elastic deformation -------------------------------------


def test_grid_displacement_passes_through_gaussian_grid_values_and_is_smooth():
    from course_utils.data.augment.geometric import grid_displacement

    field = grid_displacement((101, 61), _rng(4), points=3, sigma=10.0)
    grid = _rng(4).normal(0.0, 10.0, (2, 3, 3))  # the same draw, dy first
    np.testing.assert_allclose(field[:, ::50, ::30], grid, atol=1e-9)  # the 3 x 3 grid points
    assert np.abs(np.diff(field, axis=1)).max() < 3.0  # no pixel-scale roughness
    with pytest.raises(ValueError, match="points"):
        grid_displacement((9, 9), _rng(), points=1)
    with pytest.raises(ValueError, match="sigma"):
        grid_displacement((9, 9), _rng(), sigma=-1.0)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_elastic_grid_is_the_identity_at_sigma_zero_and_never_invents_ids(nuclei, mode):
    from course_utils.data.augment.geometric import elastic_grid

    image, labels = nuclei
    same = elastic_grid(sigma=0.0, mode=mode)(image, labels, _rng())
    np.testing.assert_array_equal(same[1], labels)
    np.testing.assert_allclose(same[0], image, atol=1e-6)
    _, moved = elastic_grid(sigma=10.0, mode=mode)(image, labels, _rng(1))
    assert set(np.unique(_original_ids(moved, int(labels.max())))) <= set(np.unique(labels))
    assert not np.array_equal(moved, labels) and "elastic_grid" in repr(elastic_grid())
