"""Write ``benchmarks/RESULTS.md`` from every ``benchmarks/results/*.json``.

One section per results file: its title, device, date, versions and settings, then its rows as
a Markdown table (the training-throughput files with fixed columns; the others with the columns
their rows have, the schema's ``size, ours, reference, ratio`` first). The page ends by saying
which measurements are missing (a benchmark never run, or run on the CPU but not on a GPU) and
which files could not be read. See ``benchmarks/README.md`` for the JSON schema; files written
by ``_common.write_results`` (``results`` and ``environment`` instead of ``rows``, ``date`` and
``versions``) are read too, and the differences are listed under their section.

Usage::

    python benchmarks/make_results.py [--results-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
# The benchmarks the course expects, by the <topic> of results/<topic>_<device>.json.
EXPECTED = ("train_throughput", "flows", "stardist", "matching", "weightmap")
REQUIRED = ("benchmark", "device", "date", "versions", "machine", "settings", "rows")
THROUGHPUT_COLUMNS = (
    "model", "size", "batch", "config", "fit_default", "step_ms", "step_cpu_ms", "images_per_s",
    "tflops", "mfu", "max_mem_gib",
)  # fmt: skip
# Where a file without a schema key is read from instead.
FALLBACKS = {
    "device": " (from the file name)",
    "date": " (from 'environment')",
    "versions": " (from 'environment')",
    "machine": " (from 'environment')",
    "rows": " (from 'results')",
}
DESCRIPTIVE = ("naive", "ours", "reference", "timing", "note", "notes")


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
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def _topic_device(path: Path) -> tuple[str, str]:
    topic, _, device = path.stem.rpartition("_")
    return (topic, device) if topic else (path.stem, "unknown")


def load(path: Path) -> dict[str, Any]:
    """One results file, normalised: topic, device, title, date, versions, machine, settings,
    rows, extra_tables, description and the schema ``problems`` (empty when it follows it).
    ``rows`` is None when the file is unreadable or has no list of row dicts."""
    topic, device = _topic_device(path)
    entry: dict[str, Any] = {"file": path.name, "topic": topic, "device": device, "rows": None}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {**entry, "problems": [f"unreadable: {err}"]}
    if not isinstance(data, dict):
        return {**entry, "problems": ["unreadable: not a JSON object"]}
    env = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    problems = [f"no {key!r}{FALLBACKS.get(key, '')}" for key in REQUIRED if key not in data]
    rows = data.get("rows", data.get("results"))
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        rows = None
        problems = ["unreadable: no list of row objects under 'rows' (or 'results')"]
    versions = data.get("versions") or env.get("versions")
    if not isinstance(versions, dict):  # e.g. package versions kept flat in "environment"
        versions = {k: v for k, v in env.items() if isinstance(v, str | int | float)}
        versions = {k: v for k, v in versions.items() if k not in ("date", "machine")}
    tables = data.get("extra_tables") if isinstance(data.get("extra_tables"), dict) else {}
    return {
        **entry,
        "device": str(data.get("device", device)),
        "title": str(data.get("title") or data.get("benchmark") or topic),
        "date": str(data.get("date") or env.get("date") or "unknown"),
        "versions": versions,
        "machine": data.get("machine") or env.get("cpu") or env.get("machine"),
        "settings": data.get("settings") if isinstance(data.get("settings"), dict) else {},
        "rows": rows,
        "extra_tables": {k: v for k, v in tables.items() if isinstance(v, list)},
        "description": {k: data[k] for k in DESCRIPTIVE if isinstance(data.get(k), str)},
        "problems": problems,
    }


def section(entry: dict[str, Any]) -> list[str]:
    """The Markdown section of one readable results file."""
    lines = [f"## {entry['topic']} on {entry['device']}", "", f"**{entry['title']}**", ""]
    lines.append(f"- file: `results/{entry['file']}`; date: {entry['date']}")
    if entry["machine"]:
        lines.append(f"- machine: {fmt(entry['machine'])}")
    if entry["versions"]:
        lines.append(f"- versions: {fmt(entry['versions'])}")
    lines += [f"- {key}: {fmt(text)}" for key, text in entry["description"].items()]
    if entry["settings"]:
        lines.append(f"- settings: {fmt(entry['settings'])}")
    if entry["problems"]:
        lines.append(f"- not in the schema: {'; '.join(entry['problems'])}")
    keys = dict.fromkeys(k for row in entry["rows"] for k in row)
    columns = sorted(keys, key=_column_rank)  # stable sort: the others keep their order
    if entry["topic"] == "train_throughput":
        columns = list(THROUGHPUT_COLUMNS)
    table = markdown_table(entry["rows"], columns) if entry["rows"] else ["(no rows)"]
    lines += ["", *table, ""]
    for name, rows in entry["extra_tables"].items():
        lines += [f"*{name}*", "", *markdown_table(rows), ""]
    return lines


def missing(entries: list[dict[str, Any]]) -> list[str]:
    """Lines naming what has not been measured yet, and the files that could not be read."""
    readable = [e for e in entries if e["rows"] is not None]
    cpu = {e["topic"] for e in readable if e["device"] == "cpu"}
    gpu = {e["topic"] for e in readable if e["device"] != "cpu"}
    never = [t for t in EXPECTED if t not in cpu | gpu]
    no_gpu = [t for t in EXPECTED if t in cpu and t not in gpu]
    lines = ["## Missing measurements", ""]
    if never:
        lines.append(f"- not run at all: {', '.join(never)}")
    if no_gpu:
        lines.append(f"- no GPU run yet (CPU only): {', '.join(no_gpu)}")
    bad = [e for e in entries if e["rows"] is None]
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
    entries.sort(key=lambda e: (order.get(e["topic"], len(order)), e["topic"], e["device"]))
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
        if entry["rows"] is not None:
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
