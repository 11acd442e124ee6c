"""Segment a large image block by block: the network and the post-processing see one block at a
time, and only the int32 labels are whole-size.

A whole-slide tile of 4096 x 4096 pixels would otherwise hold the network's outputs and every
array of the post-processing at full size (gigabytes for Cellpose's flow following). Each block
is segmented with a margin of context on every side; an object belongs to the block whose kept
area (the block without its margins) holds its centroid, so that an object near a block's edge
is taken from the neighbour that sees it whole, and each object is pasted once. StarDist's
``predict_instances_big`` works the same way (blocks, context, objects kept by their block).

Used by ``course_utils.segment``; the blocks' starts are multiples of 64 pixels, so every
network of the course sees the same pooling grid in each block as in the whole image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["BLOCK", "BLOCK_MARGIN", "block_spans", "segment_blocks"]

#: Side of a block (pixels) and the margin of context each block has beyond its kept area. An
#: object wider than the margin may be cut at a block's edge: the course's models see nuclei
#: of about 28 px after rescaling, well inside it.
BLOCK, BLOCK_MARGIN = 1024, 64


def block_spans(n: int, block: int | None = None, margin: int | None = None) -> list[tuple]:
    """``(start, stop, kept start, kept stop)`` of the blocks along an axis of ``n`` pixels.

    The kept areas tile ``[0, n)`` without overlap; each block reaches ``margin`` pixels (at
    least, starts rounded down to a multiple of 64) beyond its kept area, within the image.
    One block when ``n <= block``.
    """
    block = BLOCK if block is None else block
    margin = BLOCK_MARGIN if margin is None else margin
    if n <= block:
        return [(0, n, 0, n)]
    step = block - 2 * margin
    spans = []
    for keep in range(0, n, step):
        start = max(0, keep - margin) // 64 * 64
        spans.append((start, min(n, keep + step + margin), keep, min(n, keep + step)))
    return spans


def _centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean row and column (float64, indexed by id, entry 0 unused) of every id of ``labels``."""
    ids = labels.ravel()
    n = int(ids.max()) + 1 if ids.size else 1
    count = np.maximum(np.bincount(ids, minlength=n), 1)
    rows = np.repeat(np.arange(labels.shape[0]), labels.shape[1])
    cols = np.tile(np.arange(labels.shape[1]), labels.shape[0])
    return (
        np.bincount(ids, rows, minlength=n) / count,
        np.bincount(ids, cols, minlength=n) / count,
    )


def segment_blocks(
    segment_one: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    *,
    block: int | None = None,
    margin: int | None = None,
    bar: Any = None,
) -> np.ndarray:
    """Labels (int32, ``image``'s (H, W)) of a large image from ``segment_one(block) -> labels``.

    ``image``: (H, W) or (C, H, W). Each object found in a block is kept when its centroid lies
    in the block's kept area (:func:`block_spans`); kept objects get consecutive ids, and where
    two overlap at a seam the one pasted first keeps the pixels. ``bar`` (tqdm) advances by one
    per block.
    """
    height, width = image.shape[-2:]
    spans = [
        (r, c)
        for r in block_spans(height, block, margin)
        for c in block_spans(width, block, margin)
    ]
    if bar is not None:
        bar.total += len(spans)
        bar.refresh()
    result = np.zeros((height, width), np.int32)
    next_id = 1
    for (y0, y1, ky0, ky1), (x0, x1, kx0, kx1) in spans:
        labels = np.asarray(segment_one(image[..., y0:y1, x0:x1]))
        cy, cx = _centroids(labels)
        keep = (cy + y0 >= ky0) & (cy + y0 < ky1) & (cx + x0 >= kx0) & (cx + x0 < kx1)
        keep[0] = False
        new = np.zeros(len(keep), np.int32)
        new[keep] = np.arange(next_id, next_id + int(keep.sum()), dtype=np.int32)
        next_id += int(keep.sum())
        region = result[y0:y1, x0:x1]
        paste = keep[labels] & (region == 0)
        region[paste] = new[labels[paste]]
        if bar is not None:
            bar.update(1)
    present = np.bincount(result.ravel(), minlength=next_id) > 0
    if not present[1:].all():  # an object that lost every pixel at a seam: close the gap
        present[0] = False
        lookup = np.zeros(next_id, np.int32)
        lookup[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
        result = lookup[result]
    return result
