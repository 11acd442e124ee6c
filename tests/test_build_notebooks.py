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


def _build(tmp_path, text):
    path = tmp_path / "99_demo.py"
    path.write_text(text)
    return bn.build(path)


def test_solution_keeps_code_and_drops_markers(tmp_path):
    solution, _ = _build(tmp_path, SOURCE)
    code = "\n".join(c.source for c in solution.cells)
    assert "y = 2 * x" in code and "z = f(3)" in code and "SOLUTION" not in code
    scope: dict = {}
    exec("\n".join(c.source for c in solution.cells if c.cell_type == "code"), scope)
    assert scope["z"] == 6


def test_exercise_replaces_blocks_with_todo_and_stubs(tmp_path):
    _, exercise = _build(tmp_path, SOURCE)
    code = [c.source for c in exercise.cells if c.cell_type == "code"]
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
