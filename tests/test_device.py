"""COURSE_DEVICE is honoured by every function that picks a device.

The machine is made to look as if it had a GPU (``torch.cuda.is_available`` patched to say
True). With ``COURSE_DEVICE=cpu`` nothing may try CUDA; without it, the same calls do try it
and fail here (no GPU is really there), which shows the test can catch a function that ignores
the variable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils import env
from course_utils.data import synthetic_nuclei
from course_utils.postprocess import flows_to_masks, follow_flows
from course_utils.targets import FLOW_SCALE, masks_to_flows
from course_utils.train import fit

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(scope="module")
def labels():
    return synthetic_nuclei((48, 48), seed=1)[1]


def _calls(labels):
    flows = masks_to_flows(labels, device="cpu")
    net = torch.nn.Conv2d(1, 1, 1)
    loader = [(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))]
    return {
        "get_device": lambda: env.get_device(),
        "masks_to_flows": lambda: masks_to_flows(labels),
        "follow_flows": lambda: follow_flows(flows, labels > 0, niter=5),
        "flows_to_masks": lambda: flows_to_masks(FLOW_SCALE * flows, np.where(labels > 0, 5, -5)),
        # SGD: torch's Adam itself asks torch.cuda.is_available(), which is patched here.
        "fit": lambda: fit(
            net,
            loader,
            loss_fn=torch.nn.functional.mse_loss,
            epochs=1,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
            progress=False,
        ),
    }


@pytest.fixture
def looks_like_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize(
    "name", ["get_device", "masks_to_flows", "follow_flows", "flows_to_masks", "fit"]
)
def test_course_device_cpu_is_honoured(name, labels, looks_like_a_gpu, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    result = _calls(labels)[name]()
    if name == "get_device":
        assert result == torch.device("cpu")


@pytest.mark.parametrize("name", ["masks_to_flows", "follow_flows", "flows_to_masks", "fit"])
def test_without_the_variable_the_same_calls_pick_cuda(name, labels, looks_like_a_gpu, monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert env.get_device() == torch.device("cuda")
    with pytest.raises((RuntimeError, AssertionError)):  # no real GPU behind the patch
        _calls(labels)[name]()
