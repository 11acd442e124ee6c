"""The layout rules of CONTRIBUTING, checked on the source: no private name imported from a
sibling module, no file over ~400 lines, and each "Introduced in notebook NN" note true."""

from __future__ import annotations

import ast
import functools
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "course_utils"
MAX_LINES = 400
NOTE = re.compile(r"Introduced\s+in\s+notebook\s+(\d\d[a-z]?)\b")


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
                    found.append(
                        f"line {node.lineno}: from {'.' * node.level}{node.module or ''}"
                        f" import {alias.name}"
                    )
                else:
                    siblings.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in siblings
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
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


MAX_FUNCTION_LINES = 80


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's signature and body, its docstring left out."""
    body = node.body
    first = getattr(body[0], "value", None)
    doc = isinstance(body[0], ast.Expr) and isinstance(first, ast.Constant)
    docstring = body[1].lineno - body[0].lineno if doc and len(body) > 1 else 0
    return node.end_lineno - node.lineno + 1 - docstring


@pytest.mark.parametrize("folder", ["course_utils", "benchmarks", "scripts"])
def test_no_function_over_80_lines(folder):
    long = [
        f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)"
        for p in sorted((ROOT / folder).rglob("*.py"))
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := _code_lines(node)) > MAX_FUNCTION_LINES
    ]
    assert not long, f"split these functions (over {MAX_FUNCTION_LINES} lines of code): {long}"


def test_the_function_rule_counts_code_not_docstrings():
    docstring = 'def f():\n    """doc\n\n    more"""\n'
    source = docstring + "    x = 1\n" * 79 + "\n\ndef g():\n    pass\n"
    f, g = (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef))
    assert _code_lines(f) == 80 and _code_lines(g) == 2


def _notebook_trees() -> dict[str, list[ast.AST]]:
    """The parsed code cells of every notebook source (jupytext percent format), by number."""
    trees = {}
    for path in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]*_*.py")):
        text = path.read_text()
        heads = ["# %%", *re.findall(r"^# %%.*$", text, flags=re.M)]
        cells = re.split(r"^# %%.*$", text, flags=re.M)
        parsed = []
        for head, cell in zip(heads, cells):
            if "[markdown]" in head:
                continue
            try:
                parsed.append(ast.parse(cell))
            except SyntaxError:  # a cell with shell or magic lines
                continue
        trees[path.name.split("_")[0]] = parsed  # "02", "02b", ...
    return trees


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _resolve(path: str):
    """The object at a dotted path under course_utils, or None."""
    parts = path.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except ImportError:
        return None
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[: i + 1]))
        except ImportError:
            return None
    return obj


def _used_objects(trees: list[ast.AST]) -> set[int]:
    """ids of the course_utils objects a notebook's code refers to (``cu.x.y``, imports)."""
    aliases: dict[str, str] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "course_utils":
                        aliases[a.asname or a.name] = a.name
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_u"):
                for a in node.names:
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    used = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute | ast.Name) and (path := _dotted(node)):
                head, _, rest = path.partition(".")
                if head in aliases:
                    obj = _resolve(aliases[head] + ("." + rest if rest else ""))
                    if obj is not None:
                        used.add(id(obj))
    return used


@functools.cache
def _first_uses() -> dict[int, str]:
    first: dict[int, str] = {}
    for nb, trees in _notebook_trees().items():
        for obj in _used_objects(trees):
            first.setdefault(obj, nb)
    return first


def _first_use(path: Path, name: str) -> str | None:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    obj = getattr(importlib.import_module(module), name, None)
    return None if obj is None else _first_uses().get(id(obj))


def _public_definitions():
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                yield path, node


def test_introduced_in_notebook_notes_name_the_first_notebook_that_calls_it():
    """A public function or class says "Introduced in notebook NN" exactly when a notebook's
    code calls it, and NN is the first such notebook (names no notebook calls carry no note)."""
    wrong = []
    for path, node in _public_definitions():
        match = NOTE.search(ast.get_docstring(node) or "")
        claimed, used = (match.group(1) if match else None), _first_use(path, node.name)
        if claimed != used:
            where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
            wrong.append(f"{where}: says {claimed}, first called in {used}")
    assert not wrong, "\n".join(wrong)


def test_module_notes_name_the_first_notebook_that_uses_the_module():
    """A module's own note is the earliest notebook that calls one of its public names."""
    wrong = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        match = NOTE.search(ast.get_docstring(tree) or "")
        if match is None:
            continue
        uses = [
            _first_use(path, node.name)
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_")
        ]
        first = min((u for u in uses if u), default=None)
        if first is not None and match.group(1) != first:
            wrong.append(f"{path.relative_to(ROOT)}: says {match.group(1)}, first used in {first}")
    assert not wrong, "\n".join(wrong)


MAX_NOTEBOOK_LINES = 1000


def test_no_notebook_source_over_1000_lines():
    long = {
        p.name: n
        for p in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]*_*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_NOTEBOOK_LINES
    }
    assert not long, (
        f"a chapter a reader can hold: move long figure code to course_utils.figures "
        f"(over {MAX_NOTEBOOK_LINES} lines: {long})"
    )


def test_no_fmt_skip_markers():
    # ruff format is the one layout; a marker is kept only where a layout carries meaning
    # (an aligned table), and none does today.
    marked = [
        f"{p.relative_to(ROOT)}:{i}"
        for folder in ("course_utils", "benchmarks", "scripts", "tests", "notebooks/src")
        for p in sorted((ROOT / folder).rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if line.rstrip().endswith(("# fmt: skip", "# fmt: off"))
    ]
    assert not marked, f"ruff format decides the layout: {marked}"
