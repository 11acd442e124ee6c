"""Regression tests for the input faults found by the fault-injection review (one test per item).

Items: (1) a 3-D stack scored as one volume by the metrics; (2) boolean masks in PatchDataset;
(3) int64 ids wrapped to int32 by the augmentations and PatchDataset; (4) NaN maps taken
silently; (5) huge sparse ids in the targets and classical helpers; (6) the flows_to_masks trap
of unit flows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from course_utils import classical, metrics, plot, postprocess, targets
from course_utils.data import PatchDataset, augment, normalize_percentile, synthetic_nuclei
from course_utils.models import UNet
from course_utils.predict import predict_tiled

INT64_MAX = np.iinfo(np.int64).max


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((96, 112), seed=3)
    assert labels.max() >= 5
    return image, labels


def _stack(n=4, seed=0):
    """n label images with ids 1..k each, and a perfect prediction renumbered per image."""
    ys = [synthetic_nuclei((64, 64), n_nuclei=6, seed=seed + k)[1] for k in range(n)]
    # Image k's ids turned by k places: the same objects, numbered differently per image.
    preds = [np.where(y > 0, (y - 1 + k) % y.max() + 1, 0) for k, y in enumerate(ys)]
    return ys, preds


# Item 1: average_precision / matching_dataset never guess whether a 3-D array is a stack.
def test_item1_a_3d_stack_is_refused_unless_volume_is_said():
    ys, preds = _stack()
    np.testing.assert_array_equal(metrics.average_precision(ys, preds), 1.0)  # the data set
    stack_t, stack_p = np.stack(ys), np.stack(preds)
    with pytest.raises(ValueError, match=r"list\(stack\)"):
        metrics.average_precision(stack_t, stack_p, [0.5])
    with pytest.raises(ValueError, match=r"list\(stack\)"):
        metrics.matching_dataset(stack_t, stack_p, 0.5)
    with pytest.raises(ValueError, match=r"ys_true\[0\] is a 3-D array.*volume=True"):
        metrics.matching_dataset([stack_t], [stack_p], 0.5)
    with pytest.raises(ValueError, match="both be lists"):
        metrics.average_precision(ys, stack_p)
    # Said explicitly, a 3-D array is one volume, scored as matching scores it.
    volume_ap = metrics.average_precision(stack_t, stack_p, [0.5], volume=True)
    assert volume_ap[0] == metrics.matching(stack_t, stack_p, 0.5).accuracy < 1.0
    ds = metrics.matching_dataset([stack_t], [stack_p], 0.5, volume=True)
    assert ds.accuracy == volume_ap[0]
    assert metrics.average_precision(list(stack_t), list(stack_p), [0.5])[0] == 1.0


# Item 2: PatchDataset refuses boolean masks (every nucleus would become one instance).
def test_item2_patch_dataset_refuses_boolean_masks(nuclei):
    image, labels = nuclei
    with pytest.raises(TypeError, match=r"labels\[0\] is a boolean mask.*skimage\.measure\.label"):
        PatchDataset([image], [labels > 0], 32)


def _augmentations_return_int64_when_ids_do_not_fit_int32():
    image = np.random.default_rng(0).random((6, 8), dtype=np.float32)
    labels = np.zeros((6, 8), np.int64)
    labels[1:3, 1:4], labels[3:5, 4:7] = 2**32, 2**31
    rng = np.random.default_rng(1)
    _, out = augment.flip_rot90(image, labels, rng)
    assert out.dtype == np.int64 and sorted(np.unique(out)) == [0, 2**31, 2**32]
    _, small = augment.flip_rot90(image, (labels > 0).astype(np.int64), rng)
    assert small.dtype == np.int32  # int32 whenever every id fits
    shifted = np.indices((6, 8), dtype=np.float64) + np.array([0.0, 3.0])[:, None, None]
    _, constant = augment.remap(image, labels, shifted, mode="constant")
    assert constant.dtype == np.int64 and set(np.unique(constant)) <= {0, 2**31, 2**32}
    assert (constant == 2**32).any()  # the object at columns 1..3 moved, not vanished
    # Reflect: the mirrored copies get ids id + k * max_id, computed in int64.
    _, mirrored = augment.remap(image, labels, shifted * 2.5, mode="reflect")
    assert mirrored.dtype == np.int64 and mirrored.max() > 2**32
    original = np.where(mirrored > 0, (mirrored - 1) % 2**32 + 1, 0)
    assert set(np.unique(original)) <= {0, 2**31, 2**32}


def _mirrored_ids_beyond_int64_are_refused_without_advising_a_wrapping_mode():
    image = np.zeros((6, 8), np.float32)
    labels = np.zeros((6, 8), np.int64)
    labels[1:4, 1:4] = 2**62
    coords = np.indices((6, 8), dtype=np.float64) * 3.0  # reaches several mirrored copies
    with pytest.raises(ValueError, match=r"2\*\*63 - 1") as err:
        augment.remap(image, labels, coords, mode="reflect")
    assert "mode='constant'" not in str(err.value) and "relabel" in str(err.value)
    with pytest.raises(ValueError, match="int64 cannot hold"):
        augment.flip_rot90(image, labels.astype(np.uint64) * 3, np.random.default_rng(0))


def _patch_dataset_relabels_ids_beyond_int32(image, labels):
    huge = np.where(labels > 0, labels.astype(np.int64) * 2**40, 0)
    kwargs = {"length": 4, "augment": augment.random_rotation(30), "seed": 2}
    ds_huge = PatchDataset([image], [huge], 80, **kwargs)
    ds_small = PatchDataset([image], [labels], 80, **kwargs)
    for k in range(4):
        (x_h, y_h), (x_s, y_s) = ds_huge[k], ds_small[k]
        assert torch.equal(x_h, x_s) and torch.equal(y_h, y_s)  # same crops, ids 1..n
    assert int(ds_huge.labels[0].max()) == int(labels.max())


# Item 3: augmentations and PatchDataset never wrap int64 ids.
def test_item3_int64_ids_are_never_wrapped(nuclei):
    _augmentations_return_int64_when_ids_do_not_fit_int32()
    _mirrored_ids_beyond_int64_are_refused_without_advising_a_wrapping_mode()
    _patch_dataset_relabels_ids_beyond_int32(*nuclei)


def _nms_nan_dist():
    dist = np.full((24, 24, 8), 3.0, np.float32)
    dist[0, 0, 0] = np.nan  # not a candidate pixel: still refused
    return postprocess.non_maximum_suppression(dist, np.full((24, 24), 0.9, np.float32))


def _with_nan(shape, at=(0,) * 8):
    arr = np.zeros(shape, np.float32)
    arr[at[: len(shape)]] = np.nan
    return arr


_NAN_CASES = {
    "normalize_percentile": lambda: normalize_percentile(_with_nan((16, 16))),
    "flows_to_masks cellprob": lambda: postprocess.flows_to_masks(
        np.zeros((2, 16, 16), np.float32), _with_nan((16, 16))
    ),
    "flows_to_masks flows": lambda: postprocess.flows_to_masks(
        _with_nan((2, 16, 16)), np.zeros((16, 16), np.float32)
    ),
    "follow_flows": lambda: postprocess.follow_flows(
        _with_nan((2, 8, 8)), np.ones((8, 8), bool), device="cpu"
    ),
    "nms prob": lambda: postprocess.non_maximum_suppression(
        np.full((24, 24, 8), 3.0, np.float32), _with_nan((24, 24))
    ),
    "nms prob (torch)": lambda: postprocess.non_maximum_suppression(
        torch.full((24, 24, 8), 3.0), torch.from_numpy(_with_nan((24, 24)))
    ),
    "nms dist": _nms_nan_dist,
    "polygons_to_label prob": lambda: postprocess.polygons_to_label(
        np.full((2, 8), 3.0), np.array([[5, 5], [9, 9]]), (16, 16), prob=np.array([0.6, np.nan])
    ),
    "polygons_to_label dist": lambda: postprocess.polygons_to_label(
        _with_nan((2, 8)), np.array([[5, 5], [9, 9]]), (16, 16)
    ),
    "flow_to_rgb": lambda: plot.flow_to_rgb(_with_nan((2, 8, 8))),
    "remap coords": lambda: augment.remap(
        np.zeros((8, 8)), np.zeros((8, 8), np.int32), _with_nan((2, 8, 8))
    ),
    "segment_classical": lambda: classical.segment_classical(_with_nan((16, 16))),
    "predict_tiled": lambda: predict_tiled(
        UNet(1, 2, depth=1, base_channels=2), _with_nan((16, 16)), tile_size=16, overlap=0
    ),
}


# Item 4: one NaN rule, the shared message with the count and the first index.
@pytest.mark.parametrize("case", sorted(_NAN_CASES))
def test_item4_nan_maps_are_refused_with_the_shared_message(case):
    with pytest.raises(ValueError, match=r"has 1 NaN or infinite value\(s\) of \d+; the first"):
        _NAN_CASES[case]()


def _relabelled(labels, big, dtype):
    """The same objects with ids big, big + 1, ... (adjacent ids: float64 cannot tell them apart
    above 2**53)."""
    table = np.zeros(int(labels.max()) + 1, dtype)
    table[1:] = np.array([big + k for k in range(int(labels.max()))], dtype=object).astype(dtype)
    return table[labels], table


_LABEL_FUNCTIONS = {
    "boundary_classes": targets.boundary_classes,
    "edt_prob": targets.edt_prob,
    "unet_weight_map": targets.unet_weight_map,
    "star_dist": lambda y: targets.star_dist(y, 8),
    "masks_to_flows": lambda y: targets.masks_to_flows(y, device="cpu"),
    "matching": lambda y: metrics.matching(y, np.roll(y, 2, axis=1), [0.3, 0.5]),
    "merge_split_counts": lambda y: classical.merge_split_counts(y, np.roll(y, 2, axis=1)),
}


# Item 5: huge sparse ids give exactly the results of the same labels relabelled 1..n.
HUGE_IDS = [(2**40, np.int64), (2**62, np.int64), (2**62, np.uint64), (2**63 + 1, np.uint64)]


@pytest.mark.parametrize(("big", "dtype"), HUGE_IDS)
def test_item5_huge_sparse_ids_give_the_results_of_ids_1_to_n(nuclei, big, dtype):
    _, labels = nuclei
    huge, table = _relabelled(labels, big, dtype)
    for name, fn in _LABEL_FUNCTIONS.items():
        ours, expected = fn(huge), fn(labels)
        if name == "matching":
            ours, expected = [m.as_dict() for m in ours], [m.as_dict() for m in expected]
            assert ours == expected, name
        else:
            np.testing.assert_array_equal(ours, expected, err_msg=name)
    gapped = targets.with_gaps(huge)  # returns ids: the caller's, in the caller's dtype
    assert gapped.dtype == huge.dtype
    np.testing.assert_array_equal(gapped, table[targets.with_gaps(labels)])
    one = np.zeros((40, 40), np.int32)
    one[10:30, 5:25] = 2**31 - 1  # find_objects would allocate 2**31 entries
    np.testing.assert_array_equal(targets.edt_prob(one), targets.edt_prob((one > 0).astype(int)))


# Item 6: unit flows (or a too strict flow_threshold) make the flow check drop every mask.
def test_item6_flows_to_masks_warns_when_the_flow_check_drops_nearly_all(nuclei):
    _, labels = nuclei
    unit = targets.masks_to_flows(labels, device="cpu")
    logit = np.where(labels > 0, 5.0, -5.0).astype(np.float32)
    with pytest.warns(UserWarning, match=r"FLOW_SCALE.*masks_to_flows.*flow_threshold=None"):
        empty = postprocess.flows_to_masks(unit, logit, device="cpu")
    assert empty.max() == 0
    scaled = targets.FLOW_SCALE * unit
    noisy = scaled + np.random.default_rng(0).normal(0, 0.2, scaled.shape).astype(np.float32)
    with pytest.warns(UserWarning, match="too strict"):
        postprocess.flows_to_masks(noisy, logit, flow_threshold=1e-6, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masks = postprocess.flows_to_masks(scaled, logit, device="cpu")
        unchecked = postprocess.flows_to_masks(unit, logit, flow_threshold=None, device="cpu")
    assert metrics.matching(labels, masks, 0.5).f1 == 1.0
    assert unchecked.max() > 0
