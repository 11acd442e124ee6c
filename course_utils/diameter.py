"""The nucleus diameter of an image by segmenting it at several scales: for networks without a
size model (:mod:`course_utils.sizing`), e.g. one a user trained.

A first pass segments the image rescaled by each of ``factors``; the pass whose objects are
closest in size to the model's training diameter is the most trustworthy (a network finds the
objects it was trained on best) and gives a first estimate ``d0`` (the median equivalent
diameter of its objects not cut by the border, in the image's pixels). A second pass at the
scale that brings ``d0`` to the training diameter refines it. Four passes or more: a network
with a size model needs one (``course_utils.estimate_diameter(how="size_model")``).

Introduced in notebook 08.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from skimage.segmentation import clear_border
from torch import nn

from ._shared.validate import check_int, check_real
from .data import normalize_percentile
from .scale import object_diameters

__all__ = ["estimate_by_scales"]

#: Above this many pixels, an image whose central window holds too few whole nuclei is sampled
#: at up to 9 windows instead of as a whole (the 2x pass alone would cost minutes).
WHOLE_PIXELS = 4_000_000


def _windows(shape: tuple[int, int], side: int) -> list[tuple[slice, slice]]:
    """The central ``side`` x ``side`` window, then up to 8 more spread over a larger image."""
    spans = [[(max(0, (n - side) // 2), min(n, max(0, (n - side) // 2) + side))] for n in shape]
    for axis, n in enumerate(shape):
        if n >= 2 * side:
            spans[axis] += [(0, side), (n - side, n)]
    windows = [(slice(*r), slice(*c)) for r in spans[0] for c in spans[1]]
    return windows[:9]


def estimate_by_scales(
    record: Any,
    net: nn.Module,
    x: np.ndarray,
    train_diameter: float | None,
    factors: Sequence[float],
    max_side: int | None,
    options: Mapping[str, Any],
) -> float:
    """The median nucleus diameter (pixels) of a (H, W) float32 image ``x`` from passes of
    ``net`` (of method ``record``) at ``factors``, then one at the scale found.

    ``train_diameter``: default the model's own (``model.meta``). ``max_side``: the passes look
    at the central ``max_side x max_side`` window (a median needs a few dozen nuclei, not all of
    them); when no pass finds three whole nuclei there, at the whole image up to
    :data:`WHOLE_PIXELS` pixels, and at 8 more windows spread over a larger one. ``None``: the
    whole image. ``options`` go to the post-processing. Returns ``nan`` when no pass finds three
    whole objects.
    """
    from .segmentation import model_facts

    params, trained_at = model_facts(record, net)
    if train_diameter is not None:
        trained_at = check_real(train_diameter, "train_diameter", minimum=1e-3)
    if trained_at is None:
        raise ValueError(
            "the model does not record the nucleus diameter it was trained at "
            "(model.meta['train_diameter_px']): pass train_diameter= (pixels)"
        )
    params.update(options)
    if max_side is None:
        return _estimate(record, net, [normalize_percentile(x)], factors, trained_at, params)
    side = check_int(max_side, "max_side", minimum=16)
    windows = _windows(x.shape, side)
    centre = [normalize_percentile(x[windows[0]])]
    found = _estimate(record, net, centre, factors, trained_at, params)
    if math.isfinite(found) or x[windows[0]].shape == x.shape:
        return found
    if x.size <= WHOLE_PIXELS:  # too few whole nuclei in the window: look at everything
        return _estimate(record, net, [normalize_percentile(x)], factors, trained_at, params)
    crops = [normalize_percentile(x[w]) for w in windows]  # each normalised on its own
    return _estimate(record, net, crops, factors, trained_at, params)


def _estimate(record, net, crops, factors, trained_at, params) -> float:
    from .segmentation import MIN_OBJECTS

    found = []
    for f in factors:
        sizes = np.concatenate([_whole_object_sizes(record, net, c, f, params) for c in crops])
        if len(sizes) >= MIN_OBJECTS:
            found.append((abs(math.log(np.median(sizes) / trained_at)), np.median(sizes) / f))
    if not found:
        return float("nan")
    first = min(found)[1]
    factor = trained_at / first
    sizes = np.concatenate([_whole_object_sizes(record, net, c, factor, params) for c in crops])
    return float(np.median(sizes) / factor) if len(sizes) >= MIN_OBJECTS else float(first)


def _whole_object_sizes(record, net, x, factor, params) -> np.ndarray:
    """Diameters of the objects found at one scale, those cut by the border left out. A pass at
    a scale the model was not trained for may fail Cellpose's flow check: that is what the
    passes measure, so its warning is not shown."""
    from .segmentation import labels_at

    if min(x.shape) * factor < 16:
        return np.zeros(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flows_to_masks: the flow check")
        labels = labels_at(record, net, x, factor, dict(params))
    return object_diameters(clear_border(labels))
