"""A 2-D network on a stack: plane by plane, stitched, or over three views (Cellpose's way).

Cellpose segments volumes with its 2-D model in two ways (Stringer 2021): run it on every XY
plane and join the 2-D masks of consecutive planes by their overlap (``postprocess.
stitch_planes``), or run it on the XY, XZ and YZ planes of a stack resampled to cubic voxels,
average the two estimates of each flow component into 3-D flows, and follow those
(``postprocess.flows_to_masks_3d``; cellpose's ``do_3D``). The planes of a stack are small
images of one size, so they go through the network in batches, not one call each.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.measure import label as connected_components

from .._shared.validate import check_finite, check_int, check_real
from ..postprocess.flows3d import flows_to_masks_3d

__all__ = ["cellpose_three_views", "plane_outputs", "segment_planes"]

_MULTIPLE = 32  # every network of the course takes sizes divisible by this


def _stack(stack: Any) -> np.ndarray:
    arr = check_finite(np.asarray(stack, np.float32), "stack")
    if arr.ndim != 3:
        raise ValueError(f"stack must be (Z, Y, X), got shape {arr.shape}")
    return arr


@torch.no_grad()
def plane_outputs(model: torch.nn.Module, planes: Any, *, batch: int = 32) -> np.ndarray:
    """A 2-D network's raw outputs on every plane of ``planes`` (N, H, W), in batches.

    Planes are reflect-padded at the bottom and right to a multiple of 32 and the outputs
    cropped back. Returns float32 (N, C, H, W); a network returning several tensors (StarDist)
    is not supported here.
    """
    planes = _stack(planes)
    batch = check_int(batch, "batch", minimum=1)
    n, h, w = planes.shape
    pad = ((0, 0), (0, -h % _MULTIPLE), (0, -w % _MULTIPLE))
    padded = np.pad(planes, pad, mode="reflect" if min(h, w) > _MULTIPLE else "edge")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, n, batch):
        out = model(torch.from_numpy(padded[i : i + batch, None]).to(device))
        if isinstance(out, tuple):
            raise TypeError("plane_outputs takes networks with one output tensor")
        outs.append(out[..., :h, :w].float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(outs)


def segment_planes(method: Any, model: torch.nn.Module, stack: Any, **options: Any) -> np.ndarray:
    """2-D instance labels of every XY plane, numbered 1..n in each plane (int32 (Z, Y, X)).

    ``method`` is a record of ``course_utils.methods`` (its ``outputs_to_labels`` with
    ``options`` turns each plane's outputs into labels); ``stack`` normalised (Z, Y, X).

    Introduced in notebook 11.
    """
    stack = _stack(stack)
    outputs = plane_outputs(model, stack)
    labels, warned = [], []
    for out in outputs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            labels.append(method.outputs_to_labels(out, stack.shape[1:], grid=1, **options))
        warned += [str(w.message) for w in caught[:1]]
    if warned:  # one warning for the stack, not one per plane
        warnings.warn(
            f"segment_planes: the post-processing warned on {len(warned)} of {len(stack)} "
            f"planes (the first: {warned[0]}); planes near the top and bottom of a stack hold "
            "little, but many such planes point at the inputs",
            stacklevel=2,
        )
    return np.stack([connected_components(lab) for lab in labels]).astype(np.int32)


def cellpose_three_views(
    model: torch.nn.Module,
    stack: Any,
    anisotropy: float,
    *,
    cellprob_threshold: float = 0.0,
    min_size: int = 200,
) -> np.ndarray:
    """3-D labels from a 2-D Cellpose-style network run on the XY, XZ and YZ planes.

    The stack is resampled along z by ``anisotropy`` (linear) so that its voxels are cubes;
    the network's (dy, dx) on XY planes, (dz, dx) on XZ planes and (dz, dy) on YZ planes give
    two estimates of each 3-D flow component, averaged; the cell probability is averaged over
    the three views. The 3-D flows are followed (``flows_to_masks_3d``) and the labels taken
    back to the stack's planes (nearest plane).

    Parameters
    ----------
    model : a 2-D Cellpose-style network, outputs (B, 3, H, W): dy, dx, cell-probability logit
    stack : np.ndarray, float, shape (Z, Y, X), normalised
    anisotropy : float
        z step / in-plane pixel.
    cellprob_threshold : float
        Logit above which voxels are followed.
    min_size : int
        Smallest mask in voxels of the resampled stack.

    Returns
    -------
    np.ndarray, int32, shape (Z, Y, X)

    Introduced in notebook 11.
    """
    stack = _stack(stack)
    a = check_real(anisotropy, "anisotropy", minimum=1.0)
    iso = ndi.zoom(stack, (a, 1, 1), order=1)
    xy = plane_outputs(model, iso)  # (Z', 3, Y, X): dy, dx, p
    xz = plane_outputs(model, iso.transpose(1, 0, 2)).transpose(1, 2, 0, 3)  # (3, Z', Y, X)
    yz = plane_outputs(model, iso.transpose(2, 0, 1)).transpose(1, 2, 3, 0)  # (3, Z', Y, X)
    xy = xy.transpose(1, 0, 2, 3)
    flows = np.stack([(xz[0] + yz[0]) / 2, (xy[0] + yz[1]) / 2, (xy[1] + xz[1]) / 2])
    prob = (xy[2] + xz[2] + yz[2]) / 3
    labels = flows_to_masks_3d(
        flows, prob, cellprob_threshold=cellprob_threshold, min_size=min_size
    )
    planes = np.clip(np.round(np.arange(stack.shape[0]) * a).astype(int), 0, iso.shape[0] - 1)
    return np.ascontiguousarray(labels[planes], dtype=np.int32)
