"""The end-point clustering kernels of ``flows_to_masks`` (compiled with numba).

After flow following, the end points are counted in a histogram of whole pixels;
:func:`find_peaks` finds the seeds and :func:`grow_seeds` grows them into masks of bins, as the
reference implementation (cellpose 4) does. See :mod:`course_utils.postprocess.flows`.
"""

from __future__ import annotations

import numpy as np

from .._shared.jit import numba

__all__ = ["find_peaks", "grow_seeds"]


@numba.njit(cache=True)
def find_peaks(hist: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Flat indices (int64) of the bins holding > 10 points that are 5 x 5 local maxima."""
    H, W = hist.shape
    peaks = np.zeros(H * W, np.int64)
    n = 0
    for y in range(H):
        for x in range(W):
            h = hist[y, x]
            if h <= 10:
                continue
            peak = True  # ties count as maxima, as in the reference
            for yy in range(max(y - 2, 0), min(y + 3, H)):
                for xx in range(max(x - 2, 0), min(x + 3, W)):
                    peak = peak and hist[yy, xx] <= h
            if peak:
                peaks[n] = y * W + x
                n += 1
    return peaks[:n]


@numba.njit(cache=True)
def grow_seeds(hist: np.ndarray, seeds: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Mask id per bin (int32, 0 = none); ``seeds`` (flat indices) sorted by increasing count.

    Each seed grows alone, 5 times by one pixel (3 x 3) through bins holding > 2 points; where
    grown seeds overlap, the later (larger) one wins.
    """
    H, W = hist.shape
    ids = np.zeros((H, W), np.int32)
    grown = np.zeros((11, 11), np.bool_)
    for rank in range(seeds.size):
        sy, sx = seeds[rank] // W - 5, seeds[rank] % W - 5
        grown[:] = False
        grown[5, 5] = True
        for _ in range(5):
            prev = grown.copy()
            for a in range(11):
                for b in range(11):
                    y, x = sy + a, sx + b
                    if grown[a, b] or not (0 <= y < H and 0 <= x < W) or hist[y, x] <= 2:
                        continue
                    for aa in range(max(a - 1, 0), min(a + 2, 11)):
                        for bb in range(max(b - 1, 0), min(b + 2, 11)):
                            grown[a, b] = grown[a, b] or prev[aa, bb]
        for a in range(11):
            for b in range(11):
                if grown[a, b]:
                    ids[sy + a, sx + b] = max(ids[sy + a, sx + b], rank + 1)
    return ids
