"""The training losses of the course's methods, each defined once.

``course_utils.methods`` attaches one of these to each method; notebooks 03, 05 and 06 write
each by hand first and check that theirs gives the same value on a batch. Every loss takes the
network's output and the targets of ``course_utils.targets`` (batched by a ``DataLoader``) and
returns a scalar tensor. Outputs may be bfloat16 or float16 under autocast: the losses compute
in float32.

- :func:`unet_weighted_loss`: cross-entropy weighted per pixel by the U-Net weight map
  (Ronneberger 2015), targets centre-cropped to a valid-convolution output;
- :func:`unet_3class_loss`: plain cross-entropy over background / interior / boundary;
- :func:`cellpose_loss`: half the MSE of the scaled flows plus the BCE of the cell probability
  (Stringer 2021);
- :func:`stardist_loss`: BCE of the object probability plus ``dist_weight`` x the mean
  absolute distance error weighted by the true probability (Schmidt 2018);
- :func:`affinity_loss`: BCE of the foreground plus the BCE of the affinities of the pixel
  pairs the targets count (notebook 10's grouping family).

Introduced in notebook 03.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import center_crop

__all__ = [
    "STARDIST_DIST_WEIGHT",
    "affinity_loss",
    "cellpose_loss",
    "stardist_loss",
    "unet_3class_loss",
    "unet_weighted_loss",
]

#: Weight of the distance term of :func:`stardist_loss`. StarDist's default is 0.2; measured on
#: BBBC039 validation images (notebook 06, fast mode, two seeds, distance head started at the
#: mean distance), 1.0 gave AP@0.5 0.74-0.78 against 0.59-0.63 for 0.2, and AP@0.7 0.44-0.59
#: against 0.20-0.24.
STARDIST_DIST_WEIGHT = 1.0


def _crop(target: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``target`` (..., H, W) cropped to the output's (h, w): valid convolutions predict the
    centre of their input; for same padding it is the identity."""
    return center_crop(target, tuple(out.shape[-2:]))


def unet_weighted_loss(
    out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Mean over pixels of ``weight * cross-entropy`` (the U-Net paper's weighted loss).

    ``out`` (B, C, h, w) logits; ``target`` (B, H, W) int64 class ids and ``weight``
    (B, H, W) float, both centre-cropped to (h, w).
    """
    ce = F.cross_entropy(out.float(), _crop(target, out), reduction="none")
    return (_crop(weight, out) * ce).mean()


def unet_3class_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``out`` (B, 3, h, w) logits against ``target`` (B, H, W) int64 class
    ids (centre-cropped to (h, w))."""
    return F.cross_entropy(out.float(), _crop(target, out))


def cellpose_loss(out: torch.Tensor, flows: torch.Tensor, cellprob: torch.Tensor) -> torch.Tensor:
    """``MSE(out[:, :n], flows) / 2 + BCE(out[:, n], cellprob)``, as Cellpose trains.

    In 2-D ``out`` (B, 3, H, W) holds flow y, flow x and the cell-probability logit, ``flows``
    (B, 2, H, W) = ``FLOW_SCALE`` x the unit flows and ``cellprob`` (B, H, W) is 1 inside cells.
    In 3-D (notebook 11) each has a z axis after the channels and there are ``n = 3`` flows
    (z, y, x): ``out`` (B, 4, Z, Y, X), ``flows`` (B, 3, Z, Y, X). The flows are learned
    everywhere, also on the background (target 0).
    """
    out = out.float()
    n = flows.shape[1]
    if out.shape[1] != n + 1:
        raise ValueError(f"out has {out.shape[1]} channels; {n} flows need {n + 1}")
    flow_loss = F.mse_loss(out[:, :n], flows) / 2
    return flow_loss + F.binary_cross_entropy_with_logits(out[:, n], cellprob)


def stardist_loss(
    out: tuple[torch.Tensor, torch.Tensor],
    prob: torch.Tensor,
    dist: torch.Tensor,
    *,
    dist_weight: float = STARDIST_DIST_WEIGHT,
    eps: float = 1e-6,
) -> torch.Tensor:
    """BCE of the object probability + ``dist_weight`` x probability-weighted distance MAE.

    ``out = (prob_logits (B, 1, h, w), dist (B, n_rays, h, w))``; ``prob`` (B, 1, h, w) the
    true probability in [0, 1]; ``dist`` (B, n_rays, h, w) the true distances. The distance
    error is ``sum_{p,k} w_p |d_pk - d'_pk| / (n_rays * sum_p w_p)`` with ``w = prob``, an
    average error in pixels whatever the share of the patch covered by objects (``eps`` keeps
    a patch without objects finite).
    """
    logits, pred = out[0].float(), out[1].float()
    bce = F.binary_cross_entropy_with_logits(logits, prob)
    weighted = (prob * (pred - dist).abs()).mean()  # the mean runs over the rays too
    return bce + dist_weight * weighted / (prob.mean() + eps)


def affinity_loss(
    out: torch.Tensor, foreground: torch.Tensor, affinities: torch.Tensor, counted: torch.Tensor
) -> torch.Tensor:
    """BCE of the foreground logit (channel 0) + BCE of the affinity logits (channels 1..K),
    averaged over the pairs that ``counted`` marks (``targets.affinity_targets``' mask).

    ``out`` (B, 1 + K, H, W); ``foreground`` (B, 1, H, W); ``affinities`` and ``counted``
    (B, K, H, W), 1 for a pair in the same object / a pair that counts.
    """
    out = out.float()
    fg_loss = F.binary_cross_entropy_with_logits(out[:, :1], foreground)
    per_pair = F.binary_cross_entropy_with_logits(out[:, 1:], affinities, reduction="none")
    return fg_loss + (per_pair * counted).sum() / counted.sum().clamp_min(1.0)
