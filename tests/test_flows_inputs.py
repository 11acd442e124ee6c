"""Bad input to the Cellpose flows gets a clear error (never a silent wrong answer)."""

from __future__ import annotations

import numpy as np
import pytest

from course_utils.postprocess import flows_to_masks, follow_flows
from course_utils.targets import masks_to_flows


@pytest.mark.parametrize(
    "labels, error",
    [
        (np.zeros((5, 5), np.float32), TypeError),
        (np.zeros((5, 5), bool), TypeError),
        (np.full((5, 5), -1), ValueError),
        (np.zeros((2, 5, 5), np.int32), ValueError),
        (np.zeros((0, 5), np.int32), ValueError),
    ],
)
def test_masks_to_flows_rejects_bad_labels(labels, error):
    with pytest.raises(error, match="labels"):
        masks_to_flows(labels, device="cpu")


@pytest.mark.parametrize(
    "flows, cellprob, match",
    [
        (np.zeros((3, 8, 8)), np.zeros((8, 8)), "flows"),
        (np.zeros((8, 8)), np.zeros((8, 8)), "flows"),
        (np.zeros((2, 8, 8)), np.zeros((8, 9)), "cellprob"),
        (np.full((2, 8, 8), np.nan), np.zeros((8, 8)), "NaN"),
    ],
)
def test_flows_to_masks_rejects_bad_inputs(flows, cellprob, match):
    with pytest.raises(ValueError, match=match):
        flows_to_masks(flows, cellprob, device="cpu")


def test_flows_to_masks_rejects_bad_settings():
    flows, prob = np.zeros((2, 8, 8), np.float32), np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="flow_threshold"):
        flows_to_masks(flows, prob, flow_threshold=-1, device="cpu")
    with pytest.raises(ValueError, match="min_size"):
        flows_to_masks(flows, prob, min_size=-1, device="cpu")
    with pytest.raises(TypeError, match="cellprob"):
        flows_to_masks(flows, prob.astype(bool), device="cpu")


def test_follow_flows_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="mask"):
        follow_flows(np.zeros((2, 8, 8), np.float32), np.ones((8, 7), bool), device="cpu")
    with pytest.raises(TypeError, match="threshold it first"):  # a probability map
        follow_flows(np.zeros((2, 8, 8), np.float32), np.full((8, 8), 0.2), device="cpu")
