"""Affinities back to instances: group the pixels that belong together.

Two grouping steps for the affinities of ``course_utils.targets.affinities`` (the *grouping*
family: Turaga et al. 2010, Lee et al. 2017):

- ``"components"``: keep the edges of the pixel graph whose affinity exceeds a threshold and
  take its connected components. Exact on perfect affinities, and the simplest; one wrongly
  high affinity on the border of two cells merges them.
- ``"watershed"``: seeds are the components at a strict threshold (a leak is then unlikely),
  and a watershed on ``1 - affinity`` grows them over the rest of the foreground, so that a
  few leaky edges no longer merge two cells.

Both return int32 labels with consecutive ids 1..N, numbered in raster order of each object's
first pixel, and 0 on the background.

Introduced in notebook 10.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import watershed

from .._shared.validate import check_finite, check_int, check_real, to_numpy
from ..targets.affinities import check_offsets, pair_slices

__all__ = ["affinities_to_labels", "affinity_components"]

_METHODS = ("components", "watershed")


def _check_maps(foreground: Any, affinities: Any, n_offsets: int) -> tuple[np.ndarray, ...]:
    fg = to_numpy(foreground)
    aff = to_numpy(affinities)
    for name, arr in (("foreground", fg), ("affinities", aff)):
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if fg.ndim != 2:
        raise ValueError(f"foreground must be an (H, W) map, got shape {fg.shape}")
    if aff.shape != (n_offsets, *fg.shape):
        raise ValueError(
            f"affinities must have shape (len(offsets), H, W) = {(n_offsets, *fg.shape)}, got "
            f"{aff.shape}"
        )
    if fg.size == 0:
        raise ValueError(f"foreground is empty (shape {fg.shape})")
    return check_finite(fg, "foreground"), check_finite(aff, "affinities")


def _raster_relabel(components: np.ndarray, mask: np.ndarray, min_size: int) -> np.ndarray:
    """Component ids of the ``mask`` pixels -> int32 labels 1..N in raster order of their first
    pixel, objects smaller than ``min_size`` pixels dropped."""
    labels = np.zeros(mask.shape, np.int32)
    if not mask.any():
        return labels
    comp = components[mask]
    sizes = np.bincount(comp)
    present, first = np.unique(comp, return_index=True)  # first pixel of each id
    ids = present[np.argsort(first, kind="stable")]  # in raster order
    ids = ids[sizes[ids] >= max(min_size, 1)]
    lut = np.zeros(sizes.size, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    labels[mask] = lut[comp]
    return labels


def affinity_components(
    mask: Any,
    affinities: Any,
    offsets: Sequence[tuple[int, int]],
    threshold: float = 0.5,
    *,
    min_size: int = 0,
) -> np.ndarray:
    """Connected components of the pixel graph: nodes are the ``mask`` pixels, and ``p`` joins
    ``p + offset`` when both are in ``mask`` and the affinity exceeds ``threshold``.

    Parameters
    ----------
    mask : np.ndarray, bool or real, shape (H, W)
        The foreground (nonzero = foreground).
    affinities : np.ndarray or torch.Tensor, real, shape (K, H, W)
        ``affinities[k, y, x]`` relates ``(y, x)`` to ``(y + dy_k, x + dx_k)``.
    offsets : sequence of K (int, int)
        The ``(dy, dx)`` of each channel; every channel given is used.
    threshold : float
        Edges with affinity strictly above it are kept.
    min_size : int
        Components with fewer pixels become background.

    Returns
    -------
    np.ndarray, int32, shape (H, W)
        Ids 1..N in raster order of each component's first pixel, 0 outside ``mask``.

    Introduced in notebook 10.
    """
    offsets = check_offsets(offsets)
    fg, aff = _check_maps(mask, affinities, len(offsets))
    threshold = check_real(threshold, "threshold")
    min_size = check_int(min_size, "min_size", minimum=0)
    fg = fg != 0
    h, w = fg.shape
    index = np.arange(h * w).reshape(h, w)
    rows, cols = [], []
    for k, (dy, dx) in enumerate(offsets):
        pair = pair_slices((h, w), (dy, dx))
        if pair is None:
            continue
        here, there = pair
        keep = fg[here] & fg[there] & (aff[k][here] > threshold)
        rows.append(index[here][keep])
        cols.append(index[there][keep])
    src = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    dst = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(src.size, np.int8), (src, dst)), shape=(h * w, h * w))
    _, components = connected_components(graph, directed=False)
    return _raster_relabel(components.reshape(h, w), fg, min_size)


def _landscape(aff: np.ndarray, offsets: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Per pixel, the mean affinity of the edges it takes part in (both ends), so that the
    border between two cells is a valley from either side."""
    total = np.zeros(aff.shape[1:], np.float64)
    count = np.zeros(aff.shape[1:], np.float64)
    for k, offset in enumerate(offsets):
        pair = pair_slices(total.shape, offset)
        if pair is None:
            continue
        here, there = pair
        for sl in (here, there):
            total[sl] += aff[k][here]
            count[sl] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def affinities_to_labels(
    foreground: Any,
    affinities: Any,
    offsets: Sequence[tuple[int, int]] = ((1, 0), (0, 1)),
    *,
    threshold: float = 0.5,
    foreground_threshold: float = 0.5,
    method: str = "components",
    seed_threshold: float = 0.9,
    min_size: int = 0,
) -> np.ndarray:
    """Instance labels from a foreground probability and affinities (probabilities).

    Parameters
    ----------
    foreground : np.ndarray or torch.Tensor, real, shape (H, W)
        Probability of each pixel to lie in an object, in [0, 1].
    affinities : np.ndarray or torch.Tensor, real, shape (K, H, W)
        Affinity probabilities for ``offsets`` (all of them are used: give the 1-pixel ones
        for the classic grouping).
    offsets : sequence of K (int, int)
        Default: one pixel down and one pixel right.
    threshold : float
        ``"components"``: edges with an affinity above it join their pixels.
    foreground_threshold : float
        Pixels with ``foreground > foreground_threshold`` are grouped, the rest is background.
    method : {"components", "watershed"}
        Connected components at ``threshold``, or seeds = components at ``seed_threshold``
        grown by a watershed on ``1 - mean affinity`` over the foreground (see the module).
    seed_threshold : float
        ``"watershed"`` only: the strict threshold of the seeds.
    min_size : int
        Objects (and watershed seeds) with fewer pixels are dropped.

    Returns
    -------
    np.ndarray, int32, shape (H, W)
        Ids 1..N consecutive, in raster order of each object's first pixel; 0 = background.

    Introduced in notebook 10.
    """
    offsets = check_offsets(offsets)
    fg, aff = _check_maps(foreground, affinities, len(offsets))
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    foreground_threshold = check_real(foreground_threshold, "foreground_threshold")
    min_size = check_int(min_size, "min_size", minimum=0)
    mask = fg > foreground_threshold
    if method == "components":
        return affinity_components(mask, aff, offsets, threshold, min_size=min_size)
    seeds = affinity_components(
        mask, aff, offsets, check_real(seed_threshold, "seed_threshold"), min_size=max(min_size, 1)
    )
    if not seeds.any():
        return seeds
    # Each seed floods the foreground it reaches (4-connected); pieces that no seed reaches
    # stay background.
    grown = watershed(1.0 - _landscape(aff, offsets), markers=seeds, mask=mask)
    return _raster_relabel(grown, grown > 0, min_size)
