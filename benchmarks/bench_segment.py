"""``course_utils.segment`` on large images: seconds per megapixel and peak memory, CPU.

A whole-slide tile is what a user brings after the course: ``segment`` must neither slow down
per pixel nor hold the whole image's intermediate arrays at once. Each run is one
``segment(image, method, diameter=...)`` call in a fresh process (so that its peak resident
memory, ``ru_maxrss``, is its own), for images of about 0.25, 4 and 16.8 megapixels (512^2,
2048^2, 4096^2) made by tiling synthetic touching nuclei (``synthetic_nuclei``, 1024^2, seeded,
nuclei of about 28 px: the zoo's training diameter, so that the work is the image's own),
with the nucleus diameter given (the labels' median) and estimated (``diameter=None``). The
zoo's model of each method is used. Reported per run: wall seconds, seconds per megapixel,
peak resident memory of the process (MB, torch and the model included) and the number of
objects found; and per method the ratio of the largest image's seconds per megapixel to the
smallest's (goal: at most 1.3).

Usage: ``python benchmarks/bench_segment.py [--quick] [--methods cellpose ...] [--sides 512
2048 4096] [--threads 2]``; writes ``benchmarks/results/segment_cpu.json`` (not with
``--quick``, which runs 256^2 and 1280^2 with the Cellpose-style model only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from _common import header, print_table, write_results

METHODS = ("cellpose", "stardist", "unet_3class", "unet_weighted")


def _image(side: int) -> tuple[np.ndarray, float]:
    """A ``side`` x ``side`` image tiled from a 1024^2 synthetic one, and its median diameter."""
    from course_utils.data import synthetic_nuclei
    from course_utils.scale import median_diameter

    # nuclei of about the zoo's training diameter (28 px), as a user's image at the right scale
    image, labels = synthetic_nuclei((1024, 1024), n_nuclei=220, radius=(11.0, 18.0), seed=0)
    reps = -(-side // 1024)
    return np.tile(image, (reps, reps))[:side, :side], median_diameter(labels)


def _child(method: str, side: int, estimate: bool) -> dict:
    """One ``segment`` call in this (fresh) process: time, peak memory, objects."""
    import course_utils as cu

    image, diameter = _image(side)
    cu.zoo.load(method)  # read the weights before the clock starts
    start = time.perf_counter()
    labels = cu.segment(image, method, None if estimate else diameter, progress=False)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "objects": int(labels.max())}


def _run(method: str, side: int, estimate: bool, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "COURSE_DEVICE": "cpu"}
    cmd = [sys.executable, __file__, "--child", method, str(side), str(int(estimate))]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    megapixels = side * side / 1e6
    return {
        "method": method,
        "megapixels": round(megapixels, 2),
        "diameter": "estimated" if estimate else "given",
        "seconds": round(found["seconds"], 2),
        "s_per_mp": round(found["seconds"] / megapixels, 2),
        "peak_mb": round(found["peak_mb"]),
        "objects": found["objects"],
    }


def _ratios(rows: list[dict]) -> list[dict]:
    """Per method and diameter mode: seconds per megapixel, largest image over smallest."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        for mode in ("given", "estimated"):
            mine = [r for r in rows if (r["method"], r["diameter"]) == (method, mode)]
            mine.sort(key=lambda r: r["megapixels"])
            if len(mine) >= 2:
                ratio = mine[-1]["s_per_mp"] / mine[0]["s_per_mp"]
                peak = max(r["peak_mb"] for r in mine)
                out.append(
                    {
                        "method": method,
                        "diameter": mode,
                        "largest_over_smallest": round(ratio, 2),
                        "max_peak_mb": peak,
                    }
                )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--methods", nargs="+", default=["cellpose"], choices=METHODS)
    p.add_argument("--sides", nargs="+", type=int, default=[512, 2048, 4096])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        method, side, estimate = args.child
        print(json.dumps(_child(method, int(side), bool(int(estimate)))))
        return
    methods, sides = (["cellpose"], [256, 1280]) if args.quick else (args.methods, args.sides)
    rows = []
    for method in methods:
        for side in sides:
            for estimate in (False, True):
                rows.append(_run(method, side, estimate, args.threads))
                print_table(rows[-1:])
    ratios = _ratios(rows)
    print_table(rows)
    print_table(ratios)
    if not args.quick:
        settings = {"threads": args.threads, "image": "synthetic_nuclei 1024^2 (28 px), tiled"}
        title = "segment() on large images: s/megapixel, peak memory"
        head = header("segment", title, settings=settings, packages=("torch",))
        path = write_results(head, rows, extra_tables={"ratios": ratios}, merge_on=("method",))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
