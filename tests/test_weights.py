"""Tests of course_utils.targets.weights: the U-Net weight map and the 3-class targets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage.draw import disk, ellipse, rectangle
from skimage.segmentation import find_boundaries

from course_utils.targets import boundary_classes, unet_weight_map


def naive_weight_map(labels, w0=10.0, sigma=5.0, class_weights="balanced"):
    """The notebook's definition, written plainly: one distance transform per cell."""
    labels = np.asarray(labels)
    background = labels == 0
    n, n_fg = labels.size, np.count_nonzero(labels)
    if class_weights == "balanced":
        w_bg = n / (2 * (n - n_fg)) if n - n_fg else 0.0
        w_fg = n / (2 * n_fg) if n_fg else 0.0
    elif class_weights is None:
        w_bg = w_fg = 1.0
    else:
        w_bg, w_fg = class_weights
    weights = np.where(background, w_bg, w_fg).astype(np.float64)
    ids = [i for i in np.unique(labels) if i != 0]
    if len(ids) < 2:
        return weights
    distances = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    distances.sort(axis=0)
    d1, d2 = distances[0], distances[1]
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return weights + np.where(background, border, 0.0)


def touching_disks(shape, n, seed, rmin=5, rmax=12):
    """Random disks painted over each other (so many touch), ids 1..n (some may vanish)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        centre = rng.integers(0, shape, size=2)
        rr, cc = disk(tuple(centre), int(rng.integers(rmin, rmax)), shape=shape)
        labels[rr, cc] = k
    return labels


def hand_scene():
    """Two touching rectangles, an ellipse across the image edge and a separate disk."""
    labels = np.zeros((64, 80), np.int32)
    rr, cc = rectangle((10, 10), end=(30, 25))
    labels[rr, cc] = 1
    rr, cc = rectangle((10, 26), end=(30, 40))
    labels[rr, cc] = 2
    rr, cc = ellipse(5, 70, 12, 8, shape=labels.shape)
    labels[rr, cc] = 3
    rr, cc = disk((50, 30), 8, shape=labels.shape)
    labels[rr, cc] = 4
    return labels


def _scenes():
    single = np.zeros((48, 48), np.int32)
    rr, cc = disk((20, 20), 9)
    single[rr, cc] = 5
    sparse_ids = hand_scene() * 7  # ids 7, 14, 21, 28
    huge_ids = hand_scene().astype(np.int64) * (2**40)  # ids far above the pixel count
    return {
        "hand": hand_scene(),
        "disks_96": touching_disks((96, 96), 25, seed=1),
        "disks_rect": touching_disks((70, 130), 30, seed=2),
        "dense_small": touching_disks((60, 60), 40, seed=3, rmin=3, rmax=7),
        "one_object": single,
        "no_object": np.zeros((32, 40), np.int32),
        "all_object": np.ones((16, 16), np.int32),
        "sparse_ids": sparse_ids,
        "huge_ids": huge_ids,
        "uint16": touching_disks((50, 50), 12, seed=4).astype(np.uint16),
    }


SCENES = _scenes()


@pytest.mark.parametrize("name", sorted(SCENES))
def test_weight_map_matches_naive(name):
    labels = SCENES[name]
    fast = unet_weight_map(labels)
    assert fast.dtype == np.float32 and fast.shape == labels.shape
    np.testing.assert_allclose(fast, naive_weight_map(labels), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("w0", "sigma", "class_weights"),
    [(10.0, 2.0, None), (50.0, 10.0, (0.2, 3.0)), (1e4, 5.0, "balanced"), (0.0, 5.0, "balanced")],
)
def test_weight_map_parameters_match_naive(w0, sigma, class_weights):
    labels = touching_disks((80, 80), 20, seed=5)
    fast = unet_weight_map(labels, w0=w0, sigma=sigma, class_weights=class_weights)
    expected = naive_weight_map(labels, w0=w0, sigma=sigma, class_weights=class_weights)
    # float32 output: allow its rounding on top of the 1e-4 budget for the huge w0
    np.testing.assert_allclose(fast, expected, rtol=1e-6, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st.integers(0, 39), st.integers(0, 39), st.integers(1, 12), st.integers(1, 12)),
        max_size=8,
    ),
    sigma=st.floats(0.5, 8.0),
)
def test_weight_map_random_rectangles(boxes, sigma):
    labels = np.zeros((40, 40), np.int32)
    for k, (r, c, h, w) in enumerate(boxes, start=3):
        labels[r : r + h, c : c + w] = k
    np.testing.assert_allclose(
        unet_weight_map(labels, sigma=sigma), naive_weight_map(labels, sigma=sigma), atol=1e-4
    )


def test_weight_map_on_bbbc039(bbbc039_labels):
    labels = bbbc039_labels[0][:256, :256]
    np.testing.assert_allclose(unet_weight_map(labels), naive_weight_map(labels), atol=1e-4)


def test_weight_map_on_synthetic_nuclei():
    data = pytest.importorskip("course_utils.data")
    if not hasattr(data, "synthetic_nuclei"):
        pytest.skip("course_utils.data.synthetic_nuclei is not there yet")
    _, labels = data.synthetic_nuclei((160, 160), seed=3)
    assert labels.max() > 5
    np.testing.assert_allclose(unet_weight_map(labels), naive_weight_map(labels), atol=1e-4)


def test_balanced_class_weights_by_definition():
    labels = hand_scene()
    n, n_fg = labels.size, np.count_nonzero(labels)
    w = unet_weight_map(labels, w0=0.0)
    np.testing.assert_allclose(w[labels > 0], n / (2 * n_fg), rtol=1e-6)
    np.testing.assert_allclose(w[labels == 0], n / (2 * (n - n_fg)), rtol=1e-6)
    # both classes carry half of the total weight
    np.testing.assert_allclose(w[labels > 0].sum(), w[labels == 0].sum(), rtol=1e-5)


def test_explicit_and_no_class_weights():
    labels = hand_scene()
    w = unet_weight_map(labels, w0=0.0, class_weights=(0.25, 4.0))
    assert set(np.unique(w[labels == 0])) == {np.float32(0.25)}
    assert set(np.unique(w[labels > 0])) == {np.float32(4.0)}
    assert np.all(unet_weight_map(labels, w0=0.0, class_weights=None) == 1.0)


def test_border_term_only_on_background_and_peaks_in_the_gap():
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 10:28] = 1
    labels[10:30, 30:50] = 2  # a two-pixel-wide gap at columns 28 and 29
    w = unet_weight_map(labels, class_weights=None)
    assert np.all(w[labels > 0] == 1.0)
    # in the gap d1 = 1, d2 = 2: the term is w0 * exp(-9 / 50)
    np.testing.assert_allclose(w[20, 28], 1 + 10 * np.exp(-9 / 50), rtol=1e-6)
    assert w[20, 28] > w[20, 5] > w[2, 2] >= 1.0


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        (np.zeros((8, 8), np.float32), TypeError),
        (np.zeros((8, 8), bool), TypeError),
        (np.zeros((2, 8, 8), np.int32), ValueError),
        (np.zeros((0, 8), np.int32), ValueError),
        (-np.ones((8, 8), np.int32), ValueError),
    ],
)
def test_bad_labels_raise(labels, error):
    with pytest.raises(error, match="labels"):
        unet_weight_map(labels)
    with pytest.raises(error, match="labels"):
        boundary_classes(labels)


def test_bad_parameters_raise():
    labels = hand_scene()
    for kwargs in (
        {"w0": -1.0},
        {"sigma": 0.0},
        {"sigma": float("nan")},
        {"class_weights": "inverse"},
        {"class_weights": (1.0, 2.0, 3.0)},
        {"class_weights": (-1.0, 1.0)},
    ):
        with pytest.raises(ValueError):
            unet_weight_map(labels, **kwargs)


def test_torch_labels_raise():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="numpy"):
        unet_weight_map(torch.zeros((8, 8), dtype=torch.int64))


def test_boundary_classes_hand_example():
    labels = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 2, 2, 0],
            [0, 1, 1, 1, 2, 2, 0],
            [0, 1, 1, 1, 2, 2, 0],
            [0, 0, 0, 0, 0, 0, 3],
        ]
    )
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0],
            [0, 2, 2, 2, 2, 2, 0],
            [0, 2, 1, 2, 2, 2, 0],
            [0, 2, 2, 2, 2, 2, 0],
            [0, 0, 0, 0, 0, 0, 2],
        ],
        np.uint8,
    )
    result = boundary_classes(labels)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


def test_boundary_classes_image_edge_is_not_a_boundary():
    labels = np.zeros((6, 6), np.int32)
    labels[:, :4] = 1  # a cell cut by the top, bottom and left edges
    expected = np.zeros((6, 6), np.uint8)
    expected[:, :3] = 1
    expected[:, 3] = 2
    np.testing.assert_array_equal(boundary_classes(labels), expected)


@pytest.mark.parametrize("name", ["hand", "disks_96", "dense_small", "sparse_ids"])
def test_boundary_classes_width_1_matches_skimage(name):
    labels = SCENES[name]
    expected = (labels > 0).astype(np.uint8)
    expected[find_boundaries(labels, mode="inner", connectivity=1) & (labels > 0)] = 2
    np.testing.assert_array_equal(boundary_classes(labels), expected)


def _naive_boundary(labels, width):
    """A cell pixel is boundary if some pixel within city-block distance `width` differs."""
    height, wid = labels.shape
    out = (labels > 0).astype(np.uint8)
    for r, c in zip(*np.nonzero(labels), strict=True):
        for dr in range(-width, width + 1):
            for dc in range(-(width - abs(dr)), width - abs(dr) + 1):
                rr, cc = r + dr, c + dc
                if 0 <= rr < height and 0 <= cc < wid and labels[rr, cc] != labels[r, c]:
                    out[r, c] = 2
    return out


@pytest.mark.parametrize("width", [2, 3])
def test_boundary_classes_wider_matches_naive(width):
    labels = SCENES["disks_96"][:48, :48]
    np.testing.assert_array_equal(
        boundary_classes(labels, boundary_width=width), _naive_boundary(labels, width)
    )


def test_boundary_classes_bad_width_raises():
    with pytest.raises(ValueError, match="boundary_width"):
        boundary_classes(hand_scene(), boundary_width=0)
    with pytest.raises(TypeError, match="boundary_width"):
        boundary_classes(hand_scene(), boundary_width=1.5)
