"""Numbers in the prose come from the run: course_utils.prose and the rule on 07-10."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils import prose

SOURCES = Path(__file__).resolve().parent.parent / "notebooks" / "src"
#: The notebooks whose prose quotes no decimal number that the run did not glue.
GLUED_NOTEBOOKS = sorted(
    p.name for p in SOURCES.glob("*.py") if p.name[:2] in {"07", "08", "09", "10", "11"}
)


def test_glue_formats_numbers_of_every_kind():
    assert prose.glue("a_float", 0.63749) == "0.637"
    assert prose.glue("a_numpy", np.float32(0.5)) == "0.500"
    assert prose.glue("a_tensor", torch.tensor(2.0), ".1f") == "2.0"
    assert prose.glue("an_int", np.int64(325), "d") == "325"
    assert prose.glue("an_int_as_float", 3, ".2f") == "3.00"
    assert prose.glue("a_share", 0.74, ".0%") == "74%"
    assert prose.glue("a_text", "StarDist-style") == "StarDist-style"


@pytest.mark.parametrize("value", [float("nan"), np.inf, np.float32("nan")])
def test_glue_refuses_a_value_no_sentence_should_quote(value):
    with pytest.raises(ValueError, match="no sentence should quote"):
        prose.glue("bad", value)


def test_glue_refuses_bad_names_and_arrays():
    with pytest.raises(ValueError, match="identifier"):
        prose.glue("two words", 1.0)
    with pytest.raises(TypeError, match="number or a string"):
        prose.glue("an_array", np.ones(3))


def test_glue_stores_the_text_for_the_website(monkeypatch):
    """myst-nb receives the formatted text, which {glue:text} renders as it is."""
    calls = []
    import myst_nb

    monkeypatch.setattr(myst_nb, "glue", lambda *a, **k: calls.append((a, k)))
    prose.glue("ap", 0.6371)
    (name, value), kwargs = calls[0]
    assert name == "ap" and repr(value) == "0.637" and kwargs == {"display": False}


def _source(*cells: str) -> str:
    return "\n".join(cells) + "\n"


def test_a_quoted_result_is_found_and_every_exception_is_allowed():
    source = _source(
        "# %% [markdown]",
        "# The classical baseline scored 0.637 here.",
        "# Glued {glue:text}`kromp_ap` and code `0.25` and maths $0.5 \\times 2$.",
        "# Matched at IoU 0.5, at IoU $\\ge$ 0.75 with AP@0.9, zoomed 0.5x.",
        "# A mean IoU of about 0.97 is a result.",
        "# %%",
        "x = 0.637",
        "# %% [markdown]",
        "# <!-- constants: 2.0 -->",
        "# Cellpose 2.0, and 3.5 unlisted.",
    )
    found = prose.markdown_decimals(source)
    assert [(n, line) for line, n, _ in found] == [("0.637", 2), ("0.97", 5), ("3.5", 10)]
    with pytest.raises(AssertionError, match="3 decimal number"):
        prose.check_glued_prose(source, "demo")


def test_a_multiline_comment_keeps_the_line_numbers():
    source = _source("# %% [markdown]", "# <!-- constants:", "# 1.5 -->", "# 1.5 and 2.5")
    assert [(line, n) for line, n, _ in prose.markdown_decimals(source)] == [(4, "2.5")]


@pytest.mark.parametrize("name", GLUED_NOTEBOOKS)
def test_the_prose_of_07_to_10_quotes_only_glued_numbers(name):
    """A decimal in the markdown is glued from the run or declared a constant of the text."""
    prose.check_glued_prose((SOURCES / name).read_text(), name)


def test_the_glued_notebooks_are_the_ones_the_issue_names():
    assert len(GLUED_NOTEBOOKS) == 7, GLUED_NOTEBOOKS  # 07, 07b, 08, 09, 10, 10b, 11
