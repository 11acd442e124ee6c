"""Time the U-Net weight map: course_utils against the naive one-distance-transform-per-cell map.

The naive version below is the notebook's hand-built one (Ronneberger 2015, eq. 2): for every
cell, a Euclidean distance transform of the whole image, keeping the two smallest distances per
pixel. ``course_utils.targets.unet_weight_map`` computes each cell's distance transform only
where its border term can matter. Both run in this process on the same label images; the
table shows the median time of each, their ratio and the largest difference.

Usage::

    python benchmarks/bench_weightmap.py           # 512x512 and 1024x1024, writes results/
    python benchmarks/bench_weightmap.py --quick   # a tiny image, prints only (smoke test)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import RESULTS_DIR, header, make_labels, median_time, write_results
from scipy import ndimage as ndi

from course_utils.targets import unet_weight_map


def naive_weight_map(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """One distance transform of the whole image per cell; balanced class weights."""
    background = labels == 0
    n, n_fg = labels.size, np.count_nonzero(labels)
    w_bg = n / (2 * (n - n_fg)) if n - n_fg else 0.0
    w_fg = n / (2 * n_fg) if n_fg else 0.0
    weights = np.where(background, w_bg, w_fg)
    ids = [i for i in np.unique(labels) if i != 0]
    if len(ids) < 2:
        return weights.astype(np.float32)
    # Keep the two smallest distances as we go: stacking 600 full-size maps needs ~5 GB.
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for i in ids:
        d = ndi.distance_transform_edt(labels != i)
        d2 = np.where(d < d1, d1, np.minimum(d2, d))
        d1 = np.minimum(d1, d)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return (weights + np.where(background, border, 0.0)).astype(np.float32)


def run(sizes: list[int], naive_repeats: int, fast_repeats: int) -> list[dict]:
    """Time both on each size; the naive map runs once from 1024x1024 on (~2 min there)."""
    rows = []
    print(f"{'size':>10} {'cells':>6} {'naive s':>9} {'ours s':>9} {'ratio':>7} {'cpu ratio':>9}")
    for size in sizes:
        n_naive = naive_repeats if size < 1024 else 1
        labels, source = make_labels(size)
        n_cells = len(np.unique(labels)) - 1
        # No warm-up calls (the naive map takes minutes at 1024x1024). CPU time is reported
        # too because other jobs share this machine's cores (both sides are single-threaded).
        naive = lambda lab=labels: naive_weight_map(lab)
        ours = lambda lab=labels: unet_weight_map(lab)
        t_naive, c_naive, slow = median_time(naive, n_naive, warmup=0)
        t_fast, c_fast, fast = median_time(ours, fast_repeats, warmup=0)
        diff = float(np.abs(np.asarray(slow) - np.asarray(fast)).max())
        if not diff < 1e-4:
            raise SystemExit(f"the two maps differ by {diff} at {size}x{size}")
        rows.append(
            {
                "size": [size, size],
                "n_objects": n_cells,
                "labels": source,
                "naive_s": round(t_naive, 4),
                "ours_s": round(t_fast, 4),
                "ratio": round(t_naive / t_fast, 1),
                "naive_cpu_s": round(c_naive, 4),
                "ours_cpu_s": round(c_fast, 4),
                "cpu_ratio": round(c_naive / c_fast, 1),
                "max_abs_diff": diff,
                "repeats": {"naive": n_naive, "ours": fast_repeats},
            }
        )
        print(
            f"{size:>4}x{size:<5} {n_cells:>6} {t_naive:>9.3f} {t_fast:>9.4f} "
            f"{t_naive / t_fast:>7.1f} {c_naive / c_fast:>9.1f}   (max diff {diff:.1e})"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny image, no results file")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args(argv)
    if args.quick:
        run([128], naive_repeats=1, fast_repeats=1)
        return
    rows = run([512, 1024], naive_repeats=3, fast_repeats=7)
    settings = {
        "naive": "one scipy.ndimage.distance_transform_edt of the whole image per cell",
        "ours": "course_utils.targets.unet_weight_map",
        "timing": "median wall-clock (and CPU) seconds, both in one process, shared machine",
    }
    title = "U-Net weight map (w0=10, sigma=5, balanced): naive vs course_utils"
    path = write_results(header("weightmap", title, settings=settings), rows, out_dir=args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
