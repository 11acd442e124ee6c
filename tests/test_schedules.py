"""The learning-rate schedules shared by train_method and train_sparse."""

from __future__ import annotations

import pytest
import torch

from course_utils._shared.schedules import lr_schedule


def _optimizer(lr=1e-2):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_falls_to_zero_over_the_epochs():
    opt = _optimizer()
    scheduler = lr_schedule("cosine", epochs=4, steps=40, lr=1e-2)(opt)
    rates = []
    for _ in range(4):
        opt.step()
        scheduler.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates[-1] == pytest.approx(0.0, abs=1e-12) and rates == sorted(rates, reverse=True)


def test_onecycle_peaks_at_lr_after_the_warm_up():
    opt = _optimizer()
    scheduler = lr_schedule("onecycle", epochs=2, steps=20, lr=3e-3)(opt)
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    # warm-up over 15 % of the 20 steps (torch counts it as steps 0..2), from lr / 25
    assert max(rates) == pytest.approx(3e-3) and rates.index(max(rates)) == 2
    assert rates[0] == pytest.approx(3e-3 / 25) and rates[-1] < 1e-6


def test_constant_and_unknown_names():
    assert lr_schedule("constant", 3, 30, 1e-3) is None
    with pytest.raises(ValueError, match="'cosine', 'onecycle' or 'constant'"):
        lr_schedule("linear", 3, 30, 1e-3)
