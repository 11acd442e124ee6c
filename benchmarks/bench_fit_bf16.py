"""bfloat16 autocast in ``fit`` on the CPU: faster, and are the trained models as good?

Trains each method with fast mode's budget (notebook 07b's runs) on BBBC039 training images,
once in float32 and once under bfloat16 autocast, for several seeds, and scores each model on
BBBC039 validation images (AP@0.5, the record's post-processing). bfloat16 costs nothing
("not_worse") when the mean difference (bf16 - fp32) is above minus the spread between seeds
of float32 itself: what ``fit(amp="auto")`` training in bfloat16 on such a CPU rests on. A
method that fails it should train with ``amp="gpu"`` (float32 on the CPU).
Only meaningful on a CPU that computes bfloat16 natively (``course_utils.env.cpu_has_bf16``):
elsewhere autocast emulates it, slowly.

Usage::

    python benchmarks/bench_fit_bf16.py [--methods unet_3class cellpose stardist] [--seeds 6]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import header, print_table, write_results

import course_utils as cu
from course_utils.env import cpu_has_bf16


def train_and_score(method: str, data: dict, seed: int, amp) -> dict:
    """One fast-budget run; its training seconds and validation AP@0.5."""
    started = time.perf_counter()
    model, history = cu.methods.train_method(
        method,
        data["train"][0],
        data["train"][1],
        budget="fast",
        seed=seed,
        amp=amp,
        device="cpu",
        progress=False,
    )
    seconds = time.perf_counter() - started
    _, scores = cu.methods.evaluate(method, model, *data["val"], device="cpu")
    steps = sum(1 for _ in history.records)
    return {"seconds": seconds, "ap50": scores["ap50"], "epochs": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(cu.methods.METHODS)[:4])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-val", type=int, default=6)
    args = parser.parse_args()
    if not cpu_has_bf16():
        print("skipped: this CPU has no native bfloat16 (the comparison would time emulation)")
        return
    data = {
        "train": cu.data.load_split("bbbc039", "train", n=args.n_train),
        "val": cu.data.load_split("bbbc039", "val", n=args.n_val),
    }
    rows = []
    for method in args.methods:
        runs = {
            name: [train_and_score(method, data, seed, amp) for seed in range(args.seeds)]
            for name, amp in (("fp32", False), ("bf16", "bf16"))
        }
        fp32 = [r["ap50"] for r in runs["fp32"]]
        bf16 = [r["ap50"] for r in runs["bf16"]]
        difference = statistics.mean(bf16) - statistics.mean(fp32)
        spread = statistics.stdev(fp32) if len(fp32) > 1 else float("nan")
        rows.append(
            {
                "method": method,
                "seeds": args.seeds,
                "fp32_ap50": statistics.mean(fp32),
                "bf16_ap50": statistics.mean(bf16),
                "difference": difference,
                "fp32_seed_sd": spread,
                "within_noise": abs(difference) <= spread,
                "not_worse": difference >= -spread,
                "fp32_s": statistics.mean(r["seconds"] for r in runs["fp32"]),
                "bf16_s": statistics.mean(r["seconds"] for r in runs["bf16"]),
                "speedup": statistics.mean(r["seconds"] for r in runs["fp32"])
                / statistics.mean(r["seconds"] for r in runs["bf16"]),
            }
        )
        print_table(rows[-1:])
    settings = {
        "budget": "fast (notebook 07b)",
        "data": f"BBBC039 train {args.n_train}, val {args.n_val}",
        "threads": torch.get_num_threads(),
    }
    title = "fit: bfloat16 autocast against float32 on the CPU (fast budget, seeds)"
    path = write_results(header("fit_bf16", title, settings=settings), rows, merge_on=("method",))
    print_table(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
