"""Masked losses: each method's loss over the trusted pixels only.

Each loss is the record's loss (``course_utils.losses``) with every per-pixel term multiplied
by the mask of :mod:`course_utils.sparse.targets` and the means taken over the trusted pixels
instead of all pixels. So an untrusted pixel adds nothing to the loss and gets a gradient of
exactly 0, and with masks of ones (a full annotation) each loss is the dense one, to float
rounding. A batch without any trusted pixel gives 0 (the counts are clamped at 1).

Introduced in notebook 09.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import STARDIST_DIST_WEIGHT
from ..models import center_crop

__all__ = ["cellpose_sparse_loss", "stardist_sparse_loss", "unet_3class_sparse_loss"]


def _count(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum().clamp(min=1.0)


def _same_size(out: torch.Tensor, loss: str, **targets: torch.Tensor) -> None:
    """Raise, naming the tensors, unless every target has the outputs' batch and (H, W)."""
    want = (out.shape[0], *out.shape[-2:])
    for name, t in targets.items():
        if (t.shape[0], *t.shape[-2:]) != want:
            raise ValueError(
                f"{loss}: {name} has shape {tuple(t.shape)} but the network's outputs are "
                f"{tuple(out.shape)}: the targets must be made from label patches of the "
                "size the network was given (same batch, height and width)"
            )


def cellpose_sparse_loss(
    out: torch.Tensor,
    flows: torch.Tensor,
    cellprob: torch.Tensor,
    flow_mask: torch.Tensor,
    prob_mask: torch.Tensor,
) -> torch.Tensor:
    """``cellpose_loss`` over the trusted pixels: masked MSE / 2 of the flows + masked BCE.

    ``out`` (B, 3, H, W): flow y, flow x, cell-probability logit; ``flows`` (B, 2, H, W) at
    ``FLOW_SCALE``; ``cellprob``, ``flow_mask`` and ``prob_mask`` (B, H, W) as
    :func:`~course_utils.sparse.cellpose_sparse_targets` gives them. Returns a scalar::

        sum(flow_mask * |out_flow - flows|^2) / (2 * 2 * sum(flow_mask))
        + sum(prob_mask * BCE(out_logit, cellprob)) / sum(prob_mask)

    Introduced in notebook 09.
    """
    _same_size(
        out,
        "cellpose_sparse_loss",
        flows=flows,
        cellprob=cellprob,
        flow_mask=flow_mask,
        prob_mask=prob_mask,
    )
    out = out.float()
    squared = (out[:, :2] - flows) ** 2 * flow_mask[:, None]
    flow_loss = squared.sum() / (2 * _count(flow_mask)) / 2  # mean over both components, halved
    bce = F.binary_cross_entropy_with_logits(out[:, 2], cellprob, reduction="none")
    return flow_loss + (bce * prob_mask).sum() / _count(prob_mask)


def stardist_sparse_loss(
    out: tuple[torch.Tensor, torch.Tensor],
    prob: torch.Tensor,
    dist: torch.Tensor,
    mask: torch.Tensor,
    *,
    dist_weight: float = STARDIST_DIST_WEIGHT,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``stardist_loss`` over the trusted pixels.

    ``out = (prob_logits (B, 1, h, w), dist (B, n_rays, h, w))``; ``prob`` (B, 1, h, w),
    ``dist`` (B, n_rays, h, w) and ``mask`` (B, 1, h, w) as
    :func:`~course_utils.sparse.stardist_sparse_targets` gives them. With ``n = sum(mask)``
    and the weights ``w = mask * prob``::

        sum(mask * BCE) / n + dist_weight * [sum(w * |d - d'|) / (n_rays * n)] / (sum(w) / n + eps)

    the dense formula with its means over all pixels replaced by means over trusted ones.

    Introduced in notebook 09.
    """
    _same_size(out[1], "stardist_sparse_loss", prob=prob, dist=dist, mask=mask)
    logits, pred = out[0].float(), out[1].float()
    n = _count(mask)
    bce = F.binary_cross_entropy_with_logits(logits, prob, reduction="none")
    weight = mask * prob
    weighted = (weight * (pred - dist).abs()).sum() / (n * pred.shape[1])
    return (bce * mask).sum() / n + dist_weight * weighted / (weight.sum() / n + eps)


def unet_3class_sparse_loss(
    out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``unet_3class_loss`` over the trusted pixels: ``sum(mask * CE) / sum(mask)``.

    ``out`` (B, 3, h, w) logits; ``target`` (B, H, W) int64 classes and ``mask`` (B, H, W),
    both centre-cropped to (h, w) as the dense loss does.
    """
    size = tuple(out.shape[-2:])
    mask = center_crop(mask, size)
    ce = F.cross_entropy(out.float(), center_crop(target, size), reduction="none")
    return (ce * mask).sum() / _count(mask)
