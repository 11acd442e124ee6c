"""The instructor kit (docs/instructors.md) stays true to the notebooks it describes.

Its map from lecture topics to notebook sections names sections in quotes (“3 · The weight
map”); each must still be a heading of that notebook's source. Every chapter of the table of
contents has a line in its table of times. Needs no built website.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "docs" / "instructors.md"
LINK = re.compile(r"\]\(\.\./notebooks/(?P<stem>\d\d[a-z]?_\w+)\.ipynb\)")
QUOTED = re.compile(r"“([^”]+)”")
HEADING = re.compile(r"^# #{2,4} (?P<title>.+?)\s*$", re.MULTILINE)


def _section(title: str) -> str:
    text = KIT.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _map_rows() -> list[tuple[str, list[str]]]:
    rows = []
    for line in _section("Lecture topics and where they are").splitlines():
        if line.startswith("|") and (link := LINK.search(line)):
            rows.append((link["stem"], QUOTED.findall(line)))
    return rows


def test_the_map_names_sections_that_exist():
    rows = _map_rows()
    assert len(rows) >= 10, "the topic map lost its rows"
    stale = []
    for stem, sections in rows:
        source = ROOT / "notebooks" / "src" / f"{stem}.py"
        if not source.exists():
            continue  # a notebook still being written: the row says so
        headings = {m["title"] for m in HEADING.finditer(source.read_text(encoding="utf-8"))}
        stale += [f"{stem}: “{s}”" for s in sections if s not in headings]
    assert not stale, (
        "docs/instructors.md names sections that are no longer headings of the notebook "
        f"(update its topic map): {stale}"
    )


def test_every_chapter_has_a_time_budget():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    chapters = [
        Path(c["file"]).name
        for part in toc["parts"]
        for c in part["chapters"]
        if c["file"].startswith("notebooks/")
    ]
    timed = set(LINK.findall(_section("Time per notebook")))
    missing = [c for c in chapters if c not in timed]
    assert not missing, f"chapters without a line in the instructors' table of times: {missing}"


@pytest.mark.parametrize("title", ["A one-day course", "A two-day course"])
def test_the_schedules_are_there(title):
    assert _section(title).count("\n|") > 8
