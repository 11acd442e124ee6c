"""Running a 3-D network on a whole stack, tile by tile, and its outputs to instance labels.

A 3-D network's activations grow with the cube of the patch, so a stack larger than a few
million voxels is predicted in overlapping tiles: each tile is padded to what the pooling needs,
and only its centre (away from the zero-padded faces, where the network sees less context) is
written back. The tiles' centres cover the stack without gaps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skimage.measure import label as connected_components
from skimage.segmentation import expand_labels

from .._shared.relabel import relabel_consecutive
from .._shared.validate import check_finite
from ..postprocess.polyhedra import non_maximum_suppression_3d, polyhedra_to_label

__all__ = ["classes_to_labels_3d", "predict_volume", "stardist3d_to_labels"]


def _spans(n: int, tile: int, margin: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, keep start, keep stop) per tile along an axis of ``n`` voxels."""
    if n <= tile:
        return [(0, n, 0, n)]
    step = tile - 2 * margin
    out = []
    for keep in range(0, n, step):
        start = min(max(keep - margin, 0), n - tile)
        out.append((start, start + tile, keep, min(keep + step, n)))
    return out


def _pad_to(x: torch.Tensor, divisor: tuple[int, int, int]) -> tuple[torch.Tensor, tuple]:
    shape = x.shape[-3:]
    extra = [(-s) % d for s, d in zip(shape, divisor)]
    pad = []
    for e in reversed(extra):
        pad += [e // 2, e - e // 2]
    mode = "reflect" if all(e < s for e, s in zip(extra, shape)) else "replicate"
    return torch.nn.functional.pad(x, pad, mode=mode), tuple(
        slice(e // 2, e // 2 + s) for e, s in zip(extra, shape)
    )


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    image: Any,
    *,
    tile: tuple[int, int, int] = (64, 128, 128),
    margin: tuple[int, int, int] = (8, 16, 16),
    device: Any = None,
) -> Any:
    """The network's outputs on a whole (Z, Y, X) stack, as float32 numpy arrays.

    Parameters
    ----------
    model : torch.nn.Module
        Takes (1, 1, Z, Y, X); returns a tensor (1, C, Z, Y, X) or a tuple of such tensors.
        Its ``divisor()`` (``UNet3D``) or ``backbone.divisor()`` (``StarDist3DNet``) says what
        each tile is padded to.
    image : np.ndarray, float, shape (Z, Y, X)
    tile, margin : (int, int, int)
        Tile size and the margin of context dropped at each tile's inner faces.
    device : torch.device, optional
        Default: the model's.

    Returns
    -------
    np.ndarray (C, Z, Y, X), or a tuple of them when the model returns a tuple.

    Introduced in notebook 11.
    """
    image = check_finite(np.asarray(image, np.float32), "image")
    if image.ndim != 3:
        raise ValueError(f"image must be a (Z, Y, X) stack, got shape {image.shape}")
    if any(t <= 2 * m for t, m in zip(tile, margin)):
        raise ValueError(f"each tile {tile} must be larger than twice its margin {margin}")
    net = getattr(model, "backbone", model)
    divisor = net.divisor() if hasattr(net, "divisor") else (1, 1, 1)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = None
    grids = [_spans(n, t, m) for n, t, m in zip(image.shape, tile, margin)]
    for zs in grids[0]:
        for ys in grids[1]:
            for xs in grids[2]:
                spans = (zs, ys, xs)
                block = torch.from_numpy(image[tuple(slice(s[0], s[1]) for s in spans)].copy())
                padded, inner = _pad_to(block[None, None].to(device), divisor)
                result = model(padded)
                parts = result if isinstance(result, tuple) else (result,)
                parts = [p[0][(slice(None), *inner)].float().cpu().numpy() for p in parts]
                if outputs is None:
                    outputs = [np.zeros((p.shape[0], *image.shape), np.float32) for p in parts]
                keep = tuple(slice(s[2] - s[0], s[3] - s[0]) for s in spans)
                where = tuple(slice(s[2], s[3]) for s in spans)
                for out, p in zip(outputs, parts):
                    out[(slice(None), *where)] = p[(slice(None), *keep)]
    model.train(was_training)
    return tuple(outputs) if len(outputs) > 1 else outputs[0]


def classes_to_labels_3d(scores: Any, *, expand: int = 2, min_size: int = 20) -> np.ndarray:
    """Instances of a background / interior / boundary output over a stack.

    Seeds are the 6-connected components of the interior class with at least ``min_size``
    voxels; they grow by up to ``expand`` voxels over the predicted foreground.

    Parameters
    ----------
    scores : np.ndarray, shape (3, Z, Y, X)
        Logits or probabilities.

    Returns
    -------
    np.ndarray, int32, shape (Z, Y, X)

    Introduced in notebook 11.
    """
    scores = check_finite(np.asarray(scores), "scores")
    if scores.ndim != 4 or scores.shape[0] != 3:
        raise ValueError(f"scores must be (3, Z, Y, X), got shape {scores.shape}")
    classes = scores.argmax(0)
    seeds = connected_components(classes == 1, connectivity=1)
    sizes = np.bincount(seeds.ravel())
    seeds[sizes[seeds] < min_size] = 0
    grown = np.where(classes > 0, expand_labels(seeds, distance=expand), 0)
    return relabel_consecutive(grown.astype(np.int32))[0]


def stardist3d_to_labels(
    prob_logits: Any,
    dist: Any,
    rays: Any,
    *,
    prob_thresh: float = 0.5,
    nms_thresh: float = 0.4,
    anisotropy: Any = None,
) -> np.ndarray:
    """Instance labels from StarDist-3D's outputs: 3-D non-maximum suppression, then polyhedra.

    Parameters
    ----------
    prob_logits : np.ndarray, shape (1, Z, Y, X)
        The probability head's logits (``predict_volume(StarDist3DNet)[0]``).
    dist : np.ndarray, shape (n_rays, Z, Y, X)
        Distances in voxels along ``rays``.
    rays : np.ndarray, shape (n_rays, 3)
        The rays the network was trained with (``targets.rays_golden_spiral(n, anisotropy)``).
    prob_thresh, nms_thresh : float
        Candidates need ``sigmoid(logit) > prob_thresh``; a candidate is dropped when it
        overlaps a more probable kept one by more than ``nms_thresh`` of the smaller volume.
    anisotropy : 3 floats, optional
        The rays' anisotropy (their triangulation is built as stardist builds it).

    Returns
    -------
    np.ndarray, int32, shape (Z, Y, X)

    Introduced in notebook 11.
    """
    logits = check_finite(np.asarray(prob_logits, np.float32), "prob_logits")
    dist = check_finite(np.asarray(dist, np.float32), "dist")
    if logits.ndim != 4 or logits.shape[0] != 1 or dist.shape[1:] != logits.shape[1:]:
        raise ValueError(
            f"expected prob_logits (1, Z, Y, X) and dist (n_rays, Z, Y, X), got {logits.shape} "
            f"and {dist.shape}"
        )
    prob = 1 / (1 + np.exp(-logits[0]))
    points, scores, dists = non_maximum_suppression_3d(
        np.moveaxis(dist, 0, -1), prob, rays, prob_thresh, nms_thresh, anisotropy=anisotropy
    )
    return polyhedra_to_label(dists, points, rays, prob.shape, prob=scores, anisotropy=anisotropy)
