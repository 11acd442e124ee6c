"""What ``segment`` costs on real images: with the diameter given, estimated, and without it.

For each method's zoo model, on real test images (BBBC039: 520 x 696, nuclei about 28 px;
DSB2018: many sizes and magnifications), the seconds per megapixel of

- ``network``: the same network and post-processing without the wrapper
  (``Method.segment(model, normalised image, **tuned thresholds)``);
- ``given``: ``course_utils.segment(image, method, diameter=<the labels' median>)``;
- ``estimated``: ``course_utils.segment(image, method, diameter=None)``: the size model's pass,
  the segmentation, and a second one only when the nuclei found disagree with the estimate.

Reported per method and dataset: seconds per megapixel of each, the ratios ``estimated /
given`` (goal: at most 1.5) and ``given / network``, and how many images were rescaled.
Process CPU and wall time are both kept; threads are set once for the whole run.

Usage: ``python benchmarks/bench_segment_diameter.py [--quick] [--methods ...] [--n 12]
[--threads 2]``; writes ``benchmarks/results/segment_diameter_cpu.json`` (not with
``--quick``: two images of each set, the Cellpose-style model only).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import header, print_table, write_results

import course_utils as cu

METHODS = ("cellpose", "stardist", "unet_3class", "unet_weighted")
SETS = ("bbbc039", "dsb2018")


def _timed(fn, images) -> tuple[float, list]:
    """Wall seconds of ``fn`` over every image (after one untimed call), and the results."""
    fn(images[0])
    start = time.perf_counter()
    out = [fn(x) for x in images]
    return time.perf_counter() - start, out


def measure(method: str, dataset: str, n: int) -> dict:
    images, labels = cu.data.load_split(dataset, "test", n=n, normalize=False)
    model = cu.zoo.load(method)
    record = cu.methods.get(method)
    params = dict(model.meta["postprocess"])
    diameters = [cu.scale.median_diameter(y) for y in labels]
    megapixels = sum(x.size for x in images) / 1e6
    normalised = {id(x): cu.data.normalize_percentile(x) for x in images}
    bare, _ = _timed(lambda x: record.segment(model, normalised[id(x)], **params), images)
    given_d = dict(zip(map(id, images), diameters))
    given, _ = _timed(
        lambda x: cu.segment(x, method, given_d[id(x)], model=model, progress=False), images
    )
    found, out = _timed(
        lambda x: cu.segment(x, method, model=model, progress=False, return_diameter=True),
        images,
    )
    trusted = cu.segmentation.trusted_range(model) or (np.inf, -np.inf)
    rescaled = sum(not trusted[0] <= d <= trusted[1] for _, d in out)
    return {
        "method": method,
        "dataset": dataset,
        "images": len(images),
        "megapixels": round(megapixels, 2),
        "network_s_per_mp": round(bare / megapixels, 2),
        "given_s_per_mp": round(given / megapixels, 2),
        "estimated_s_per_mp": round(found / megapixels, 2),
        "estimated_over_given": round(found / given, 2),
        "given_over_network": round(given / bare, 2),
        "rescaled_images": int(rescaled),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--n", type=int, default=12, help="test images of each dataset")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    methods, n = (["cellpose"], 2) if args.quick else (args.methods, args.n)
    rows = []
    for method in methods:
        for dataset in SETS:
            rows.append(measure(method, dataset, n))
            print_table(rows[-1:])
    print_table(rows)
    if not args.quick:
        settings = {"threads": args.threads, "images": f"first {n} test images of {SETS}"}
        title = "segment(): diameter given, estimated, and the bare network (s/megapixel)"
        head = header("segment_diameter", title, settings=settings, packages=("torch",))
        path = write_results(head, rows, merge_on=("method", "dataset"))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
