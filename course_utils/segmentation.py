"""Use the course on your own images: ``segment`` in one call, the nucleus diameter of an image
estimated without labels, and ``fine_tune`` on a few annotated images.

``course_utils.segment(image)`` takes a 2-D image of any numeric dtype, normalises it, rescales
it so that its nuclei have the diameter the zoo model was trained at (given in pixels, or
estimated), runs the network tile by tile, post-processes with the thresholds tuned for that
model, and returns int32 labels at the input's size. The steps are those of notebook 08, where
each one is shown and measured.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from skimage.segmentation import clear_border
from torch import nn
from torch.utils.data import DataLoader

from . import zoo
from ._shared.validate import check_finite, check_int, check_real, to_numpy
from .data import PatchDataset, normalize_percentile
from .history import History
from .methods import get
from .scale import median_diameter, object_diameters, rescale_image, rescale_labels
from .train import fit

__all__ = ["estimate_diameter", "fine_tune", "segment"]

_LOADED: dict[str, nn.Module] = {}
#: Parameters of the contracting path, per network: what ``fine_tune(freeze="encoder")`` keeps.
ENCODERS = {
    "UNetOriginal": ("encoder.", "bottleneck."),
    "UNet": ("encoder.", "bottleneck."),
    "CellposeNet": ("down.",),
    "StarDistNet": ("stem.", "backbone.encoder.", "backbone.bottleneck."),
}


def _check_image(image: Any) -> np.ndarray:
    arr = to_numpy(image)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(f"image must be a 2-D array of numbers, got dtype {arr.dtype}"
                        + (" (a mask? segment takes the microscopy image)" if arr.dtype == bool
                           else ""))  # fmt: skip
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ValueError(f"image must be a 2-D (H, W) image of at least 8 x 8 pixels, got shape "
                         f"{arr.shape}; give one channel of a multi-channel image")  # fmt: skip
    return check_finite(arr.astype(np.float32), "image")


def _model(method: str, model: nn.Module | None) -> nn.Module:
    if model is not None:
        return model.eval()
    if method not in _LOADED:
        _LOADED[method] = zoo.load(method)
    return _LOADED[method]


def _defaults(method: str, model: nn.Module | None) -> tuple[dict, float]:
    """Post-processing options and training diameter of a zoo model (the record's defaults and
    BBBC039's 28 px for a model of your own)."""
    if model is not None:
        return {}, 28.0
    card = zoo.card(method)
    return dict(card["postprocess"]), float(card["train_diameter_px"])


def _labels_at(record, model, image: np.ndarray, factor: float, options: dict) -> np.ndarray:
    """Labels of ``image`` rescaled by ``factor`` (in the rescaled image's pixels)."""
    x = image if abs(factor - 1) < 1e-6 else rescale_image(image, factor)
    return record.segment(model, x, **options)


def estimate_diameter(
    image: Any,
    method: str = "cellpose",
    *,
    model: nn.Module | None = None,
    train_diameter: float | None = None,
    factors: Sequence[float] = (0.5, 1.0, 2.0),
    max_side: int | None = 512,
    **options: Any,
) -> float:
    """The median nucleus diameter (pixels) of an image without labels, from the model itself.

    A first pass segments the image rescaled by each of ``factors``; the pass whose objects are
    closest in size to the model's training diameter is the most trustworthy (a network finds
    the objects it was trained on best), and gives a first estimate ``d0`` (the median
    equivalent diameter of its objects not cut by the border, in the image's pixels). A second
    pass at the scale that brings ``d0`` to the training diameter refines it. ``image``: a
    normalised (H, W) image; ``model``: default the zoo's; ``options`` go to the
    post-processing. ``max_side``: the passes look at the central ``max_side x max_side``
    window of a larger image (a median needs a few dozen nuclei, not all of them, and the 2x
    pass costs four times the image), and at the whole image when no pass finds three whole
    nuclei in that window; ``None`` looks at the whole image. Returns ``nan`` when no pass
    finds three objects.

    Introduced in notebook 08.
    """
    record = get(method)
    whole = _check_image(image)
    x = whole
    if max_side is not None:
        side = check_int(max_side, "max_side", minimum=16)
        top, left = (max(0, (n - side) // 2) for n in x.shape)
        x = x[top : top + side, left : left + side]
    x = normalize_percentile(x)
    params, trained_at = _defaults(record.name, model)
    trained_at = float(train_diameter or trained_at)
    net = _model(record.name, model)
    params.update(options)
    found = []
    for f in factors:
        sizes = _whole_object_sizes(record, net, x, f, params)
        if len(sizes) >= 3:
            found.append((abs(math.log(np.median(sizes) / trained_at)), np.median(sizes) / f))
    if not found:
        if x.shape != whole.shape:  # too few whole nuclei in the window: look at everything
            return estimate_diameter(whole, record.name, model=model, train_diameter=trained_at,
                                     factors=factors, max_side=None, **options)  # fmt: skip
        return float("nan")
    first = min(found)[1]
    factor = trained_at / first
    sizes = _whole_object_sizes(record, net, x, factor, params)
    return float(np.median(sizes) / factor) if len(sizes) >= 3 else float(first)


def _whole_object_sizes(record, net, x, factor, params) -> np.ndarray:
    """Diameters of the objects found at one scale, those cut by the border left out. A pass at
    a scale the model was not trained for may fail Cellpose's flow check: that is what the
    passes measure, so its warning is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flows_to_masks: the flow check")
        return object_diameters(clear_border(_labels_at(record, net, x, factor, params)))


def segment(
    image: Any,
    method: str = "cellpose",
    diameter: float | None = None,
    *,
    model: nn.Module | None = None,
    **options: Any,
) -> np.ndarray:
    """Instance labels of a 2-D image with the course's pretrained model: the one call.

    Parameters
    ----------
    image : array, (H, W), any numeric dtype (raw or normalised)
        Percentile-normalised here (1st and 99.8th percentiles), as the models were trained.
    method : str
        A name of ``course_utils.pipelines.METHODS``: ``"cellpose"`` (default), ``"stardist"``,
        ``"unet_3class"``, ``"unet_weighted"``.
    diameter : float, optional
        Median nucleus diameter in pixels. ``None``: estimated (:func:`estimate_diameter`).
        The image is rescaled so that nuclei get the diameter the model was trained at (its
        card's ``train_diameter_px``), and the labels are brought back to the input's size.
    model : torch.nn.Module, optional
        Your own network of ``method`` (e.g. from :func:`fine_tune`) instead of the zoo's.
    **options
        Post-processing options over the model's tuned ones (e.g. ``cellprob_threshold``,
        ``prob_thresh``), and ``tile_size``/``overlap`` of the tiling.

    Returns
    -------
    numpy.ndarray, int32, (H, W)
        0 = background, nuclei 1..N.

    Raises
    ------
    TypeError, ValueError
        A non-numeric or boolean image, not 2-D, smaller than 8 x 8, or with NaN/infinite
        values; an unknown method; a diameter that is not a positive number.

    Introduced in notebook 08.
    """
    record = get(method)
    x = normalize_percentile(_check_image(image))
    params, trained_at = _defaults(record.name, model)
    params.update(options)
    net = _model(record.name, model)
    if diameter is None:
        post = {k: v for k, v in params.items() if k not in ("tile_size", "overlap")}
        diameter = estimate_diameter(x, record.name, model=model, train_diameter=trained_at,
                                     **post)  # fmt: skip
        if not math.isfinite(diameter):
            diameter = trained_at  # nothing found at any scale: segment as it is
    diameter = check_real(diameter, "diameter", minimum=1e-3)
    factor = trained_at / diameter
    labels = _labels_at(record, net, x, factor, params)
    if labels.shape != x.shape:
        labels = rescale_labels(labels, shape=x.shape)
    return labels.astype(np.int32)


def _freeze(model: nn.Module, freeze: str) -> list[nn.Parameter]:
    if freeze not in ("none", "encoder"):
        raise ValueError(f"freeze must be 'none' or 'encoder', got {freeze!r}")
    prefixes = ENCODERS.get(type(model).__name__, ()) if freeze == "encoder" else ()
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(prefixes))
    return [p for p in model.parameters() if p.requires_grad]


def fine_tune(
    method: str,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    model: nn.Module | None = None,
    epochs: int = 10,
    patches_per_epoch: int | None = None,
    batch_size: int = 8,
    lr: float = 5e-4,
    freeze: str = "none",
    rescale: bool = True,
    patch_size: int | None = None,
    augment: Callable | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    device: Any = None,
    progress: bool = True,
) -> tuple[nn.Module, History]:
    """Continue training a pretrained network on a few annotated images of your own.

    ``model`` (default: a fresh copy of the zoo's network for ``method``) trains with the
    record's targets and loss on random patches of ``images`` (normalised float (H, W)) and
    ``labels`` (int (H, W)), with Adam at a small ``lr`` (a fine-tuned network should move
    little) and a cosine schedule over ``epochs`` of ``patches_per_epoch`` (default
    ``32 * len(images)``) patches. ``freeze="encoder"`` keeps the contracting path fixed and
    trains the rest. With ``rescale`` the images are first resized so that their nuclei (the
    median diameter of ``labels``) have the model's training diameter, so that the network
    learns the new images at the scale it already knows; segment them later with
    ``segment(image, method, model=model)``.

    Returns ``(model, history)``, the model in eval mode. Introduced in notebook 08.
    """
    record = get(method)
    if len(images) != len(labels) or not len(images):
        raise ValueError(f"need as many label images as images (>= 1), got {len(images)} and "
                         f"{len(labels)}")  # fmt: skip
    net = zoo.load(record.name) if model is None else model
    if rescale:
        trained_at = float(zoo.card(record.name)["train_diameter_px"]) if model is None else 28.0
        factor = trained_at / median_diameter(labels)
        images = [rescale_image(x, factor) for x in images]
        labels = [rescale_labels(y, shape=x.shape) for x, y in zip(images, labels)]
    trainable = _freeze(net, freeze)
    length = patches_per_epoch or 32 * len(images)
    patch = patch_size or record.patch_size["fast"]
    data = PatchDataset(images, labels, patch, length=length, augment=augment,
                        target_fn=record.target_fn(net.config), seed=seed)  # fmt: skip
    loader = partial(DataLoader, batch_size=batch_size)
    history = fit(
        net, loader(data, shuffle=True), loss_fn=record.loss, epochs=epochs, lr=lr,
        optimizer=torch.optim.Adam(trainable, lr=lr),
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
        device=device, seed=seed, checkpoint_dir=checkpoint_dir, progress=progress,
        meta={"method": record.name, "data": f"fine-tuned on {len(images)} image(s)"},
    )  # fmt: skip
    for p in net.parameters():
        p.requires_grad_(True)
    return net.eval(), history
