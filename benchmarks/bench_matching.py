"""Instance matching speed: ``course_utils.metrics.matching`` vs ``stardist.matching.matching``.

Inputs: synthetic touching nuclei (``course_utils.data.synthetic_nuclei``, via
``_common.make_labels``), 512x512 (~150 objects) and 2048x2048 (~2400); the prediction is
the truth perturbed (eroded and dilated outlines, a shift, missed and merged objects, false
objects, shuffled non-consecutive ids). Both functions run in this process on the same arrays,
at one threshold (0.5) and at the 10 AP thresholds 0.5:0.95 (one call each). The results are
also compared (tp at every threshold) so that a fast wrong answer cannot pass.

Usage: ``python benchmarks/bench_matching.py [--quick] [--repeats N]``; writes
``benchmarks/results/matching_cpu.json`` (not with ``--quick``, which only smoke-tests).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import header, make_labels, median_time, print_table, write_results

from course_utils.metrics import matching

AP_THRESHOLDS = [round(t, 2) for t in np.arange(0.5, 1.0, 0.05)]


def perturb(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plausible prediction from the truth (every common failure a little)."""
    from skimage.draw import disk
    from skimage.segmentation import expand_labels, find_boundaries

    rng = np.random.default_rng(seed)
    ids = np.unique(labels[labels > 0])
    y = labels.copy()
    y[np.isin(y, rng.choice(ids, len(ids) // 4)) & find_boundaries(y, mode="inner")] = 0
    y = np.where(np.isin(labels, rng.choice(ids, len(ids) // 4)), expand_labels(y, 2), y)
    y = np.roll(y, (1, -2), axis=(0, 1))
    y[np.isin(y, rng.choice(ids, len(ids) // 10, replace=False))] = 0
    right = np.roll(y, -1, axis=1)
    pairs = np.unique(np.stack([y, right], -1)[(y > 0) & (right > 0) & (y != right)], axis=0)
    merge = dict(pairs[rng.permutation(len(pairs))[: len(pairs) // 15]])
    lut = np.arange(y.max() + 1)
    lut[list(merge)] = list(merge.values())
    y = lut[y]
    for k in range(len(ids) // 20):
        rr, cc = disk(tuple(rng.uniform(0, y.shape[0], 2)), 6, shape=y.shape)
        free = y[rr, cc] == 0
        y[rr[free], cc[free]] = ids.max() + 1 + k
    relabel = np.concatenate(([0], rng.choice(10**7, y.max(), replace=False) + 1))
    return relabel[y].astype(np.int32)


def bench_one(size: int, repeats: int, sd_matching) -> list[dict]:
    y_true, source = make_labels(size)
    y_pred = perturb(y_true)
    rows = []
    for name, thresh in (("0.5", 0.5), ("AP 0.5:0.95", AP_THRESHOLDS)):
        ours = median_time(lambda t=thresh: matching(y_true, y_pred, t), repeats)
        ref = median_time(lambda t=thresh: sd_matching(y_true, y_pred, t), repeats)
        many = isinstance(thresh, list)
        ours_res = list(ours.result) if many else [ours.result]
        ref_res = list(ref.result) if many else [ref.result]  # a namedtuple when single
        rows.append(
            {
                "size": size,
                "n_true": int(ours_res[0].n_true),
                "n_pred": int(ours_res[0].n_pred),
                "thresh": name,
                "ours_ms": round(1e3 * ours.wall_s, 3),
                "stardist_ms": round(1e3 * ref.wall_s, 3),
                "ratio": round(ref.wall_s / ours.wall_s, 1),
                "ours_cpu_ms": round(1e3 * ours.cpu_s, 3),
                "stardist_cpu_ms": round(1e3 * ref.cpu_s, 3),
                "cpu_ratio": round(ref.cpu_s / max(ours.cpu_s, 1e-9), 1),
                "same_tp": [a.tp for a in ours_res] == [b.tp for b in ref_res],
                "tp@0.5": int(ours_res[0].tp),
                "labels": source,
                "repeats": repeats,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny size, no results file")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case")
    args = parser.parse_args(argv)
    try:
        from stardist.matching import matching as sd_matching
    except ImportError:
        sys.exit("stardist is not installed: pip install 'course_utils[reference]'")
    sizes = [128] if args.quick else [512, 2048]
    rows = []
    for size in sizes:
        repeats = args.repeats or (3 if args.quick else (15 if size <= 512 else 5))
        rows += bench_one(size, repeats, sd_matching)
    columns = ["size", "n_true", "thresh", "ours_ms", "stardist_ms", "ratio"]
    print_table(rows, columns + ["ours_cpu_ms", "stardist_cpu_ms", "cpu_ratio", "same_tp"])
    if not all(r["same_tp"] for r in rows):
        sys.exit("course_utils and stardist disagree on tp: see the same_tp column")
    if not args.quick:
        settings = {
            "timing": "median wall-clock and process CPU ms; both in one process; "
            "ratio = stardist / ours (> 1: ours faster)",
        }
        title = "instance matching: course_utils.metrics.matching vs stardist"
        path = write_results(
            header("matching", title, settings=settings, packages=("stardist",)), rows
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
