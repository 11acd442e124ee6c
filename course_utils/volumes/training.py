"""Training a 3-D method through its record: what ``methods.train_method`` does for volumes.

Random augmented crops (:class:`~course_utils.volumes.VolumePatches`) of the stacks become the
record's targets; ``train.fit`` runs Adam with the budget's schedule. The budget is the mode's
``"volumes"`` one unless another is named (``methods.BUDGETS``).

Introduced in notebook 11.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .._shared.schedules import lr_schedule
from ..history import History
from ..train import fit
from .methods import VolumeMethod, anisotropy_of, get_volume_method, voxel_factors
from .patches import VolumePatches

__all__ = ["train_volume_method"]


def _check_stacks(images: Sequence[Any], labels: Sequence[Any], name: str) -> None:
    """As many stacks as integer, non-negative label stacks (``VolumePatches`` checks the rest:
    (Z, Y, X), equal shapes, finite values, the crop fits)."""
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"{name}: need as many stacks as label stacks (>= 1)")
    for k, y in enumerate(labels):
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise ValueError(f"{name} labels {k} must be integer instance ids, got {y.dtype}")
        if y.size and y.min() < 0:
            raise ValueError(f"{name} labels {k} hold negative ids: 3-D training needs full labels")


def _network(
    record: VolumeMethod,
    start: nn.Module | None,
    anisotropy: Any,
    config: Mapping[str, Any],
    seed: int,
) -> nn.Module:
    """``start``, checked against ``anisotropy``, or a fresh network built for it."""
    if start is None:
        if anisotropy is None:
            raise ValueError(
                f"{record.name} needs the voxel's anisotropy: train_method(..., "
                "anisotropy=z_step / xy_step), e.g. 2.2 for 0.28 um planes of 0.127 um pixels"
            )
        return record.build(anisotropy, seed=seed, **config)
    record.check_network(start, "start")
    if config:
        raise ValueError("config sets a fresh network's arguments; it cannot apply to start")
    if anisotropy is not None and not np.allclose(voxel_factors(anisotropy), anisotropy_of(start)):
        raise ValueError(
            f"anisotropy {anisotropy!r} differs from the network's {anisotropy_of(start)}: "
            "its rays and pooling were made for that voxel (resample the stacks instead)"
        )
    return start


def _plan(record: VolumeMethod, budget: Any, changes: dict):
    """The budget of a 3-D run: a ``volumes-*`` one by default; a 2-D patch side is refused."""
    from ..methods.budgets import budget as resolve_budget

    plan = resolve_budget(budget or "volumes", record.name, **changes)
    if plan.patch_size is not None:
        raise ValueError(
            f"budget {budget!r} sets a 2-D patch side ({plan.patch_size} px): a 3-D method takes "
            "patch=(z, y, x); use the 'volumes' budget or a Budget without patch_size"
        )
    return plan


def _check_crop(patch: Any, model: nn.Module) -> tuple[int, int, int]:
    """The crop (z, y, x): three positive ints, y == x (crops are turned in-plane), each a
    multiple of what the network's pooling needs."""
    values = tuple(np.atleast_1d(np.asarray(patch)))
    if len(values) != 3 or any(not isinstance(v, (int, np.integer)) or v < 1 for v in values):
        raise ValueError(f"patch must be three positive ints (z, y, x), got {patch!r}")
    if values[1] != values[2]:
        raise ValueError(f"patch {values}: y and x must be equal (crops are turned in-plane)")
    divisor = model.backbone.divisor() if hasattr(model, "backbone") else model.divisor()
    if any(v % d for v, d in zip(values, divisor)):
        raise ValueError(f"patch {values} must be divisible by {divisor} (the network's pooling)")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def train_volume_method(
    method: str | VolumeMethod,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    anisotropy: Any = None,
    budget: Any = None,
    start: nn.Module | None = None,
    freeze: str = "none",
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    patch: tuple[int, int, int] | None = None,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    data: str | None = None,
    meta: Mapping[str, Any] | None = None,
    num_workers: int = 0,
    **changes_and_fit_options: Any,
) -> tuple[nn.Module, History]:
    """Train a network of the 3-D ``method`` on ``images`` (float32 (Z, Y, X), normalised) and
    ``labels`` (int (Z, Y, X)); called by ``methods.train_method`` for a 3-D method.

    ``anisotropy``: z step / in-plane step (or (z, y, x) factors) of the stacks; needed for a
    fresh network, checked against ``start``'s. ``patch``: the crop (z, y, x), default the
    record's for the mode. ``budget``: a name of ``methods.BUDGETS`` or a ``Budget``, default
    ``"volumes"`` (the mode's); ``epochs``, ``patches_per_epoch``, ``batch_size``, ``lr`` and
    ``schedule`` replace its values; other keywords go to ``train.fit`` (``device``,
    ``progress``, ``amp``, ...). Returns the network in eval mode with ``meta`` (method,
    anisotropy, crop, budget, ``data``, ``meta``) and the history.
    """
    from ..methods.training import freeze_parameters

    record = get_volume_method(method)
    keys = ("epochs", "patches_per_epoch", "batch_size", "lr", "schedule")
    changes = {k: changes_and_fit_options.pop(k, None) for k in keys}
    plan = _plan(record, budget, changes)
    _check_stacks(images, labels, "images/labels")
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither.")
    if val_images is not None:
        _check_stacks(val_images, val_labels, "val_images/val_labels")
    model = _network(record, start, anisotropy, {**plan.config, **(config or {})}, seed)
    crop = _check_crop(patch or record.patch(), model)
    if start is None and record.prepare is not None:
        record.prepare(model, [np.asarray(y) for y in labels])
    facts = {
        "method": record.name,
        "anisotropy": list(anisotropy_of(model)),
        "patch": list(crop),
        "data": data,
        "budget": plan.as_dict(),
        **(meta or {}),
    }
    targets = partial(record.targets, model=model)  # picklable for loader processes
    loader = partial(DataLoader, batch_size=plan.batch_size, num_workers=num_workers)
    n = plan.patches(len(images))
    train = loader(VolumePatches(images, labels, crop, targets, n, seed=seed))
    val = None
    if val_images is not None:
        n_val = max(plan.batch_size, n // 8)
        val_crops = VolumePatches(val_images, val_labels, crop, targets, n_val, seed + 1, False)
        val = loader(val_crops)
    trainable = freeze_parameters(model, freeze)
    try:
        history = fit(
            model,
            train,
            val,
            loss_fn=record.loss,
            epochs=plan.epochs,
            lr=plan.lr,
            optimizer=torch.optim.Adam(trainable, lr=plan.lr),
            scheduler=lr_schedule(plan.schedule, plan.epochs, plan.steps(len(images)), plan.lr),
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            meta=facts,
            channels_last=False,  # a layout for 4-D tensors
            **changes_and_fit_options,
        )
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    model.meta = {**dict(getattr(start, "meta", None) or {}), **facts}
    return model.eval(), history
