"""Generate the solution and exercise notebooks from their one source each.

    python scripts/build_notebooks.py            # write notebooks/*.ipynb and notebooks/exercises/
    python scripts/build_notebooks.py --check    # exit 1 when a committed notebook is stale

Source: ``notebooks/src/NN_name.py`` in jupytext's percent format. Conventions (CONTRIBUTING.md):

- ``solution`` cells hold blocks between ``# BEGIN SOLUTION`` and ``# END SOLUTION``. The
  solution notebook keeps the code and drops the markers; the exercise notebook replaces each
  block by a ``# TODO`` and a stub: ``raise NotImplementedError(...)`` inside a function, or the
  statement given on the marker line (``# BEGIN SOLUTION stub: threshold = None``), which is
  required at the top level of a cell.
- ``nbval-check-output`` cells end with lines ``# > text``: the expected printed output. They are
  stored as the cell's output, so that nbval compares them (the only outputs committed).
- Every generated notebook gets a set-up cell as its first code cell (tagged ``remove-cell``:
  the website leaves it out). Where ``course_utils`` is importable it does nothing; elsewhere
  (Colab) it clones the repository that ``repository.url`` in ``_config.yml`` names and installs
  the course, or, while that setting is empty, says how to install it. Change the setting, then
  run ``make notebooks``.

Generated notebooks carry no other outputs and have deterministic metadata and cell ids, so that
``--check`` can compare them byte for byte.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
SITE_EXTENSION = ROOT / "docs" / "_ext" / "course_site.py"  # reads repository.url
SRC = ROOT / "notebooks" / "src"
OUT_SOLUTION = ROOT / "notebooks"
OUT_EXERCISE = ROOT / "notebooks" / "exercises"

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION(?:\s+stub:\s*(?P<stub>.+))?\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
EXPECTED = re.compile(r"^# > ?(?P<text>.*)$")
TODO = "# TODO: write this part (the text above explains what it should do)."
RAISE = 'raise NotImplementedError("Exercise: complete the TODO in this cell, then run it again.")'
EXERCISE_BANNER = (
    "> **Exercise version.** Cells marked `TODO` are yours to complete; the cell after each one "
    "checks your answer. The full solution is the notebook of the same name in `notebooks/`."
)
SETUP_ID = "setup"
SETUP_TAGS = ["remove-cell"]
SETUP_INSTALL = """\
# Set-up for Colab, or any Python without the course: when `course_utils` is missing, this cell
# clones the course repository and installs it (a minute or two). Where the course is installed
# already (`make lab` in the course folder), it does nothing.
import importlib.util

if importlib.util.find_spec("course_utils") is None:
    import subprocess
    import sys
    from pathlib import Path

    REPOSITORY, BRANCH = "{url}", "{branch}"
    folder = Path(REPOSITORY.rsplit("/", 1)[-1]).resolve()
    if not folder.exists():
        clone = ["git", "clone", "--depth", "1", "--branch", BRANCH, REPOSITORY, str(folder)]
        subprocess.run(clone, check=True)
    install = ["pip", "install", "-q", "-e", str(folder), "albumentations>=2"]
    subprocess.run([sys.executable, "-m", *install], check=True)
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()"""
SETUP_MANUAL = """\
# Set-up: this notebook needs the course's package `course_utils`; `make lab` in the course
# folder installs it. Elsewhere (Colab, a fresh Python), install the course, restart the kernel
# and run the notebook again:
#     !git clone <the course repository> course && pip install -q -e course
# (With `repository.url` set in the course's _config.yml, this cell does all that by itself.)
import importlib.util

if importlib.util.find_spec("course_utils") is None:
    raise ModuleNotFoundError(
        "This notebook needs the course's package course_utils, which is not installed here. "
        "Install the course as the comment at the top of this cell says, then run it again."
    )"""
METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


class SourceError(ValueError):
    """A notebook source breaks the conventions."""


def _split_blocks(source: str, where: str, exercise: bool) -> str:
    """Remove the solution markers, or replace each marked block by a TODO and a stub."""
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if inside:
                raise SourceError(f"{where}, line {number}: nested BEGIN SOLUTION")
            inside = True
            if exercise:
                indent, stub = begin["indent"], begin["stub"]
                if stub is None and not indent:
                    raise SourceError(
                        f"{where}, line {number}: a top-level solution block needs a stub "
                        "(# BEGIN SOLUTION stub: name = None)"
                    )
                out.append(indent + TODO)
                out.extend(indent + s.strip() for s in (stub.split(";") if stub else [RAISE]))
        elif end:
            if not inside:
                raise SourceError(f"{where}, line {number}: END SOLUTION without BEGIN")
            inside = False
        elif not (inside and exercise):
            out.append(line)
    if inside:
        raise SourceError(f"{where}: BEGIN SOLUTION without END SOLUTION")
    return "\n".join(out)


def _expected_output(cell) -> None:
    """Move the trailing ``# > text`` lines of a cell into its stored stream output."""
    lines = cell.source.splitlines()
    expected: list[str] = []
    while lines and (match := EXPECTED.match(lines[-1])):
        expected.insert(0, match["text"])
        lines.pop()
    if not expected:
        raise SourceError(f"cell {cell.id}: tagged nbval-check-output without '# > ' lines")
    cell.source = "\n".join(lines).rstrip()
    cell.execution_count = 1  # nbval compares only the outputs of cells that were run
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="\n".join(expected) + "\n")
    ]


def read_config() -> dict:
    """``_config.yml``, where the repository setting lives."""
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8")) or {}


def setup_source(config: dict) -> str:
    """The set-up cell for the repository that ``config`` (``_config.yml``) names, if any."""
    spec = importlib.util.spec_from_file_location("course_site", SITE_EXTENSION)
    site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site)
    try:
        repo = site.repository(config)
    except ValueError as err:
        raise SourceError(str(err)) from None
    if repo is None:
        return SETUP_MANUAL
    return SETUP_INSTALL.format(url=repo.url, branch=repo.branch)


def _insert_setup(notebook: dict, source: str) -> None:
    """Put the set-up cell before the first code cell."""
    first = next((i for i, c in enumerate(notebook.cells) if c.cell_type == "code"), None)
    if first is not None:
        cell = nbformat.v4.new_code_cell(source, id=SETUP_ID)
        cell.metadata["tags"] = list(SETUP_TAGS)
        notebook.cells.insert(first, cell)


def build(path: Path, config: dict | None = None) -> tuple[dict, dict]:
    """Return the (solution, exercise) notebooks generated from one source file.

    ``config`` is ``_config.yml`` (read from the course folder when not given); its repository
    setting decides what the set-up cell does.
    """
    setup = setup_source(read_config() if config is None else config)
    source = jupytext.read(path, fmt="py:percent")
    solution = nbformat.v4.new_notebook(metadata=copy.deepcopy(METADATA))
    exercise = nbformat.v4.new_notebook(metadata=copy.deepcopy(METADATA))
    n_exercises = 0
    for index, cell in enumerate(source.cells):
        tags = list(cell.metadata.get("tags", []))
        where = f"{path.name}, cell {index}"
        make = (
            nbformat.v4.new_markdown_cell
            if cell.cell_type == "markdown"
            else (nbformat.v4.new_code_cell)
        )
        digest = hashlib.sha1(f"{path.stem}:{index}:{cell.source}".encode()).hexdigest()[:12]
        sol = make(_split_blocks(cell.source, where, exercise=False), id=f"s{digest}")
        exe = make(_split_blocks(cell.source, where, exercise=True), id=f"e{digest}")
        if cell.cell_type == "markdown":  # exercises/ is one folder down: figures/ is ../figures/
            exe.source = exe.source.replace("](figures/", "](../figures/")
        for new in (sol, exe):
            if tags:
                new.metadata["tags"] = tags
            if "nbval-check-output" in tags:
                _expected_output(new)
        n_exercises += "solution" in tags
        solution.cells.append(sol)
        exercise.cells.append(exe)
    _insert_setup(solution, setup)
    _insert_setup(exercise, setup)
    if n_exercises:
        exercise.cells.insert(1, nbformat.v4.new_markdown_cell(EXERCISE_BANNER, id="banner"))
    return solution, exercise


def _dump(notebook: dict) -> str:
    nbformat.validate(notebook)
    return json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    stale: list[str] = []
    sources = sorted(SRC.glob("[0-9][0-9]*_*.py"))
    if not sources:
        print(f"no notebook sources in {SRC}", file=sys.stderr)
        return 1
    config = read_config()
    for path in sources:
        solution, exercise = build(path, config)
        targets = [(OUT_SOLUTION / f"{path.stem}.ipynb", solution)]
        if any("solution" in c.metadata.get("tags", []) for c in solution.cells):
            targets.append((OUT_EXERCISE / f"{path.stem}.ipynb", exercise))
        for target, notebook in targets:
            text = _dump(notebook)
            if target.exists() and target.read_text() == text:
                continue
            stale.append(str(target.relative_to(ROOT)))
            if not args.check:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    expected = {f"{p.stem}.ipynb" for p in sources}
    for folder in (OUT_SOLUTION, OUT_EXERCISE):
        orphans = [p for p in folder.glob("*.ipynb") if p.name not in expected]
        stale.extend(f"{p.relative_to(ROOT)} (no source: delete it)" for p in orphans)
    if args.check and stale:
        print("stale generated notebooks (run `make notebooks`):", *stale, sep="\n  ")
        return 1
    print(f"{len(sources)} sources, {len(stale)} notebooks {'stale' if args.check else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
