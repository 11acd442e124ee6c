"""Tests of course_utils.data.augment: image and labels move together, ids are never invented."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from course_utils.data import PatchDataset, synthetic_nuclei
from course_utils.data import augment as aug

GEOMETRIC = {
    "rotation 17": aug.random_rotation((17.0, 17.0)),
    "rotation 33.3": aug.random_rotation((-33.3, -33.3)),
    "rotation 123": aug.random_rotation((123.0, 123.0)),
    "rotation random": aug.random_rotation(180),
    "affine zoom out + shear": aug.random_affine((0.6, 0.6), (12.0, 12.0)),
    "affine zoom in": aug.random_affine((1.7, 1.7)),
    "affine random": aug.random_affine(1.5, 20),
    "elastic": aug.elastic(alpha=300, sigma=8),
    "elastic strong": aug.elastic(alpha=2000, sigma=10),
}


def _with_mode(name: str, mode: str):
    """The transform of GEOMETRIC[name] with another border mode."""
    params = {
        "rotation 17": lambda: aug.random_rotation((17.0, 17.0), mode=mode),
        "rotation 33.3": lambda: aug.random_rotation((-33.3, -33.3), mode=mode),
        "rotation 123": lambda: aug.random_rotation((123.0, 123.0), mode=mode),
        "rotation random": lambda: aug.random_rotation(180, mode=mode),
        "affine zoom out + shear": lambda: aug.random_affine((0.6, 0.6), (12.0, 12.0), mode=mode),
        "affine zoom in": lambda: aug.random_affine((1.7, 1.7), mode=mode),
        "affine random": lambda: aug.random_affine(1.5, 20, mode=mode),
        "elastic": lambda: aug.elastic(alpha=300, sigma=8, mode=mode),
        "elastic strong": lambda: aug.elastic(alpha=2000, sigma=10, mode=mode),
    }
    return params[name]()


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((96, 112), seed=3)
    assert labels.max() > 5
    return image, labels


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _original_ids(labels: np.ndarray, max_id: int) -> np.ndarray:
    """Undo the mirrored-copy offset ``id + k * max_id`` of mode="reflect"."""
    return np.where(labels > 0, (labels - 1) % max_id + 1, 0)


# --- exact transforms -------------------------------------------------------------------------


def test_flip_rot90_gives_exactly_the_eight_symmetries_of_a_hand_example():
    labels = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)
    expected = {
        ((1, 2, 3), (4, 5, 6)),  # identity
        ((3, 2, 1), (6, 5, 4)),  # left-right flip
        ((6, 5, 4), (3, 2, 1)),  # half turn
        ((4, 5, 6), (1, 2, 3)),  # up-down flip
        ((3, 6), (2, 5), (1, 4)),  # quarter turn counter-clockwise
        ((4, 1), (5, 2), (6, 3)),  # quarter turn clockwise
        ((1, 4), (2, 5), (3, 6)),  # transpose
        ((6, 3), (5, 2), (4, 1)),  # anti-transpose
    }
    seen = set()
    for seed in range(64):
        image_out, labels_out = aug.flip_rot90(
            labels.astype(np.float32), labels, np.random.default_rng(seed)
        )
        assert labels_out.dtype == np.int32 and image_out.dtype == np.float32
        np.testing.assert_array_equal(image_out, labels_out)  # the same transform on both
        seen.add(tuple(map(tuple, labels_out.tolist())))
    assert seen == expected


def test_flip_rot90_keeps_channels_first_and_a_2d_image_2d():
    rng = np.random.default_rng(0)
    image = rng.random((3, 5, 7)).astype(np.float32)
    labels = np.arange(35, dtype=np.int32).reshape(5, 7)
    for seed in range(8):
        x, y = aug.flip_rot90(image, labels, np.random.default_rng(seed))
        assert x.shape[0] == 3 and x.shape[1:] == y.shape
        for c in range(3):  # every channel moved like the labels
            np.testing.assert_array_equal(x[c], image[c].ravel()[y])
    x2, y2 = aug.flip_rot90(image[0], labels, np.random.default_rng(1))
    assert x2.ndim == 2 and x2.shape == y2.shape


def test_rotation_by_90_degrees_equals_rot90():
    rng = np.random.default_rng(1)
    image = rng.random((2, 24, 24)).astype(np.float32)
    labels = rng.integers(0, 9, (24, 24)).astype(np.int32)
    x, y = aug.random_rotation((90.0, 90.0))(image, labels, rng)
    np.testing.assert_allclose(x, np.rot90(image, 1, axes=(1, 2)), atol=1e-6)
    np.testing.assert_array_equal(y, np.rot90(labels, 1))


# --- against scipy ----------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [17.0, -41.5, 123.0])
def test_rotation_matches_scipy_rotate(nuclei, angle):
    image, labels = nuclei
    x, y = aug.random_rotation((angle, angle), mode="constant")(image, labels, _rng())
    ref_x = ndi.rotate(image, angle, reshape=False, order=1, mode="grid-constant")
    ref_y = ndi.rotate(labels, angle, reshape=False, order=0, mode="grid-constant")
    np.testing.assert_allclose(x, ref_x, atol=1e-5)
    assert (y == ref_y).mean() > 0.999  # order-0 ties at exactly half a pixel may differ


def test_affine_matches_scipy_affine_transform_in_both_modes(nuclei):
    image, labels = nuclei
    s, shear = 1.3, 10.0
    t = np.tan(np.radians(shear))
    inverse = np.linalg.inv(np.array([[s, 0.0], [s * t, s]]))
    centre = (np.array(labels.shape) - 1) / 2.0
    offset = centre - inverse @ centre
    for mode, nd_mode in [("constant", "grid-constant"), ("reflect", "mirror")]:
        augment = aug.random_affine((s, s), (shear, shear), mode=mode)
        x, y = augment(image, labels, _rng())
        ref_x = ndi.affine_transform(image, inverse, offset, order=1, mode=nd_mode)
        ref_y = ndi.affine_transform(labels, inverse, offset, order=0, mode=nd_mode)
        np.testing.assert_allclose(x, ref_x, atol=1e-5)
        assert (_original_ids(y, int(labels.max())) == ref_y).mean() > 0.999


def test_remap_reflect_gives_mirrored_copies_new_ids_by_hand():
    labels = np.array([[1, 1, 0, 2], [1, 0, 0, 2]], dtype=np.int32)
    rows, cols = np.indices(labels.shape, dtype=np.float64)
    coords = np.stack([rows, cols - 2.0])  # shift right by 2: columns 0, 1 mirror columns 2, 1
    x, y = aug.remap(labels.astype(np.float32), labels, coords, mode="reflect")
    np.testing.assert_array_equal(y, [[0, 1 + 2, 1, 1], [0, 0 + 0, 1, 0]])
    np.testing.assert_array_equal(x, [[0, 1, 1, 1], [0, 0, 1, 0]])  # the image keeps values
    _, y_const = aug.remap(labels.astype(np.float32), labels, coords, mode="constant")
    np.testing.assert_array_equal(y_const, [[0, 0, 1, 1], [0, 0, 1, 0]])


# --- no invented ids, alignment ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(GEOMETRIC))
@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_geometric_transforms_never_invent_ids(nuclei, name, mode):
    image, labels = nuclei
    present = set(np.unique(labels).tolist())
    augment = _with_mode(name, mode)
    for seed in range(3):
        _, y = augment(image, labels, _rng(seed))
        assert y.dtype == np.int32 and y.shape == labels.shape
        if mode == "constant":
            assert set(np.unique(y).tolist()) <= present
        else:
            assert set(np.unique(_original_ids(y, int(labels.max()))).tolist()) <= present


@pytest.mark.parametrize("name", list(GEOMETRIC))
@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_image_and_labels_stay_aligned(nuclei, name, mode):
    # An image of the pixel coordinates: bilinear interpolation of a linear ramp is exact, so
    # the transformed image says where each output pixel was sampled (mirrored in "reflect").
    _, labels = nuclei
    h, w = labels.shape
    ramps = np.concatenate([np.indices((h, w)), np.ones((1, h, w))]).astype(np.float32)
    x, y = _with_mode(name, mode)(ramps, labels, _rng(7))
    y = _original_ids(y, int(labels.max()))
    inside = np.abs(x[2] - 1) < 1e-6  # "constant" blends with 0 where it samples outside
    x = x[:2]
    ties = (np.abs(x % 1 - 0.5) < 1e-3).any(axis=0)  # a half pixel may round either way
    check = inside & ~ties
    assert check.mean() > 0.25  # zooming out by 0.6 leaves ~36% inside
    r, c = np.rint(x[:, check]).astype(int)
    np.testing.assert_array_equal(y[check], labels[r, c])
    # The check can fail: labels shifted by one pixel do not match.
    assert not np.array_equal(np.roll(y, 1, axis=1)[check], labels[r, c])


def test_each_output_id_comes_from_its_source_pixels_unlike_bilinear(nuclei):
    # Why the rules exist: bilinear interpolation of labels gives non-integer values and, once
    # rounded, ids of other nuclei at places none of its four source pixels has.
    _, labels = nuclei
    h, w = labels.shape
    a = np.radians(-29.0)
    centre = np.array([[(h - 1) / 2], [(w - 1) / 2]])
    grid = np.indices((h, w), dtype=np.float64).reshape(2, -1) - centre
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    coords = (rotation @ grid + centre).reshape(2, h, w)
    inside = (coords[0] >= 0) & (coords[0] <= h - 1) & (coords[1] >= 0) & (coords[1] <= w - 1)
    r0 = np.clip(np.floor(coords[0]).astype(int), 0, h - 2)
    c0 = np.clip(np.floor(coords[1]).astype(int), 0, w - 2)
    sources = np.stack([labels[r0 + i, c0 + j] for i in (0, 1) for j in (0, 1)])

    _, ours = aug.remap(labels * 1.0, labels, coords, mode="constant")
    assert ((ours[None] == sources).any(axis=0) | ~inside).all()

    bilinear = ndi.map_coordinates(labels.astype(np.float64), coords, order=1)
    assert (bilinear[inside] != np.round(bilinear[inside])).any()  # not even integers
    rounded = np.rint(bilinear).astype(int)
    foreign = ~(rounded[None] == sources).any(axis=0) & inside
    assert foreign.sum() > 10


# --- elastic ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_elastic_with_alpha_zero_is_the_identity(nuclei, mode):
    image, labels = nuclei
    stack = np.stack([image, image**2])
    x, y = aug.elastic_deform(stack, labels, _rng(), alpha=0.0, sigma=5.0, mode=mode)
    np.testing.assert_array_equal(x, stack)
    np.testing.assert_array_equal(y, labels)


def test_elastic_displacement_is_smoothed_uniform_noise_times_alpha():
    field = aug.elastic_displacement((256, 256), _rng(3), alpha=100.0, sigma=4.0)
    assert field.shape == (2, 256, 256) and field.dtype == np.float64
    noise = _rng(3).uniform(-1, 1, (2, 256, 256))
    np.testing.assert_allclose(field[1], 100 * ndi.gaussian_filter(noise[0], 4, mode="nearest"))
    np.testing.assert_allclose(field[0], 100 * ndi.gaussian_filter(noise[1], 4, mode="nearest"))
    # Standard deviation alpha / (sigma * sqrt(12 pi)) of smoothed uniform noise, away from the
    # border (where the replicated edge makes it larger).
    expected = 100.0 / (4.0 * np.sqrt(12 * np.pi))
    assert abs(field[:, 16:-16, 16:-16].std() / expected - 1) < 0.1
    twice = aug.elastic_displacement((256, 256), _rng(3), alpha=200.0, sigma=4.0)
    np.testing.assert_allclose(twice, 2 * field)


def test_elastic_field_matches_albumentations_away_from_its_seam():
    albumentations = pytest.importorskip("albumentations")
    h, w, sigma = 96, 80, 4.0
    transform = albumentations.ElasticTransform(
        alpha=50.0, sigma=sigma, noise_distribution="uniform", p=1.0
    )
    transform.set_random_seed(11)
    maps = transform.get_params_dependent_on_data({"shape": (h, w)}, {})
    ours = aug.elastic_displacement((h, w), _rng(11), alpha=50.0, sigma=sigma)
    theirs_dy = maps["map_y"] - np.arange(h)[:, None]
    theirs_dx = maps["map_x"] - np.arange(w)[None, :]
    # albumentations blurs the x and y noise stacked as one (2H, W) image, so the two fields
    # mix within about 4 sigma of the seam (bottom rows of x, top rows of y): compare elsewhere.
    margin = int(5 * sigma)
    np.testing.assert_allclose(ours[1, : h - margin], theirs_dx[: h - margin], atol=1e-3)
    np.testing.assert_allclose(ours[0, margin:], theirs_dy[margin:], atol=1e-3)


# --- intensity and composition ----------------------------------------------------------------


@pytest.mark.parametrize(
    "augment",
    [aug.intensity(0.2, 0.3, 1.5), aug.gaussian_noise(0.1), aug.gaussian_blur((0.5, 2.0))],
    ids=repr,
)
def test_intensity_transforms_leave_labels_untouched(nuclei, augment):
    image, labels = nuclei
    before = labels.copy()
    for seed in range(3):
        x, y = augment(image, labels, _rng(seed))
        np.testing.assert_array_equal(y, before)
        assert x.shape == image.shape and x.dtype == np.float32
        assert not np.allclose(x, image)
    np.testing.assert_array_equal(labels, before)


def test_intensity_formula_by_hand():
    image = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    labels = np.zeros((2, 2), np.int32)
    x, _ = aug.intensity(brightness=(0.1, 0.1), contrast=(2.0, 2.0), gamma=(2.0, 2.0))(
        image, labels, _rng()
    )
    g = image**2
    np.testing.assert_allclose(x, (g - g.mean()) * 2.0 + g.mean() + 0.1, atol=1e-6)


def test_gaussian_noise_has_the_asked_standard_deviation():
    image = np.zeros((200, 200), np.float32)
    x, _ = aug.gaussian_noise(0.2)(image, np.zeros((200, 200), np.int32), _rng())
    assert abs(x.std() - 0.2) < 0.01


def test_compose_is_deterministic_for_a_seeded_rng(nuclei):
    image, labels = nuclei
    pipeline = aug.compose(
        aug.flip_rot90,
        aug.random_rotation(45),
        aug.elastic(alpha=200, sigma=8),
        aug.intensity(),
        aug.gaussian_noise((0.0, 0.05)),
        p=0.7,
    )
    a = pipeline(image, labels, _rng(5))
    b = pipeline(image, labels, _rng(5))
    c = pipeline(image, labels, _rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])
    assert "random_rotation" in repr(pipeline) and "flip_rot90" in repr(pipeline)


def test_compose_probabilities_zero_and_one(nuclei):
    image, labels = nuclei
    never = aug.compose(aug.random_rotation(90), aug.gaussian_noise(1.0), p=0.0)
    x, y = never(image, labels, _rng())
    np.testing.assert_array_equal(x, image)
    np.testing.assert_array_equal(y, labels)
    only_noise = aug.compose(aug.random_rotation(90), aug.gaussian_noise(1.0), p=[0.0, 1.0])
    x, y = only_noise(image, labels, _rng())
    np.testing.assert_array_equal(y, labels)
    assert not np.allclose(x, image)


def test_patch_dataset_takes_an_augment(nuclei):
    image, labels = nuclei
    pipeline = aug.compose(aug.flip_rot90, aug.random_rotation(30), aug.intensity())
    ds = PatchDataset([image], [labels], 48, length=4, augment=pipeline, seed=0)
    x, y = ds[1]
    x2, y2 = ds[1]
    assert tuple(x.shape) == (1, 48, 48) and tuple(y.shape) == (48, 48)
    assert (x == x2).all() and (y == y2).all()


# --- bad input --------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors(nuclei):
    image, labels = nuclei
    rotate = aug.random_rotation(10)
    with pytest.raises(TypeError, match="integer"):
        rotate(image, labels.astype(np.float32), _rng())
    with pytest.raises(ValueError, match="shape"):
        rotate(image, labels[:-1], _rng())
    with pytest.raises(ValueError, match="negative"):
        rotate(image, labels - 1, _rng())
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        rotate(image[None, None], labels, _rng())
    with pytest.raises(TypeError, match="Generator"):
        rotate(image, labels, 0)
    with pytest.raises(ValueError, match="mode"):
        aug.random_rotation(10, mode="wrap")
    with pytest.raises(ValueError, match="scale"):
        aug.random_affine(scale=0.5)
    with pytest.raises(ValueError, match="sigma"):
        aug.elastic(alpha=10, sigma=0)
    with pytest.raises(ValueError, match="probabilities"):
        aug.compose(aug.flip_rot90, p=[0.5, 0.5])
    with pytest.raises(TypeError, match="callable"):
        aug.compose(aug.flip_rot90, "rotate")
    with pytest.raises(ValueError, match="coords"):
        aug.remap(image, labels, np.zeros((3, 4, 4)))


def test_augmentations_survive_pickling_for_dataloader_workers(nuclei):
    import pickle

    image, labels = nuclei
    pipeline = aug.compose(
        aug.flip_rot90,
        aug.random_rotation(30),
        aug.random_affine(1.2, 5),
        aug.elastic(),
        aug.intensity(),
        aug.gaussian_noise(0.1),
        aug.gaussian_blur(),
        p=0.8,
    )
    copy = pickle.loads(pickle.dumps(pipeline))
    a, b = pipeline(image, labels, _rng(2)), copy(image, labels, _rng(2))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert repr(copy) == repr(pipeline)
