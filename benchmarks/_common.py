"""Shared helpers of the ``benchmarks/*.py`` scripts: timing, the results JSON, tables, inputs.

- ``median_time(fn, repeats, warmup=1) -> Timing(wall_s, cpu_s, result)``: median wall-clock and
  process CPU seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones (JIT
  compilation, caches). CPU time is the steadier figure on a shared machine for
  single-threaded code; report both.
- ``header(benchmark, title, device="cpu", *, settings=None, packages=(), versions=None,
  accelerator=None) -> dict``: the header of a results file, the one place that builds it:
  ``benchmark``, ``title``, ``device``, ``date`` (ISO, to the second), ``versions`` (Python,
  numpy, scipy, scikit-image, course_utils and ``packages``, updated by ``versions``),
  ``machine`` (``"<CPU model>, <n> CPUs"``, then ``"; <accelerator>"`` when given) and
  ``settings`` (``settings`` plus ``env``: the thread and allocator variables).
- ``write_results(header, rows, *, extra_tables=None, out_dir=RESULTS_DIR, merge_on=None)
  -> Path``: writes ``<out_dir>/<benchmark>_<device>.json`` with exactly the keys of
  ``SCHEMA_KEYS`` (and ``extra_tables`` when given). With ``merge_on`` (row keys, e.g.
  ``("model", "batch")``) the rows of an existing file whose values of those keys the new rows
  do not have are kept, in every table.
- ``print_table(rows, columns=None)``: the rows (dicts) as an aligned text table.
- ``make_labels(size, seed=0) -> (labels, source)``: touching synthetic nuclei.
- ``reexec_with_malloc_tuning()``: run this script again with glibc's allocator told to keep
  large blocks (``MALLOC``), unless it already is: the default returns them to the system and
  page-faults them back at every call, a cost that swamps kernels of a few milliseconds here.
- ``real_labels(dataset, size) -> (labels, source) or None``: a (size, size) tile of a dataset's
  test label images side by side (ids kept apart); DSB2018's smallest nuclei first (dense small
  nuclei). None without the data on this machine (benchmarks never download).

A script run as ``python benchmarks/bench_x.py`` has its own folder first on the module search
path, so ``from _common import median_time, ...`` works as it is; ``course_utils`` is installed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from course_utils.env import cpu_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASE_PACKAGES = ("numpy", "scipy", "scikit-image", "course_utils")
HEADER_KEYS = ("benchmark", "title", "device", "date", "versions", "machine", "settings")
#: The keys every results file has; ``extra_tables`` (name -> list of rows) is optional.
SCHEMA_KEYS = (*HEADER_KEYS, "rows")
#: glibc allocator settings of the benchmarks that re-execute themselves with them.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}
ENV_VARS = ("OMP_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


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


def header(
    benchmark: str,
    title: str,
    device: str = "cpu",
    *,
    settings: Mapping[str, Any] | None = None,
    packages: Iterable[str] = (),
    versions: Mapping[str, Any] | None = None,
    accelerator: str | None = None,
) -> dict[str, Any]:
    """The header of a results file (every schema key but ``rows``); see the module doc."""
    found: dict[str, Any] = {"python": platform.python_version()}
    for name in (*BASE_PACKAGES, *packages):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    machine = f"{cpu_model()}, {os.cpu_count()} CPUs" + (f"; {accelerator}" if accelerator else "")
    return {
        "benchmark": benchmark,
        "title": title,
        "device": device,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {**found, **(versions or {})},
        "machine": machine,
        "settings": {**(settings or {}), "env": {k: os.environ.get(k) for k in ENV_VARS}},
    }


def write_results(
    header: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    extra_tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    out_dir: str | os.PathLike = RESULTS_DIR,
    merge_on: Sequence[str] | None = None,
) -> Path:
    """Write ``<out_dir>/<benchmark>_<device>.json``; return its path (see the module doc)."""
    if set(header) != set(HEADER_KEYS):
        raise ValueError(f"header keys must be {HEADER_KEYS}, got {tuple(header)}")
    if "_" in header["device"]:
        raise ValueError(f"device {header['device']!r}: no '_' (the file name splits there)")
    payload: dict[str, Any] = {**header, "rows": [dict(r) for r in rows]}
    if extra_tables is not None:
        payload["extra_tables"] = {k: [dict(r) for r in v] for k, v in extra_tables.items()}
    out_dir = Path(out_dir)
    path = out_dir / f"{header['benchmark']}_{header['device']}.json"
    if merge_on and path.exists():
        old = json.loads(path.read_text())
        key = lambda row: tuple(row.get(k) for k in merge_on)
        new = {key(r) for r in payload["rows"]}
        keep = lambda rows: [r for r in rows if key(r) not in new]
        payload["rows"] = keep(old.get("rows", [])) + payload["rows"]
        for name, table in (old.get("extra_tables") or {}).items():
            tables = payload.setdefault("extra_tables", {})
            tables[name] = keep(table) + tables.get(name, [])
        payload["settings"] = {**payload["settings"], "merged_with_run_of": old.get("date")}
    out_dir.mkdir(parents=True, exist_ok=True)
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


def reexec_with_malloc_tuning() -> None:
    """Replace this process by the same command under :data:`MALLOC` (no-op when set)."""
    if all(os.environ.get(k) == v for k, v in MALLOC.items()):
        return
    env = {**os.environ, **MALLOC}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def tile_labels(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Label images laid out in rows, left to right, cropped to (size, size), int32; each
    image's ids are shifted past the ones before it. Raises ValueError when they cannot fill
    the square."""
    out = np.zeros((size, size), np.int32)
    queue, top, offset = list(images), 0, 0
    while top < size:
        left = height = 0
        while left < size:
            if not queue:
                raise ValueError(f"{len(images)} label images do not fill {size} x {size}")
            piece = np.asarray(queue.pop(0))[: size - top, : size - left].astype(np.int64)
            out[top : top + piece.shape[0], left : left + piece.shape[1]] = np.where(
                piece > 0, piece + offset, 0
            )
            offset += int(piece.max(initial=0))
            left, height = left + piece.shape[1], max(height, piece.shape[0])
        top += height
    return out


def real_labels(dataset: str, size: int) -> tuple[np.ndarray, str] | None:
    """A (size, size) tile of ``dataset``'s test label images (see :func:`tile_labels`), or None
    when the dataset is not on this machine. DSB2018's images go smallest nuclei first."""
    from course_utils import data, scale

    try:
        _, labels = data.load_split(dataset, "test", download=False)
    except FileNotFoundError as err:  # DataUnavailableError included
        print(f"{dataset}: not on this machine ({err.__class__.__name__}); skipped")
        return None
    if dataset == "dsb2018":
        labels = sorted(labels, key=scale.median_diameter)
    tile = tile_labels(labels, size)
    diameter = scale.median_diameter(tile)
    return tile, f"{dataset} test labels tiled, median diameter {diameter:.0f} px"


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


def peak_tflops(device_name: str) -> dict | None:
    """Dense peak TFLOP/s {label, bf16, tf32, fp32} of a GPU by its CUDA name; None if unknown."""
    words = device_name.lower().replace("-", " ")
    for needed, label, bf16, tf32, fp32 in PEAK_TFLOPS:
        if all(w in words for w in needed):
            return {"label": label, "bf16": bf16, "tf32": tf32, "fp32": fp32}
    return None


def device_slug(device: Any) -> str:
    """``cpu``, or the GPU's name in lower case with other characters as ``-`` (no ``_``)."""
    if device.type != "cuda":
        return device.type
    import torch  # only here: the other benchmarks do not need it

    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
