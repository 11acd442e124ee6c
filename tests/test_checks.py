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


def test_check_close_points_at_a_nan_the_student_made():
    expected = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ExerciseError, match=r"NaN .* 1 place\(s\), the first at index \(1,\)"):
        check_close(np.array([1.0, np.nan, 3.0]), expected, "x")
    check_close(np.array([np.nan, 2.0]), np.array([np.nan, 2.0]), "x")  # NaN where expected


def test_checks_take_half_precision_tensors_and_refuse_complex():
    check_close(torch.tensor([1.0, 2.0], dtype=torch.bfloat16), np.array([1.0, 2.0]), "bf16")
    with pytest.raises(ExerciseError, match="real numbers"):
        check_close(np.array([1 + 1j]), np.array([1.0]), "x")


def test_check_equal_compares_a_tensor_with_a_number_element_wise():
    check_equal(torch.tensor(4), 4, "count")
    with pytest.raises(ExerciseError, match=r"has shape \(2,\), expected \(\)"):
        check_equal(torch.tensor([4, 4]), 4, "count")


def test_check_true_asks_to_reduce_an_array():
    check_true(np.array([True]), "one element is fine")
    with pytest.raises(ExerciseError, match=r"\.all\(\) or \.any\(\)"):
        check_true(np.array([True, False]), "all positive")
