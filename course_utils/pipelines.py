"""Each method of the course from image to instance labels: build, train briefly, predict.

Notebook 07 compares the methods of notebooks 01-06 on one test set. Instead of copying those
notebooks, it calls these small functions, which use the same network configuration
(:func:`model_config`, per mode), targets, losses and post-processing, so that a checkpoint
saved there loads here (:func:`load_pretrained`). Four networks (:data:`METHODS`):
``"unet_weighted"`` (original U-Net, foreground with gaps + weight map, notebook 03),
``"unet_3class"`` (modern U-Net, background / interior / boundary, notebook 03), ``"cellpose"``
(flows + cell probability, notebook 05) and ``"stardist"`` (probability + ray distances,
notebook 06). ``pipelines`` sits at the end of the chain of modules and imports from all.

Introduced in notebook 07.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from scipy.special import expit
from skimage.measure import label as connected_components
from skimage.segmentation import expand_labels
from torch import nn
from torch.utils.data import DataLoader

from .data import PatchDataset
from .history import History
from .mode import pick
from .models import (
    CellposeNet,
    StarDistNet,
    UNet,
    UNetOriginal,
    center_crop,
    unet_output_size,
    valid_input_sizes,
)
from .postprocess import flows_to_masks, non_maximum_suppression, polygons_to_label
from .predict import predict_tiled
from .targets import (
    FLOW_SCALE,
    boundary_classes,
    edt_prob,
    masks_to_flows,
    star_dist,
    unet_weight_map,
)
from .train import checkpoint_dir, fit, load_checkpoint

METHODS = ("unet_weighted", "unet_3class", "cellpose", "stardist")
#: Checkpoint folder (``checkpoint_dir(name)``) where the notebook that introduces it saves it.
CHECKPOINTS = {"unet_weighted": "03_unet_weighted", "unet_3class": "03_unet_3class",
               "cellpose": "05_cellpose", "stardist": "06_stardist"}  # fmt: skip
_MODELS = {"unet_weighted": UNetOriginal, "unet_3class": UNet, "cellpose": CellposeNet,
           "stardist": StarDistNet}  # fmt: skip


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    return method


def model_config(method: str) -> dict[str, Any]:
    """Constructor arguments of ``method``'s network in the current mode (fast or full).

    They are those of the notebook that introduces the method (03, 05, 06), so that its
    checkpoints fit. Introduced in notebook 07.
    """
    _check_method(method)
    depth, base = pick(fast=3, full=4), pick(fast=8, full=64)  # notebook 03
    if method == "unet_weighted":
        return {"depth": depth, "base_channels": base}
    if method == "unet_3class":
        return {"out_channels": 3, "depth": depth, "base_channels": base}
    if method == "cellpose":  # notebook 05
        return {"in_channels": 1, "base_channels": pick(fast=8, full=32), "depth": 3}
    # notebook 06 (which also writes its configuration to recipe.json beside the checkpoint)
    return {"in_channels": 1, "n_rays": 32, "base_channels": pick(fast=16, full=32),
            "depth": 3, "grid": 2}  # fmt: skip


def build_model(method: str, *, seed: int = 0, **overrides: Any) -> nn.Module:
    """A fresh network for ``method``: :func:`model_config`, updated by ``overrides``.

    ``seed`` seeds torch before the weights are drawn. Introduced in notebook 07.
    """
    torch.manual_seed(seed)
    return _MODELS[_check_method(method)](**{**model_config(method), **overrides})


def load_pretrained(method: str, *, root: str | os.PathLike | None = None) -> nn.Module | None:
    """The network that notebook 03/05/06 saved for ``method`` in this mode, or ``None``.

    Reads ``checkpoint_dir(CHECKPOINTS[method], root)``: ``best.pt`` (else ``last.pt``), into
    the architecture of ``recipe.json`` there if the notebook wrote one, else of
    :func:`model_config`. Raises ``ValueError`` when the weights do not fit (the notebook and
    this module disagree on the architecture). Introduced in notebook 07.
    """
    folder = checkpoint_dir(CHECKPOINTS[_check_method(method)], root)
    if not ((folder / "best.pt").exists() or (folder / "last.pt").exists()):
        return None
    recipe = folder / "recipe.json"
    config = json.loads(recipe.read_text()).get("model", {}) if recipe.exists() else {}
    model = build_model(method, **config)
    load_checkpoint(model, folder)
    return model.eval()


# --- network outputs --------------------------------------------------------------------------


def _as_chw(image: Any) -> np.ndarray:
    arr = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"image must hold real numbers, got dtype {arr.dtype}.")
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"image must be a non-empty (H, W) or (C, H, W) array, got {arr.shape}.")
    return (arr[None] if arr.ndim == 2 else arr).astype(np.float32)


def network_outputs(
    model: nn.Module,
    image: Any,
    *,
    tile_size: int | None = None,
    overlap: int = 32,
    device: Any = None,
) -> np.ndarray:
    """Raw outputs of a network on a whole image: float32 numpy ``(C_out, H', W')``.

    ``image`` (H, W) or (C, H, W), normalised. With ``tile_size=None`` the network runs once on
    the image reflect-padded at its bottom/right to a size it accepts (a multiple of
    ``grid * 2**depth``), and the output is cropped back: (C_out, H, W), or for StarDist
    (1 + n_rays, ceil(H / grid), ceil(W / grid)), its tuple output joined along channels.
    Otherwise, and always for ``UNetOriginal`` (valid convolutions; default tile: the smallest
    valid input with an output of >= 256 pixels), overlap-tile prediction with
    ``course_utils.predict.predict_tiled``. ``device``: default the model's.
    Introduced in notebook 07.
    """
    img = _as_chw(image)
    if isinstance(model, UNetOriginal):
        if tile_size is None:
            sizes = valid_input_sizes(model.depth, 64, 2048)
            tile_size = next(s for s in sizes if unet_output_size(s, model.depth) >= 256)
        return predict_tiled(model, img, tile_size=tile_size, overlap=0, device=device)
    if tile_size is not None:
        return predict_tiled(model, img, tile_size=tile_size, overlap=overlap, device=device)
    grid = getattr(model, "grid", 1)
    multiple = grid * 2 ** int(getattr(model, "depth", 0))
    h, w = img.shape[1:]
    padded = np.pad(img, ((0, 0), (0, -h % multiple), (0, -w % multiple)), mode="reflect")
    params = list(model.parameters())
    dev = torch.device(device) if device else params[0].device if params else torch.device("cpu")
    was_training = model.training
    model.to(dev).eval()
    try:
        with torch.inference_mode():
            out = model(torch.from_numpy(padded)[None].to(dev))
    finally:
        model.train(was_training)
    out = torch.cat(out, dim=1) if isinstance(out, tuple | list) else out
    return out[0, :, : -(-h // grid), : -(-w // grid)].float().cpu().numpy()


# --- outputs to instances ---------------------------------------------------------------------


def _check_scores(scores: Any, channels: int) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 3 or arr.shape[0] != channels:
        raise ValueError(f"scores must have shape ({channels}, H, W), got {arr.shape}.")
    return arr


def instances_from_foreground(scores: Any) -> np.ndarray:
    """Instances of a 2-class output: connected components (4-connected) of class 1.

    ``scores`` (2, H, W): logits or probabilities. Returns int32 (H, W) labels, ids 1..N.
    Touching nuclei stay apart only where the network predicts the gap between them (notebook
    03's foreground-with-gaps target). Introduced in notebook 07.
    """
    classes = _check_scores(scores, 2).argmax(0)
    return connected_components(classes == 1, connectivity=1).astype(np.int32)


def instances_from_classes(scores: Any, *, expand: int = 2) -> np.ndarray:
    """Instances of a background / interior / boundary output (notebook 03).

    Seeds are the connected components (4-connected) of the interior class; they grow by up to
    ``expand`` pixels over the predicted foreground (interior or boundary). ``scores``
    (3, H, W): logits or probabilities. Returns int32 (H, W) labels. Introduced in notebook 07.
    """
    classes = _check_scores(scores, 3).argmax(0)
    seeds = connected_components(classes == 1, connectivity=1)
    return np.where(classes > 0, expand_labels(seeds, distance=expand), 0).astype(np.int32)


def instances_from_stardist(
    prob: Any,
    dist: Any,
    shape: tuple[int, int],
    *,
    grid: int = 1,
    prob_thresh: float = 0.5,
    nms_thresh: float = 0.4,
) -> np.ndarray:
    """Instances of StarDist maps: non-maximum suppression, then the polygons painted.

    ``prob`` (H', W'): object probabilities (sigmoid of the logits), H' = ceil(H / grid);
    ``dist`` (H', W', n_rays): ray lengths in image pixels (the layout of ``star_dist``);
    ``shape``: the image's (H, W). Candidates have ``prob > prob_thresh``; a polygon overlapping
    a more probable one by more than ``nms_thresh`` (of the smaller area) is dropped. Returns
    int32 (H, W) labels. Introduced in notebook 07.
    """
    points, scores, dists = non_maximum_suppression(
        np.asarray(dist, np.float32), np.asarray(prob, np.float32),
        prob_thresh=prob_thresh, nms_thresh=nms_thresh, grid=(grid, grid),
    )  # fmt: skip
    return polygons_to_label(dists, points, shape, prob=scores)


def unet_2class_instances(model: nn.Module, image: Any, **predict: Any) -> np.ndarray:
    """Instance labels (int32, (H, W)) from a 2-class U-Net (``"unet_weighted"``).

    ``predict``: ``tile_size``, ``overlap``, ``device`` of :func:`network_outputs`.
    Introduced in notebook 07.
    """
    return instances_from_foreground(network_outputs(model, image, **predict))


def unet_3class_instances(
    model: nn.Module, image: Any, *, expand: int = 2, **predict: Any
) -> np.ndarray:
    """Instance labels (int32, (H, W)) from a 3-class U-Net (``"unet_3class"``).

    See :func:`instances_from_classes`; ``predict`` as in :func:`network_outputs`.
    Introduced in notebook 07.
    """
    return instances_from_classes(network_outputs(model, image, **predict), expand=expand)


def instances_from_flows(
    outputs: Any,
    *,
    cellprob_threshold: float = 0.0,
    flow_threshold: float | None = 0.4,
    min_size: int = 15,
    niter: int = 200,
) -> np.ndarray:
    """Instances of a Cellpose output ``(3, H, W)``: flows (dy, dx) at ``FLOW_SCALE`` and the
    cell-probability logit. ``course_utils.postprocess.flows_to_masks`` follows the flows
    (arguments as there). Returns int32 (H, W) labels. Introduced in notebook 07.
    """
    out = _check_scores(outputs, 3)
    return flows_to_masks(
        out[:2], out[2], cellprob_threshold=cellprob_threshold,
        flow_threshold=flow_threshold, min_size=min_size, niter=niter,
    )  # fmt: skip


def cellpose_instances(
    model: nn.Module, image: Any, *, tile_size: int | None = 256, overlap: int = 64,
    device: Any = None, **options: Any,
) -> np.ndarray:  # fmt: skip
    """Instance labels (int32, (H, W)) from a Cellpose-style network.

    Tiles of 256 pixels overlapping by 64, as notebook 05 (see :func:`network_outputs`);
    ``options``: ``cellprob_threshold``, ``flow_threshold``, ``min_size``, ``niter`` of
    :func:`instances_from_flows`. Introduced in notebook 07.
    """
    out = network_outputs(model, image, tile_size=tile_size, overlap=overlap, device=device)
    return instances_from_flows(out, **options)


def stardist_instances(
    model: nn.Module,
    image: Any,
    *,
    prob_thresh: float = 0.5,
    nms_thresh: float = 0.4,
    device: Any = None,
) -> np.ndarray:
    """Instance labels (int32, (H, W)) from a StarDist-style network (one whole-image pass).

    See :func:`instances_from_stardist`. Introduced in notebook 07.
    """
    out = network_outputs(model, image, device=device)
    prob, dist = expit(out[0]), np.moveaxis(out[1:], 0, -1)
    return instances_from_stardist(
        prob, dist, np.shape(image)[-2:], grid=getattr(model, "grid", 1),
        prob_thresh=prob_thresh, nms_thresh=nms_thresh,
    )  # fmt: skip


# --- targets and losses -----------------------------------------------------------------------


def with_gaps(labels: np.ndarray) -> np.ndarray:
    """Labels with every pixel that touches another nucleus (8-neighbourhood) set to 0.

    BBBC039 draws touching nuclei without a gap; a 2-class target needs one (notebook 03).
    ``labels`` integer (H, W); returns the same dtype and shape. Introduced in notebook 07.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must hold integer ids, got dtype {labels.dtype}.")
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2D (H, W), got shape {labels.shape}.")
    others_max = ndi.maximum_filter(labels, size=3, mode="nearest")
    as_high = np.where(labels == 0, np.iinfo(labels.dtype).max, labels)  # ignore background
    others_min = ndi.minimum_filter(as_high, size=3, mode="nearest")
    touching = (labels > 0) & ((others_max > labels) | (others_min < labels))
    return np.where(touching, 0, labels)


def _weighted_targets(labels):
    gapped = with_gaps(labels)
    return (gapped > 0).astype(np.int64), unet_weight_map(gapped)


def _class_targets(labels):
    return boundary_classes(labels).astype(np.int64)


def _flow_targets(labels):
    # device="cpu": DataLoader workers are forked processes, which must not touch the GPU.
    return FLOW_SCALE * masks_to_flows(labels, device="cpu"), (labels > 0).astype(np.float32)


def _stardist_targets(n_rays: int, grid: int) -> Callable:
    def targets(labels):
        prob = edt_prob(labels)[::grid, ::grid]
        dist = np.moveaxis(star_dist(labels, n_rays, grid=(grid, grid)), -1, 0)
        return prob[None].astype(np.float32), np.ascontiguousarray(dist)

    return targets


def _weighted_loss(out, y, weight):
    y, weight = (center_crop(t, tuple(out.shape[-2:])) for t in (y, weight))
    return (weight * F.cross_entropy(out, y, reduction="none")).mean()


def _class_loss(out, y):
    return F.cross_entropy(out, center_crop(y, tuple(out.shape[-2:])))


def _cellpose_loss(out, flows, cellprob):
    # As Cellpose: half the MSE of the scaled flows, plus BCE on the probability logit.
    return F.mse_loss(out[:, :2], flows) / 2 + F.binary_cross_entropy_with_logits(
        out[:, 2], cellprob
    )


def _stardist_loss(out, prob, dist):
    # As StarDist: BCE on the probability, and the mean absolute distance error weighted by
    # the true probability (central pixels count most), with weights 1 and 0.2.
    logit, pred = out
    weighted = (prob * (pred - dist).abs()).mean() / (prob.mean() + 1e-6)
    return F.binary_cross_entropy_with_logits(logit, prob) + 0.2 * weighted


# --- training ---------------------------------------------------------------------------------

_TARGETS: dict[str, Callable[[dict], Callable]] = {
    "unet_weighted": lambda config: _weighted_targets,
    "unet_3class": lambda config: _class_targets,
    "cellpose": lambda config: _flow_targets,
    "stardist": lambda config: _stardist_targets(config["n_rays"], config["grid"]),
}
_LOSSES = {"unet_weighted": _weighted_loss, "unet_3class": _class_loss,
           "cellpose": _cellpose_loss, "stardist": _stardist_loss}  # fmt: skip


def train_model(
    method: str,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    epochs: int,
    patch_size: int,
    seed: int = 0,
    depth: int | None = None,
    base_channels: int | None = None,
    patches_per_epoch: int | None = None,
    augment: Callable | None = None,
    batch_size: int = 4,
    lr: float = 2e-3,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    device: Any = None,
    progress: bool = True,
) -> tuple[nn.Module, History]:
    """Train a fresh ``method`` network (:func:`build_model`) with its notebook's targets and loss.

    ``train_unet_weighted``, ``train_unet_3class``, ``train_cellpose`` and ``train_stardist`` are
    this function with ``method`` filled in. ``PatchDataset(target_fn=...)`` builds the targets
    of random ``patch_size`` patches (after ``augment``): the foreground with gaps and its
    weight map (weighted cross-entropy); the three classes (cross-entropy); ``FLOW_SCALE`` x
    the flows and the cell mask (MSE / 2 + BCE, as Cellpose); ``edt_prob`` and ``star_dist``
    (BCE + 0.2 x the probability-weighted mean absolute distance error, as StarDist). Then
    ``fit`` with Adam (initial rate ``lr``) and a cosine schedule over ``epochs`` epochs of
    ``patches_per_epoch`` patches (default ``8 * len(images)``).

    ``images``, ``labels``: float32 (H, W) images and int32 (H, W) instance labels; ``seed``
    seeds the weights, patches and data order; ``depth``, ``base_channels`` override
    :func:`model_config`; ``val_images``/``val_labels`` add validation patches (an eighth as
    many) after each epoch; ``checkpoint_dir`` goes to ``fit``, which resumes there (never
    ``checkpoint_dir(CHECKPOINTS[method])``, which belongs to the method's notebook).

    Returns ``(model, history)``: the model in eval mode with the last epoch's weights, and
    the :class:`~course_utils.history.History`. Introduced in notebook 07.
    """
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither.")
    sizes = (("depth", depth), ("base_channels", base_channels))
    overrides = {k: v for k, v in sizes if v is not None}
    model = build_model(method, seed=seed, **overrides)
    target_fn = _TARGETS[method]({**model_config(method), **overrides})
    length = patches_per_epoch or 8 * len(images)
    data = PatchDataset(images, labels, patch_size, length=length, augment=augment,
                        target_fn=target_fn, seed=seed)  # fmt: skip
    val = None
    if val_images is not None:
        val_set = PatchDataset(val_images, val_labels, patch_size, target_fn=target_fn,
                               length=max(batch_size, length // 8), seed=seed + 1)  # fmt: skip
        val = DataLoader(val_set, batch_size=batch_size)
    history = fit(
        model, DataLoader(data, batch_size=batch_size, shuffle=True), val,
        loss_fn=_LOSSES[method], epochs=epochs, lr=lr,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
        device=device, seed=seed, checkpoint_dir=checkpoint_dir, progress=progress,
    )  # fmt: skip
    return model, history


train_unet_weighted = partial(train_model, "unet_weighted")
train_unet_3class = partial(train_model, "unet_3class")
train_cellpose = partial(train_model, "cellpose")
train_stardist = partial(train_model, "stardist")
