"""Post-processing on the GPU against the CPU: the same course_utils calls, two devices.

Cellpose's two heavy steps run in PyTorch on any device: labels -> flows
(``course_utils.targets.masks_to_flows``, the heat diffusion) and flows -> masks
(``course_utils.postprocess.flows_to_masks``, the flow following). This script times both on
synthetic touching nuclei (``_common.make_labels``, 1024 and 2048 px) on the CPU and on
``--device`` (default ``cuda``), and checks that the two devices agree (mean cosine of the
flows, F1 at IoU 0.5 of the masks), so that a fast wrong answer cannot pass.

Writes ``benchmarks/results/postprocess_device_<gpu>.json`` only when ``--device`` is a GPU;
``--rehearse`` runs a tiny size with the CPU on both sides and writes nothing (the rehearsal
of ``scripts/gpu_run.sh`` on a machine without a GPU).

Usage: ``python benchmarks/bench_postprocess_device.py [--device cuda] [--rehearse]``
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import device_slug, header, make_labels, median_time, print_table, write_results

from course_utils.metrics import matching
from course_utils.postprocess import flows_to_masks
from course_utils.targets import masks_to_flows


def timed(fn, device: torch.device, repeats: int):
    """Median seconds of ``fn()``, waiting for the GPU before the clock stops."""

    def call():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return median_time(call, repeats)


def compare(size: int, device: torch.device, repeats: int) -> list[dict]:
    labels, source = make_labels(size)
    rows = []
    sides = {"cpu": torch.device("cpu"), "device": device}
    flows = {
        k: timed(lambda d=d: masks_to_flows(labels, device=d), d, repeats) for k, d in sides.items()
    }
    a, b = flows["cpu"].result, np.asarray(flows["device"].result)
    inside = labels > 0
    cosine = float(((a * b).sum(0)[inside]).mean() / max(1e-12, (a * a).sum(0)[inside].mean()))
    prob = np.where(inside, 4.0, -4.0).astype(np.float32)
    scaled = 5.0 * a.astype(np.float32)
    masks = {
        k: timed(lambda d=d: flows_to_masks(scaled, prob, device=d), d, repeats)
        for k, d in sides.items()
    }
    f1 = matching(masks["cpu"].result, np.asarray(masks["device"].result), 0.5).f1
    for step, times, agreement in (
        ("labels -> flows", flows, {"cosine": cosine}),
        ("flows -> masks", masks, {"f1_50": f1}),
    ):
        rows.append(
            {
                "size": size,
                "n_cells": int(labels.max()),
                "step": step,
                "cpu_s": times["cpu"].wall_s,
                "device_s": times["device"].wall_s,
                "speedup": times["cpu"].wall_s / times["device"].wall_s,
                **agreement,
                "source": source,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rehearse", action="store_true", help="CPU on both sides, tiny size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the CPU side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu" if args.rehearse else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("skipped: no CUDA GPU here (--rehearse tries the script on the CPU)")
        return
    sizes = [256] if args.rehearse else [1024, 2048]
    rows = [row for size in sizes for row in compare(size, device, args.repeats)]
    print_table(rows)
    if args.rehearse:
        print("rehearsal: nothing written (both sides ran on the CPU)")
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    title = "Post-processing on the GPU against the CPU (course_utils, same calls)"
    settings = {"cpu_threads": args.threads, "repeats": args.repeats}
    head = header(
        "postprocess_device", title, device_slug(device), settings=settings, accelerator=name
    )
    print(f"wrote {write_results(head, rows)}")


if __name__ == "__main__":
    main()
