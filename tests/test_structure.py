"""The layout rules of CONTRIBUTING, checked on the source: no private name imported from a
sibling module, no file over ~400 lines, and each "Introduced in notebook NN" note true."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "course_utils"
MAX_LINES = 400
NOTE = re.compile(r"Introduced in notebook (\d\d)")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _private_imports(path: Path) -> list[str]:
    """``from .x import _y`` and ``module._y`` on a sibling module imported by name."""
    tree = ast.parse(path.read_text())
    found, siblings = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''}"
                                 f" import {alias.name}")  # fmt: skip
                else:
                    siblings.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in siblings and node.attr.startswith("_")
                and not node.attr.startswith("__")):  # fmt: skip
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_private_name_is_imported_from_a_sibling_module():
    problems = {
        str(p.relative_to(ROOT)): found for p in _modules() if (found := _private_imports(p))
    }
    assert not problems, (
        f"shared helpers belong in course_utils/_shared (or are public in their module): {problems}"
    )


def test_the_rule_catches_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from .targets.flows import _relabel\nfrom . import jit\njit._switch()\n")
    assert len(_private_imports(bad)) == 2


@pytest.mark.parametrize("folder", ["course_utils", "benchmarks", "scripts", "tests"])
def test_no_file_over_about_400_lines(folder):
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / folder).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these files (over {MAX_LINES} lines): {long}"


def _code_of_notebooks() -> dict[str, str]:
    """Code cells of every notebook source (jupytext percent format), comments removed."""
    code = {}
    for path in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")):
        cells = re.split(r"^# %%.*$", path.read_text(), flags=re.M)
        heads = re.findall(r"^# %%.*$", path.read_text(), flags=re.M)
        kept = [c for h, c in zip(["# %%"] + heads, cells) if "[markdown]" not in h]
        lines = [re.sub(r"#.*$", "", line) for cell in kept for line in cell.splitlines()]
        code[path.name[:2]] = "\n".join(lines)
    return code


def _first_use(name: str, code: dict[str, str]) -> str | None:
    pattern = re.compile(r"(\.|\bimport\s+|,\s*|\(\s*)" + re.escape(name) + r"\b")
    return next((nb for nb, text in code.items() if pattern.search(text)), None)


def _public_definitions():
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                yield path, node


def test_introduced_in_notebook_notes_name_the_first_notebook_that_calls_it():
    """A public function or class says "Introduced in notebook NN" exactly when a notebook's
    code calls it, and NN is the first such notebook (names no notebook calls carry no note)."""
    code = _code_of_notebooks()
    wrong = []
    for path, node in _public_definitions():
        match = NOTE.search(ast.get_docstring(node) or "")
        claimed, used = (match.group(1) if match else None), _first_use(node.name, code)
        if claimed != used:
            where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
            wrong.append(f"{where}: says {claimed}, first called in {used}")
    assert not wrong, "\n".join(wrong)


def test_module_notes_name_the_first_notebook_that_uses_the_module():
    """A module's own note is the earliest notebook that calls one of its public names."""
    code = _code_of_notebooks()
    wrong = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        match = NOTE.search(ast.get_docstring(tree) or "")
        if match is None:
            continue
        uses = [
            _first_use(node.name, code)
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
        ]
        first = min((u for u in uses if u), default=None)
        if first is not None and match.group(1) != first:
            wrong.append(f"{path.relative_to(ROOT)}: says {match.group(1)}, first used in {first}")
    assert not wrong, "\n".join(wrong)
