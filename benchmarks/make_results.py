"""Write ``benchmarks/RESULTS.md`` from every ``benchmarks/results/*.json``.

One section per results file, in the one schema that ``_common.write_results`` writes (see
``benchmarks/README.md``): its title, device, date, machine, versions and settings, then its
rows as a Markdown table (the training-throughput files with fixed columns; the others with the
columns their rows have, the schema's ``size, ours, reference, ratio`` first) and its extra
tables. The page starts by saying which measurements are missing (a benchmark never run, or
run on the CPU but not on a GPU) and which files could not be read: not JSON, or without a
schema key (the missing keys are named), or with one of the wrong type.

Usage::

    python benchmarks/make_results.py [--results-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from _common import SCHEMA_KEYS

ROOT = Path(__file__).resolve().parent
# The benchmarks the course expects, by the <benchmark> of results/<benchmark>_<device>.json.
EXPECTED = (
    "train_throughput",
    "flows",
    "stardist",
    "matching",
    "weightmap",
    "segment",
    "fullrun",  # full mode on a GPU (scripts/gpu_run.sh); its CPU stand-in is "dryrun"
    "postprocess_device",  # GPU only
)
# The type each schema key must have (extra_tables is optional: a mapping of lists of rows).
TYPES = {
    "benchmark": str,
    "title": str,
    "device": str,
    "date": str,
    "versions": dict,
    "machine": str,
    "settings": dict,
    "rows": list,
}
THROUGHPUT_COLUMNS = (
    "model",
    "size",
    "batch",
    "config",
    "fit_default",
    "step_ms",
    "step_cpu_ms",
    "images_per_s",
    "tflops",
    "mfu",
    "max_mem_gib",
)

# The columns shown of an extra table, by its name (default: every key its rows have).
EXTRA_COLUMNS = {
    "training runs": [
        "notebook",
        "network",
        "method",
        "batch_shape",
        "epochs",
        "batches_per_epoch",
        "parameters",
        "flops",
        "activation_bytes",
        "seconds_per_step",
        "amp",
        "cuda_peak_bytes",
        "tflops",
        "mfu",
    ]
}


def fmt(value: Any) -> str:
    """One table cell: 4 significant digits, sizes as ``512x512``, ``-`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"  # no 1.469e+04
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, int | float) for v in value):
            return "x".join(fmt(v) for v in value)
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def _column_rank(column: str) -> int:
    """Schema order: size, counts, our time, the reference's time, ratio, then the rest."""
    if column == "size":
        return 0
    if column.startswith("n_"):
        return 1
    if column.endswith(("_s", "_ms")) and "cpu" not in column:
        return 2 if column.startswith("ours") else 3
    return 4 if column == "ratio" else 5


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    """Rows (dicts) as Markdown lines; columns: those given that occur, default all keys."""
    present = list(dict.fromkeys(k for row in rows for k in row))
    columns = present if columns is None else [c for c in columns if c in present]
    if not columns:
        return ["(no rows)"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(r, dict) for r in value)


def load(path: Path) -> dict[str, Any]:
    """One results file: its schema keys, ``file``, ``topic`` (the benchmark), ``extra_tables``
    (``{}`` if none), ``ignored`` (top-level keys outside the schema) and ``problems``. A file
    with problems (not JSON, a schema key missing or of the wrong type) is unreadable: it has
    only ``file``, ``topic`` (from the file name) and ``problems``."""
    entry: dict[str, Any] = {"file": path.name, "topic": path.stem.rpartition("_")[0]}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {**entry, "problems": [f"not JSON: {err}"]}
    if not isinstance(data, dict):
        return {**entry, "problems": ["not a JSON object"]}
    problems = []
    absent = [key for key in SCHEMA_KEYS if key not in data]
    if absent:
        problems.append(f"missing schema keys: {', '.join(absent)}")
    wrong = [k for k, kind in TYPES.items() if k in data and not isinstance(data[k], kind)]
    wrong += [k for k in ("rows",) if isinstance(data.get(k), list) and not _is_rows(data[k])]
    tables = data.get("extra_tables", {})
    if not (isinstance(tables, dict) and all(_is_rows(v) for v in tables.values())):
        wrong.append("extra_tables")
    if wrong:
        problems.append(f"wrong type: {', '.join(wrong)}")
    if problems:
        return {**entry, "problems": problems}
    ignored = [k for k in data if k not in (*SCHEMA_KEYS, "extra_tables")]
    return {
        **{k: data[k] for k in SCHEMA_KEYS},
        **entry,
        "topic": data["benchmark"],
        "extra_tables": tables,
        "ignored": ignored,
        "problems": [],
    }


def section(entry: dict[str, Any]) -> list[str]:
    """The Markdown section of one readable results file."""
    lines = [f"## {entry['topic']} on {entry['device']}", "", f"**{entry['title']}**", ""]
    lines.append(f"- file: `results/{entry['file']}`; date: {entry['date']}")
    lines.append(f"- machine: {fmt(entry['machine'])}")
    lines.append(f"- versions: {fmt(entry['versions'])}")
    if entry["settings"]:
        lines.append("- settings:")
        lines += [f"  - {key}: {fmt(value)}" for key, value in entry["settings"].items()]
    if entry["ignored"]:
        lines.append(f"- not shown (outside the schema): {', '.join(entry['ignored'])}")
    keys = dict.fromkeys(k for row in entry["rows"] for k in row)
    columns = sorted(keys, key=_column_rank)  # stable sort: the others keep their order
    if entry["topic"] == "train_throughput":
        columns = list(THROUGHPUT_COLUMNS)
    table = markdown_table(entry["rows"], columns) if entry["rows"] else ["(no rows)"]
    lines += ["", *table, ""]
    for name, rows in entry["extra_tables"].items():
        lines += [f"*{name}*", "", *markdown_table(rows, EXTRA_COLUMNS.get(name)), ""]
    return lines


def missing(entries: list[dict[str, Any]]) -> list[str]:
    """Lines naming what has not been measured yet, and the files that could not be read."""
    readable = [e for e in entries if not e["problems"]]
    cpu = {e["topic"] for e in readable if e["device"] == "cpu"}
    gpu = {e["topic"] for e in readable if e["device"] != "cpu"}
    never = [t for t in EXPECTED if t not in cpu | gpu]
    no_gpu = [t for t in EXPECTED if t in cpu and t not in gpu]
    lines = ["## Missing measurements", ""]
    if never:
        lines.append(f"- not run at all: {', '.join(never)}")
    if no_gpu:
        lines.append(f"- no GPU run yet (CPU only): {', '.join(no_gpu)}")
    bad = [e for e in entries if e["problems"]]
    unreadable = [f"`{e['file']}` ({'; '.join(e['problems'])})" for e in bad]
    if unreadable:
        lines.append(f"- unreadable files: {', '.join(unreadable)}")
    if len(lines) == 2:
        lines.append("- none: every expected benchmark has a CPU and a GPU run")
    return [*lines, ""]


def render(results_dir: Path) -> str:
    """The whole RESULTS.md text for the ``*.json`` files in ``results_dir``."""
    entries = [load(p) for p in sorted(results_dir.glob("*.json"))]
    order = {t: i for i, t in enumerate(EXPECTED)}
    entries.sort(key=lambda e: (order.get(e["topic"], len(order)), e["topic"], e.get("device", "")))
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/make_results.py` from `benchmarks/results/*.json`; "
        "do not edit by hand. How each benchmark is run and what its columns mean: "
        "`benchmarks/README.md`.",
        "",
        *missing(entries),
    ]
    for entry in entries:
        if not entry["problems"]:
            lines += section(entry)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "RESULTS.md")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        parser.error(f"no results folder at {args.results_dir}")
    args.out.write_text(render(args.results_dir))
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
