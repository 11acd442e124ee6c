"""Affinities: for every pixel, does it belong to the same object as its neighbour?

The *grouping* family of instance segmentation (Turaga et al. 2010; Lee et al. 2017,
"superhuman" connectomics) predicts no object at all, only relations between pixels: the
affinity of a pixel ``p`` and its neighbour ``p + offset`` is 1 when both lie in the same
object and 0 otherwise. A grouping step (``course_utils.postprocess.affinities_to_labels``)
then joins the pixels that the affinities connect. Offsets of one pixel (down, right) carry the
whole segmentation; longer ones (3 and 9 pixels here: the long-range affinities of Lee et al.
2017) give the network a wider view of "same cell or not" to learn from.

Conventions: an offset ``(dy, dx)`` relates pixel ``(y, x)`` to ``(y + dy, x + dx)``, and the
affinity is stored at ``(y, x)``. Background pixels have affinity 0 to every pixel (the
foreground is a channel of its own), and a pair whose neighbour lies outside the image has
affinity 0 and is not *valid*: losses ignore it.

Introduced in notebook 10.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._shared.validate import check_int, check_labels

__all__ = [
    "AFFINITY_OFFSETS",
    "affinity_targets",
    "affinity_valid",
    "check_offsets",
    "label_affinities",
    "pair_slices",
]

#: Offsets (dy, dx) of the affinity method: 1 pixel down and right (the grouping uses these),
#: then 3 and 9 pixels (long-range affinities in the sense of Lee et al. 2017, for training).
AFFINITY_OFFSETS: tuple[tuple[int, int], ...] = ((1, 0), (0, 1), (3, 0), (0, 3), (9, 0), (0, 9))


def check_offsets(offsets: Any, name: str = "offsets") -> tuple[tuple[int, int], ...]:
    """``offsets`` as a tuple of ``(dy, dx)`` int pairs, none of them ``(0, 0)``; a clear
    ``ValueError`` (or ``TypeError`` for non-integers) naming ``name`` otherwise."""
    try:
        pairs = [tuple(o) for o in offsets]
    except TypeError:
        raise ValueError(f"{name} must be a sequence of (dy, dx) pairs, got {offsets!r}") from None
    if not pairs:
        raise ValueError(f"{name} is empty: give at least one (dy, dx) pair")
    out = []
    for k, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"{name}[{k}] must be a pair (dy, dx), got {pair!r}")
        dy, dx = (check_int(v, f"{name}[{k}]") for v in pair)
        if dy == 0 and dx == 0:
            raise ValueError(f"{name}[{k}] is (0, 0): a pixel is always in its own object")
        out.append((dy, dx))
    return tuple(out)


def pair_slices(shape: tuple[int, int], offset: tuple[int, int]):
    """Slices ``(here, there)`` such that ``a[here]`` and ``a[there]`` are the pixels ``p`` and
    ``p + offset`` of every pair inside an (H, W) image of ``shape`` (``None`` when there is
    no such pair: the offset is as long as the image)."""
    (h, w), (dy, dx) = shape, offset
    if abs(dy) >= h or abs(dx) >= w:
        return None
    here = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    there = (slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx)))
    return here, there


def label_affinities(
    labels: Any, offsets: Sequence[tuple[int, int]] = AFFINITY_OFFSETS
) -> np.ndarray:
    """The true affinities of a label image.

    Parameters
    ----------
    labels : np.ndarray, int, shape (H, W)
        Instance labels, 0 = background.
    offsets : sequence of (int, int)
        The neighbours ``(dy, dx)``; default :data:`AFFINITY_OFFSETS`.

    Returns
    -------
    np.ndarray, float32, shape (len(offsets), H, W)
        ``out[k, y, x] = 1`` when ``labels[y, x] > 0`` and ``labels[y + dy, x + dx]`` is the
        same id (the neighbour inside the image), else 0.

    Examples
    --------
    >>> lab = np.array([[1, 1, 2], [0, 2, 2]])
    >>> label_affinities(lab, [(0, 1)])[0]
    array([[1., 0., 0.],
           [0., 1., 0.]], dtype=float32)

    Introduced in notebook 10.
    """
    lab = check_labels(labels)
    offsets = check_offsets(offsets)
    out = np.zeros((len(offsets), *lab.shape), np.float32)
    for k, (dy, dx) in enumerate(offsets):
        pair = pair_slices(lab.shape, (dy, dx))
        if pair is None:
            continue
        here, there = pair
        a, b = lab[here], lab[there]
        out[k][here] = (a > 0) & (a == b)
    return out


def affinity_valid(
    shape: tuple[int, int],
    offsets: Sequence[tuple[int, int]] = AFFINITY_OFFSETS,
) -> np.ndarray:
    """Which pairs exist: ``(len(offsets), H, W)`` bool, False where ``p + offset`` lies
    outside an image of ``shape`` = (H, W)."""
    try:
        h, w = (check_int(s, "shape", minimum=1) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (H, W) of positive ints, got {shape!r}") from None
    offsets = check_offsets(offsets)
    valid = np.zeros((len(offsets), h, w), bool)
    for k, (dy, dx) in enumerate(offsets):
        pair = pair_slices((h, w), (dy, dx))
        if pair is not None:
            valid[k][pair[0]] = True
    return valid


def affinity_targets(
    labels: np.ndarray, offsets: Sequence[tuple[int, int]] = AFFINITY_OFFSETS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets of the affinity method for an integer (h, w) label patch.

    Returns three float32 arrays: the foreground ``(1, h, w)`` (1 inside objects), the
    affinities ``(K, h, w)`` of :func:`label_affinities` and the loss mask ``(K, h, w)``: 1 for
    the pairs that exist (:func:`affinity_valid`) and touch an object (``p`` or its neighbour
    in the foreground). Pairs of two background pixels are left to the foreground channel;
    pairs cut by the patch border are unknown (the object may go on outside the patch).

    Introduced in notebook 10b.
    """
    lab = check_labels(labels)
    offsets = check_offsets(offsets)
    fg = lab > 0
    near = np.zeros((len(offsets), *lab.shape), bool)
    for k, (dy, dx) in enumerate(offsets):
        pair = pair_slices(lab.shape, (dy, dx))
        if pair is not None:
            near[k][pair[0]] = fg[pair[0]] | fg[pair[1]]
    return (fg[None].astype(np.float32), label_affinities(lab, offsets), near.astype(np.float32))
