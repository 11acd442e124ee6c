"""Consecutive ids for label images, whatever ids they come with (sparse, huge, uint64).

Kernels index arrays by label id, so they work on ids ``1..n``. A label image with ids such as
``2**31 - 1`` or ``2**60`` is relabelled first (:func:`relabel_consecutive`), and results that
carry ids are mapped back to the caller's (:func:`restore_ids`).
"""

from __future__ import annotations

import numpy as np


def relabel_consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map the ids of ``labels`` (non-negative ints) to 1..n in increasing order; 0 stays 0.

    Returns the int32 relabelled image and n. A lookup table keeps this O(pixels) when the
    largest id is not much bigger than the image; otherwise a sort is used (any id size).
    """
    lab, ids = relabel_with_ids(labels)
    return lab, int(ids.size)


def relabel_with_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(relabelled, ids)``: int32 labels 1..n (0 = background) and the original id of each,
    ``ids[k - 1]`` for label ``k``, in the input's dtype, increasing."""
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if top == 0:
        return np.zeros(labels.shape, np.int32), np.zeros(0, labels.dtype)
    if top <= 4 * labels.size + 1024:
        present = np.zeros(top + 1, bool)
        present[labels] = True
        present[0] = False
        lut = np.cumsum(present, dtype=np.int64).astype(np.int32)
        lut[0] = 0
        return lut[labels], np.flatnonzero(present).astype(labels.dtype)
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.int32)
    if ids[0] != 0:
        inverse += 1
    else:
        ids = ids[1:]
    return inverse, ids


def restore_ids(relabelled: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Undo :func:`relabel_with_ids` on an image of labels 0..n: the caller's ids, their dtype."""
    table = np.concatenate([np.zeros(1, ids.dtype), ids])
    return table[relabelled]
