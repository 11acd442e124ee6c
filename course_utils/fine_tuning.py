"""Fine-tune a pretrained network on a few annotated images of your own: ``fine_tune``.

The images and labels a user brings are checked before anything trains (shapes, binary masks
saved as labels, empty masks, channels), because a training run on wrong data finishes without
a word and gives a model that silently fails. The fine-tuned network carries what it was
trained at (``model.meta``: its nucleus diameter and thresholds, written into its checkpoints
too), so that ``segment(image, method, model=model)`` uses it with no further argument.

Introduced in notebook 08.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from . import zoo
from ._shared.validate import check_finite, check_labels, refuse_binary_masks
from .history import History
from .methods import Budget, Method, get, train_method
from .scale import median_diameter, rescale_image, rescale_labels
from .segmentation import model_facts

__all__ = ["check_training_pairs", "fine_tune", "recalibrate_batchnorm"]


def check_training_pairs(
    images: Iterable[Any], labels: Iterable[Any], in_channels: int = 1
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Training images and their instance labels as lists, or a clear error.

    ``images``: (H, W) images (or (C, H, W) with C = ``in_channels``) of real numbers, finite;
    ``labels``: (H, W) integer instance labels of the same height and width, one per image.
    Refused, naming the image: another number of labels than images, none at all, a shape
    mismatch (never stretched), a binary mask saved as integers (0/1 or 0/255), and labels
    with no object in any image. Returns float32 images and the labels.
    """
    images = list(images) if not isinstance(images, np.ndarray) or images.ndim > 2 else [images]
    labels = list(labels) if not isinstance(labels, np.ndarray) or labels.ndim > 2 else [labels]
    if len(images) != len(labels) or not images:
        raise ValueError(
            f"need as many label images as images (>= 1), got {len(images)} and {len(labels)}"
        )
    pixels, masks = [], []
    for i, (x, y) in enumerate(zip(images, labels)):
        x = check_finite(np.asarray(x, np.float32), f"images[{i}]")
        channels = 1 if x.ndim == 2 else x.shape[0]
        if x.ndim not in (2, 3) or channels != in_channels:
            raise ValueError(
                f"images[{i}] has shape {x.shape}, but the network takes {in_channels} "
                f"channel(s): give (H, W) images"
                + (
                    f" or ({in_channels}, H, W)"
                    if in_channels > 1
                    else " (one channel of a multi-channel image)"
                )
            )
        y = check_labels(y, f"labels[{i}]")
        if y.shape != x.shape[-2:]:
            raise ValueError(
                f"labels[{i}] has shape {y.shape} but its image is "
                f"{x.shape[-2:]}: they must match pixel for pixel"
            )
        refuse_binary_masks(y, f"labels[{i}]")
        pixels.append(x)
        masks.append(y)
    if not any(np.any(y > 0) for y in masks):
        raise ValueError("labels hold no object in any image (all 0): annotate some nuclei")
    return pixels, masks


def _network(record: Method, model: Any) -> nn.Module:
    return zoo.load(record.name) if model is None else record.check_network(model)


def fine_tune(
    method: str,
    images: Iterable[np.ndarray],
    labels: Iterable[np.ndarray],
    *,
    model: nn.Module | None = None,
    freeze: str = "none",
    rescale: bool = True,
    budget: str | Budget = "fine-tune",
    **options: Any,
) -> tuple[nn.Module, History]:
    """Continue training a pretrained network on a few annotated images of your own.

    ``model`` (default: a fresh copy of the zoo's network for ``method``; otherwise a network
    of that method) trains with the record's targets and loss on random patches of ``images``
    (normalised float (H, W)) and ``labels`` (int (H, W) instance labels, checked by
    :func:`check_training_pairs`) through ``course_utils.methods.train_method``. The
    ``"fine-tune"`` budget (``methods.BUDGETS``): Adam at a small learning rate (a fine-tuned
    network should move little), a cosine schedule over 10 epochs of 32 patches per image.
    ``freeze="encoder"`` keeps the contracting path fixed and trains the rest (a
    ``ValueError`` for a network that does not declare its encoder). With ``rescale`` the
    images are first resized so that their nuclei (the median diameter of ``labels``) have the
    model's training diameter (``model.meta``), so that the network learns the new images at
    the scale it already knows; a network that records none learns them at their own scale.
    ``options`` go to ``train_method`` (``epochs``, ``lr``, ``batch_size``,
    ``patches_per_epoch``, ``patch_size``, ``augment``, ``seed``, ``checkpoint_dir``,
    ``device``, ``progress``, ...).

    The returned model records its training diameter and thresholds in ``model.meta`` (and in
    the checkpoints when ``checkpoint_dir`` is given): segment with
    ``segment(image, method, model=model)``.

    Returns ``(model, history)``, the model in eval mode. Introduced in notebook 08.
    """
    record = get(method)
    net = _network(record, model)
    in_channels = int(getattr(net, "config", {}).get("in_channels", 1))
    images, labels = check_training_pairs(images, labels, in_channels)
    thresholds, trained_at = model_facts(record, net)
    diameter = median_diameter(labels)
    if rescale and trained_at is not None:
        factor = trained_at / diameter
        images = [rescale_image(x, factor) for x in images]
        labels = [rescale_labels(y, shape=x.shape[-2:]) for x, y in zip(images, labels)]
    else:
        trained_at = diameter  # learnt at the images' own scale
    facts = {
        "data": f"fine-tuned on {len(images)} image(s)",
        "postprocess": thresholds,
        "train_diameter_px": round(float(trained_at), 2),
        **dict(options.pop("meta", None) or {}),
    }
    model, history = train_method(
        record, images, labels, start=net, freeze=freeze, budget=budget, meta=facts, **options
    )
    return model.eval(), history


def recalibrate_batchnorm(
    method: str,
    images: Iterable[np.ndarray],
    labels: Iterable[np.ndarray],
    *,
    model: nn.Module | None = None,
    rescale: bool = True,
    tile: int = 256,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A copy of a network whose batch-norm statistics are re-estimated on new images, and
    nothing else: the control that tells how much of fine-tuning is new intensity statistics.

    The images (and the labels, only for their median nucleus diameter) are prepared as
    :func:`fine_tune` prepares them: checked, and with ``rescale`` resized to the model's
    training diameter. Every batch-norm layer then forgets its running mean and variance and
    averages them anew over the tiles (``tile x tile``, non-overlapping, the last ones shifted
    inside the image) of every image, with no gradient and no weight changed. ``model`` is not
    modified; the copy keeps its thresholds and training diameter (``model.meta``) and is
    returned in eval mode. A ``ValueError`` for a network without batch norm.

    Introduced in notebook 08.
    """
    record = get(method)
    net = copy.deepcopy(_network(record, model))
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"the {method} network has no batch-norm layer to recalibrate")
    in_channels = int(getattr(net, "config", {}).get("in_channels", 1))
    images, labels = check_training_pairs(images, labels, in_channels)
    _, trained_at = model_facts(record, net)
    if rescale and trained_at is not None:
        images = [rescale_image(x, trained_at / median_diameter(labels)) for x in images]
    param = next(net.parameters())
    device = torch.device(device) if device is not None else param.device
    net.to(device).eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every tile
        m.train()
    with torch.no_grad():
        for x in images:
            x = x[None] if x.ndim == 2 else x
            h, w = x.shape[-2:]
            for top in sorted({min(t, max(h - tile, 0)) for t in range(0, h, tile)}):
                for left in sorted({min(t, max(w - tile, 0)) for t in range(0, w, tile)}):
                    window = x[:, top : top + tile, left : left + tile]
                    net(torch.from_numpy(np.ascontiguousarray(window))[None].to(device))
    return net.eval()
