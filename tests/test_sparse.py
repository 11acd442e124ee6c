"""course_utils.sparse: sparsify and the sparse targets, against slow references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import course_utils.sparse as sp
from course_utils._shared.validate import check_labels
from course_utils.data import synthetic_nuclei
from course_utils.targets import (
    cellpose_targets,
    masks_to_flows,
    stardist_targets,
    unet_3class_targets,
)


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((96, 128), n_nuclei=30, seed=5)
    assert labels.max() > 10
    return image, labels


# --- sparsify ---------------------------------------------------------------------------------


def _kept_whole(sparse: np.ndarray, labels: np.ndarray) -> set[int]:
    """The ids of ``sparse``, after checking each is an id of ``labels`` with all its pixels."""
    kept = set(np.unique(sparse[sparse > 0]).tolist())
    assert kept <= set(np.unique(labels[labels > 0]).tolist()), "an id was made up"
    for i in kept:
        np.testing.assert_array_equal(sparse == i, labels == i)  # whole, and unchanged
    return kept


CASES = list(
    itertools.product(
        [
            {"fraction": 0.0},
            {"fraction": 0.05},
            {"fraction": 0.5},
            {"fraction": 1.0},
            {"k": 0},
            {"k": 1},
            {"k": 4},
            {"k": 1000},
        ],
        sp.SELECTIONS,
        sp.BACKGROUNDS,
    )
)


@pytest.mark.parametrize(("amount", "select", "background"), CASES)
def test_sparsify_never_invents_ids_and_follows_the_convention(nuclei, amount, select, background):
    image, labels = nuclei
    out = sp.sparsify(labels, **amount, select=select, background=background, image=image, seed=3)
    assert out.dtype == np.int32 and out.shape == labels.shape
    assert set(np.unique(out).tolist()) <= {-1, 0, *np.unique(labels).tolist()}
    kept = _kept_whole(out, labels)
    n = int(labels.max())
    expected = (
        min(amount["k"], n)
        if "k" in amount
        else (0 if amount["fraction"] == 0 else max(1, int(np.floor(amount["fraction"] * n + 0.5))))
    )
    assert len(kept) == expected
    zeros = out == 0
    assert not (zeros & (labels > 0)).any(), "pixels of objects marked as background"
    if background == "all":
        np.testing.assert_array_equal(zeros, labels == 0)
    elif background == "none" or not kept:
        assert not zeros.any()
    np.testing.assert_array_equal(
        out,
        sp.sparsify(labels, **amount, select=select, background=background, image=image, seed=3),
    )


def test_sparsify_is_deterministic_by_seed(nuclei):
    _, labels = nuclei
    draws = {tuple(np.unique(sp.sparsify(labels, k=3, seed=s)).tolist()) for s in range(6)}
    assert len(draws) > 1, "different seeds should draw different objects"
    for s in range(3):
        np.testing.assert_array_equal(
            sp.sparsify(labels, k=3, seed=s), sp.sparsify(torch.from_numpy(labels), k=3, seed=s)
        )


def test_the_band_is_the_background_within_band_pixels_of_a_kept_object():
    labels = np.zeros((20, 24), np.int32)
    labels[3:7, 4:9], labels[12:17, 14:20], labels[6:9, 9:11] = 1, 2, 3
    out = sp.sparsify(labels, k=2, background="band", band=2.5, seed=1)
    kept = _kept_whole(out, labels)
    pixels = np.argwhere(np.isin(labels, list(kept)))
    for r, c in itertools.product(range(20), range(24)):  # a slow reference, pixel by pixel
        near = np.min(np.hypot(*(pixels - [r, c]).T)) <= 2.5
        if labels[r, c] in kept:
            assert out[r, c] == labels[r, c]
        else:
            assert out[r, c] == (0 if near and labels[r, c] == 0 else -1), (r, c)


def test_intensity_selections_against_a_sorted_list(nuclei):
    image, labels = nuclei
    means = [(float(image[labels == i].mean()), i) for i in range(1, labels.max() + 1)]
    by_intensity = [i for _, i in sorted(means)]
    for k in (1, 4, 7):
        dim = _kept_whole(sp.sparsify(labels, k=k, select="dim", image=image), labels)
        bright = _kept_whole(sp.sparsify(labels, k=k, select="bright", image=image), labels)
        both = _kept_whole(sp.sparsify(labels, k=k, select="dimbright", image=image), labels)
        assert dim == set(by_intensity[:k]) and bright == set(by_intensity[-k:])
        assert both == set(by_intensity[: k - k // 2]) | set(by_intensity[len(means) - k // 2 :])
    three_channels = np.stack([image, image, image])
    np.testing.assert_array_equal(
        sp.sparsify(labels, k=3, select="dim", image=image),
        sp.sparsify(labels, k=3, select="dim", image=three_channels),
    )


def test_dimbright_with_equal_intensities_keeps_k_distinct_objects():
    labels = np.repeat(np.arange(1, 5, dtype=np.int32), 3)[None].repeat(2, axis=0)
    out = sp.sparsify(labels, k=4, select="dimbright", image=np.ones(labels.shape))
    assert _kept_whole(out, labels) == {1, 2, 3, 4}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fraction": 0.1, "k": 2}, ValueError, "exactly one"),
        ({}, ValueError, "exactly one"),
        ({"fraction": 1.5}, ValueError, "fraction"),
        ({"k": -1}, ValueError, "k must be"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"k": 1, "select": "median"}, ValueError, "select"),
        ({"k": 1, "background": "some"}, ValueError, "background"),
        ({"k": 1, "select": "dim"}, ValueError, "image="),
        ({"k": 1, "select": "dim", "image": np.ones((3, 3))}, ValueError, "image has shape"),
        ({"k": 1, "band": -1}, ValueError, "band"),
        ({"k": 1, "seed": -1}, ValueError, "seed"),
    ],
)
def test_sparsify_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        sp.sparsify(np.ones((4, 4), np.int32), **kwargs)


def test_sparsify_refuses_labels_it_cannot_keep():
    with pytest.raises(ValueError, match="negative"):
        sp.sparsify(np.full((4, 4), -1, np.int32), k=1)  # sparse labels are not dense labels
    with pytest.raises(TypeError, match="boolean"):
        sp.sparsify(np.ones((4, 4), bool), k=1)
    with pytest.raises(TypeError, match="integer"):
        sp.sparsify(np.ones((4, 4)), k=1)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        sp.sparsify(np.full((4, 4), 2**40, np.int64), k=1)


def test_check_labels_accepts_unknown_only_when_asked():
    sparse = np.array([[-1, 0, 3]])
    with pytest.raises(ValueError, match="negative ids"):
        check_labels(sparse)
    assert check_labels(sparse, allow_unknown=True) is sparse
    with pytest.raises(ValueError, match="below -1"):
        check_labels(np.array([[-2, 0]]), "y", allow_unknown=True)


# --- targets ----------------------------------------------------------------------------------


def _reference_flow_trust(sparse: np.ndarray) -> np.ndarray:
    """Pixel by pixel: annotated, and an object pixel has no unknown 4-neighbour."""
    h, w = sparse.shape
    out = np.zeros(sparse.shape, np.float32)
    for r, c in itertools.product(range(h), range(w)):
        if sparse[r, c] < 0:
            continue
        neighbours = [(r + dr, c + dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
        inside = [(a, b) for a, b in neighbours if 0 <= a < h and 0 <= b < w]
        out[r, c] = sparse[r, c] == 0 or all(sparse[a, b] >= 0 for a, b in inside)
    return out


@pytest.mark.parametrize("background", sp.BACKGROUNDS)
def test_cellpose_trust_mask_against_a_pixel_loop(nuclei, background):
    _, labels = nuclei
    sparse = sp.sparsify(labels[:48, :64], fraction=0.4, background=background, band=3)
    flows, prob, flow_mask, prob_mask = sp.cellpose_sparse_targets(sparse)
    np.testing.assert_array_equal(flow_mask, _reference_flow_trust(sparse))
    np.testing.assert_array_equal(prob_mask, (sparse >= 0).astype(np.float32))
    np.testing.assert_array_equal(prob, (sparse > 0).astype(np.float32))
    assert {a.dtype for a in (flows, prob, flow_mask, prob_mask)} == {np.dtype(np.float32)}


def test_trusted_flows_are_the_dense_flows_and_contact_flows_are_not(nuclei):
    _, labels = nuclei
    extent = [sum(s.stop - s.start for s in sl) for sl in ndi.find_objects(labels)]
    # Keep the largest object among others: the default diffusion steps are then the dense ones.
    largest = int(np.argmax(extent)) + 1
    sparse = np.where(np.isin(labels, [largest, 3, 5, 8, 13, 21]), labels, -1)
    sparse[labels == 0] = 0  # background annotated everywhere
    flows, _, flow_mask, _ = sp.cellpose_sparse_targets(sparse)
    dense_flows, _ = cellpose_targets(labels)
    trusted, objects = flow_mask > 0, sparse > 0
    np.testing.assert_array_equal(flows[:, trusted], dense_flows[:, trusted])
    contact = objects & ~trusted
    assert contact.any() and np.abs(flows - dense_flows)[:, contact].max() > 1.0
    same_steps = 5.0 * masks_to_flows(np.maximum(sparse, 0), niter=2 * (max(extent) + 2))
    np.testing.assert_allclose(flows[:, trusted], same_steps[:, trusted], atol=1e-5)


@pytest.mark.parametrize("grid", [1, 2])
def test_stardist_targets_on_annotated_pixels_equal_the_dense_ones(nuclei, grid):
    _, labels = nuclei
    dense_prob, dense_dist = stardist_targets(labels, 16, grid)
    for background in sp.BACKGROUNDS:
        sparse = sp.sparsify(labels, fraction=0.3, background=background, seed=2)
        prob, dist, mask = sp.stardist_sparse_targets(sparse, 16, grid)
        known = mask[0] > 0
        np.testing.assert_array_equal(known, (sparse >= 0)[::grid, ::grid])
        np.testing.assert_array_equal(prob[0][known], dense_prob[0][known])
        np.testing.assert_array_equal(dist[:, known], dense_dist[:, known])
        assert mask.shape == prob.shape and dist.shape == dense_dist.shape


def test_unet_3class_classes_on_annotated_pixels_equal_the_dense_ones(nuclei):
    _, labels = nuclei
    dense = unet_3class_targets(labels)
    sparse = sp.sparsify(labels, fraction=0.3, background="band", seed=4)
    classes, mask = sp.unet_3class_sparse_targets(sparse)
    known = mask > 0
    np.testing.assert_array_equal(known, sparse >= 0)
    np.testing.assert_array_equal(classes[known], dense[known])


def test_full_annotations_give_the_records_targets_and_masks_of_ones(nuclei):
    _, labels = nuclei
    for got, dense in [
        (sp.cellpose_sparse_targets(labels), cellpose_targets(labels)),
        (sp.stardist_sparse_targets(labels, 32, 2), stardist_targets(labels, 32, 2)),
        (sp.unet_3class_sparse_targets(labels), (unet_3class_targets(labels),)),
    ]:
        for a, b in zip(got, dense):
            np.testing.assert_array_equal(a, b)
        assert all(np.all(m == 1) for m in got[len(dense) :])


def test_whole_objects_false_distrusts_objects_that_touch_the_unknown(nuclei):
    _, labels = nuclei
    sparse = sp.sparsify(labels, fraction=0.5, background="band", band=2, seed=0)
    cut = np.isin(labels, np.unique(labels[sp.next_to_unknown(sparse) & (sparse > 0)]))
    cut &= sparse > 0
    assert cut.any() and (sparse > 0)[~cut].any()
    _, _, flow_mask, prob_mask = sp.cellpose_sparse_targets(sparse, whole_objects=False)
    _, _, mask = sp.stardist_sparse_targets(sparse, 8, 1, whole_objects=False)
    _, class_mask = sp.unet_3class_sparse_targets(sparse, whole_objects=False)
    assert not flow_mask[cut].any() and prob_mask[cut].all()  # still foreground for sure
    assert not mask[0][cut].any() and not class_mask[cut].any()
    assert mask[0][(sparse > 0) & ~cut].all()


def test_next_to_unknown_by_hand():
    sparse = np.array([[-1, 0, 0], [0, 2, 2], [2, 2, -1]])
    expected = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)
    np.testing.assert_array_equal(sp.next_to_unknown(sparse), expected)


def test_sparse_targets_refuse_ids_below_unknown():
    bad = np.array([[-2, 0], [1, 1]])
    for fn in (
        sp.cellpose_sparse_targets,
        sp.stardist_sparse_targets,
        sp.unet_3class_sparse_targets,
    ):
        with pytest.raises(ValueError, match="below -1"):
            fn(bad)


def test_sparse_targets_keep_large_ids_apart():
    sparse = np.full((24, 24), -1, np.int64)
    sparse[2:8, 2:8], sparse[2:8, 8:14], sparse[14:20, 4:10] = 2**40, 2**40 + 2**32, 0
    small = np.select([sparse == 2**40, sparse == 2**40 + 2**32], [1, 2], np.minimum(sparse, 0))
    for fn in (sp.cellpose_sparse_targets, sp.stardist_sparse_targets):
        for a, b in zip(fn(sparse), fn(small)):
            np.testing.assert_array_equal(a, b)
