"""course_utils.losses: each method's loss against its formula, written out with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils import losses


def _gen():
    return torch.Generator().manual_seed(0)


def test_stardist_loss_matches_its_formula_for_any_weight():
    gen = _gen()
    logit = torch.randn(2, 1, 6, 6, generator=gen)
    pred, dist = 10 * torch.rand(2, 2, 8, 6, 6, generator=gen)
    prob = torch.rand(2, 1, 6, 6, generator=gen)
    y, p = prob.double().numpy(), torch.sigmoid(logit.double()).numpy()
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    mae = (y * np.abs(pred.numpy() - dist.numpy())).sum() / (8 * y.sum())
    for weight in (0.2, 1.0):
        loss = losses.stardist_loss((logit, pred), prob, dist, dist_weight=weight)
        assert loss.item() == pytest.approx(bce + weight * mae, rel=1e-4)
    default = losses.stardist_loss((logit, pred), prob, dist)
    assert default.item() == pytest.approx(bce + losses.STARDIST_DIST_WEIGHT * mae, rel=1e-4)
    empty = losses.stardist_loss((logit, pred), torch.zeros_like(prob), dist)
    assert torch.isfinite(empty)  # a patch without objects


def test_weighted_loss_crops_targets_to_the_valid_output():
    out = torch.randn(1, 2, 4, 4, generator=_gen())
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    weight = torch.ones(1, 8, 8)
    weight[:, 2:6, 2:6] = 3.0  # only the centre is seen by the output
    expected = 3.0 * F.cross_entropy(out, target[:, 2:6, 2:6])
    assert losses.unet_weighted_loss(out, target, weight).item() == pytest.approx(expected.item())


def test_weighted_loss_is_the_mean_of_weight_times_nll():
    gen = _gen()
    out = torch.randn(2, 2, 5, 7, generator=gen)
    target = torch.randint(0, 2, (2, 5, 7), generator=gen)
    weight = 10 * torch.rand(2, 5, 7, generator=gen)
    logp = torch.log_softmax(out.double(), 1).numpy()
    nll = -np.take_along_axis(logp, target.numpy()[:, None], 1)[:, 0]
    expected = (weight.double().numpy() * nll).mean()
    assert losses.unet_weighted_loss(out, target, weight).item() == pytest.approx(expected)


def test_three_class_loss_is_cross_entropy():
    gen = _gen()
    out = torch.randn(2, 3, 6, 6, generator=gen)
    target = torch.randint(0, 3, (2, 6, 6), generator=gen)
    assert losses.unet_3class_loss(out, target).item() == pytest.approx(
        F.cross_entropy(out, target).item()
    )


@pytest.mark.parametrize("space", [(8, 8), (4, 8, 8)])  # 2-D, and 3-D with a third flow
def test_cellpose_loss_of_silent_and_perfect_outputs(space):
    gen = _gen()
    n = len(space)
    flows = 5 * (2 * torch.rand(1, n, *space, generator=gen) - 1)
    cellprob = (torch.rand(1, *space, generator=gen) > 0.5).float()
    silent = torch.zeros(1, n + 1, *space)
    expected = (flows.double() ** 2).mean().item() / 2 + np.log(2)
    assert losses.cellpose_loss(silent, flows, cellprob).item() == pytest.approx(expected, 1e-5)
    perfect = torch.cat([flows, 40 * cellprob[:, None] - 20], dim=1)
    assert losses.cellpose_loss(perfect, flows, cellprob).item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match=f"{n} flows need {n + 1}"):
        losses.cellpose_loss(silent[:, 1:], flows, cellprob)


def test_losses_compute_in_float32_under_half_precision_outputs():
    gen = _gen()
    out = torch.randn(1, 3, 8, 8, generator=gen)
    flows, cellprob = torch.randn(1, 2, 8, 8, generator=gen), torch.rand(1, 8, 8, generator=gen)
    full = losses.cellpose_loss(out, flows, cellprob)
    half = losses.cellpose_loss(out.bfloat16(), flows, cellprob)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)
