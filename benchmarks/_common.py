"""Small shared helpers for the ``benchmarks/bench_*.py`` scripts.

- ``median_time(fn, repeats, warmup=1) -> Timing(wall_s, cpu_s, result)``: median wall-clock and
  process CPU seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones (JIT
  compilation, caches). CPU time is the steadier figure on a shared machine for
  single-threaded code; report both.
- ``environment(packages=())``: date, Python and package versions, CPU, thread and allocator
  settings, as a dict.
- ``write_results(name, rows, *, device="cpu", meta=None) -> Path``: writes
  ``benchmarks/results/<name>_<device>.json`` with ``meta``, ``environment()`` and the rows.
- ``print_table(rows, columns=None)``: the rows (dicts) as an aligned text table.

A script imports them with ``from _common import median_time, ...`` after putting its own
folder on ``sys.path`` (``python benchmarks/bench_x.py`` does this by itself).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASE_PACKAGES = ("numpy", "scipy", "scikit-image", "course_utils")


class Timing(NamedTuple):
    wall_s: float
    cpu_s: float
    result: Any


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Median wall and CPU seconds of ``fn()``; ``result`` is the last return value."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    result = None
    for _ in range(warmup):
        result = fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return Timing(sorted(walls)[repeats // 2], sorted(cpus)[repeats // 2], result)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(packages: Iterable[str] = ()) -> dict[str, Any]:
    """Date, versions and machine facts that a timing depends on."""
    versions = {}
    for name in (*BASE_PACKAGES, *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env_vars = ("OMP_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    return {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "versions": versions,
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ.get(k) for k in env_vars},
    }


def write_results(
    name: str,
    rows: Sequence[dict[str, Any]],
    *,
    device: str = "cpu",
    meta: dict[str, Any] | None = None,
    packages: Iterable[str] = (),
) -> Path:
    """Write ``results/<name>_<device>.json`` (meta, environment, rows); return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}_{device}.json"
    payload = {**(meta or {}), "environment": environment(packages), "results": list(rows)}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Print dict rows as an aligned table (columns default to the first row's keys)."""
    if not rows:
        print("(no rows)")
        return
    columns = list(columns or rows[0])
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def make_labels(size: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Touching synthetic nuclei, int32 (size, size): ~150 at 512, ~600 at 1024; and the source."""
    from course_utils.data import synthetic_nuclei

    _, labels = synthetic_nuclei((size, size), seed=seed)
    return labels, "synthetic_nuclei"
