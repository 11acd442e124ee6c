"""Train a method through its record: the record's network, targets and loss, and ``fit``.

The number of input channels is an argument of its own (``channels``): one for a nuclear
stain or phase contrast, two for [cytoplasm, nucleus] as Cellpose's cytoplasm model and
Mesmer take them. It is checked against the images and against the network's arguments.

Introduced in notebook 07b.
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
from ..volumes.methods import is_volume_method
from .budgets import Budget
from .budgets import budget as resolve_budget
from .records import Method, get

__all__ = [
    "checkpoint_folder",
    "freeze_parameters",
    "resolve_channels",
    "train_method",
    "train_patches",
]


def train_method(
    method: str | Method,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    budget: str | Budget | None = None,
    start: nn.Module | None = None,
    freeze: str = "none",
    recipe: Any = None,
    seed: int = 0,
    config: Mapping[str, Any] | None = None,
    channels: int | None = None,
    augment: Callable | None = None,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    data: str | None = None,
    meta: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    patches_per_epoch: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    schedule: str | None = None,
    patch_size: int | None = None,
    **train_options: Any,
) -> tuple[nn.Module, History]:
    """Train a network of ``method`` with its record's targets and loss: the one entry point.

    Every training run of the course comes through here: a fresh network (notebook 07b, the
    zoo), a pretrained one (``start``: ``course_utils.fine_tune``), or sparse labels
    (``recipe``: ``sparse.train_sparse``). A 3-D method (``"unet3d"``, ``"stardist3d"``,
    ``"cellpose3d"``: ``course_utils.volumes.VOLUME_METHODS``) takes (Z, Y, X) stacks,
    ``anisotropy=`` (z step / in-plane step) and ``patch=(z, y, x)``, and the ``"volumes"``
    budget by default: see ``course_utils.volumes.training.train_volume_method`` (``recipe``,
    ``channels``, ``augment`` and ``patch_size`` do not apply there).

    Random patches of 2-D ``images`` (float32 (H, W) or (C, H, W), normalised) and ``labels``
    (int (H, W); -1 unknown with a sparse ``recipe``) are augmented by ``augment``, turned into
    targets and fed to ``train.fit`` (Adam) by :func:`train_patches`.

    Parameters
    ----------
    budget : str, Budget or None
        A name of :data:`~course_utils.methods.budgets.BUDGETS` (``"fine-tune"``,
        ``"zoo-cpu"``, ...) or a :class:`Budget`; ``None``: the mode's (``"fast"``/``"full"``).
        ``epochs``, ``patches_per_epoch``, ``batch_size``, ``lr``, ``schedule`` and
        ``patch_size``, when given, replace the budget's.
    start : torch.nn.Module, optional
        A network of this method to continue training (checked by ``Method.check_network``);
        default a fresh one (``seed``, ``config`` over the record's and the budget's).
    freeze : {"none", "encoder"}
        ``"encoder"`` trains only the parameters outside the network's ``ENCODER`` (a
        ``ValueError`` for a network that does not declare it).
    recipe : optional
        Other targets and loss (``.target_fn(config)``, ``.loss``), e.g. a
        ``course_utils.sparse`` recipe.
    channels : int, optional
        Input channels: ``None`` takes the images' (1 for (H, W), C for (C, H, W)); given, it
        must be theirs (and ``config["in_channels"]``'s, and ``start``'s).
    val_images, val_labels : optional
        Validation patches (an eighth as many) after each epoch.
    checkpoint_dir : path, optional
        Where ``fit`` saves and resumes.
    data, meta : optional
        A name of the training data, and more facts for ``model.meta``.
    train_options
        To :func:`train_patches` and ``fit`` (``dataset_options``, ``num_workers``,
        ``device``, ``progress``, ``amp``, ``time_limit``, ...).

    Returns
    -------
    model : torch.nn.Module
        In eval mode with the last epoch's weights. ``model.meta`` (and the checkpoints'
        ``meta``) holds the method, ``data``, the budget, the median object diameter of
        ``labels`` (``train_diameter_px``, what ``course_utils.segment`` rescales to) and
        ``meta``.
    history : course_utils.train.History

    Introduced in notebook 07b.
    """
    if is_volume_method(method):  # a (Z, Y, X) method: crops, anisotropy (volumes.training)
        given = {"recipe": recipe, "channels": channels, "augment": augment}
        given.update(patch_size=patch_size, budget=budget, start=start, freeze=freeze, seed=seed)
        given.update(config=config, val_images=val_images, val_labels=val_labels, data=data)
        given.update(checkpoint_dir=checkpoint_dir, meta=meta, epochs=epochs, lr=lr)
        given.update(patches_per_epoch=patches_per_epoch, batch_size=batch_size, schedule=schedule)
        return _train_volumes(method, images, labels, given, train_options)
    record = get(method)
    changes = {"epochs": epochs, "patches_per_epoch": patches_per_epoch, "lr": lr}
    changes.update(batch_size=batch_size, schedule=schedule, patch_size=patch_size)
    plan = resolve_budget(budget, record.name, **changes)
    model = _network(
        record, start, images, val_images, channels, {**plan.config, **(config or {})}, seed
    )
    objects = [np.maximum(np.asarray(lab), 0) for lab in labels]  # unknown (-1) as background
    if start is None and record.prepare is not None:
        record.prepare(model, objects)
    facts = {"method": record.name, "data": data, "budget": plan.as_dict()}
    diameter = median_diameter(objects)  # what segment() rescales new images to
    if math.isfinite(diameter):
        facts["train_diameter_px"] = round(diameter, 2)
    facts.update(meta or {})
    trainable = freeze_parameters(model, freeze)
    try:
        history = train_patches(
            model,
            images,
            labels,
            target_fn=(recipe or record).target_fn(model.config),
            loss=(recipe or record).loss,
            budget=plan.replace(patch_size=plan.patch_size or record.patch()),
            augment=augment,
            seed=seed,
            val_images=val_images,
            val_labels=val_labels,
            optimizer=torch.optim.Adam(trainable, lr=plan.lr),
            meta=facts,
            checkpoint_dir=checkpoint_dir,
            **train_options,
        )
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    model.meta = {**dict(getattr(start, "meta", None) or {}), **facts}
    return model, history


def _train_volumes(method, images, labels, args: dict, options: dict):
    """``train_method`` for a 3-D method; the 2-D-only arguments must be left unset."""
    from ..volumes.training import train_volume_method

    for name in ("recipe", "channels", "augment", "patch_size"):
        if args.pop(name) is not None:
            raise ValueError(
                f"{name} does not apply to the 3-D method {method!r} (see "
                "course_utils.volumes.training.train_volume_method; patch=(z, y, x) sets the crop)"
            )
    return train_volume_method(method, images, labels, **args, **options)


def _network(record, start, images, val_images, channels, config, seed) -> nn.Module:
    """``start`` checked against the images' channels, or a fresh network for them."""
    if start is not None:
        if config:
            raise ValueError(
                f"config={config} builds a fresh network, but start= gives one: leave config "
                "out (the network keeps its own arguments)"
            )
        record.check_network(start, "start")
        in_channels = int(getattr(start, "config", {}).get("in_channels", 1))
        resolve_channels(images, channels, in_channels)
        if val_images is not None:
            resolve_channels(val_images, in_channels, name="val_images")
        return start
    config["in_channels"] = resolve_channels(images, channels, config.get("in_channels"))
    if val_images is not None:
        resolve_channels(val_images, config["in_channels"], name="val_images")
    return record.build(seed=seed, **config)


def freeze_parameters(model: nn.Module, freeze: str) -> list[nn.Parameter]:
    """The parameters to train: all (``"none"``), or those outside the network's ``ENCODER``
    prefixes (``"encoder"``), the others get ``requires_grad=False``. A ``ValueError`` for
    another value, or for a network that does not declare its encoder."""
    if freeze not in ("none", "encoder"):
        raise ValueError(f"freeze must be 'none' or 'encoder', got {freeze!r}")
    prefixes: tuple[str, ...] = ()
    if freeze == "encoder":
        prefixes = tuple(getattr(model, "ENCODER", None) or ())
        if not prefixes:
            raise ValueError(
                f"freeze='encoder': a {type(model).__name__} does not say which parameters "
                "form its encoder (an ENCODER attribute, as the course's networks have): use "
                "freeze='none', or set requires_grad yourself"
            )
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(prefixes))
    return [p for p in model.parameters() if p.requires_grad]


def train_patches(
    model: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    target_fn: Callable,
    loss: Callable,
    budget: Budget,
    augment: Callable | None = None,
    seed: int = 0,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    meta: Mapping[str, Any] | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    weights: Sequence[float] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    device: Any = None,
    progress: bool = True,
    **fit_options: Any,
) -> History:
    """``model`` on random patches, through ``train.fit``: the layer beneath :func:`train_method`.

    :func:`train_method` (and through it ``sparse.train_sparse`` and ``course_utils.fine_tune``)
    trains here; call it directly only for a network no record describes (notebook 10's joint
    network). ``budget.patches(len(images))`` random ``budget.patch_size`` patches of
    ``images``/``labels`` an epoch (``PatchDataset(..., **dataset_options)``, augmented by
    ``augment``, turned into ``target_fn(labels)``), ``budget.batch_size`` a step,
    ``loss(output, *targets)``, Adam at ``budget.lr`` (or ``optimizer``) with
    ``budget.schedule`` (``_shared.schedules.lr_schedule``) for ``budget.epochs``; validation
    patches (an eighth as many, not augmented) of ``val_images``/``val_labels`` after each
    epoch; ``meta`` into the checkpoints. ``weights``: how often each training image is
    cropped (``PatchDataset``'s; validation patches stay uniform). Returns the history.
    Introduced in notebook 10.
    """
    if budget.patch_size is None:
        raise ValueError("budget.patch_size is None: give the patch side, budget.replace(...)")
    patch, batch_size, length = budget.patch_size, budget.batch_size, budget.patches(len(images))
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither.")
    loader = partial(
        DataLoader,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )
    dataset = partial(PatchDataset, target_fn=target_fn, **dict(dataset_options or {}))
    train_set = dataset(
        images, labels, patch, length=length, augment=augment, seed=seed, weights=weights
    )
    val = None
    if val_images is not None:
        val_set = dataset(
            val_images, val_labels, patch, length=max(batch_size, length // 8), seed=seed + 1
        )
        val = loader(val_set)
    epochs, lr = budget.epochs, budget.lr
    return fit(
        model,
        loader(train_set, shuffle=True),
        val,
        loss_fn=loss,
        epochs=epochs,
        lr=lr,
        optimizer=optimizer,
        scheduler=lr_schedule(budget.schedule, epochs, budget.steps(len(images)), lr),
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
