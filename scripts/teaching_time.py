"""How long a student needs for each notebook, estimated from its source, for the instructors.

The estimate counts what a student does: reads the text (150 words a minute), works each
exercise (12 minutes), and answers each folded question before opening it (3 minutes). It
leaves out the run time (seconds to a few minutes in fast mode, the instructors' table gives
it). The table it makes sits in docs/instructors.md between two markers, beside the teaching
time the schedules plan; a notebook planned at under 80 % of its estimate is flagged there.
``tests/test_teaching_time.py`` checks that the table in the kit is the one this script makes.

    python scripts/teaching_time.py           # print the table
    python scripts/teaching_time.py --write   # write it into docs/instructors.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from course_utils.prose import cells  # noqa: E402

KIT = ROOT / "docs" / "instructors.md"
BEGIN, END = "<!-- teaching-time: begin -->", "<!-- teaching-time: end -->"
WORDS_PER_MINUTE, EXERCISE_MINUTES, QUESTION_MINUTES = 150, 12, 3
UNDER = 0.8  # planned below this share of the estimate: flagged
SOLUTION = re.compile(r'^# %% tags=\["solution"\]', re.MULTILINE)
SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.DOTALL)
PLANNED = re.compile(r"\]\(\.\./notebooks/(\w+)\.ipynb\) \|[^|]*\|[^|]*\| ([^|]+) \|")


def minutes(text: str) -> int:
    """'1 h 45 min' or '45 min' -> 105 or 45."""
    hours = re.search(r"(\d+) h", text)
    mins = re.search(r"(\d+) min", text)
    return 60 * int(hours.group(1) if hours else 0) + int(mins.group(1) if mins else 0)


def counts(source: str) -> dict[str, int]:
    """Words of text, exercises and folded questions of one notebook source."""
    text = "\n".join(t for kind, _, t in cells(source) if kind == "markdown")
    summaries = [s.strip() for s in SUMMARY.findall(text)]
    prose = re.sub(r"<!--.*?-->|<[^>]+>", " ", text, flags=re.DOTALL)
    return {
        "words": len(re.findall(r"[A-Za-z0-9][\w'-]*", prose)),
        "exercises": len(SOLUTION.findall(source)),
        "questions": sum(not s.startswith("Hint") for s in summaries),
    }


def estimate(c: dict[str, int]) -> int:
    """Minutes: reading, exercises and questions."""
    reading = c["words"] / WORDS_PER_MINUTE
    return round(reading + EXERCISE_MINUTES * c["exercises"] + QUESTION_MINUTES * c["questions"])


def chapters() -> list[str]:
    """The notebooks of the table of contents, in teaching order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [Path(f).name for f in files if f.startswith("notebooks/")]


def table(kit: str) -> str:
    """The markdown table of estimates beside the planned teaching times of the kit."""
    times = kit[kit.index("## Time per notebook") : kit.index(BEGIN)]
    planned = {stem: minutes(t) for stem, t in PLANNED.findall(times)}
    rows = [
        "| notebook | words | exercises | questions | estimate | planned |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    total_estimate = total_planned = 0
    for stem in chapters():
        c = counts((ROOT / "notebooks" / "src" / f"{stem}.py").read_text(encoding="utf-8"))
        est, plan = estimate(c), planned.get(stem, 0)
        total_estimate, total_planned = total_estimate + est, total_planned + plan
        flag = " (under)" if plan < UNDER * est else ""
        rows.append(
            f"| {stem[:3].rstrip('_')} | {c['words']:,} | {c['exercises']} | {c['questions']} | "
            f"{est} min | {plan} min{flag} |"
        )
    rows.append(f"| all | | | | {total_estimate} min | {total_planned} min |")
    return "\n".join(rows)


def written(kit: str) -> str:
    """The kit with the table between the markers replaced by a fresh one."""
    start, end = kit.index(BEGIN) + len(BEGIN), kit.index(END)
    return kit[:start] + "\n" + table(kit) + "\n" + kit[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write into docs/instructors.md")
    args = parser.parse_args()
    kit = KIT.read_text(encoding="utf-8")
    if args.write:
        KIT.write_text(written(kit), encoding="utf-8")
    print(table(kit))


if __name__ == "__main__":
    main()
