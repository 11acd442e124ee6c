"""Train a method through its record: the record's network, targets and loss, and ``fit``.

The number of input channels is an argument of its own (``channels``): one for a nuclear
stain or phase contrast, two for [cytoplasm, nucleus] as Cellpose's cytoplasm model and
Mesmer take them. It is checked against the images and against the network's arguments.

Introduced in notebook 07.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .._shared.schedules import lr_schedule
from .._shared.validate import check_int
from ..data import PatchDataset
from ..history import History
from ..scale import median_diameter
from ..train import checkpoint_dir as checkpoint_path
from ..train import fit
from .records import Method, get

__all__ = ["checkpoint_folder", "resolve_channels", "train_method", "train_patches"]


def train_method(
    method: str | Method,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    epochs: int,
    patch_size: int | None = None,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    channels: int | None = None,
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

    ``channels`` is the number of input channels of the network: ``None`` (the default) takes
    the images' (1 for (H, W) images, C for (C, H, W)); given, it must be theirs. ``config``
    overrides the other network arguments (an ``in_channels`` there must agree); ``seed``
    seeds the weights, patches and data order; ``val_images``/``val_labels`` add validation
    patches (an eighth as many) after each epoch; ``checkpoint_dir`` goes to ``fit`` (which
    resumes there), with ``data`` (a name of the training data) and the method in the
    checkpoint's ``meta``; ``fit_options`` go to ``fit`` too (``amp``, ``grad_clip``, ...).

    Raises ``ValueError`` when the images do not all have the same number of channels, or
    when ``channels`` or ``config["in_channels"]`` is not theirs.

    Returns ``(model, history)``: the model in eval mode with the last epoch's weights, and in
    ``model.meta`` (and the checkpoints' ``meta``) the method, ``data`` and the median nucleus
    diameter of ``labels`` (``train_diameter_px``), which ``course_utils.segment`` rescales to.

    Introduced in notebook 07.
    """
    record = get(method)
    config = dict(config or {})
    config["in_channels"] = resolve_channels(images, channels, config.get("in_channels"))
    if val_images is not None:
        resolve_channels(val_images, config["in_channels"], name="val_images")
    model = record.build(seed=seed, **config)
    if record.prepare is not None:
        record.prepare(model, labels)
    facts = {"method": record.name, "data": data}
    diameter = median_diameter(labels)  # what segment() rescales new images to
    if math.isfinite(diameter):
        facts["train_diameter_px"] = round(diameter, 2)
    history = train_patches(
        model,
        images,
        labels,
        target_fn=record.target_fn(model.config),
        loss=record.loss,
        epochs=epochs,
        patch=patch_size or record.patch(),
        batch_size=batch_size,
        lr=lr,
        length=patches_per_epoch or 8 * len(images),
        schedule=schedule,
        augment=augment,
        seed=seed,
        val_images=val_images,
        val_labels=val_labels,
        meta=facts,
        checkpoint_dir=checkpoint_dir,
        num_workers=num_workers,
        device=device,
        progress=progress,
        **fit_options,
    )
    model.meta = facts
    return model, history


def train_patches(
    model: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    target_fn: Callable,
    loss: Callable,
    epochs: int,
    patch: int,
    length: int,
    batch_size: int,
    lr: float,
    schedule: str = "cosine",
    augment: Callable | None = None,
    seed: int = 0,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    meta: Mapping[str, Any] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    device: Any = None,
    progress: bool = True,
    **fit_options: Any,
) -> History:
    """The one training front end: ``model`` on random patches, through ``train.fit``.

    :func:`train_method`, ``sparse.train_sparse`` and ``course_utils.fine_tune`` differ only in
    the network they start from, the targets and the loss; all three train here. ``length``
    random ``patch`` x ``patch`` patches of ``images``/``labels`` an epoch
    (``PatchDataset(..., **dataset_options)``, augmented by ``augment``, turned into
    ``target_fn(labels)``), ``batch_size`` a step, ``loss(output, *targets)``, Adam at ``lr``
    (or ``optimizer``) with ``schedule`` (``_shared.schedules.lr_schedule``); validation
    patches (an eighth as many, not augmented) of ``val_images``/``val_labels`` after each
    epoch; ``meta`` into the checkpoints. Returns the history.
    """
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither.")
    loader = partial(
        DataLoader,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )
    dataset = partial(PatchDataset, target_fn=target_fn, **dict(dataset_options or {}))
    train_set = dataset(images, labels, patch, length=length, augment=augment, seed=seed)
    val = None
    if val_images is not None:
        val_set = dataset(
            val_images, val_labels, patch, length=max(batch_size, length // 8), seed=seed + 1
        )
        val = loader(val_set)
    steps = epochs * -(-length // batch_size)
    return fit(
        model,
        loader(train_set, shuffle=True),
        val,
        loss_fn=loss,
        epochs=epochs,
        lr=lr,
        optimizer=optimizer,
        scheduler=lr_schedule(schedule, epochs, steps, lr),
        device=device,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        meta=meta,
        **fit_options,
    )


def resolve_channels(
    images: Sequence[Any],
    channels: int | None = None,
    in_channels: int | None = None,
    *,
    name: str = "images",
) -> int:
    """The number of input channels for a network trained on ``images``.

    ``images``: (H, W) images (1 channel) or (C, H, W) ones (C channels), all the same.
    ``channels`` (the argument of :func:`train_method`) and ``in_channels`` (from a network
    ``config``), when given, must equal the images'. Returns that number; a ``ValueError``
    naming the argument otherwise.
    """
    if not len(images):
        raise ValueError(f"{name} is empty")
    if any(np.ndim(x) not in (2, 3) for x in images):
        raise ValueError(f"{name} must be (H, W) or (C, H, W) arrays")
    found = sorted({1 if np.ndim(x) == 2 else int(np.shape(x)[0]) for x in images})
    if len(found) > 1:
        raise ValueError(
            f"{name} have different numbers of channels {found}: give them all the "
            "same (e.g. [cytoplasm, nucleus] for every image)"
        )
    for arg, value in (("channels", channels), ("config['in_channels']", in_channels)):
        if value is not None and check_int(value, arg, minimum=1) != found[0]:
            raise ValueError(
                f"{arg}={value} but the {name} have {found[0]} channel(s): a network for "
                f"{value} channel(s) cannot take them; pass channels={found[0]} (or None), or "
                "images with the channels it needs"
            )
    return found[0]


def checkpoint_folder(method: str | Method, root: str | os.PathLike | None = None):
    """Where the method's notebook saves its model: ``checkpoint_dir(record.checkpoint)``."""
    return checkpoint_path(get(method).checkpoint, root)
