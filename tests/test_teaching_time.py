"""scripts/teaching_time.py: the instructors' table of student time is the script's, and no
notebook is planned at under 80 % of its estimate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "teaching_time", ROOT / "scripts" / "teaching_time.py"
)
teaching_time = importlib.util.module_from_spec(spec)
spec.loader.exec_module(teaching_time)


def test_counts_and_estimate_of_a_small_source():
    source = "\n".join(
        [
            "# %% [markdown]",
            "# " + " ".join(["word"] * 300),
            "# <details><summary>Hint 1</summary>",
            "# a hint",
            "# </details>",
            "# <details><summary>Answer</summary>",
            "# an answer <!-- constants: 0.5 -->",
            "# </details>",
            '# %% tags=["solution"]',
            "x = 1",
        ]
    )
    counts = teaching_time.counts(source)
    assert counts["exercises"] == 1 and counts["questions"] == 1
    assert 300 < counts["words"] < 310  # the tags and the comment are not words
    assert teaching_time.estimate(counts) == round(counts["words"] / 150 + 12 + 3)
    assert teaching_time.minutes("1 h 35 min") == 95 and teaching_time.minutes("25 min (x)") == 25


def test_the_kit_holds_the_scripts_table_and_no_notebook_is_under_planned():
    kit = teaching_time.KIT.read_text(encoding="utf-8")
    assert teaching_time.written(kit) == kit, "run: python scripts/teaching_time.py --write"
    table = teaching_time.table(kit)
    assert "(under)" not in table, table
    assert len(table.splitlines()) == len(teaching_time.chapters()) + 3
