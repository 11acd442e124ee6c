"""Training throughput of the course's four networks: images/s, TFLOP/s, MFU, input pipeline.

For ``UNetOriginal``, ``UNet``, ``CellposeNet`` and ``StarDistNet`` this times the training step
of ``course_utils.train.fit`` (autocast forward and loss, backward, Adam) under the settings in
``CONFIGS``: fp32; bf16 autocast; + channels_last (``cl``); + ``cudnn.benchmark`` (CUDA only);
+ ``torch.compile`` (CUDA only unless ``--compile on``). FLOPs of one forward+backward step are
counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; the
elementwise ops and the optimizer are not counted): TFLOP/s = FLOPs per image x images/s, and
MFU (model FLOP utilisation) = TFLOP/s / the GPU's dense peak (bf16 rows: bf16 peak; fp32 rows:
TF32 peak while cuDNN may use TF32, as by default, else fp32).

The input pipeline (``PatchDataset`` with each model's targets computed on the fly, and a
``DataLoader``) is timed alone and inside a fit-like loop, with fit's default precision and
layout: ``gpu_idle`` = 1 - step time / loop time. Last, ``fit`` itself trains two short epochs
with its defaults and the second epoch gives ``fit_img_s``.

Usage::

    python benchmarks/train_throughput.py                # this device's defaults, writes JSON
    python benchmarks/train_throughput.py --models unet_original --batch 8 16
    python benchmarks/train_throughput.py --quick --out /tmp/r   # tiny models: a smoke test

Writes ``<out>/train_throughput_<device>.json``, device ``cpu`` or a slug of the GPU's name.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT)]
# Numba's default OpenMP layer kills forked DataLoader workers ("fork() called from a process
# already using GNU OpenMP") once this process has run a parallel kernel (masks_to_flows).
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

from _common import environment, print_table  # noqa: E402

from course_utils.data import PatchDataset, synthetic_nuclei  # noqa: E402
from course_utils.models import (  # noqa: E402
    CellposeNet,
    StarDistNet,
    UNet,
    UNetOriginal,
    center_crop,
    valid_input_sizes,
)
from course_utils.targets import boundary_classes, unet_weight_map  # noqa: E402
from course_utils.targets.flows import FLOW_SCALE, masks_to_flows  # noqa: E402
from course_utils.targets.stardist import edt_prob, star_dist  # noqa: E402
from course_utils.train import fit  # noqa: E402

# Dense (no sparsity) peak TFLOP/s from NVIDIA's data sheets: (words the CUDA device name must
# contain, label, bf16, tf32, fp32). First match wins, so NVL and PCIe come before plain names.
PEAK_TFLOPS = [
    (("h200", "nvl"), "H200 NVL", 835.5, 417.5, 60.0),
    (("h200",), "H200 SXM", 989.4, 494.7, 66.9),
    (("h100", "nvl"), "H100 NVL", 835.5, 417.5, 60.0),
    (("h100", "pcie"), "H100 PCIe", 756.5, 378.0, 51.2),
    (("h100",), "H100 SXM", 989.4, 494.7, 66.9),
    (("a100",), "A100", 312.0, 156.0, 19.5),
]
# name: (autocast dtype, channels_last, cudnn.benchmark, torch.compile)
CONFIGS = {
    "fp32": (None, False, False, False),
    "bf16": (torch.bfloat16, False, False, False),
    "bf16+cl": (torch.bfloat16, True, False, False),
    "bf16+cl+bench": (torch.bfloat16, True, True, False),
    "bf16+cl+compile": (torch.bfloat16, True, False, True),
}
MODELS = ("unet_original", "unet", "cellpose", "stardist")
# option: (default on a GPU, on the CPU, with --quick, help)
DEFAULTS = {
    "size": (512, 256, 64, "patch side (UNetOriginal: nearest valid size)"),
    "batch": ([8], [2], [2], "batch sizes"),
    "steps": (20, 3, 2, "timed steps per block"),
    "repeats": (3, 1, 1, "timed blocks, median taken"),
    "warmup": (5, 1, 1, "untimed steps first"),
    "workers": (min(8, os.cpu_count() or 1), 0, 0, "DataLoader workers"),
    "data_batches": (24, 3, 2, "timed DataLoader batches"),
}
PIPELINE = "input pipeline, fit's default setting"
COLUMNS = ["model", "size", "batch", "config", "step_ms", "images_per_s", "tflops", "mfu"]


def peak_tflops(device_name: str) -> dict | None:
    """Dense peak TFLOP/s {label, bf16, tf32, fp32} of a GPU by its CUDA name; None if unknown."""
    words = device_name.lower().replace("-", " ")
    for needed, label, bf16, tf32, fp32 in PEAK_TFLOPS:
        if all(w in words for w in needed):
            return {"label": label, "bf16": bf16, "tf32": tf32, "fp32": fp32}
    return None


def device_slug(device: torch.device) -> str:
    """``cpu``, or the GPU's name in lower case with other characters as ``-`` (no ``_``)."""
    if device.type != "cuda":
        return device.type
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def fit_default_config(device: torch.device) -> str:
    """The ``CONFIGS`` entry that ``fit(amp="auto", channels_last="auto")`` runs on ``device``."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16+cl"
    return "fp32"  # CPU/MPS: no autocast. (fp16 on pre-Ampere GPUs is not among the configs.)


# --- targets and losses (module level, so that DataLoader workers can pickle them) ------------


def original_targets(labels: np.ndarray):
    return (labels > 0).astype(np.int64), unet_weight_map(labels)


def original_loss(out, classes, weights):
    size = out.shape[-2:]  # valid convolutions: the output is the centre of the patch
    ce = F.cross_entropy(out, center_crop(classes, size), reduction="none")
    return (ce * center_crop(weights, size)).mean()


def unet_loss(out, classes):
    return F.cross_entropy(out, classes.long())


def cellpose_targets(labels: np.ndarray):
    flows = FLOW_SCALE * masks_to_flows(labels, device="cpu")  # workers must not touch CUDA
    return flows.astype(np.float32), (labels > 0).astype(np.float32)


def cellpose_loss(out, flows, cellprob):
    out = out.float()
    bce = F.binary_cross_entropy_with_logits(out[:, 2], cellprob)
    return F.mse_loss(out[:, :2], flows) / 2 + bce


def stardist_targets(labels: np.ndarray):
    return edt_prob(labels), np.moveaxis(star_dist(labels, 32), -1, 0)


def stardist_loss(out, prob, dist):
    logits, pred = out[0].float(), out[1].float()
    l1 = (prob[:, None] * (pred - dist).abs()).mean()  # weighted by centre-ness, as StarDist
    return F.binary_cross_entropy_with_logits(logits[:, 0], prob) + 0.2 * l1


def build(name: str, quick: bool):
    """(model, target_fn, loss_fn) of one of ``MODELS``; tiny (depth 2, 8 channels) if quick."""
    small = {"depth": 2, "base_channels": 8} if quick else {}
    if name == "unet_original":
        return UNetOriginal(**small), original_targets, original_loss
    if name == "unet":
        return UNet(out_channels=3, **small), boundary_classes, unet_loss
    if name == "cellpose":
        return CellposeNet(**small), cellpose_targets, cellpose_loss
    if name == "stardist":
        return StarDistNet(n_rays=32, **small), stardist_targets, stardist_loss
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def patch_size(name: str, size: int, quick: bool) -> int:
    """``size`` rounded to what the model accepts (the nearest valid size for UNetOriginal)."""
    depth = 2 if quick else (3 if name == "stardist" else 4)
    if name == "unet_original":
        return min(valid_input_sizes(depth, 1, 2 * size), key=lambda s: (abs(s - size), s))
    return max(2**depth, round(size / 2**depth) * 2**depth)


# --- timing -----------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to_device(batch, device: torch.device, channels_last: bool) -> list[torch.Tensor]:
    moved = [b.to(device, non_blocking=True) for b in batch]
    if channels_last:
        moved[0] = moved[0].contiguous(memory_format=torch.channels_last)
    return moved


def make_step(model, loss_fn, device: torch.device, dtype):
    """One training step as ``fit`` takes it: autocast forward and loss, backward, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(batch):
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=bool(dtype)):
            loss = loss_fn(model(batch[0]), *batch[1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def count_flops(model, loss_fn, batch) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one fp32 step on ``batch`` (FlopCounterMode)."""
    counter = FlopCounterMode(display=False)
    with counter:
        loss = loss_fn(model(batch[0]), *batch[1:])
        forward = counter.get_total_flops()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(forward), float(counter.get_total_flops())


def prepared_model(name: str, config: str, device: torch.device, quick: bool):
    """A fresh, seeded model of ``name`` on ``device`` in the layout (and compiled) as asked."""
    torch.manual_seed(0)
    model = build(name, quick)[0].to(device).train()
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
    batch = _to_device(batch, device, channels_last)
    step = make_step(model, build(name, args.quick)[2], device, dtype)
    previous, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, bench
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup + (3 if compiled else 0)):  # compile traces the first calls
            step(batch)
        blocks, cpu = [], []
        for _ in range(args.repeats):
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                loss = step(batch)
            _sync(device)
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


def time_pipeline(name, dataset, batch_size, step_s, args, device) -> dict:
    """Data time per batch (loader alone), fit-like loop time per step, and fit's own epoch."""
    config = fit_default_config(device)
    channels_last = CONFIGS[config][1]
    loader = DataLoader(dataset, batch_size, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda", drop_last=True)  # fmt: skip
    start = time.perf_counter()
    for i in range(3):  # one item in the main process, targets included
        dataset[i]
    sample_s = (time.perf_counter() - start) / 3
    n = len(loader) - 1

    def loop(step=None) -> float:
        batches = iter(loader)
        next(batches)  # worker start-up is not part of the steady state
        _sync(device)
        start = time.perf_counter()
        for batch in batches:
            batch = _to_device(batch, device, channels_last)
            if step is not None:
                step(batch)
        _sync(device)
        return (time.perf_counter() - start) / n

    data_s = loop()
    step = make_step(prepared_model(name, config, device, args.quick),
                     build(name, args.quick)[2], device, CONFIGS[config][0])  # fmt: skip
    step(_to_device(next(iter(loader)), device, channels_last))  # warm-up
    loop_s = loop(step)
    # fit's defaults; its epoch 2 (epoch 1 warms up), worker start-up included as in real use.
    history = fit(build(name, args.quick)[0], loader, loss_fn=build(name, args.quick)[2],
                  epochs=2, device=device, progress=False, lr=1e-4)  # fmt: skip
    return {
        "model": name,
        "batch": batch_size,
        "config": config,
        "workers": args.workers,
        "sample_ms": 1e3 * sample_s,
        "data_ms": 1e3 * data_s,
        "step_ms": 1e3 * step_s,
        "loop_ms": 1e3 * loop_s,
        "data_over_step": data_s / step_s,
        "gpu_idle": max(0.0, 1.0 - step_s / loop_s) if device.type == "cuda" else None,
        "workers_needed": sample_s * batch_size / step_s,
        "fit_img_s": len(loader) * batch_size / history.records[-1]["seconds"],
    }


# --- driver -----------------------------------------------------------------------------------


def run_model(name, images, labels, batch_size, configs, args, device, peak) -> tuple[list, dict]:
    """Throughput rows (one per config) and the input-pipeline row of one model."""
    size = patch_size(name, args.size, args.quick)
    model, target_fn, loss_fn = build(name, args.quick)
    dataset = PatchDataset(images, labels, size, length=batch_size * (args.data_batches + 1),
                           target_fn=target_fn, seed=0)  # fmt: skip
    threads = torch.get_num_threads()
    items = [dataset[i] for i in range(batch_size)]
    # With numba's OpenMP layer, its first parallel kernel resizes the shared OpenMP pool.
    torch.set_num_threads(threads)
    batch = [torch.stack(parts) for parts in zip(*items)]
    one = _to_device([b[:1] for b in batch], device, False)
    forward, total = count_flops(model.to(device).train(), loss_fn, one)
    rows = []
    for config in configs:
        timing = time_config(name, config, batch, args, device)
        dtype = CONFIGS[config][0]
        images_s = batch_size / timing["step_s"]
        tflops = total * images_s / 1e12
        kind = "bf16" if dtype is not None else ("tf32" if _tf32_convs(device) else "fp32")
        top = None if peak is None else peak[kind]
        rows.append({
            "model": name, "size": size, "batch": batch_size, "config": config,
            "fit_default": config == fit_default_config(device),
            "step_ms": 1e3 * timing["step_s"], "step_cpu_ms": 1e3 * timing["cpu_s"],
            "images_per_s": images_s,
            "gflop_fwd": forward / 1e9, "gflop_step": total / 1e9, "tflops": tflops,
            "mfu": None if top is None else tflops / top, "peak_kind": kind,
            "max_mem_gib": timing["max_mem_gib"],
        })  # fmt: skip
        print(f"  {name} {size}px b{batch_size} {config}: {images_s:.3g} img/s, {tflops:.3g} TF/s")
    step_s = next(r["step_ms"] for r in rows if r["fit_default"]) / 1e3
    return rows, time_pipeline(name, dataset, batch_size, step_s, args, device)


def _tf32_convs(device: torch.device) -> bool:
    return device.type == "cuda" and torch.backends.cudnn.allow_tf32


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny models and sizes (smoke test)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results; "
                   "--quick writes nothing unless --out is given)")  # fmt: skip
    p.add_argument("--merge", action="store_true", help="keep other models' rows in the file")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: course_utils.env.get_device)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), help="default: all that apply")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="the torch.compile config; auto: on CUDA only")  # fmt: skip
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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), per /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def select_configs(args, device) -> list[str]:
    """The asked configs that apply here; fit's default config always among them."""
    configs = args.configs or list(CONFIGS)
    if not args.configs and args.quick:
        configs = ["fp32", "bf16+cl"]  # tiny: the bf16 code path runs even where it is slow
    elif not args.configs and device.type == "cpu" and not cpu_has_bf16():
        configs = ["fp32"]  # emulated bf16 is 10-50x slower than fp32: not worth timing
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    keep = [c for c in configs if (compile_on or not CONFIGS[c][3])
            and (device.type == "cuda" or not CONFIGS[c][2])]  # fmt: skip
    default = fit_default_config(device)
    return keep if default in keep else [default, *keep]


def describe(args, device, configs, peak) -> dict:
    """The JSON header: benchmark, device, date, versions, machine, settings."""
    env = environment()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else env["cpu"]
    keys = ("quick", "size", "batch", "steps", "repeats", "warmup", "workers", "data_batches")
    return {
        "benchmark": "train_throughput",
        "title": "Training throughput: images/s, TFLOP/s and MFU per network and setting",
        "device": device_slug(device),
        "device_name": name,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {
            **env["versions"],
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(),
        },
        "machine": f"{env['cpu']}, {os.cpu_count()} CPUs"
        + (f"; {name}" if name != env["cpu"] else ""),
        "settings": {
            **{k: getattr(args, k) for k in keys},
            "configs": configs,
            "torch_threads": torch.get_num_threads(),
            "cudnn_allow_tf32": _tf32_convs(device),
            "cpu_bf16": cpu_has_bf16(),
            "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER"),
            "fit_default": fit_default_config(device),
            "peak_tflops": peak,
            "flops": "FlopCounterMode on one fwd+bwd step (convolutions and matmuls)",
            "optimizer": "Adam, lr 1e-4",
            "data": "synthetic_nuclei; PatchDataset with on-the-fly targets; DataLoader",
        },
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the report (also written as JSON unless --quick without --out)."""
    args, device = parse_args(argv)
    configs = select_configs(args, device)
    peak = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    report = describe(args, device, configs, peak)
    print(f"{report['device_name']}: configs {configs}, peak TFLOP/s {peak}")
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
    report.update(rows=rows, extra_tables={PIPELINE: pipeline})
    out = args.out or (None if args.quick else ROOT / "results")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"train_throughput_{report['device']}.json"
        write_report(report, path, args.merge)
        print(f"wrote {path}")
    return report


def write_report(report: dict, path: Path, merge: bool) -> None:
    """Write ``report``; with ``merge``, keep the rows of ``path`` for other (model, batch)."""
    if merge and path.exists():
        old = json.loads(path.read_text())
        done = {(r["model"], r["batch"]) for r in report["rows"]}
        keep = lambda rows: [r for r in rows if (r.get("model"), r.get("batch")) not in done]
        report["rows"] = keep(old.get("rows", [])) + report["rows"]
        before = old.get("extra_tables", {}).get(PIPELINE, [])
        report["extra_tables"][PIPELINE] = keep(before) + report["extra_tables"][PIPELINE]
        report["settings"]["merged_with_run_of"] = old.get("date")
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
