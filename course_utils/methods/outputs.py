"""From a network's raw outputs to instance labels, one function per method, and the set-up a
fresh network gets from its training labels: the steps the records of
:mod:`course_utils.methods.records` point to.

Each ``*_labels(outputs, shape, grid, **options)`` takes the outputs of
:func:`course_utils.predict.network_outputs` and returns int32 (H, W) labels.

Introduced in notebook 06.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from ..postprocess import (
    affinities_to_labels,
    classes_to_labels,
    flows_to_masks,
    foreground_to_labels,
    stardist_to_labels,
)
from ..targets import AFFINITY_OFFSETS, star_dist

__all__ = [
    "affinity_labels",
    "class_labels",
    "flow_labels",
    "foreground_labels",
    "init_stardist_distances",
    "polygon_labels",
    "start_distances",
]


def foreground_labels(outputs, shape, grid):
    return foreground_to_labels(outputs)


def class_labels(outputs, shape, grid, *, expand):
    return classes_to_labels(outputs, expand=expand)


def flow_labels(outputs, shape, grid, **options):
    out = np.asarray(outputs)
    if out.ndim != 3 or out.shape[0] != 3:
        raise ValueError(f"Cellpose outputs must have shape (3, H, W), got {out.shape}.")
    return flows_to_masks(out[:2], out[2], **options)


def polygon_labels(outputs, shape, grid, *, prob_thresh, nms_thresh):
    out = np.asarray(outputs)
    if out.ndim != 3 or out.shape[0] < 4:
        raise ValueError(f"StarDist outputs must be (1 + n_rays, H', W'), got {out.shape}.")
    prob, dist = expit(out[0]), np.moveaxis(out[1:], 0, -1)
    return stardist_to_labels(prob, dist, prob_thresh, nms_thresh, grid=grid, shape=shape)


def init_stardist_distances(model: nn.Module, labels: Sequence[np.ndarray]) -> float:
    """Start a StarDist network's distance head at the mean ray length inside the objects of
    ``labels`` (int (H, W) label images): ``softplus(bias) = mean``. A fresh head predicts
    softplus(0) = 0.7 pixels, and the first steps would only grow the polygons. Returns the
    mean distance in pixels. Introduced in notebook 06."""
    n_rays = int(model.dist_head.out_channels)
    values = [star_dist(lab, n_rays)[lab > 0] for lab in labels if np.any(lab > 0)]
    if not values:
        raise ValueError("labels hold no object: nothing to measure the distances on")
    typical = float(np.concatenate(values).mean())
    with torch.no_grad():
        model.dist_head.bias.fill_(float(np.log(np.expm1(typical))))
    return typical


def start_distances(model: nn.Module, labels: Sequence[np.ndarray]) -> None:
    """:func:`init_stardist_distances` on the first label image with objects."""
    # The first label image with objects, as notebook 06 does by hand.
    init_stardist_distances(model, [next((lab for lab in labels if np.any(lab > 0)), labels[0])])


NEAREST_OFFSETS = AFFINITY_OFFSETS[:2]  # one pixel down, one right: the edges the grouping uses


def affinity_labels(outputs, shape, grid, **options):
    out = np.asarray(outputs)
    if out.ndim != 3 or out.shape[0] != 1 + len(AFFINITY_OFFSETS):
        raise ValueError(
            f"affinity outputs must be ({1 + len(AFFINITY_OFFSETS)}, H, W) (the "
            f"foreground, then one channel per offset), got {out.shape}."
        )
    prob = expit(out[:3])
    return affinities_to_labels(prob[0], prob[1:], NEAREST_OFFSETS, **options)
