"""Numbers for the text: a result computed in a cell, glued into the prose that quotes it.

A sentence such as "the classical baseline scored 0.637" is true of one run only. Written by
hand, it goes on saying 0.637 when the data, the mode or the code change. Glued, the website
renders the value the executed cell computed: the cell calls ``glue("kromp_classical", ap)``
and the markdown says ``{glue:text}`kromp_classical```. myst-nb's ``glue`` stores the value in
the cell's outputs; Jupyter Book replaces the role with it. In Jupyter the role shows as its
name, and the value is in the printed output of the cell that glued it.

``check_glued_prose`` is the rule a test applies to the notebook sources: a decimal number
in the markdown is glued, written as code or maths, a threshold named by its metric ("IoU 0.5",
"AP@0.75") or a zoom factor ("0.5x"), or listed as a constant of the text in a comment of its
cell (``<!-- constants: 2.0 -->`` for "Cellpose 2.0", a paper's figure, a parameter value).

Introduced in notebook 07; used in 07-10b.
"""

from __future__ import annotations

import math
import numbers
import re

__all__ = ["cells", "check_glued_prose", "glue", "markdown_decimals"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Text:
    """A value whose display is its formatted text (what ``{glue:text}`` renders)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def glue(name: str, value: object, fmt: str = ".3f") -> str:
    """Glue a result into the text under ``name``, formatted with ``fmt``.

    Parameters
    ----------
    name : str
        An identifier (letters, digits, ``_``); the markdown quotes it as
        ``{glue:text}`name```.
    value : number or str
        The result. Numbers (Python, numpy or 0-d torch) are formatted with ``fmt``; a string is
        glued as it is.
    fmt : str
        A format specification (``".3f"``, ``"d"``, ``".1%"``); ignored for strings.

    Returns
    -------
    str
        The text the website shows, so that the cell can print it too.

    Raises
    ------
    ValueError
        A name that is not an identifier, or a value that is NaN or infinite (a sentence would
        then quote "nan" without anybody noticing).
    TypeError
        A value that is neither a number nor a string (an array: glue the number you quote).

    Introduced in notebook 07.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"glue name {name!r} must be an identifier (letters, digits, _)")
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, str):
        text = value
    elif isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ValueError(f"glue {name!r}: the value is {value}; no sentence should quote it")
        if isinstance(value, numbers.Integral) and not fmt.endswith("d"):
            value = int(value)
        text = format(value, fmt)
    else:
        raise TypeError(f"glue {name!r}: expected a number or a string, got {type(value).__name__}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # without the website's packages the text is still returned
        return text
    myst_glue(name, _Text(text), display=False)
    return text


_DECIMAL = re.compile(r"(?<![\w.])\d*\.\d+(?![\w.]*\d)")
_CODE_OR_MATH = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\{glue:?\w*\}`[^`]*`", re.S)
_CONSTANTS = re.compile(r"<!--\s*constants:(.*?)-->", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_RANGE = re.compile(r"\d*\.\d+:\d*\.\d+")  # the thresholds averaged over, "AP 0.5:0.95"
# A threshold named by its metric is a parameter of the text: "IoU 0.5", "AP@0.75", "IoT >= 0.5".
_PARAMETER = re.compile(r"(?:(?:IoU|IoT)\s*(?:of|=|>|<|>=|\u2265)?\s*|(?:AP|F1)@)$")


def _blank_comments(text: str) -> str:
    """The text with its HTML comments removed, keeping the line count."""
    return _COMMENT.sub(lambda m: "\n" * m.group().count("\n"), text)


def cells(source: str) -> list[tuple[str, int, str]]:
    """The cells of a notebook source in jupytext percent format.

    Returns a list of ``(kind, first line, text)``: ``kind`` is ``"markdown"`` or ``"code"``
    (the header line of a cell, with its tags, is not part of the text), the line number is
    1-based, and a markdown cell's text has its ``# `` prefixes removed.
    """
    cells: list[tuple[str, int, str]] = []
    kind, start, lines = "code", 1, []
    for number, line in enumerate(source.splitlines(), 1):
        if line.startswith("# %%"):
            cells.append((kind, start, "\n".join(lines)))
            kind = "markdown" if "[markdown]" in line else "code"
            start, lines = number + 1, []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        else:
            lines.append(line)
    cells.append((kind, start, "\n".join(lines)))
    return cells


def markdown_decimals(source: str) -> list[tuple[int, str, str]]:
    """Every decimal number of the markdown cells that nothing accounts for.

    Parameters
    ----------
    source : str
        A notebook source in jupytext percent format (``notebooks/src/NN_*.py``).

    Returns
    -------
    list of (int, str, str)
        Line number, the number, and the line, for each decimal that is not inside a glue role,
        inline code or maths, not a threshold named by its metric or a zoom factor, and not
        listed in a ``<!-- constants: ... -->`` comment of its cell.
    """
    found = []
    for kind, start, text in cells(source):
        if kind != "markdown":
            continue
        constants = {c for m in _CONSTANTS.finditer(text) for c in re.split(r"[\s,]+", m.group(1))}
        for offset, line in enumerate(_blank_comments(text).splitlines()):
            bare = _RANGE.sub(" ", _CODE_OR_MATH.sub(" ", line))
            for m in _DECIMAL.finditer(bare):
                number = m.group()
                if number in constants or _PARAMETER.search(bare[: m.start()]):
                    continue
                if bare[m.end() : m.end() + 1] == "x":  # a zoom factor, 0.5x
                    continue
                found.append((start + offset, number, line.strip()))
    return found


def check_glued_prose(source: str, name: str = "notebook") -> None:
    """Raise ``AssertionError`` listing the markdown decimals that nothing accounts for."""
    found = markdown_decimals(source)
    if found:
        listed = "\n".join(f"  {name}:{line}: {number}  | {text}" for line, number, text in found)
        raise AssertionError(
            f"{len(found)} decimal number(s) in the prose are neither glued from the run, "
            "code, maths, a named threshold, nor a listed constant of the text:\n" + listed
        )
