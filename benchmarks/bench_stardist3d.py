"""StarDist-3D speed: 3-D ray distances of course_utils vs stardist's compiled code, on the CPU.

Inputs: the label volume stardist ships (``stardist.data.test_image_nuclei_3d``, 31 x 61 x 57,
real nuclei), and the same volume tiled 2 x 2 in y and x (ids kept apart), both with 96 rays on a
golden spiral (StarDist-3D's default), isotropic and with anisotropy (2.2, 1, 1).
``course_utils.targets.star_distances_3d`` (numba, parallel over z planes) against
``stardist.geometry.star_dist3D`` (C++/OpenMP), both with ``--threads`` threads, in one process on
the same arrays; the largest distance difference is reported, so a fast wrong answer cannot pass.

Usage: ``python benchmarks/bench_stardist3d.py [--quick] [--repeats N] [--threads N]``; writes
``benchmarks/results/stardist3d_cpu.json`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from _common import header, median_time, print_table, write_results


def volumes(quick: bool) -> dict[str, np.ndarray]:
    """Named label volumes: stardist's test volume, and it tiled 2 x 2 (not with ``quick``)."""
    from stardist.data import test_image_nuclei_3d

    _, labels = test_image_nuclei_3d(return_mask=True)
    labels = labels.astype(np.int32)
    if quick:
        return {"test volume, cropped": labels[:, :24, :24]}
    tiles = [np.where(labels > 0, labels + k * labels.max(), 0) for k in range(4)]  # ids apart
    tiled = np.concatenate(
        [np.concatenate(tiles[:2], axis=2), np.concatenate(tiles[2:], axis=2)], axis=1
    )
    return {"test volume": labels, "test volume tiled 2x2": tiled}


def bench(name: str, labels: np.ndarray, anisotropy, repeats: int) -> dict:
    from stardist import Rays_GoldenSpiral
    from stardist.geometry import star_dist3D

    from course_utils.targets import rays_golden_spiral, star_distances_3d

    rays = rays_golden_spiral(96, anisotropy)
    reference_rays = Rays_GoldenSpiral(96, anisotropy=anisotropy)
    ours = median_time(lambda: star_distances_3d(labels, rays), repeats)
    ref = median_time(lambda: star_dist3D(labels, reference_rays), repeats)
    return {
        "volume": name,
        "shape": "x".join(map(str, labels.shape)),
        "anisotropy": "none" if anisotropy is None else ",".join(map(str, anisotropy)),
        "n_rays": 96,
        "ours_s": round(ours.wall_s, 4),
        "stardist_s": round(ref.wall_s, 4),
        "ratio": round(ref.wall_s / ours.wall_s, 2),
        "max_diff_voxels": float(np.abs(ours.result - ref.result).max()),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small volume, no results file")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case")
    parser.add_argument("--threads", type=int, default=2, help="threads of both sides")
    args = parser.parse_args(argv)
    # Read when the compiled libraries load, so set before importing either side.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    try:
        import stardist.geometry  # noqa: F401
    except ImportError:
        sys.exit("stardist is not installed: pip install 'course_utils[reference]'")
    repeats = args.repeats or (1 if args.quick else 3)
    rows = [
        bench(name, labels, anisotropy, repeats)
        for name, labels in volumes(args.quick).items()
        for anisotropy in (None, (2.2, 1.0, 1.0))
    ]
    print_table(rows)
    if any(r["max_diff_voxels"] > 1e-4 for r in rows):
        sys.exit("course_utils and stardist disagree: see max_diff_voxels")
    if not args.quick:
        settings = {
            "timing": "median wall-clock seconds, both in one process; ratio = stardist / ours",
            "threads": f"stardist: OpenMP, {args.threads}; course_utils: numba, {args.threads}",
        }
        head = header(
            "stardist3d",
            "3-D ray distances: course_utils vs stardist (C++)",
            settings=settings,
            packages=("stardist", "numba"),
        )
        write_results(head, rows)


if __name__ == "__main__":
    main()
