"""The exercise notebooks are real exercises: left as they are, each fails at its first check.

Each notebook in ``notebooks/exercises/`` is executed cell by cell until the first error. That
error must come from a cell tagged ``check`` (or from a function the student has to write, called
there) and say in plain words what to do: an ``ExerciseError`` or the stub's
``NotImplementedError``, never a ``NameError`` or an error from deep inside a library.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = sorted((ROOT / "notebooks" / "exercises").glob("*.ipynb"))
HELPFUL = {"ExerciseError", "NotImplementedError"}


def _first_error(path: Path) -> tuple[nbformat.NotebookNode, CellExecutionError] | None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    with client.setup_kernel(env={**os.environ, "COURSE_MODE": "fast"}):
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as err:
                return cell, err
    return None


@pytest.mark.parametrize("path", EXERCISES, ids=[p.stem for p in EXERCISES])
def test_exercise_fails_first_at_a_check_with_a_helpful_message(path):
    found = _first_error(path)
    assert found is not None, f"{path.name}: ran to the end with its TODOs left empty"
    cell, err = found
    if err.ename == "DataUnavailableError":
        pytest.fail(
            f"{path.name} needs BBBC039, which is in neither the cache nor the mirror: set "
            "COURSE_DATA_MIRROR to a folder holding bbbc039/ (CI: ../shared/data), or run "
            "`make course` once with network to fill the cache.",
            pytrace=False,
        )
    tags = cell.metadata.get("tags", [])
    assert "check" in tags, f"{path.name}: first error outside a check cell:\n{cell.source}"
    assert err.ename in HELPFUL, f"{path.name}: unhelpful {err.ename}: {err.evalue}"
    assert "TODO" in err.evalue, f"{path.name}: the message does not point at the TODO"


def test_every_exercise_notebook_has_a_solution_twin():
    assert EXERCISES, "no exercise notebooks"
    for path in EXERCISES:
        assert (ROOT / "notebooks" / path.name).exists(), f"no solution notebook for {path.name}"
