"""Cellpose flows speed: course_utils vs cellpose 4, labels -> flows and flows -> masks, CPU.

Inputs: synthetic touching nuclei (``course_utils.data.synthetic_nuclei``, via
``_common.make_labels``), 512x512 (~150 cells) and 1024x1024 (~600 cells).

- labels -> flows: ``course_utils.targets.masks_to_flows(labels, device="cpu")`` vs
  ``cellpose.dynamics.masks_to_flows_gpu(labels, device=cpu)``;
- flows -> masks: ``course_utils.postprocess.flows_to_masks`` vs ``cellpose.dynamics
  .compute_masks`` on the same inputs (5 x cellpose's unit flows, a cell-probability logit of
  +-4 from the labels, niter 200, flow threshold 0.4, min size 15).

Both run in this process with the same threads (``--threads``, default 2, for torch and numba)
and the same allocator setting. glibc's default allocator makes torch page-fault heavily on
large arrays here, so the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` = 1e9 unless ``--default-malloc`` is given; the JSON records which.
The outputs are compared too (mean cosine of the flows, F1 at IoU 0.5 of the masks), so that a
fast wrong answer cannot pass.

Usage: ``python benchmarks/bench_flows.py [--quick] [--repeats N] [--threads N]
[--default-malloc]``; writes ``benchmarks/results/flows_cpu.json`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from _common import (
    MALLOC,
    header,
    make_labels,
    median_time,
    print_table,
    reexec_with_malloc_tuning,
    write_results,
)


def _row(size, n_cells, step, ours, ref, agreement, source, repeats) -> dict:
    return {
        "size": size,
        "n_cells": n_cells,
        "step": step,
        "ours_s": round(ours.wall_s, 4),
        "cellpose_s": round(ref.wall_s, 4),
        "ratio": round(ref.wall_s / ours.wall_s, 2),
        "ours_cpu_s": round(ours.cpu_s, 4),
        "cellpose_cpu_s": round(ref.cpu_s, 4),
        "agreement": round(float(agreement), 5),
        "labels": source,
        "repeats": repeats,
    }


def bench_one(size: int, repeats: int) -> list[dict]:
    import torch
    from cellpose import dynamics
    from stardist.matching import matching

    from course_utils.postprocess import flows_to_masks
    from course_utils.targets import FLOW_SCALE, masks_to_flows

    cpu = torch.device("cpu")
    labels, source = make_labels(size)
    n_cells = int(labels.max())
    ours = median_time(lambda: masks_to_flows(labels, device="cpu"), repeats)
    ref = median_time(lambda: dynamics.masks_to_flows_gpu(labels, device=cpu)[0], repeats)
    cos = (ours.result * ref.result).sum(0)[labels > 0].mean()
    rows = [_row(size, n_cells, "labels->flows", ours, ref, cos, source, repeats)]

    dP = (FLOW_SCALE * ref.result).astype(np.float32)
    prob = np.where(labels > 0, 4.0, -4.0).astype(np.float32)
    ours = median_time(lambda: flows_to_masks(dP, prob, device="cpu"), repeats)
    ref = median_time(lambda: dynamics.compute_masks(dP, prob, min_size=15, device=cpu), repeats)
    f1 = matching(ref.result.astype(np.int32), ours.result, 0.5).f1
    rows.append(_row(size, n_cells, "flows->masks", ours, ref, f1, source, repeats))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny size, no results file")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's default allocator settings"
    )
    args = parser.parse_args(argv)
    if not args.default_malloc:
        reexec_with_malloc_tuning()
    try:
        import cellpose.dynamics  # noqa: F401
        import stardist.matching  # noqa: F401
    except ImportError:
        sys.exit("cellpose/stardist are not installed: pip install 'course_utils[reference]'")
    import numba
    import torch

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    sizes = [128] if args.quick else [512, 1024]
    load_before = os.getloadavg()[0]
    rows = []
    for size in sizes:
        repeats = args.repeats or (2 if args.quick else (5 if size <= 512 else 3))
        rows += bench_one(size, repeats)
    columns = ["size", "n_cells", "step", "ours_s", "cellpose_s", "ratio"]
    print_table(rows, columns + ["ours_cpu_s", "cellpose_cpu_s", "agreement"])
    bad = [r for r in rows if r["agreement"] < (0.95 if r["step"] == "labels->flows" else 0.98)]
    if bad:
        sys.exit("course_utils and cellpose disagree: see the agreement column")
    if not args.quick:
        settings = {
            "timing": "median wall-clock and process CPU seconds; both in one process; "
            "ratio = cellpose / ours (> 1: ours faster)",
            "agreement": "labels->flows: mean cosine over cell pixels; flows->masks: F1 at "
            "IoU 0.5 of our masks against cellpose's",
            "threads": args.threads,
            "malloc": "glibc default" if args.default_malloc else MALLOC,
            "note": "shared 2-core machine: other jobs ran at the same time, numbers are noisy",
            "load_average_1min": [load_before, os.getloadavg()[0]],
        }
        title = "Cellpose flows on the CPU: course_utils vs cellpose.dynamics"
        packages = ("cellpose", "torch", "numba")
        path = write_results(header("flows", title, settings=settings, packages=packages), rows)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
