"""The top-down family: detect each cell's box first, then segment inside it (Mask R-CNN).

Bottom-up methods (notebooks 03-06) classify pixels and group them; Mask R-CNN (He et al.
2017) first proposes boxes, keeps the best of overlapping ones (box NMS), then predicts one
mask per kept box. This module holds what the network (:class:`course_utils.models.
MaskRCNNNet`) needs around it, in the order of the data:

- :func:`detection_targets`: a label image -> the boxes, classes and masks torchvision trains on;
- :func:`train_maskrcnn`: a short training loop on random patches (Mask R-CNN computes its
  losses itself, so ``train.fit``'s ``loss_fn(output, target)`` does not fit it), with a
  self-describing checkpoint that ``methods.load_model`` rebuilds;
- :func:`region_proposals`, :func:`predict_detections`: the RPN's proposals, and the final
  detections (after the second box NMS) of one image;
- :func:`detections_to_labels`, :func:`segment_maskrcnn`: detections -> instance labels;
- :func:`mask_head_labels`: the ceiling of the mask head, true masks at its resolution.

Introduced in notebook 10b.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ._shared.device import model_device, resolve_device
from ._shared.relabel import relabel_consecutive
from ._shared.validate import check_image, check_int, check_labels, check_real, to_numpy
from .checkpoint import (
    checkpoint_file,
    describe,
    prepare_checkpoint_dir,
    read_checkpoint,
    save_training_state,
)
from .data import PatchDataset
from .dryrun import log_run, logging_requested, profile_step, timing_fields
from .mode import DRYRUN_STEPS, is_dryrun
from .models import MaskRCNNNet

__all__ = [
    "detection_targets",
    "detections_to_labels",
    "mask_head_labels",
    "predict_detections",
    "region_proposals",
    "segment_maskrcnn",
    "train_maskrcnn",
]


def detection_targets(labels: Any) -> dict[str, torch.Tensor]:
    """The training target of Mask R-CNN for one (H, W) integer label image.

    Returns a dict of tensors, one row per object in increasing id order: ``boxes`` float32
    (N, 4) as (x0, y0, x1, y1) in pixel edges (the object covers columns x0 .. x1 - 1 and
    rows y0 .. y1 - 1, so a one-pixel object has a box of side 1), ``labels`` int64 (N,) of
    ones (one class: cell), ``masks`` uint8 (N, H, W). An image without objects gives N = 0.

    Introduced in notebook 10b.
    """
    lab = to_numpy(check_labels(labels))
    lab, n = relabel_consecutive(lab)
    slices = ndi.find_objects(lab)
    boxes = np.array(
        [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices], np.float32
    ).reshape(-1, 4)
    masks = lab[None] == np.arange(1, n + 1)[:, None, None]
    return {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.ones(n, dtype=torch.int64),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
    }


def _image_tensor(image: Any, model: MaskRCNNNet, device) -> torch.Tensor:
    x = np.asarray(check_image(image), np.float32)
    x = x[None] if x.ndim == 2 else x
    if x.shape[0] != model.in_channels:
        raise ValueError(
            f"the network takes {model.in_channels} channel(s), the image has "
            f"{x.shape[0]} (shape {x.shape})"
        )
    return torch.from_numpy(x).to(device)


def _finished(folder, steps: int) -> dict[str, Any] | None:
    """The state of a finished run of ``steps`` steps in ``folder``, if there is one."""
    if folder is None or not checkpoint_file(folder).exists():
        return None
    state = read_checkpoint(checkpoint_file(folder))
    return state if state["meta"].get("steps") == steps else None


def train_maskrcnn(
    model: MaskRCNNNet,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    *,
    steps: int,
    patch_size: int = 256,
    batch_size: int = 2,
    lr: float = 1e-3,
    augment: Callable | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    data: str | None = None,
    device: Any = None,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` for ``steps`` steps of ``batch_size`` random patches.

    Patches of ``patch_size`` (``data.PatchDataset``, with ``augment``) of ``images``
    (float32 (H, W) or (C, H, W), normalised) and ``labels`` (int (H, W)) become
    :func:`detection_targets`; AdamW at ``lr`` with a one-cycle schedule (warm-up, then
    annealing) and gradient clipping. ``seed`` seeds the weights' updates and the patches.

    With ``checkpoint_dir``, a finished run of the same number of steps found there is loaded
    instead of training again; after training the weights are saved there (``best.pt`` and
    ``last.pt``, with the network's arguments, ``data`` and ``steps``), so that
    ``course_utils.methods.load_model`` rebuilds the network from the file alone.

    Returns the training loss (sum of Mask R-CNN's five losses) of every step; the model is
    left in eval mode on ``device``.

    Introduced in notebook 10b.
    """
    if not isinstance(model, MaskRCNNNet):
        raise TypeError(f"model must be a MaskRCNNNet, got {type(model).__name__}")
    steps = planned = check_int(steps, "steps", minimum=1)
    if is_dryrun():  # a dry run of full mode (course_utils.mode) trains a few steps only
        steps = min(steps, DRYRUN_STEPS)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_real(lr, "lr", minimum=0)
    device = resolve_device(device)
    folder = prepare_checkpoint_dir(checkpoint_dir)
    done = _finished(folder, steps)
    if done is not None:
        model.load_state_dict(done["model"])
        model.to(device).eval()
        return list(done["meta"].get("losses", []))
    torch.manual_seed(seed)
    dataset = PatchDataset(
        images, labels, patch_size, length=steps * batch_size, augment=augment, seed=seed
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    clock = _StepLog(planned) if logging_requested() else None
    losses = _train_steps(model.to(device), loader, lr, steps, device, progress, clock)
    if clock is not None:
        clock.write(device)
    if folder is not None:
        meta = describe(
            model, {"method": "maskrcnn", "data": data, "steps": steps, "losses": losses}
        )
        state = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "meta": meta,
            "epoch": 1,
        }
        save_training_state(folder, state, best=True)
    return losses


class _StepLog:
    """A Mask R-CNN run for ``$COURSE_TRAINING_LOG`` (``course_utils.dryrun``), as ``fit``
    logs its runs: one profiled step, the seconds of each step and each wait for a batch, and
    the ``planned`` steps (in a dry run, those of the full run)."""

    def __init__(self, planned: int) -> None:
        self.planned, self.steps, self.waits = planned, [], []
        self.record: dict[str, Any] | None = None

    def profile(self, model: MaskRCNNNet, x: torch.Tensor, targets: list) -> None:
        if self.record is not None:
            return
        cuda = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the RPN samples: leave the run as it was
            profile = profile_step(
                _WithTargets(model, targets), x, None, [], lambda out, _: sum(out.values())
            )
        self.record = {**profile, "network": type(model).__name__, "method": "maskrcnn"}
        self.record.update(batch_shape=list(x.shape), batch_bytes=float(x.nbytes), epochs=1)
        self.record.update(batches_per_epoch=self.planned, val_batches_per_epoch=0, amp=None)

    def write(self, device) -> None:
        if self.record is not None:
            log_run({**self.record, **timing_fields(self.record, self.steps, self.waits, device)})


class _WithTargets(torch.nn.Module):
    """``model(x, targets)`` as a one-argument network (for ``dryrun.profile_step``)."""

    def __init__(self, model: MaskRCNNNet, targets: list) -> None:
        super().__init__()
        self.model, self.targets = model, targets

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x, self.targets)


def _train_steps(
    model: MaskRCNNNet, loader, lr: float, steps: int, device, progress: bool, clock=None
):
    """AdamW with a one-cycle schedule and gradient clipping, one step per batch; the model is
    left in eval mode. Returns the loss of every step; ``clock`` (a ``_StepLog``) times them."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=0.2
    )
    losses, waited = [], time.perf_counter()
    for x, y in tqdm(loader, desc="Mask R-CNN", disable=not progress, leave=False):
        targets = [
            {k: v.to(device) for k, v in detection_targets(lab.numpy()).items()} for lab in y
        ]
        x = x.to(device)
        if clock is not None:
            clock.profile(model, x, targets)
        started = time.perf_counter()  # the batch and its targets are data time
        loss = sum(model(x, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # early steps of a fresh RPN
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if clock is not None:
            clock.steps.append(time.perf_counter() - started)
            clock.waits.append(started - waited)
        waited = time.perf_counter()
    model.eval()
    return losses


def region_proposals(model: MaskRCNNNet, image: Any, n: int = 100) -> np.ndarray:
    """The ``n`` best proposals of the RPN for one image (after the RPN's own box NMS): float32
    (n', 4) boxes (x0, y0, x1, y1), best first. ``image`` (H, W) or (C, H, W), normalised.

    Introduced in notebook 10b.
    """
    n = check_int(n, "n", minimum=1)
    model.eval()
    x = _image_tensor(image, model, model_device(model))
    with torch.inference_mode():
        batch, _ = model.net.transform([x])
        features = model.net.backbone(batch.tensors)
        proposals, _ = model.net.rpn(batch, features)
    return proposals[0][:n].float().cpu().numpy()


def predict_detections(
    model: MaskRCNNNet, image: Any, *, box_nms_thresh: float | None = None
) -> dict[str, np.ndarray]:
    """Detections of one image: ``boxes`` float32 (N, 4) as (x0, y0, x1, y1), ``scores``
    (N,) best first, ``masks`` float32 (N, H, W) probabilities. ``image`` (H, W) or (C, H, W),
    normalised. ``box_nms_thresh`` replaces the network's for this call (the IoU above which
    the box NMS deletes the weaker box).

    Introduced in notebook 10b.
    """
    heads = model.net.roi_heads
    kept = heads.nms_thresh
    if box_nms_thresh is not None:
        heads.nms_thresh = check_real(box_nms_thresh, "box_nms_thresh", minimum=0, maximum=1)
    model.eval()
    try:
        with torch.inference_mode():
            out = model([_image_tensor(image, model, model_device(model))])[0]
    finally:
        heads.nms_thresh = kept
    return {
        "boxes": out["boxes"].float().cpu().numpy(),
        "scores": out["scores"].float().cpu().numpy(),
        "masks": out["masks"][:, 0].float().cpu().numpy(),
    }


def detections_to_labels(
    detections: dict[str, Any],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    min_size: int = 0,
) -> np.ndarray:
    """Instance labels from detections (as :func:`predict_detections` returns them).

    Detections with ``scores > score_threshold`` are painted weakest first, each on its
    pixels with mask probability ``> mask_threshold``, so that where two masks overlap the
    more confident detection owns the pixel. Objects left with fewer than ``min_size``
    pixels are dropped. Returns int32 (H, W) labels, ids 1..N consecutive in decreasing order of
    score (0 = background).

    Introduced in notebook 10b.
    """
    masks = to_numpy(detections["masks"])
    scores = to_numpy(detections["scores"])
    if masks.ndim != 3 or scores.shape != masks.shape[:1]:
        raise ValueError(
            f"masks must be (N, H, W) and scores (N,), got {masks.shape} and {scores.shape}"
        )
    score_threshold = check_real(score_threshold, "score_threshold")
    mask_threshold = check_real(mask_threshold, "mask_threshold")
    min_size = check_int(min_size, "min_size", minimum=0)
    labels = np.zeros(masks.shape[1:], np.int32)
    order = np.argsort(-scores, kind="stable")  # best first
    for rank, k in reversed(list(enumerate(order, start=1))):  # painted weakest first
        if scores[k] > score_threshold:
            labels[masks[k] > mask_threshold] = rank
    if min_size:
        sizes = np.bincount(labels.ravel())
        labels[sizes[labels] < min_size] = 0
    return relabel_consecutive(labels)[0]


def segment_maskrcnn(model: MaskRCNNNet, image: Any, **options: Any) -> np.ndarray:
    """Instance labels (int32 (H, W)) of one normalised (H, W) or (C, H, W) image:
    :func:`predict_detections` then :func:`detections_to_labels` with ``options``
    (``score_threshold``, ``mask_threshold``, ``min_size``; ``box_nms_thresh``).

    Introduced in notebook 10b.
    """
    nms = options.pop("box_nms_thresh", None)
    return detections_to_labels(predict_detections(model, image, box_nms_thresh=nms), **options)


def mask_head_labels(labels: Any, size: int = 28) -> np.ndarray:
    """What a perfect mask head pastes back: each true mask at ``size x size`` inside its box.

    Mask R-CNN's mask head predicts a ``size x size`` mask per box (28 in torchvision). Here
    every object of ``labels`` gets its perfect box and its true mask, resampled the way
    torchvision trains and pastes: RoIAlign down to ``size x size`` (the training target),
    bilinear back up to the box, kept where above 0.5. Where two pasted masks overlap, the pixel
    goes to the higher value. Scoring the result against ``labels`` gives the representation
    ceiling of the mask head alone (perfect boxes, no NMS, no errors of the network).

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` integer label image (0 the background, any ids).
    size : int
        The mask head's resolution.

    Returns
    -------
    np.ndarray
        ``(H, W)`` int32 labels, ids 1..N consecutive (an object lost entirely is dropped).

    Introduced in notebook 10b.
    """
    from torchvision.ops import roi_align

    size = check_int(size, "size", minimum=1)
    lab = relabel_consecutive(check_labels(labels, "labels"))[0]
    best = np.zeros(lab.shape, np.float32)
    out = np.zeros(lab.shape, np.int32)
    for i, sl in enumerate(ndi.find_objects(lab), 1):
        if sl is None:
            continue
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        mask = torch.from_numpy((lab[sl] == i).astype(np.float32))[None, None]
        box = torch.tensor([[0, 0, 0, w, h]], dtype=torch.float32)  # the perfect box
        small = roi_align(mask, box, (size, size), spatial_scale=1.0, sampling_ratio=2)
        up = torch.nn.functional.interpolate(small, (h, w), mode="bilinear")
        prob = up[0, 0].numpy()
        window, owner = best[sl], out[sl]
        wins = (prob > 0.5) & (prob > window)
        window[wins], owner[wins] = prob[wins], i
    return relabel_consecutive(out)[0]
