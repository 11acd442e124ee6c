"""course_utils.checks: exercise checks pass on right answers and explain wrong ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.checks import ExerciseError, check_close, check_equal, check_true


def test_check_close_passes_and_prints(capsys):
    check_close(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-9]), "my thing")
    assert "✓ my thing" in capsys.readouterr().out


@pytest.mark.parametrize(
    "actual, message",
    [
        (None, "is None: complete the TODO"),
        (..., "complete the TODO"),
        (np.zeros(3), "has shape \\(3,\\), expected \\(2,\\)"),
        (np.array([1.0, 5.0]), "largest difference 3 at index \\(1,\\)"),
    ],
)
def test_check_close_explains(actual, message):
    with pytest.raises(ExerciseError, match=message):
        check_close(actual, np.array([1.0, 2.0]), "x")


def test_check_equal_counts_differences():
    check_equal(np.arange(4), np.arange(4), "ids")
    with pytest.raises(ExerciseError, match="1 of 4 elements differ"):
        check_equal(np.array([0, 1, 2, 4]), np.arange(4), "ids")
    with pytest.raises(ExerciseError, match="is 3, expected 4"):
        check_equal(3, 4, "count")


def test_check_true():
    check_true(True, "it holds")
    with pytest.raises(ExerciseError, match="expected that the loss decreased"):
        check_true(False, "the loss decreased")
    with pytest.raises(ExerciseError, match="not yet checked"):
        check_true(None, "anything")
    assert issubclass(ExerciseError, AssertionError)
