"""course_utils._shared.validate: the shared input checks, and that every module uses them alike."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_utils._shared import validate as v
from course_utils.classical import merge_split_counts
from course_utils.data.augment import flip_rot90
from course_utils.data.patches import PatchDataset
from course_utils.metrics import matching
from course_utils.plot import overlay
from course_utils.targets import boundary_classes, masks_to_flows, unet_weight_map


def test_to_numpy_tensors_and_half_precision():
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_(True)
    out = v.to_numpy(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3))
    for dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
        half = v.to_numpy(x.detach().to(dtype))
        assert half.dtype == np.float32
        np.testing.assert_array_equal(half, out)
    assert v.to_numpy(torch.tensor([1, 2], dtype=torch.int16)).dtype == np.int16
    assert v.to_numpy([[1, 2]]).shape == (1, 2)
    assert v.is_tensor(x) and not v.is_tensor(out) and not v.is_tensor([1])


def test_check_labels_accepts_and_returns_without_copy():
    labels = np.array([[0, 3], [7, 7]], np.uint16)
    assert v.check_labels(labels) is labels
    np.testing.assert_array_equal(v.check_labels(torch.from_numpy(labels.astype(np.int32))), labels)
    assert v.check_labels(np.zeros((2, 2, 2), np.int64), ndim=(2, 3)).shape == (2, 2, 2)
    assert v.check_labels(np.zeros((2, 2), bool), allow_bool=True).dtype == bool
    assert v.check_labels(np.zeros((0, 3), np.int32), allow_empty=True).size == 0


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (np.zeros((4, 4), np.float32), {}, TypeError, "masks must hold integer labels"),
        (np.zeros((4, 4), np.float32), {"allow_bool": True}, TypeError, "threshold"),
        (np.zeros((4, 4), complex), {}, TypeError, "integer"),
        (np.zeros((4, 4), bool), {}, TypeError, "masks is a boolean mask"),
        (np.zeros((2, 4, 4), np.int32), {}, ValueError, r"masks must be a 2D \(H, W\)"),
        (np.zeros(4, np.int32), {"ndim": (2, 3)}, ValueError, "2D or 3D"),
        (np.zeros((0, 4), np.int32), {}, ValueError, "masks is empty"),
        (np.array([[0, -2]]), {}, ValueError, r"negative ids \(min -2\)"),
    ],
)
def test_check_labels_errors(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        v.check_labels(labels, "masks", **kwargs)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((4, 4), complex), TypeError, "real numbers"),
        (np.zeros((1, 2, 4, 4)), ValueError, r"\(H, W\) or \(C, H, W\), got shape \(1, 2, 4, 4\)!"),
        (np.zeros((2, 0, 4)), ValueError, "empty"),
    ],
)
def test_check_image_errors(image, error, match):
    with pytest.raises(error, match=match):
        v.check_image(image, hint="!")


def test_check_image_accepts_bool_int_float_and_tensors():
    for dtype in (bool, np.uint16, np.float64):
        assert v.check_image(np.zeros((3, 4), dtype)).dtype == dtype
    assert v.check_image(torch.zeros(2, 3, 4, dtype=torch.bfloat16)).dtype == np.float32


# Every public function that takes instance labels refuses the same bad labels the same way.
_LABEL_USERS = {
    "matching": lambda y: matching(y, np.zeros((6, 6), np.int32)),
    "merge_split_counts": lambda y: merge_split_counts(y, np.zeros((6, 6), np.int32)),
    "overlay": lambda y: overlay(np.zeros((6, 6)), y),
    "unet_weight_map": unet_weight_map,
    "boundary_classes": boundary_classes,
    "masks_to_flows": lambda y: masks_to_flows(y, device="cpu"),
    "flip_rot90": lambda y: flip_rot90(np.zeros((6, 6)), y, np.random.default_rng(0)),
    "PatchDataset": lambda y: PatchDataset([np.zeros((6, 6))], [y], 4),
}


@pytest.mark.parametrize("name", sorted(_LABEL_USERS))
@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.zeros((6, 6), np.float32), TypeError, "integer labels"),
        (np.full((6, 6), -1, np.int32), ValueError, "negative ids"),
        (np.zeros((6, 6, 1), np.int32), ValueError, "2D"),
    ],
)
def test_modules_reject_bad_labels_alike(name, labels, error, match):
    if name == "matching" and labels.ndim == 3:
        labels = np.zeros(6, np.int32)  # matching also takes volumes
    with pytest.raises(error, match=match):
        _LABEL_USERS[name](labels)


def test_bool_masks_where_labels_are_needed():
    mask = np.ones((6, 6), bool)
    for name in ("matching", "merge_split_counts", "unet_weight_map", "masks_to_flows"):
        with pytest.raises(TypeError, match="boolean mask"):
            _LABEL_USERS[name](mask)
    # A mask is one object where that makes sense: drawing it.
    ax = overlay(np.zeros((6, 6)), mask, contours=False)
    assert (np.asarray(ax.get_images()[1].get_array())[..., 3] > 0).all()  # coloured all over
    plt.close(ax.figure)
    # Not in PatchDataset: every nucleus would become one instance before target_fn runs.
    with pytest.raises(TypeError, match=r"boolean mask.*skimage\.measure\.label"):
        PatchDataset([np.zeros((6, 6))], [mask], 4)


def test_check_int_accepts_numpy_integers_and_refuses_bools_and_floats():
    assert v.check_int(np.int64(3), "n") == 3 and type(v.check_int(np.uint8(3), "n")) is int
    for bad in (True, 3.0, "3", None, np.float32(2)):
        with pytest.raises(TypeError, match="n must be an int"):
            v.check_int(bad, "n")
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        v.check_int(0, "n", minimum=1)
    with pytest.raises(ValueError, match="n must be <= 2"):
        v.check_int(3, "n", maximum=2)


def test_check_real_and_check_finite():
    assert v.check_real(np.float32(0.5), "t") == 0.5 and v.check_real(2, "t") == 2.0
    for bad, error in ((True, TypeError), (float("nan"), ValueError), (float("inf"), ValueError)):
        with pytest.raises(error, match="t must be"):
            v.check_real(bad, "t")
    arr = np.zeros((3, 4), np.float32)
    assert v.check_finite(arr, "x") is arr
    arr[1, 2], arr[2, 0] = np.nan, np.inf
    with pytest.raises(
        ValueError,
        match=r"x has 2 NaN or infinite value\(s\) of 12; the first is "
        r"nan at index \(1, 2\)",
    ):
        v.check_finite(arr, "x")


def test_every_count_argument_takes_numpy_integers_alike():
    """The same integer rule everywhere: np.int64 works where int works."""
    from course_utils.data import load_split
    from course_utils.train import fit

    images, labels = load_split("synthetic", "train", n=np.int64(2))
    assert len(images) == 2
    net = torch.nn.Conv2d(1, 1, 1)
    loader = [(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))]
    history = fit(
        net,
        loader,
        loss_fn=torch.nn.functional.mse_loss,
        epochs=np.int64(2),
        seed=np.int64(1),
        progress=False,
    )
    assert len(history) == 2
    assert len(PatchDataset(images, labels, np.int64(32), length=np.int64(3))) == 3
    with pytest.raises(TypeError, match="epochs must be an int"):
        fit(net, loader, loss_fn=torch.nn.functional.mse_loss, epochs=2.0, progress=False)
