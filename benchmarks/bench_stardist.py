"""StarDist speed: course_utils vs stardist's compiled code, on the CPU, on the same inputs.

Inputs: synthetic touching nuclei (``course_utils.data.synthetic_nuclei``, via
``_common.make_labels``), 512x512 (~150 nuclei) and 1024x1024 (~600); and real label images
(``_common.real_labels``): 1024x1024 tiles of the BBBC039 test masks and of the DSB2018 test
labels with the smallest nuclei (dense small nuclei), where the data is on this machine.

- ``star_dist``: labels -> (H, W, 32) radial distances
  (``course_utils.targets.star_dist`` vs ``stardist.geometry.star_dist``, C++/OpenMP);
- ``nms``: polygon non-maximum suppression on prediction-like inputs: ``edt_prob`` and
  ``star_dist`` of the labels with noise (distances +- 0.5 px, probability +- 0.025), so every
  nucleus has many overlapping candidates (prob_thresh 0.5, nms_thresh 0.4)
  (``course_utils.postprocess.non_maximum_suppression`` vs ``stardist.nms``, C++ / Clipper);
- ``polygons_to_label``: the kept polygons -> labels (vs ``stardist.geometry``, skimage).

Both sides run in this process, one after the other, on the same arrays. The reference uses
OpenMP with ``--threads`` threads (default 2, set before it is loaded); ours is numba, its
``star_dist`` on as many threads, NMS and rendering single-threaded. The outputs are compared
too (largest distance difference; share of kept polygons both keep; F1 at IoU 0.5 of the
rendered labels), so a fast wrong answer cannot pass. Both return new arrays of (H, W, 32)
float32 (128 MB at 1024^2): the script re-executes itself with glibc's allocator keeping large
blocks (``_common.MALLOC``) unless ``--default-malloc`` is given, so that page faults of
fresh memory, costly on this machine, do not drown the kernels; the JSON records which.
``--torch`` adds the PyTorch ``star_dist`` (on CUDA when there is one, else the CPU).

Usage: ``python benchmarks/bench_stardist.py [--quick] [--repeats N] [--threads N] [--torch]
[--default-malloc]``; writes ``benchmarks/results/stardist_cpu.json`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np
from _common import (
    MALLOC,
    header,
    make_labels,
    median_time,
    print_table,
    real_labels,
    reexec_with_malloc_tuning,
    write_results,
)


def nms_inputs(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from course_utils.targets import edt_prob, star_dist

    rng = np.random.default_rng(seed)
    dist = star_dist(labels, 32)
    dist = np.clip(dist + rng.normal(0, 0.5, dist.shape), 0, None).astype(np.float32)
    prob = (edt_prob(labels) + rng.normal(0, 0.025, labels.shape)).astype(np.float32)
    return dist, prob


def _row(size, n_obj, step, ours, ref, agreement, measure, source, repeats, **extra) -> dict:
    return {
        "size": size,
        "n_nuclei": n_obj,
        "step": step,
        "ours_s": round(ours.wall_s, 4),
        "stardist_s": round(ref.wall_s, 4) if ref else None,
        "ratio": round(ref.wall_s / ours.wall_s, 2) if ref else None,
        "ours_cpu_s": round(ours.cpu_s, 4),
        "stardist_cpu_s": round(ref.cpu_s, 4) if ref else None,
        "agreement": round(float(agreement), 6),
        "agreement_measure": measure,
        **extra,
        "labels": source,
        "repeats": repeats,
    }


def bench_one(labels: np.ndarray, source: str, repeats: int, with_torch: bool) -> list[dict]:
    from stardist.geometry import polygons_to_label as sd_p2l
    from stardist.geometry import star_dist as sd_star_dist
    from stardist.matching import matching
    from stardist.nms import non_maximum_suppression as sd_nms

    from course_utils.postprocess import non_maximum_suppression, polygons_to_label
    from course_utils.targets import star_dist

    size = labels.shape[0]
    n_obj = len(np.unique(labels[labels > 0]))
    ours = median_time(lambda: star_dist(labels, 32), repeats)
    ref = median_time(lambda: sd_star_dist(labels, 32), repeats)
    diff = np.abs(ours.result - ref.result).max()
    rows = [_row(size, n_obj, "star_dist", ours, ref, diff, "max |diff| px", source, repeats)]
    if with_torch:
        rows.append(_torch_row(labels, ref, size, n_obj, source))

    dist, prob = nms_inputs(labels)
    n_cand = int(np.count_nonzero(prob > 0.5))
    ours = median_time(lambda: non_maximum_suppression(dist, prob, nms_thresh=0.4), repeats)
    ref = median_time(lambda: sd_nms(dist, prob, prob_thresh=0.5, nms_thresh=0.4), repeats)
    a, b = set(map(tuple, ours.result[0])), set(map(tuple, ref.result[0]))
    agree = len(a & b) / max(len(a | b), 1)
    rows.append(
        _row(
            size,
            n_obj,
            "nms",
            ours,
            ref,
            agree,
            "kept both / kept either",
            source,
            repeats,
            candidates=n_cand,
            kept=len(a),
        )
    )

    points, scores, kept = ref.result
    ours = median_time(lambda: polygons_to_label(kept, points, labels.shape, prob=scores), repeats)
    ref = median_time(lambda: sd_p2l(kept, points, labels.shape, prob=scores), repeats)
    f1 = matching(ref.result, ours.result, thresh=0.5).f1
    rows.append(
        _row(size, n_obj, "polygons_to_label", ours, ref, f1, "F1 @ IoU 0.5", source, repeats)
    )
    return rows


def _torch_row(labels, ref, size, n_obj, source) -> dict:
    import torch

    from course_utils.targets import star_dist

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        # Small tensor ops: torch's thread pool only fights OpenMP's spinning threads here.
        torch.set_num_threads(1)
    lab = torch.from_numpy(labels).to(dev)

    def run():
        out = star_dist(lab, 32)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    repeats = 5 if dev.type == "cuda" else 1
    ours = median_time(run, repeats)
    diff = np.abs(ours.result.cpu().numpy() - ref.result).max()
    return _row(
        size,
        n_obj,
        f"star_dist (torch {dev.type})",
        ours,
        ref,
        diff,
        "max |diff| px",
        source,
        repeats,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny size, no results file")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case")
    parser.add_argument("--threads", type=int, default=2, help="OpenMP threads of stardist")
    parser.add_argument("--torch", action="store_true", help="also time the torch star_dist")
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's default allocator settings"
    )
    args = parser.parse_args(argv)
    if not args.default_malloc:
        reexec_with_malloc_tuning()
    # Read by OpenMP when stardist's compiled library is loaded, so it must be set before.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    try:
        import stardist.geometry  # noqa: F401
        import stardist.nms  # noqa: F401
    except ImportError:
        sys.exit("stardist is not installed: pip install 'course_utils[reference]'")
    cases = [make_labels(size) for size in ([128] if args.quick else [512, 1024])]
    if not args.quick:
        cases += [c for c in (real_labels(d, 1024) for d in ("bbbc039", "dsb2018")) if c]
    rows = []
    for labels, source in cases:
        repeats = args.repeats or (2 if args.quick else (5 if labels.shape[0] <= 512 else 3))
        rows += bench_one(labels, source, repeats, args.torch)
    columns = ["size", "n_nuclei", "step", "ours_s", "stardist_s", "ratio", "ours_cpu_s"]
    print_table(rows, columns + ["stardist_cpu_s", "agreement"])
    bad = [
        r
        for r in rows
        if (r["agreement"] > 1e-3 if r["step"].startswith("star_dist") else r["agreement"] < 0.99)
    ]
    if bad:
        sys.exit("course_utils and stardist disagree: see the agreement column")
    if not args.quick:
        settings = {
            "timing": "median wall-clock and process CPU seconds; both in one process; "
            "ratio = stardist / ours (> 1: ours faster)",
            "inputs": "nms: edt_prob and star_dist of the labels plus noise (0.5 px, 0.025); "
            "polygons_to_label: the polygons stardist's NMS kept",
            "threads": f"stardist: OpenMP, {args.threads}; course_utils: numba, star_dist on "
            f"{numba.get_num_threads()} threads, NMS and rendering on 1",
            "malloc": "glibc default" if args.default_malloc else MALLOC,
        }
        title = "StarDist on the CPU: course_utils vs stardist's compiled code"
        packages = ("stardist", "numba")
        path = write_results(header("stardist", title, settings=settings, packages=packages), rows)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
