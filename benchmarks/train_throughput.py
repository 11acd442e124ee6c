"""Training throughput of the course's four methods: images/s, TFLOP/s, MFU, input pipeline.

For each nucleus method of ``course_utils.methods.NUCLEUS_METHODS`` (``unet_weighted``:
``UNetOriginal``, ``unet_3class``: ``UNet``, ``cellpose``: ``CellposeNet``, ``stardist``:
``StarDistNet``), with its full-mode network, targets and loss, this times the training step of
``course_utils.train.fit`` (autocast forward and loss, backward, Adam) under the settings in
``CONFIGS``: fp32; bf16 autocast; + channels_last (``cl``); + ``cudnn.benchmark`` (CUDA only);
+ ``torch.compile`` (CUDA only unless ``--compile on``). FLOPs of one forward+backward step are
counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; the
elementwise ops and the optimizer are not counted): TFLOP/s = FLOPs per image x images/s, and
MFU (model FLOP utilisation) = TFLOP/s / the GPU's dense peak (bf16 rows: bf16 peak; fp32 rows:
TF32 peak while cuDNN may use TF32, as by default, else fp32).

The input pipeline (``PatchDataset`` with each record's targets computed on the fly, and a
``DataLoader``) is timed alone and inside a fit-like loop, with fit's default precision and
layout: ``gpu_idle`` = 1 - step time / loop time. Last, ``fit`` itself trains two short epochs
with its defaults and the second epoch gives ``fit_img_s``.

Usage::

    python benchmarks/train_throughput.py                # this device's defaults, writes JSON
    python benchmarks/train_throughput.py --models unet_weighted --batch 8 16
    python benchmarks/train_throughput.py --quick --out /tmp/r   # tiny models: a smoke test

Writes ``<out>/train_throughput_<device>.json``, device ``cpu`` or a slug of the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

# Numba's default OpenMP layer kills forked DataLoader workers ("fork() called from a process
# already using GNU OpenMP") once this process has run a parallel kernel (masks_to_flows).
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

from _common import (  # noqa: E402
    RESULTS_DIR,
    device_slug,
    header,
    peak_tflops,
    print_table,
    write_results,
)
from _pipeline import sync, time_pipeline, to_device  # noqa: E402

from course_utils import methods  # noqa: E402
from course_utils.data import PatchDataset, synthetic_nuclei  # noqa: E402
from course_utils.env import cpu_has_bf16, cpu_model  # noqa: E402
from course_utils.models import valid_input_sizes  # noqa: E402

# name: (autocast dtype, channels_last, cudnn.benchmark, torch.compile)
CONFIGS = {
    "fp32": (None, False, False, False),
    "bf16": (torch.bfloat16, False, False, False),
    "bf16+cl": (torch.bfloat16, True, False, False),
    "bf16+cl+bench": (torch.bfloat16, True, True, False),
    "bf16+cl+compile": (torch.bfloat16, True, False, True),
}
MODELS = methods.NUCLEUS_METHODS  # the affinity record (notebook 10) is a UNet again
QUICK = {"depth": 2, "base_channels": 8}  # --quick: tiny versions of the full-mode networks
# option: (default on a GPU, on the CPU, with --quick, help)
DEFAULTS = {
    "size": (512, 256, 64, "patch side, rounded to one the network accepts"),
    "batch": ([8], [2], [2], "batch sizes"),
    "steps": (20, 3, 2, "timed steps per block"),
    "repeats": (3, 1, 1, "timed blocks, median taken"),
    "warmup": (5, 1, 1, "untimed steps first"),
    "workers": (min(8, os.cpu_count() or 1), 0, 0, "DataLoader workers"),
    "data_batches": (24, 3, 2, "timed DataLoader batches"),
}
PIPELINE = "input pipeline, fit's default setting"
COLUMNS = ["model", "size", "batch", "config", "step_ms", "images_per_s", "tflops", "mfu"]


def fit_default_config(device: torch.device) -> str:
    """The ``CONFIGS`` entry that ``fit(amp="auto", channels_last="auto")`` runs on ``device``."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16+cl"
    return "fp32"  # CPU/MPS: no autocast. (fp16 on pre-Ampere GPUs is not among the configs.)


def network(name: str, quick: bool) -> torch.nn.Module:
    """A fresh network of the method ``name``: full mode, seed 0, tiny (``QUICK``) if quick."""
    return methods.get(name).build(seed=0, mode="full", **(QUICK if quick else {}))


def patch_size(name: str, size: int, quick: bool) -> int:
    """``size`` rounded to what the network accepts: the nearest valid size of ``UNetOriginal``
    (valid convolutions), else the nearest multiple of ``grid * 2**depth``."""
    config = methods.get(name).config("full", **(QUICK if quick else {}))
    depth = config["depth"]
    if methods.get(name).network == "UNetOriginal":
        return min(valid_input_sizes(depth, 1, 2 * size), key=lambda s: (abs(s - size), s))
    step = config.get("grid", 1) * 2**depth
    return max(step, round(size / step) * step)


# --- timing -----------------------------------------------------------------------------------


def make_step(model, criterion, device: torch.device, dtype):
    """One training step as ``fit`` takes it: autocast forward and ``criterion`` (the record's
    loss), backward, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(batch):
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=bool(dtype)):
            loss = criterion(model(batch[0]), *batch[1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def count_flops(model, criterion, batch) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one fp32 step on ``batch`` (FlopCounterMode)."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss = criterion(model(batch[0]), *batch[1:])
        forward = counter.get_total_flops()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(forward), float(counter.get_total_flops())


def prepared_model(name: str, config: str, device: torch.device, quick: bool):
    """A fresh, seeded model of ``name`` on ``device`` in the layout (and compiled) as asked."""
    model = network(name, quick).to(device).train()
    if CONFIGS[config][1]:
        model = model.to(memory_format=torch.channels_last)
    if CONFIGS[config][3]:
        torch._dynamo.reset()  # one model's graphs must not count against the next's limits
        model = torch.compile(model)
    return model


def time_config(name, config, batch, args, device) -> dict:
    """Seconds per step (median over ``repeats`` blocks of ``steps`` steps) and peak memory."""
    dtype, channels_last, bench, compiled = CONFIGS[config]
    model = prepared_model(name, config, device, args.quick)
    batch = to_device(batch, device, channels_last)
    step = make_step(model, methods.get(name).loss, device, dtype)
    previous, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, bench
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup + (3 if compiled else 0)):  # compile traces the first calls
            step(batch)
        blocks, cpu = [], []
        for _ in range(args.repeats):
            sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                loss = step(batch)
            sync(device)
            blocks.append((time.perf_counter() - start) / args.steps)
            cpu.append((time.process_time() - start_cpu) / args.steps)
    finally:
        torch.backends.cudnn.benchmark = previous
    if not torch.isfinite(loss).item():
        raise FloatingPointError(f"{name} {config}: the loss became {loss.item()}")
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "step_s": float(np.median(blocks)),
        "cpu_s": float(np.median(cpu)),
        "max_mem_gib": memory,
    }


def pipeline_row(name, dataset, batch_size, step_s, args, device) -> dict:
    """The input-pipeline row of one method (``_pipeline.time_pipeline``), fit's setting."""
    config = fit_default_config(device)
    loss_fn = methods.get(name).loss
    step = make_step(
        prepared_model(name, config, device, args.quick), loss_fn, device, CONFIGS[config][0]
    )
    found = time_pipeline(
        dataset,
        batch_size,
        step_s,
        step=step,
        loss_fn=loss_fn,
        model=network(name, args.quick),
        workers=args.workers,
        device=device,
        channels_last=CONFIGS[config][1],
    )
    return {"model": name, "batch": batch_size, "config": config, **found}


# --- driver -----------------------------------------------------------------------------------


def run_model(name, images, labels, batch_size, configs, args, device, peak) -> tuple[list, dict]:
    """Throughput rows (one per config) and the input-pipeline row of one method."""
    size = patch_size(name, args.size, args.quick)
    record, model = methods.get(name), network(name, args.quick)
    dataset = PatchDataset(
        images,
        labels,
        size,
        length=batch_size * (args.data_batches + 1),
        target_fn=record.target_fn(model.config),
        seed=0,
    )
    threads = torch.get_num_threads()
    items = [dataset[i] for i in range(batch_size)]
    # With numba's OpenMP layer, its first parallel kernel resizes the shared OpenMP pool.
    torch.set_num_threads(threads)
    batch = [torch.stack(parts) for parts in zip(*items)]
    one = to_device([b[:1] for b in batch], device, False)
    forward, total = count_flops(model.to(device).train(), record.loss, one)
    rows = []
    for config in configs:
        timing = time_config(name, config, batch, args, device)
        dtype = CONFIGS[config][0]
        images_s = batch_size / timing["step_s"]
        tflops = total * images_s / 1e12
        kind = "bf16" if dtype is not None else ("tf32" if _tf32_convs(device) else "fp32")
        top = None if peak is None else peak[kind]
        rows.append(
            {
                "model": name,
                "size": size,
                "batch": batch_size,
                "config": config,
                "fit_default": config == fit_default_config(device),
                "step_ms": 1e3 * timing["step_s"],
                "step_cpu_ms": 1e3 * timing["cpu_s"],
                "images_per_s": images_s,
                "gflop_fwd": forward / 1e9,
                "gflop_step": total / 1e9,
                "tflops": tflops,
                "mfu": None if top is None else tflops / top,
                "peak_kind": kind,
                "max_mem_gib": timing["max_mem_gib"],
            }
        )
        print(f"  {name} {size}px b{batch_size} {config}: {images_s:.3g} img/s, {tflops:.3g} TF/s")
    step_s = next(r["step_ms"] for r in rows if r["fit_default"]) / 1e3
    return rows, pipeline_row(name, dataset, batch_size, step_s, args, device)


def _tf32_convs(device: torch.device) -> bool:
    return device.type == "cuda" and torch.backends.cudnn.allow_tf32


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models and sizes (smoke test)")
    p.add_argument(
        "--out",
        type=Path,
        help="results folder (default benchmarks/results; "
        "--quick writes nothing unless --out is given)",
    )
    p.add_argument("--merge", action="store_true", help="keep other models' rows in the file")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: course_utils.env.get_device)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), help="default: all that apply")
    p.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="the torch.compile config; auto: on CUDA only",
    )
    for key, (gpu, cpu, quick, text) in DEFAULTS.items():
        nargs = "+" if key == "batch" else None
        text = f"{text} (default {gpu} GPU, {cpu} CPU, {quick} quick)"
        p.add_argument(f"--{key.replace('_', '-')}", type=int, nargs=nargs, help=text)
    args = p.parse_args(argv)
    from course_utils.env import get_device

    device = get_device(args.device)
    column = 2 if args.quick else (0 if device.type == "cuda" else 1)
    for key, values in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, values[column])
    if min(*args.batch, args.steps, args.repeats, args.data_batches) < 1 or args.size < 8:
        p.error("--batch, --steps, --repeats and --data-batches must be >= 1, --size >= 8")
    return args, device


def select_configs(args, device) -> list[str]:
    """The asked configs that apply here; fit's default config always among them."""
    configs = args.configs or list(CONFIGS)
    if not args.configs and args.quick:
        configs = ["fp32", "bf16+cl"]  # tiny: the bf16 code path runs even where it is slow
    elif not args.configs and device.type == "cpu" and not cpu_has_bf16():
        configs = ["fp32"]  # emulated bf16 is 10-50x slower than fp32: not worth timing
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    keep = [
        c
        for c in configs
        if (compile_on or not CONFIGS[c][3]) and (device.type == "cuda" or not CONFIGS[c][2])
    ]
    default = fit_default_config(device)
    return keep if default in keep else [default, *keep]


def describe(args, device, configs, peak) -> dict:
    """The JSON header (``_common.header``): benchmark, title, device, date, versions, machine,
    settings."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    keys = ("quick", "size", "batch", "steps", "repeats", "warmup", "workers", "data_batches")
    settings = {
        **{k: getattr(args, k) for k in keys},
        "models": {name: methods.get(name).network for name in args.models},
        "overrides": QUICK if args.quick else "none (full-mode configs)",
        "configs": configs,
        "torch_threads": torch.get_num_threads(),
        "cudnn_allow_tf32": _tf32_convs(device),
        "cpu_bf16": cpu_has_bf16(),
        "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER"),
        "fit_default": fit_default_config(device),
        "peak_tflops": peak,
        "flops": "FlopCounterMode on one fwd+bwd step (convolutions and matmuls)",
        "optimizer": "Adam, lr 1e-4",
        "data": "synthetic_nuclei; PatchDataset with the records' targets on the fly; DataLoader",
    }
    versions = {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    title = "Training throughput: images/s, TFLOP/s and MFU per method and setting"
    return header(
        "train_throughput",
        title,
        device_slug(device),
        settings=settings,
        packages=("torch",),
        versions=versions,
        accelerator=gpu,
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the report (also written as JSON unless --quick without --out)."""
    args, device = parse_args(argv)
    configs = select_configs(args, device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    peak = peak_tflops(gpu) if gpu else None
    report = describe(args, device, configs, peak)
    print(f"{gpu or cpu_model()}: configs {configs}, peak TFLOP/s {peak}")
    n_images, side = (1, 128) if args.quick else (4, max(256, 2 * args.size))
    images, labels = zip(*(synthetic_nuclei((side, side), seed=k) for k in range(n_images)))
    rows, pipeline = [], []
    for name in args.models:
        for batch_size in args.batch:
            found = run_model(name, images, labels, batch_size, configs, args, device, peak)
            rows += found[0]
            pipeline.append(found[1])
    print_table(rows, [*COLUMNS, "max_mem_gib"])
    print_table(pipeline)
    out = args.out or (None if args.quick else RESULTS_DIR)
    if out is None:
        return {**report, "rows": rows, "extra_tables": {PIPELINE: pipeline}}
    path = write_results(
        report,
        rows,
        extra_tables={PIPELINE: pipeline},
        out_dir=out,
        merge_on=("model", "batch") if args.merge else None,
    )
    print(f"wrote {path}")
    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
