"""The learning-rate schedules of ``methods.train_method`` and ``sparse.train_sparse`` (one
definition, so that a sparse run and a dense one differ only in targets and loss)."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["lr_schedule"]


def lr_schedule(name: str, epochs: int, steps: int, lr: float) -> Callable | None:
    """A ``fit(scheduler=...)`` factory: ``"cosine"`` (per epoch over ``epochs``),
    ``"onecycle"`` (per step over ``steps``, peak ``lr``, 15 % warm-up) or ``"constant"``
    (``None``); any other name is a ``ValueError``."""
    if name == "cosine":
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    if name == "onecycle":
        return lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=steps, pct_start=0.15
        )
    if name == "constant":
        return None
    raise ValueError(f"schedule must be 'cosine', 'onecycle' or 'constant', got {name!r}")
