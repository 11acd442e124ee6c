"""Each method of the course from image to instance labels, by name: a thin layer over
``course_utils.methods``.

Notebook 07 and outside scripts call these names; every recipe they use (network and its
arguments per mode, targets, loss, post-processing and its defaults, checkpoint folder) is
the method's record in :data:`course_utils.methods.METHODS`, written once. Four networks
(:data:`METHODS`): ``"unet_weighted"`` (original U-Net, foreground with gaps + weight map,
notebook 03), ``"unet_3class"`` (modern U-Net, background / interior / boundary, notebook 03),
``"cellpose"`` (flows + cell probability, notebook 05) and ``"stardist"`` (probability + ray
distances, notebook 06).

Introduced in notebook 07.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from torch import nn

from . import methods
from .history import History
from .methods.loading import load_model
from .postprocess import classes_to_labels as instances_from_classes
from .postprocess import foreground_to_labels as instances_from_foreground
from .postprocess import stardist_to_labels
from .predict import network_outputs as network_outputs
from .targets import with_gaps as with_gaps

__all__ = [
    "CHECKPOINTS",
    "METHODS",
    "build_model",
    "cellpose_instances",
    "instances_from_classes",
    "instances_from_flows",
    "instances_from_foreground",
    "instances_from_stardist",
    "load_pretrained",
    "model_config",
    "network_outputs",
    "stardist_instances",
    "train_model",
    "unet_2class_instances",
    "unet_3class_instances",
    "with_gaps",
]

#: The four nucleus methods of notebooks 03, 05 and 06, in the course's order (the model zoo
#: has one model of each; ``course_utils.methods.METHODS`` may hold more records).
METHODS = ("unet_weighted", "unet_3class", "cellpose", "stardist")
#: Checkpoint folder (``checkpoint_dir(name)``) where the notebook that introduces it saves it.
CHECKPOINTS = {name: methods.get(name).checkpoint for name in METHODS}


def model_config(method: str) -> dict[str, Any]:
    """Constructor arguments of ``method``'s network in the current mode (its record's).
    """
    return methods.get(method).config()


def build_model(method: str, *, seed: int = 0, **overrides: Any) -> nn.Module:
    """A fresh network for ``method``: :func:`model_config`, updated by ``overrides``.

    ``seed`` seeds torch before the weights are drawn.
    """
    return methods.get(method).build(seed=seed, **overrides)


def load_pretrained(method: str, *, root: str | os.PathLike | None = None) -> nn.Module | None:
    """The network that notebook 03/05/06 saved for ``method`` in this mode, or ``None``.

    Reads ``checkpoint_dir(CHECKPOINTS[method], root)``: ``best.pt`` (else ``last.pt``), and
    rebuilds the network it describes (``course_utils.methods.load_model``). Raises a
    ``ValueError`` that names the file when it is corrupted, holds another method, or was written
    before checkpoints described their network (it then says how to retrain).

    Introduced in notebook 07.
    """
    folder = methods.checkpoint_folder(method, root)
    if not ((folder / "best.pt").exists() or (folder / "last.pt").exists()):
        return None
    return load_model(folder, method=method)


def instances_from_flows(outputs: Any, **options: Any) -> np.ndarray:
    """Instances of a Cellpose output ``(3, H, W)`` (flows at ``FLOW_SCALE``, then the
    cell-probability logit) by flow following; ``options``: ``cellprob_threshold``,
    ``flow_threshold``, ``min_size``, ``niter`` (record defaults).
    """
    return methods.get("cellpose").outputs_to_labels(outputs, np.shape(outputs)[-2:], **options)


def instances_from_stardist(
    prob: Any, dist: Any, shape: tuple[int, int], *, grid: int = 1, **options: Any
) -> np.ndarray:
    """Instances of StarDist maps (see ``postprocess.stardist_to_labels``): ``prob`` (H', W'),
    ``dist`` (H', W', n_rays), ``shape`` the image's (H, W); ``options``: ``prob_thresh``,
    ``nms_thresh`` (record defaults)."""
    params = {**methods.get("stardist").postprocess, **options}
    return stardist_to_labels(prob, dist, grid=grid, shape=shape, **params)


def unet_2class_instances(model: nn.Module, image: Any, **options: Any) -> np.ndarray:
    """Instance labels (int32, (H, W)) from a 2-class U-Net (``"unet_weighted"``).

    ``options``: ``tile_size``, ``overlap``, ``device`` of ``Method.segment``.
    Introduced in notebook 07.
    """
    return methods.get("unet_weighted").segment(model, image, **options)


def unet_3class_instances(model: nn.Module, image: Any, **options: Any) -> np.ndarray:
    """Instance labels (int32, (H, W)) from a 3-class U-Net (``"unet_3class"``); ``options``:
    ``expand`` and the tiling of ``Method.segment``. Introduced in notebook 07."""
    return methods.get("unet_3class").segment(model, image, **options)


def cellpose_instances(model: nn.Module, image: Any, **options: Any) -> np.ndarray:
    """Instance labels (int32, (H, W)) from a Cellpose-style network (tiles of 256 overlapping
    by 64, as notebook 05); ``options``: the thresholds of :func:`instances_from_flows` and the
    tiling of ``Method.segment``. Introduced in notebook 07."""
    return methods.get("cellpose").segment(model, image, **options)


def stardist_instances(model: nn.Module, image: Any, **options: Any) -> np.ndarray:
    """Instance labels (int32, (H, W)) from a StarDist-style network (one whole-image pass);
    ``options``: ``prob_thresh``, ``nms_thresh``, ``device``. Introduced in notebook 07."""
    return methods.get("stardist").segment(model, image, **options)


def train_model(
    method: str,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    epochs: int,
    patch_size: int | None = None,
    depth: int | None = None,
    base_channels: int | None = None,
    **options: Any,
) -> tuple[nn.Module, History]:
    """Train a fresh ``method`` network with its record's targets and loss.

    ``course_utils.methods.train_method`` with the network's ``depth`` and ``base_channels``
    as shortcuts for ``config``; the other ``options`` go there (``seed``,
    ``patches_per_epoch``, ``augment``, ``batch_size``, ``lr``, ``val_images``/``val_labels``,
    ``checkpoint_dir``, ``data``, ``device``, ``progress``, ...). ``train_unet_weighted``,
    ``train_unet_3class``, ``train_cellpose`` and ``train_stardist`` are this function with
    ``method`` filled in. Returns ``(model, history)``. Introduced in notebook 07.
    """
    sizes = (("depth", depth), ("base_channels", base_channels))
    config = {**options.pop("config", {}), **{k: v for k, v in sizes if v is not None}}
    return methods.train_method(
        method, images, labels, epochs=epochs, patch_size=patch_size, config=config, **options
    )


train_unet_weighted: Callable[..., tuple[nn.Module, History]] = partial(
    train_model, "unet_weighted"
)
train_unet_3class: Callable[..., tuple[nn.Module, History]] = partial(train_model, "unet_3class")
train_cellpose: Callable[..., tuple[nn.Module, History]] = partial(train_model, "cellpose")
train_stardist: Callable[..., tuple[nn.Module, History]] = partial(train_model, "stardist")
