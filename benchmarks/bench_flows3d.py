"""3-D Cellpose speed: course_utils vs cellpose 4, flows of label volumes, 3-D masks, stitching.

Inputs: the label volume stardist ships (``stardist.data.test_image_nuclei_3d``, 31 x 61 x 57,
real nuclei), and the same volume tiled 2 x 2 in y and x and 2 x 2 x 2 (ids kept apart), ids
made consecutive (cellpose's 3-D flows need ids 1..n).

- labels -> flows: ``course_utils.targets.flows3d.flows_3d(labels, device="cpu")`` vs
  ``cellpose.dynamics.masks_to_flows_gpu_3d(labels, device=cpu)``; agreement: the largest
  absolute difference of the unit flows;
- flows -> masks: ``course_utils.postprocess.flows3d.flows_to_masks_3d`` vs ``cellpose.dynamics
  .compute_masks(do_3D=True, flow_threshold=None, min_size=15)`` on the same inputs (5 x
  cellpose's unit flows, a cell-probability logit of +-4 from the labels, niter 200);
  agreement: F1 at IoU 0.5 of our masks against cellpose's;
- stitching: ``course_utils.postprocess.flows3d.stitch_planes`` vs ``cellpose.utils.stitch3D``
  (threshold 0.25) on the 2-D labels of every plane (``skimage.measure.label`` per plane);
  agreement: the fraction of voxels with the same id (1.0: identical).

Both run in this process with the same threads (``--threads``, default 2, for torch and numba)
and the same allocator setting: the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_``
and ``MALLOC_TRIM_THRESHOLD_`` = 1e9 unless ``--default-malloc`` is given (glibc's default makes
torch page-fault heavily here); the JSON records which.

Usage: ``python benchmarks/bench_flows3d.py [--quick] [--repeats N] [--threads N]
[--default-malloc]``; writes ``benchmarks/results/flows3d_cpu.json`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
from _common import (
    MALLOC,
    header,
    median_time,
    print_table,
    reexec_with_malloc_tuning,
    write_results,
)

#: Smallest agreement accepted per step (flows: largest difference, so the largest accepted).
MIN_AGREEMENT = {"flows->masks": 0.98, "stitching": 1.0}
MAX_FLOW_DIFF = 1e-4


def _tile(labels: np.ndarray, reps: tuple[int, int, int]) -> np.ndarray:
    """``labels`` repeated ``reps`` times along (z, y, x), each copy's ids kept apart."""
    out = np.tile(labels, reps)
    copy = np.indices(reps).reshape(len(reps), -1).T  # the index of each copy
    for k, (a, b, c) in enumerate(copy):
        Z, Y, X = labels.shape
        block = out[a * Z : (a + 1) * Z, b * Y : (b + 1) * Y, c * X : (c + 1) * X]
        block[block > 0] += k * labels.max()
    return out


def volumes(quick: bool) -> dict[str, np.ndarray]:
    """Named label volumes (int32, ids 1..n): stardist's test volume, cropped or tiled."""
    from skimage.segmentation import relabel_sequential
    from stardist.data import test_image_nuclei_3d

    labels = test_image_nuclei_3d(return_mask=True)[1].astype(np.int32)
    if quick:
        found = {"test volume, cropped": labels[:, :24, :24]}
    else:
        found = {
            "test volume": labels,
            "test volume tiled 1x2x2": _tile(labels, (1, 2, 2)),
            "test volume tiled 2x2x2": _tile(labels, (2, 2, 2)),
        }
    return {k: relabel_sequential(v)[0].astype(np.int32) for k, v in found.items()}


def _row(
    name: str, labels: np.ndarray, step: str, ours: Any, ref: Any, agreement: float, repeats: int
) -> dict:
    return {
        "volume": name,
        "shape": "x".join(map(str, labels.shape)),
        "n_cells": int(labels.max()),
        "step": step,
        "ours_s": round(ours.wall_s, 4),
        "cellpose_s": round(ref.wall_s, 4),
        "ratio": round(ref.wall_s / ours.wall_s, 2),
        "ours_cpu_s": round(ours.cpu_s, 4),
        "cellpose_cpu_s": round(ref.cpu_s, 4),
        "agreement": float(f"{agreement:.5g}"),
        "repeats": repeats,
    }


def bench_one(name: str, labels: np.ndarray, repeats: int) -> list[dict]:
    import torch
    from cellpose import dynamics, utils
    from skimage.measure import label
    from stardist.matching import matching

    from course_utils.postprocess.flows3d import flows_to_masks_3d, stitch_planes
    from course_utils.targets.flows import FLOW_SCALE
    from course_utils.targets.flows3d import flows_3d

    cpu = torch.device("cpu")
    ours = median_time(lambda: flows_3d(labels, device="cpu"), repeats)
    ref = median_time(lambda: dynamics.masks_to_flows_gpu_3d(labels, device=cpu), repeats)
    diff = np.abs(ours.result - ref.result).max()
    rows = [_row(name, labels, "labels->flows", ours, ref, diff, repeats)]

    dP = (FLOW_SCALE * ref.result).astype(np.float32)
    prob = np.where(labels > 0, 4.0, -4.0).astype(np.float32)
    ours = median_time(lambda: flows_to_masks_3d(dP, prob, device="cpu"), repeats)
    ref = median_time(
        lambda: dynamics.compute_masks(
            dP, prob, do_3D=True, flow_threshold=None, min_size=15, device=cpu
        ),
        repeats,
    )
    f1 = matching(ref.result.astype(np.int32), ours.result, 0.5).f1
    rows.append(_row(name, labels, "flows->masks", ours, ref, f1, repeats))

    planes = np.stack([label(p) for p in labels]).astype(np.int32)
    ours = median_time(lambda: stitch_planes(planes, 0.25), repeats)
    ref = median_time(lambda: utils.stitch3D(planes.copy(), 0.25), repeats)  # changes its input
    same = np.mean(ours.result == ref.result)
    rows.append(_row(name, labels, "stitching", ours, ref, same, repeats))
    return rows


def _disagreements(rows: list[dict]) -> list[dict]:
    bad = [r for r in rows if r["step"] == "labels->flows" and r["agreement"] > MAX_FLOW_DIFF]
    return bad + [r for r in rows if r["agreement"] < MIN_AGREEMENT.get(r["step"], -1.0)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small volume, no results file")
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
    load_before = os.getloadavg()[0]
    rows = []
    for name, labels in volumes(args.quick).items():
        repeats = args.repeats or (2 if args.quick else 3)
        rows += bench_one(name, labels, repeats)
    columns = ["volume", "shape", "n_cells", "step", "ours_s", "cellpose_s", "ratio"]
    print_table(rows, columns + ["ours_cpu_s", "cellpose_cpu_s", "agreement"])
    if _disagreements(rows):
        sys.exit("course_utils and cellpose disagree: see the agreement column")
    if not args.quick:
        settings = {
            "timing": "median wall-clock and process CPU seconds; both in one process; "
            "ratio = cellpose / ours (> 1: ours faster)",
            "agreement": "labels->flows: largest absolute difference of the unit flows; "
            "flows->masks: F1 at IoU 0.5 of our masks against cellpose's; stitching: fraction "
            "of voxels with the same id",
            "threads": args.threads,
            "malloc": "glibc default" if args.default_malloc else MALLOC,
            "note": "shared 2-core machine: other jobs ran at the same time, numbers are noisy",
            "load_average_1min": [load_before, os.getloadavg()[0]],
        }
        title = "3-D Cellpose on the CPU: course_utils vs cellpose.dynamics and cellpose.utils"
        packages = ("cellpose", "torch", "numba")
        path = write_results(header("flows3d", title, settings=settings, packages=packages), rows)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
