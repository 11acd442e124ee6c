"""Train a method through its record: the record's network, targets and loss, and ``fit``.

Introduced in notebook 07.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import PatchDataset
from ..history import History
from ..mode import get_mode
from ..train import checkpoint_dir as checkpoint_path
from ..train import fit
from .records import Method, get

__all__ = ["checkpoint_folder", "train_method"]


def train_method(
    method: str | Method,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    epochs: int,
    patch_size: int | None = None,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    patches_per_epoch: int | None = None,
    augment: Callable | None = None,
    batch_size: int = 4,
    lr: float = 2e-3,
    schedule: str = "cosine",
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    data: str | None = None,
    num_workers: int = 0,
    device: Any = None,
    progress: bool = True,
    **fit_options: Any,
) -> tuple[nn.Module, History]:
    """Train a fresh network of ``method`` with the record's targets and loss.

    Random ``patch_size`` patches (default: the record's for this mode) of ``images`` (float32
    (H, W) or (C, H, W), normalised) and ``labels`` (int (H, W)) are augmented by ``augment``,
    turned into the record's targets, and fed to ``train.fit`` with Adam at ``lr``, a
    ``schedule`` (``"cosine"`` over the epochs, ``"onecycle"`` warm-up then annealing per
    batch, or ``"constant"``), ``batch_size`` patches per step (the global batch under
    torchrun) and ``patches_per_epoch`` patches per epoch (default ``8 * len(images)``).

    ``config`` overrides the network's arguments (e.g. ``{"in_channels": 2}``); ``seed``
    seeds the weights, patches and data order; ``val_images``/``val_labels`` add validation
    patches (an eighth as many) after each epoch; ``checkpoint_dir`` goes to ``fit`` (which
    resumes there), with ``data`` (a name of the training data) and the method in the
    checkpoint's ``meta``; ``fit_options`` go to ``fit`` too (``amp``, ``grad_clip``, ...).

    Returns ``(model, history)``: the model in eval mode with the last epoch's weights.
    """
    record = get(method)
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither.")
    model = record.build(seed=seed, **dict(config or {}))
    channels = {1 if np.ndim(x) == 2 else int(np.shape(x)[0]) for x in images}
    if channels != {model.config["in_channels"]}:
        raise ValueError(
            f"the {record.name} network takes {model.config['in_channels']} channel(s) but the "
            f"images have {sorted(channels)}: pass config={{'in_channels': ...}} to match"
        )
    if record.prepare is not None:
        record.prepare(model, labels)
    target_fn = record.target_fn(model.config)
    patch = patch_size or record.patch_size[get_mode()]
    length = patches_per_epoch or 8 * len(images)
    loader = partial(DataLoader, batch_size=batch_size, num_workers=num_workers,
                     pin_memory=torch.cuda.is_available())  # fmt: skip
    train_set = PatchDataset(images, labels, patch, length=length, augment=augment,
                             target_fn=target_fn, seed=seed)  # fmt: skip
    val = None
    if val_images is not None:
        val_set = PatchDataset(val_images, val_labels, patch, target_fn=target_fn,
                               length=max(batch_size, length // 8), seed=seed + 1)  # fmt: skip
        val = loader(val_set)
    steps = epochs * -(-length // batch_size)
    history = fit(
        model, loader(train_set, shuffle=True), val, loss_fn=record.loss, epochs=epochs,
        lr=lr, scheduler=_schedule(schedule, epochs, steps, lr), device=device, seed=seed,
        checkpoint_dir=checkpoint_dir, progress=progress,
        meta={"method": record.name, "data": data}, **fit_options,
    )  # fmt: skip
    return model, history


def _schedule(name: str, epochs: int, steps: int, lr: float):
    if name == "cosine":
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    if name == "onecycle":
        return lambda opt: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=steps, pct_start=0.15
        )
    if name == "constant":
        return None
    raise ValueError(f"schedule must be 'cosine', 'onecycle' or 'constant', got {name!r}")


def checkpoint_folder(method: str | Method, root: str | os.PathLike | None = None):
    """Where the method's notebook saves its model: ``checkpoint_dir(record.checkpoint)``.
   """
    return checkpoint_path(get(method).checkpoint, root)
