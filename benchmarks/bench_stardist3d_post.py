"""StarDist-3D post-processing speed: polyhedra -> labels and 3-D NMS, course_utils vs stardist.

Inputs: the label volume stardist ships (``stardist.data.test_image_nuclei_3d``, 31 x 61 x 57,
real nuclei), 96 rays on a golden spiral, isotropic and with anisotropy (2.2, 1, 1).
Rendering: one polyhedron per nucleus (centre = its centroid, distances from
``star_distances_3d`` there, enlarged 1.4 x so that they overlap), random scores;
``course_utils.postprocess.polyhedra.polyhedra_to_label`` against
``stardist.geometry.polyhedron_to_label``; agreement = fraction of equal voxels.
NMS: prob = stardist's normalised EDT of the labels, dist = ``star_distances_3d``, prob_thresh
0.5, nms_thresh 0.4; ``non_maximum_suppression_3d`` against ``stardist.nms``'s; agreement =
the F1 (IoU 0.5) of the two rendered results (``n``: kept by ours / by stardist, of the
candidates), and whether the kept points are the same.
Both sides with ``--threads`` threads, in one process on the same arrays.

Usage: ``python benchmarks/bench_stardist3d_post.py [--quick] [--repeats N] [--threads N]``;
writes ``benchmarks/results/stardist3d_post_cpu.json`` (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from _common import header, median_time, print_table, write_results


def bench(labels: np.ndarray, anisotropy, repeats: int, quick: bool) -> list[dict]:
    from skimage.measure import regionprops
    from stardist import Rays_GoldenSpiral
    from stardist.geometry import polyhedron_to_label
    from stardist.matching import matching
    from stardist.nms import non_maximum_suppression_3d as reference_nms
    from stardist.utils import edt_prob

    from course_utils.postprocess.polyhedra import non_maximum_suppression_3d, polyhedra_to_label
    from course_utils.targets import rays_golden_spiral, star_distances_3d

    rays, ref_rays = rays_golden_spiral(96, anisotropy), Rays_GoldenSpiral(96, anisotropy)
    dist = star_distances_3d(labels, rays)
    centres = np.array([np.array(r.centroid).astype(int) for r in regionprops(labels)])
    d = np.maximum(dist[tuple(centres.T)], 1e-3) * 1.4
    prob = np.random.default_rng(0).random(len(centres))
    render = (d, centres)
    ours = median_time(
        lambda: polyhedra_to_label(*render, rays, labels.shape, prob, anisotropy=anisotropy),
        repeats,
    )
    ref = median_time(
        lambda: polyhedron_to_label(*render, ref_rays, labels.shape, prob=prob, verbose=False),
        repeats,
    )
    base = {
        "shape": "x".join(map(str, labels.shape)),
        "anisotropy": "none" if anisotropy is None else ",".join(map(str, anisotropy)),
        "n_rays": 96,
        "repeats": repeats,
    }
    rows = [
        {
            "step": "polyhedra->labels",
            **base,
            "n": len(centres),
            "ours_s": round(ours.wall_s, 4),
            "stardist_s": round(ref.wall_s, 4),
            "ratio": round(ref.wall_s / ours.wall_s, 2),
            "agreement": round(float(np.mean(ours.result == ref.result)), 6),
            "same_kept": "",
        }
    ]
    edt = edt_prob(labels).astype(np.float32)
    args = dict(prob_thresh=0.5, nms_thresh=0.4)
    nms_repeats = 1 if quick else max(1, repeats // 3)  # stardist's takes ~20 s a call
    ours = median_time(
        lambda: non_maximum_suppression_3d(dist, edt, rays, anisotropy=anisotropy, **args),
        repeats,
    )
    ref = median_time(lambda: reference_nms(dist, edt, ref_rays, **args), nms_repeats, warmup=0)
    same = all(np.array_equal(a, b) for a, b in zip(ours.result, ref.result))
    lab_ours, lab_ref = (
        polyhedra_to_label(kept[2], kept[0], rays, labels.shape, kept[1], anisotropy=anisotropy)
        for kept in (ours.result, ref.result)
    )
    rows.append(
        {
            "step": "nms",
            **base,
            "n": f"{len(ours.result[0])}/{len(ref.result[0])} of {int((edt > 0.5).sum())}",
            "ours_s": round(ours.wall_s, 4),
            "stardist_s": round(ref.wall_s, 4),
            "ratio": round(ref.wall_s / ours.wall_s, 2),
            "agreement": round(float(matching(lab_ref, lab_ours, thresh=0.5).f1), 6),
            "same_kept": same,
        }
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a cropped volume, no results file")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case")
    parser.add_argument("--threads", type=int, default=2, help="threads of both sides")
    args = parser.parse_args(argv)
    # Read when the compiled libraries load, so set before importing either side.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    try:
        import stardist.geometry  # noqa: F401
        from stardist.data import test_image_nuclei_3d
    except ImportError:
        sys.exit("stardist is not installed: pip install 'course_utils[reference]'")
    repeats = args.repeats or (1 if args.quick else 3)
    labels = test_image_nuclei_3d(return_mask=True)[1].astype(np.int32)
    if args.quick:
        labels = labels[:, :24, :32]
    rows = [r for an in (None, (2.2, 1.0, 1.0)) for r in bench(labels, an, repeats, args.quick)]
    print_table(rows)
    if any(r["agreement"] < (0.99 if r["step"] == "nms" else 0.999) for r in rows):
        sys.exit("course_utils and stardist disagree: see agreement")
    if not args.quick:
        settings = {
            "timing": "median wall-clock seconds, both in one process; ratio = stardist / ours",
            "threads": f"stardist: OpenMP, {args.threads}; course_utils: numba, {args.threads}",
        }
        head = header(
            "stardist3d_post",
            "StarDist-3D polyhedra -> labels and NMS: course_utils vs stardist (C++)",
            settings=settings,
            packages=("stardist", "numba"),
        )
        write_results(head, rows)


if __name__ == "__main__":
    main()
