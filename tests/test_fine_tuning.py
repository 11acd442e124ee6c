"""fine_tuning.recalibrate_batchnorm: the batch-norm-only control of notebook 08."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import fine_tuning, methods
from course_utils.data import synthetic_nuclei


def _net(diameter: float = 14.0) -> nn.Module:
    model = methods.get("cellpose").build(base_channels=4, depth=2, seed=0).eval()
    model.meta = {"method": "cellpose", "train_diameter_px": diameter}
    return model


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.fixture(scope="module")
def pair():
    image, labels = synthetic_nuclei((96, 80), seed=5)
    return image, labels


def test_only_the_statistics_change_and_the_original_is_untouched(pair):
    image, labels = pair
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = fine_tuning.recalibrate_batchnorm(
        "cellpose", [image * 3 + 1], [labels], model=net, tile=64
    )
    assert out is not net and not out.training and out.meta == net.meta
    for k, v in net.state_dict().items():  # the original is not modified
        assert torch.equal(v, before[k]), k
    changed = [k for k, v in out.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("running" in k or "num_batches" in k for k in changed), changed
    assert all(m.momentum is None and not m.training for m in _norms(out))


def test_the_statistics_are_those_of_the_new_images(pair):
    """The Cellpose-style network normalises its input first: the first batch norm's new
    running mean and variance are those of the image (one tile covers it here)."""
    image, labels = pair
    net = _net()
    net.meta.pop("train_diameter_px")
    bright = (image * 5 + 2).astype(np.float32)
    out = fine_tuning.recalibrate_batchnorm(
        "cellpose", [bright], [labels], model=net, rescale=False, tile=128
    )
    first = _norms(out)[0]
    assert first.num_features == 1
    torch.testing.assert_close(first.running_mean, torch.tensor([bright.mean()]))
    torch.testing.assert_close(
        first.running_var, torch.tensor([bright.var(ddof=1)]), rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(first.running_mean, _norms(net)[0].running_mean)


def test_bad_input_is_refused(pair):
    image, labels = pair
    plain = _net()
    for parent in list(plain.modules()):  # the same network with every batch norm removed
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())
    with pytest.raises(ValueError, match="batch-norm"):
        fine_tuning.recalibrate_batchnorm("cellpose", [image], [labels], model=plain)
    with pytest.raises(ValueError, match="shape"):
        fine_tuning.recalibrate_batchnorm("cellpose", [image], [labels[:10]], model=_net())
    with pytest.raises(ValueError):
        fine_tuning.recalibrate_batchnorm(
            "cellpose", [np.full_like(image, np.nan)], [labels], model=_net()
        )
