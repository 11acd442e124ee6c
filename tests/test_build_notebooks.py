"""scripts/build_notebooks.py: solution and exercise notebooks from one source."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "build_notebooks", ROOT / "scripts/build_notebooks.py"
)
bn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bn)

SOURCE = '''# %% [markdown]
# # Title

# %% tags=["solution"]
def f(x):
    """Double x."""
    # BEGIN SOLUTION
    y = 2 * x
    return y
    # END SOLUTION


# %% tags=["solution"]
# BEGIN SOLUTION stub: z = None; w = None
z = f(3)
w = 1
# END SOLUTION

# %% tags=["check"]
assert z == 6

# %% tags=["nbval-check-output"]
print("hello")
# > hello
'''


URL = "https://github.com/example-org/microscopy-course"
WITH_URL = {"repository": {"url": URL, "branch": "teaching"}}
WITHOUT_URL = {"repository": {"url": ""}}


def _build(tmp_path, text, config=None):
    path = tmp_path / "99_demo.py"
    path.write_text(text)
    return bn.build(path, config)


def test_solution_keeps_code_and_drops_markers(tmp_path):
    solution, _ = _build(tmp_path, SOURCE)
    code = "\n".join(c.source for c in solution.cells)
    assert "y = 2 * x" in code and "z = f(3)" in code and "SOLUTION" not in code
    scope: dict = {}
    exec("\n".join(c.source for c in solution.cells if c.cell_type == "code"), scope)
    assert scope["z"] == 6


def test_exercise_replaces_blocks_with_todo_and_stubs(tmp_path):
    _, exercise = _build(tmp_path, SOURCE)
    code = [c.source for c in exercise.cells if c.cell_type == "code" and c.id != bn.SETUP_ID]
    assert "y = 2 * x" not in code[0] and "raise NotImplementedError" in code[0]
    assert "# TODO" in code[0] and '"""Double x."""' in code[0]
    assert code[1].splitlines()[1:] == ["z = None", "w = None"]
    assert "Exercise version" in exercise.cells[1].source


def test_expected_output_is_stored(tmp_path):
    solution, _ = _build(tmp_path, SOURCE)
    cell = solution.cells[-1]
    assert cell.source == 'print("hello")'
    assert cell.outputs[0]["text"] == "hello\n"
    assert cell.metadata["tags"] == ["nbval-check-output"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("# %%\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "needs a stub"),
        ("# %%\n# BEGIN SOLUTION stub: x = 1\nx = 1\n", "without END"),
        ("# %%\nx = 1\n# END SOLUTION\n", "without BEGIN"),
        ('# %% tags=["nbval-check-output"]\nprint(1)\n', "without '# > ' lines"),
    ],
)
def test_bad_sources_are_reported(tmp_path, bad, message):
    with pytest.raises(bn.SourceError, match=message):
        _build(tmp_path, bad)


class _Recorder:
    """Stands in for subprocess.run: records the commands."""

    def __init__(self):
        self.commands = []

    def __call__(self, command, check=False):
        self.commands.append(command)


def _run_setup(source, monkeypatch, installed):
    """Run a set-up cell as a kernel would, with or without course_utils importable."""
    import importlib.util
    import subprocess

    real = importlib.util.find_spec
    missing = lambda name, *a: None if name == "course_utils" else real(name, *a)
    if not installed:
        monkeypatch.setattr(importlib.util, "find_spec", missing)
    recorder = _Recorder()
    monkeypatch.setattr(subprocess, "run", recorder)
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(source, "setup-cell", "exec"), {})
    return recorder.commands


@pytest.mark.parametrize("config", [WITH_URL, WITHOUT_URL], ids=["url", "no-url"])
def test_setup_cell_comes_first_and_the_website_leaves_it_out(tmp_path, config):
    solution, exercise = _build(tmp_path, SOURCE, config)
    for notebook in (solution, exercise):
        first = next(c for c in notebook.cells if c.cell_type == "code")
        assert first.id == bn.SETUP_ID and first.metadata["tags"] == ["remove-cell"]
        assert sum(c.id == bn.SETUP_ID for c in notebook.cells) == 1
    assert solution.cells[0].cell_type == "markdown" and solution.cells[1].id == bn.SETUP_ID
    assert "Exercise version" in exercise.cells[1].source and exercise.cells[2].id == bn.SETUP_ID


@pytest.mark.parametrize("config", [WITH_URL, WITHOUT_URL], ids=["url", "no-url"])
def test_setup_cell_does_nothing_where_the_course_is_installed(monkeypatch, config):
    assert _run_setup(bn.setup_source(config), monkeypatch, installed=True) == []


def test_setup_cell_installs_the_course_from_the_repository_setting(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    commands = _run_setup(bn.setup_source(WITH_URL), monkeypatch, installed=False)
    folder = str(tmp_path / "microscopy-course")
    assert commands[0] == ["git", "clone", "--depth", "1", "--branch", "teaching", URL, folder]
    assert commands[1][:6] == [sys.executable, "-m", "pip", "install", "-q", "-e"]
    assert commands[1][6] == folder and len(commands) == 2


def test_setup_cell_without_a_repository_says_how_to_install(monkeypatch):
    source = bn.setup_source(WITHOUT_URL)
    assert "git clone" in source and "pip install" in source and "repository.url" in source
    with pytest.raises(ModuleNotFoundError, match="course_utils, which is not installed"):
        _run_setup(source, monkeypatch, installed=False)


@pytest.mark.parametrize(
    "url", ["https://github.com/o/r.git", "github.com/o/r", "https://x.org/o/r"]
)
def test_a_malformed_repository_url_is_reported(tmp_path, url):
    with pytest.raises(bn.SourceError, match="repository.url in _config.yml"):
        _build(tmp_path, SOURCE, {"repository": {"url": url}})


def test_the_notebooks_follow_the_config_file(tmp_path):
    solution, _ = _build(tmp_path, SOURCE)
    assert solution.cells[1].source == bn.setup_source(bn.read_config())


def test_generation_is_deterministic(tmp_path):
    first = bn._dump(_build(tmp_path, SOURCE)[1])
    second = bn._dump(_build(tmp_path, SOURCE)[1])
    assert first == second


def test_committed_notebooks_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/build_notebooks.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_exercise_notebooks_point_at_the_figures_one_folder_up(tmp_path):
    src = tmp_path / "99_demo.py"
    src.write_text("# %% [markdown]\n# ![a diagram](figures/99_demo.svg)\n\n# %%\nx = 1\n")
    solution, exercise = bn.build(src, {})
    assert "](figures/99_demo.svg)" in solution.cells[0].source
    assert "](../figures/99_demo.svg)" in exercise.cells[0].source
