"""Run the notebooks in a dry run of full mode and estimate what the real full mode costs.

``COURSE_MODE=full COURSE_DRYRUN=1`` keeps every full-mode size and cuts training to a few
steps (``course_utils.mode``), so that every full-mode code path runs on a CPU. For each
notebook this script measures the wall time and the kernel's peak memory, and collects what
``train.fit`` logged of each training run (``course_utils.dryrun``: FLOPs and activations of a
full-size step, seconds a step here, the steps of the full run). From these it estimates:

- the full run's time on a GPU: the dry run's own time less what its networks spent training and
  predicting here (the rest, data and post-processing, counts as it ran on this CPU), plus the
  full run's training FLOPs and the predictions' FLOPs at ``--mfu`` of the GPU's bfloat16
  peak (an assumption, stated in the output);
- each training run's GPU memory: weights, gradients and Adam's moments, the kept activations
  of the full-size batch measured in float32 (an upper bound of a bfloat16 run), the batch.

Results go to ``benchmarks/results/dryrun_cpu.json`` (``benchmarks/make_results.py`` puts them
into RESULTS.md); ``--readme`` writes the dry-run and estimate columns of the README's course
map, and the estimates into the instructors' table (docs/instructors.md). Executed notebooks
go to ``_build/dryrun/``. Run with ``make dryrun``.

``--full`` runs full mode itself instead (on a GPU machine: ``scripts/gpu_run.sh``): the same
measurements, plus each training run's GPU peak memory, achieved TFLOP/s and share of the
GPU's bfloat16 peak, into ``benchmarks/results/fullrun_<gpu>.json``; nothing is estimated.

``--fast`` runs fast mode on the CPU (what CI and a student without a GPU run): each notebook's
time and peak memory into ``benchmarks/results/fastrun_cpu.json`` and, with ``--readme``, the
course map's "fast" column and the instructors' run times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from course_utils.dryrun import training_memory
from course_utils.env import cpu_has_bf16

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "_build" / "dryrun"
RESULTS = ROOT / "benchmarks" / "results" / "dryrun_cpu.json"
THROUGHPUT = ROOT / "benchmarks" / "results" / "train_throughput_cpu.json"
CLASSROOM_GPU_BYTES = 16 * 2**30
DATA_WORKERS = 4  # loader processes assumed on the GPU machine (full mode's loaders use 4-8)
GIB = 2**30
INSTRUCTORS = ROOT / "docs" / "instructors.md"
MODES = ("dryrun", "full", "fast")  # the mode names the folder in _build/ and the results file


def run_one(notebook: Path, timeout: int, mode: str, out: Path | None = None) -> dict:
    """Execute ``notebook`` in ``mode`` (one of ``MODES``: the dry run, full mode itself, fast
    mode) in a kernel that is this process's child; its time, peak memory, error and logged
    training runs."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    out = out or folder(mode)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"{notebook.stem}.runs.jsonl"
    log.unlink(missing_ok=True)
    checkpoints = out / "checkpoints" / notebook.stem
    subprocess.run(["rm", "-rf", str(checkpoints)], check=True)
    os.environ.update(
        COURSE_MODE="fast" if mode == "fast" else "full",
        COURSE_DRYRUN="1" if mode == "dryrun" else "0",
        COURSE_TRAINING_LOG=str(log) if mode != "fast" else "",
        COURSE_CHECKPOINTS=str(checkpoints),
        COURSE_STATIC_FIGURES="1",
    )
    if mode != "full":
        os.environ.setdefault("COURSE_DEVICE", "cpu")
    nb = nbformat.read(notebook, as_version=4)
    # The time the networks spend predicting (course_utils.dryrun.InferenceClock), logged last.
    # Fast mode is timed as a student runs it: no clock, no training log.
    clock = "from course_utils.dryrun import InferenceClock\n_dryrun_clock = InferenceClock()"
    first, last = ("pass", "pass") if mode == "fast" else (clock, "_dryrun_clock.close()")
    nb.cells = [nbformat.v4.new_code_cell(first), *nb.cells, nbformat.v4.new_code_cell(last)]
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}
    )
    started, error = time.perf_counter(), None
    try:
        client.execute()
    except CellTimeoutError:
        error = f"a cell ran past the limit of {timeout} s (--timeout)"
    except CellExecutionError as err:
        last = str(err).strip().splitlines()[-1]
        error = re.sub(r"\x1b\[[0-9;]*m", "", last)[:500]  # without the terminal's colours
    seconds = time.perf_counter() - started
    nb.cells = nb.cells[1:-1]
    nbformat.write(nb, out / notebook.name)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    entry = {"seconds": seconds, "peak_rss_bytes": peak, "error": error, "runs": runs}
    (out / f"{notebook.stem}.json").write_text(json.dumps(entry))  # kept if the parent stops
    return entry


def cpu_flop_rate(runs: list[dict], bf16: bool | None = None) -> float:
    """FLOP/s this CPU reached in training steps: the notebook's own runs (which ``fit`` and a
    dry run's predictions both run in bfloat16 on a CPU that computes it natively), else the
    rate of the course's networks in ``benchmarks/results/train_throughput_cpu.json``, in
    bfloat16 when ``bf16`` (default: whether this CPU computes it natively), else float32."""
    rates = [r["flops"] / r["seconds_per_step"] for r in runs if r.get("seconds_per_step")]
    if not rates:
        config = "bf16" if (cpu_has_bf16() if bf16 is None else bf16) else "fp32"
        rows = json.loads(THROUGHPUT.read_text())["rows"]
        rates = [r["tflops"] * 1e12 for r in rows if r.get("config") == config and r["tflops"]]
    return statistics.median(rates)


def estimate(runs: list[dict], seconds: float, mfu: float, peak_flops: float) -> dict:
    """A notebook's full-mode training FLOPs, CPU and GPU time and largest training memory.

    GPU time: the dry run's own time here, less what its networks spent training and predicting
    on this CPU, plus the full run's training FLOPs and the predictions' FLOPs (their seconds
    here times this CPU's FLOP rate) at ``mfu`` of ``peak_flops``, plus the time the steps wait
    for their batches where the loader (its time a batch here, over ``DATA_WORKERS``
    processes) is slower than the GPU.
    """
    training = [r for r in runs if "flops" in r]
    inference = sum(r.get("inference_seconds", 0.0) for r in runs)
    flops = cpu_seconds = memory = spent = waiting = 0.0
    for run in training:
        steps = run["epochs"] * (run["batches_per_epoch"] or 0)
        val = run["epochs"] * run["val_batches_per_epoch"]
        flops += steps * run["flops"] + val * run["forward_flops"]
        # A step waits for its batch when the loader's workers are slower than the GPU.
        compute = run["flops"] / (mfu * peak_flops)
        data = (run.get("data_seconds_per_step") or 0.0) / DATA_WORKERS
        waiting += steps * max(0.0, data - compute)
        cpu_seconds += steps * (run["seconds_per_step"] or run["seconds"])
        spent += run.get("train_seconds", run["seconds"])
        memory = max(memory, training_memory(run, run["batch_bytes"]))
    predicting = inference * cpu_flop_rate(training) if inference else 0.0
    rest = max(0.0, seconds - spent - inference)
    return {
        "training_runs": len(training),
        "training_pflop": flops / 1e15,
        "inference_cpu_min": inference / 60,
        "full_training_cpu_h": cpu_seconds / 3600,
        "gpu_min_estimate": (rest + waiting + (flops + predicting) / (mfu * peak_flops)) / 60,
        "data_bound_min": waiting / 60,
        "gpu_training_gib": memory / GIB,
        "fits_16gb_gpu": memory < CLASSROOM_GPU_BYTES,
    }


def readme_cells(row: dict) -> tuple[str, str]:
    """The README's dry-run and GPU-estimate cells of one notebook."""
    if row.get("error"):
        return "fails in the dry run", "-"
    dry = f"{row['dryrun_min']:.1f} min, {row['peak_gib']:.1f} GiB"
    gpu = f"~{max(1, round(row['gpu_min_estimate']))} min (estimate)"
    if row["training_runs"]:
        gpu += f", training {row['gpu_training_gib']:.1f} GiB"
    return dry, gpu


def fast_cell(row: dict) -> str:
    """The README's fast-mode cell of one notebook."""
    return "fails in fast mode" if row.get("error") else f"{round(row['seconds'])} s"


def write_readme(rows: list[dict], readme: Path = ROOT / "README.md", fast: bool = False) -> None:
    """Fill the README's course map from ``rows``: the two last columns from a dry run's rows,
    or (``fast``) the fast-mode column from a fast run's."""
    by_name = {row["notebook"]: row for row in rows}
    lines = readme.read_text().splitlines()
    for i, line in enumerate(lines):
        cells = line.removesuffix(" |").split(" | ")
        name = cells[0].removeprefix("| ").strip("`")
        if name in by_name and len(cells) == 6:
            row = by_name[name]
            cells[3:] = [fast_cell(row), *cells[4:]] if fast else [cells[3], *readme_cells(row)]
            lines[i] = " | ".join(cells) + " |"
    readme.write_text("\n".join(lines) + "\n")


def clock_time(seconds: float) -> str:
    """37.4 -> "37 s", 123 -> "2 min 3 s": the instructors' run times."""
    whole = round(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60} s"


def write_instructors(rows: list[dict], kit: Path = INSTRUCTORS, fast: bool = False) -> None:
    """Fill the instructors' "time per notebook" table from ``rows``: its fast-mode run column
    from a fast run's rows, or (a dry run's) its full-mode column with the GPU estimates."""
    by_name = {row["notebook"]: row for row in rows}
    lines = kit.read_text().splitlines()
    for i, line in enumerate(lines):
        link = re.match(r"\| \[[^]]+\]\(\.\./notebooks/(\w+)\.ipynb\) \|", line)
        cells = line.removesuffix(" |").split(" | ")
        if not link or link.group(1) not in by_name or len(cells) != 5:
            continue
        row = by_name[link.group(1)]
        if fast:
            cells[1] = "fails in fast mode" if row.get("error") else clock_time(row["seconds"])
        else:
            estimate = f"~{max(1, round(row['gpu_min_estimate']))} min on an H100 (estimate)"
            cells[2] = "fails in the dry run" if row.get("error") else estimate
        lines[i] = " | ".join(cells) + " |"
    kit.write_text("\n".join(lines) + "\n")


def folder(mode: str) -> Path:
    """Where a run in ``mode`` keeps its executed notebooks and saved results."""
    return OUT if mode == "dryrun" else OUT.with_name(f"{mode}run")


def run_child(path: Path, timeout: int, mode: str) -> dict:
    """Run one notebook in a process of its own (its peak memory is its kernel's alone)."""
    command = [sys.executable, __file__, "--one", str(path), "--timeout", str(timeout)]
    flag = {"dryrun": [], "full": ["--full"], "fast": ["--fast"]}[mode]
    child = subprocess.run(command + flag, capture_output=True, text=True, check=False)
    if child.returncode != 0:  # the runner itself broke: say so, and go on with the others
        print(child.stderr[-3000:], file=sys.stderr)
        return {"seconds": 0.0, "peak_rss_bytes": 0, "error": "the runner failed", "runs": []}
    return json.loads(child.stdout.strip().splitlines()[-1])


def dry_row(name: str, entry: dict, mfu: float, gpu: dict) -> dict:
    """One notebook's row of the dry run, with the estimates of the real run."""
    return {
        "notebook": name,
        "dryrun_min": entry["seconds"] / 60,
        "peak_gib": entry["peak_rss_bytes"] / GIB,
        **estimate(entry["runs"], entry["seconds"], mfu, gpu["bf16"] * 1e12),
        "error": entry["error"],
    }


def full_row(name: str, entry: dict, gpu: dict | None) -> dict:
    """One notebook's row of a real full-mode run: measured, nothing estimated."""
    runs = entry["runs"]
    peaks = [r["cuda_peak_bytes"] for r in runs if r.get("cuda_peak_bytes")]
    for run in runs:  # achieved FLOP/s and the share of the peak (bf16 runs on a known GPU)
        per_step = run.get("seconds_per_step")
        run["tflops"] = run["flops"] / per_step / 1e12 if per_step else None
        known = gpu is not None and run.get("amp") == "bfloat16" and run["tflops"]
        run["mfu"] = run["tflops"] / gpu["bf16"] if known else None
    return {
        "notebook": name,
        "minutes": entry["seconds"] / 60,
        "host_peak_gib": entry["peak_rss_bytes"] / GIB,
        "training_runs": len(runs),
        "gpu_peak_gib": max(peaks) / GIB if peaks else None,
        "error": entry["error"],
    }


def fast_row(name: str, entry: dict) -> dict:
    """One notebook's row of a fast-mode run."""
    return {
        "notebook": name,
        "seconds": entry["seconds"],
        "peak_gib": entry["peak_rss_bytes"] / GIB,
        "error": entry["error"],
    }


def results_header(mode: str, mfu: float, device, name: str | None) -> dict:
    """The results file's header of a run in ``mode``."""
    from _common import device_slug, header, peak_tflops

    if mode == "full":
        title = "Full mode, every notebook, measured"
        settings = {"mode": "COURSE_MODE=full"}
        return header("fullrun", title, device_slug(device), accelerator=name, settings=settings)
    if mode == "fast":
        threads = os.environ.get("OMP_NUM_THREADS", "all cores")
        settings = {"mode": "COURSE_MODE=fast", "threads": threads}
        return header("fastrun", "Fast mode, every notebook, on the CPU", settings=settings)
    h100 = peak_tflops("h100")
    settings = {
        "mode": "COURSE_MODE=full COURSE_DRYRUN=1",
        "gpu_time": "the dry run's time here, less its networks' training and prediction "
        f"time, plus the full run's training FLOPs and the predictions' FLOPs at "
        f"{mfu:.0%} of an {h100['label']}'s bfloat16 peak ({h100['bf16']} TFLOP/s), "
        f"plus the steps' wait for batches slower than that on {DATA_WORKERS} loader "
        "processes: an estimate",
        "gpu_memory": "4 x weights (Adam) + float32 activations of a full batch + the batch",
    }
    return header(
        "dryrun", "Full mode, dry run on the CPU, with estimates of the GPU run", settings=settings
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="default: every numbered notebook")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--full", action="store_true", help="real full mode (a GPU machine)")
    which.add_argument("--fast", action="store_true", help="fast mode (the README's fast column)")
    parser.add_argument("--mfu", type=float, default=0.35, help="share of the GPU's peak")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds a cell")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the per-notebook child
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)  # its folder (tests)
    parser.add_argument("--readme", action="store_true", help="write the README's columns")
    parser.add_argument(
        "--collect", action="store_true", help="no run: the results of runs already in _build/"
    )
    args = parser.parse_args()
    args.mode = "full" if args.full else "fast" if args.fast else "dryrun"
    return args


def main() -> None:
    args = parse_args()
    mode = args.mode
    if args.one:
        print(json.dumps(run_one(args.one, args.timeout, mode, args.out)))
        return
    import torch
    from _common import peak_tflops, write_results

    device = torch.device("cuda" if args.full and torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    gpu = peak_tflops(name) if name else None
    paths = [Path(p) for p in args.notebooks] or sorted(
        (ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")
    )
    rows, runs = [], []
    for path in paths:
        print(f"[{mode}] {path.name} ...", flush=True)
        saved = folder(mode) / f"{path.stem}.json"
        if args.collect and not saved.exists():
            continue
        entry = (
            json.loads(saved.read_text()) if args.collect else run_child(path, args.timeout, mode)
        )
        if mode == "full":
            rows.append(full_row(path.stem, entry, gpu))
        elif mode == "fast":
            rows.append(fast_row(path.stem, entry))
        else:
            rows.append(dry_row(path.stem, entry, args.mfu, peak_tflops("h100")))
        runs += [{"notebook": path.stem, **run} for run in entry["runs"]]
        status = f"FAILED: {entry['error']}" if entry["error"] else "ok"
        print(f"  {path.name}: {entry['seconds']:.0f} s, {status}", flush=True)
    head = results_header(mode, args.mfu, device, name)
    extra = {"training runs": runs} if mode != "fast" else None
    path = write_results(head, rows, extra_tables=extra, merge_on=("notebook",))
    print(f"wrote {path}")
    if args.readme and mode != "full":  # the rows merged with earlier runs
        merged = json.loads(path.read_text())["rows"]
        write_readme(merged, fast=mode == "fast")
        write_instructors(merged, fast=mode == "fast")
    failed = [row["notebook"] for row in rows if row["error"]]
    if failed:
        sys.exit(f"failed in {failed}: see the executed notebooks in _build/")


if __name__ == "__main__":
    main()
