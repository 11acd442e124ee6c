"""Root pytest plugin: keep the outputs of the notebooks that nbval executes.

With ``COURSE_SAVE_EXECUTED=<folder>`` set, every notebook run by ``pytest --nbval-lax`` is written
to ``<folder>/<name>.ipynb`` with the outputs of that run. ``scripts/cache_executed.py`` then hands
them to the website's execution cache, so that ``make test`` executes each notebook once and still
builds and checks the website. ``<name>.json`` beside each holds its wall time.
With ``COURSE_TEST_CHECKPOINTS=<folder>``, each notebook keeps its checkpoints in a subfolder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest


def _save_dir() -> Path | None:
    folder = os.environ.get("COURSE_SAVE_EXECUTED")
    return Path(folder) if folder else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    outputs = getattr(item, "test_outputs", None)
    if call.when == "call" and outputs is not None and _save_dir() is not None:
        item.cell.outputs = outputs
        item.cell.execution_count = item.cell_num + 1


_STARTED: dict[str, float] = {}


def pytest_runtest_setup(item):
    if not hasattr(item, "cell"):
        return
    if _save_dir() is not None:
        _STARTED.setdefault(str(item.parent.fspath), time.perf_counter())
    # Notebooks run side by side: each gets checkpoints of its own, so that notebook 07 never
    # loads a model that notebook 05 is still training (the kernel starts after this hook).
    root = os.environ.get("COURSE_TEST_CHECKPOINTS")
    if root:
        os.environ["COURSE_CHECKPOINTS"] = str(Path(root) / Path(str(item.parent.fspath)).stem)


def pytest_runtest_teardown(item, nextitem):
    folder = _save_dir()
    notebook = getattr(item.parent, "nb", None)
    if folder is None or notebook is None or not hasattr(item, "cell"):
        return
    if nextitem is None or getattr(nextitem, "parent", None) is not item.parent:
        import nbformat

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / Path(str(item.parent.fspath)).name
        nbformat.write(notebook, str(path))
        seconds = time.perf_counter() - _STARTED.pop(str(item.parent.fspath), time.perf_counter())
        path.with_suffix(".json").write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")
