"""The sparse version of each method's recipe, by method name, and training with it.

``SPARSE["cellpose"]`` holds the sparse targets and the masked loss of the Cellpose-style
record; everything else (network, sizes, post-processing, ``prepare``) stays the record's,
reached through :attr:`SparseRecipe.record`. :func:`train_sparse` trains through them as
``course_utils.methods.train_method`` trains through the records.

Introduced in notebook 09.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..history import History
from ..methods import Budget, Method, get, train_method
from .losses import cellpose_sparse_loss, stardist_sparse_loss, unet_3class_sparse_loss
from .targets import cellpose_sparse_targets, stardist_sparse_targets, unet_3class_sparse_targets

__all__ = ["SPARSE", "SparseRecipe", "recipe", "train_sparse"]


@dataclass(frozen=True)
class SparseRecipe:
    """The sparse targets and masked loss of one method record.

    Attributes
    ----------
    method : str
        The record's name in ``course_utils.methods.METHODS``.
    targets : callable
        ``targets(labels, **{k: config[k] for k in record.target_args})``: the record's
        targets of a sparse label patch, followed by the masks of their trusted pixels.
    loss : callable
        ``loss(output, *targets)``: the record's loss over the trusted pixels.
    """

    method: str
    targets: Callable[..., tuple]
    loss: Callable[..., torch.Tensor]

    @property
    def record(self) -> Method:
        """The method's record (network, sizes, post-processing, ``prepare``)."""
        return get(self.method)

    def target_fn(self, config: Mapping[str, Any] | None = None) -> Callable[[np.ndarray], Any]:
        """``labels -> targets`` for a network with ``config`` (default: this mode's), as the
        record's ``target_fn`` (a picklable ``functools.partial``)."""
        record = self.record
        config = record.config() if config is None else config
        return partial(self.targets, **{k: config[k] for k in record.target_args})


SPARSE: Mapping[str, SparseRecipe] = MappingProxyType(
    {
        "unet_3class": SparseRecipe(
            "unet_3class", unet_3class_sparse_targets, unet_3class_sparse_loss
        ),
        "cellpose": SparseRecipe("cellpose", cellpose_sparse_targets, cellpose_sparse_loss),
        "stardist": SparseRecipe("stardist", stardist_sparse_targets, stardist_sparse_loss),
    }
)

#: Why a method has no sparse recipe.
_WITHOUT = {
    "unet_weighted": "its weight map needs each pixel's distance to the two nearest nuclei, "
    "which an unlabelled nucleus nearby changes, so it is unknown near every unknown region",
}


def recipe(method: str | Method | SparseRecipe) -> SparseRecipe:
    """The sparse recipe of ``method`` (a record's name, a record, or a recipe, returned as is);
    ``ValueError`` naming why for a method without one."""
    if isinstance(method, SparseRecipe):
        return method
    name = method.name if isinstance(method, Method) else get(method).name
    if name not in SPARSE:
        raise ValueError(
            f"{name} has no sparse recipe: {_WITHOUT.get(name, 'not written yet')}; "
            f"sparse recipes: {tuple(SPARSE)}"
        )
    return SPARSE[name]


def train_sparse(
    method: str | Method | SparseRecipe,
    images: Sequence[np.ndarray],
    sparse_labels: Sequence[np.ndarray],
    *,
    crop: str = "objects",
    budget: str | Budget | None = "sparse",
    **options: Any,
) -> tuple[nn.Module, History]:
    """Train a fresh network of ``method`` on sparse labels, with its masked loss.

    ``course_utils.methods.train_method`` with the sparse recipe's targets and loss: the
    record's network, ``record.prepare`` on the annotated objects (StarDist starts its distance
    head at their mean ray length), random crops (``PatchDataset(..., unknown=True)``, so -1
    stays unknown through ``augment``) and ``fit``; only the targets and the loss differ.

    Parameters
    ----------
    method : str, Method or SparseRecipe
        ``"cellpose"``, ``"stardist"`` or ``"unet_3class"`` (see :data:`SPARSE`).
    images : sequence of numpy.ndarray, float32, (H, W) or (C, H, W)
        Normalised images.
    sparse_labels : sequence of numpy.ndarray, integer, (H, W)
        -1 unknown, 0 annotated background, ids > 0 whole annotated objects
        (:func:`~course_utils.sparse.sparsify`). Dense labels are sparse labels without -1.
    crop : {"objects", "uniform"}
        ``"objects"`` (default): every crop holds an annotated object (as StarDist samples
        patches), so that a few annotations are not lost among empty crops; ``"uniform"``
        crops as ``train_method`` does.
    budget : str or Budget
        Default ``"sparse"``: the mode's budget of notebook 09 (``methods.BUDGETS``).
    options
        As in ``course_utils.methods.train_method`` (``epochs``, ``seed``, ``val_images``,
        ``val_labels`` (sparse or dense, scored with the masked loss), ``checkpoint_dir``,
        ``data``, ...); the checkpoint's ``meta`` says ``"sparse": True``.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, with the last epoch's weights.
    history : course_utils.train.History

    Introduced in notebook 09.
    """
    sparse = recipe(method)
    if len(images) != len(sparse_labels):
        raise ValueError(f"got {len(images)} images but {len(sparse_labels)} label images")
    _check_annotated(sparse_labels)
    for taken in ("start", "freeze", "recipe"):
        if taken in options:
            raise TypeError(f"train_sparse trains a fresh network: it takes no {taken}=")
    return train_method(
        sparse.record,
        images,
        sparse_labels,
        recipe=sparse,
        budget=budget,
        dataset_options={"unknown": True, "crop": crop},
        meta={"sparse": True, **dict(options.pop("meta", None) or {})},
        **options,
    )


def _check_annotated(sparse_labels: Sequence[np.ndarray]) -> None:
    """Refuse labels with nothing annotated: every pixel -1 gives a loss of 0 and no gradient,
    and training would "succeed" while learning nothing."""
    if not any(np.any(np.asarray(lab) >= 0) for lab in sparse_labels):
        raise ValueError(
            "sparse_labels hold no annotated pixel (every value is -1, unknown): there is "
            "nothing to learn from. Annotate some objects (ids > 0) and background (0), e.g. "
            "with course_utils.sparse.sparsify(labels, ...)"
        )
