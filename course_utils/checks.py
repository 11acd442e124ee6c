"""Checks for the exercise cells: they tell a student in plain words what is right or wrong.

Every exercise in a notebook is followed by a cell that calls one of these. A check passes with a
short ``✓`` line and fails with an :class:`ExerciseError` (an ``AssertionError``) whose message
says what to look at, never with an obscure error from deep inside a library.

Introduced in notebook 01.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TODO_HINT = "complete the TODO in the exercise cell above, then run it again"


class ExerciseError(AssertionError):
    """An exercise check failed; the message says why and what to do."""


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise ExerciseError(f"{name} is None: {TODO_HINT}.")
    if value is Ellipsis:
        raise ExerciseError(f"{name} is `...`: {TODO_HINT}.")
    if hasattr(value, "detach"):  # torch tensors, without importing torch here
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as err:
        raise ExerciseError(f"{name} cannot be read as an array ({err}).") from err


def _ok(message: str) -> None:
    print(f"✓ {message}")


def check_close(
    actual: Any, expected: Any, name: str, *, rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Check that ``actual`` equals ``expected`` within tolerances (arrays, tensors or numbers).

    Parameters
    ----------
    actual, expected : array-like, torch.Tensor or number
        The student's result and the reference.
    name : str
        What is checked, in the student's words (``"your conv2d"``).
    rtol, atol : float
        Relative and absolute tolerance, as in :func:`numpy.allclose`.

    Raises
    ------
    ExerciseError
        With the shape or the largest difference when they disagree.
    """
    a = _to_numpy(actual, name)
    e = _to_numpy(expected, "the expected value")
    if a.shape != e.shape:
        raise ExerciseError(f"{name} has shape {a.shape}, expected {e.shape}.")
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise ExerciseError(f"{name} has dtype {a.dtype}, expected numbers.")
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    if not np.allclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True):
        diff = np.abs(a64 - e64)
        worst = np.unravel_index(np.nanargmax(diff), diff.shape) if diff.ndim else ()
        raise ExerciseError(
            f"{name} differs from the expected value: largest difference "
            f"{float(np.nanmax(diff)):.3g} at index {tuple(int(i) for i in worst)} "
            f"(got {float(a64[worst]):.6g}, expected {float(e64[worst]):.6g})."
        )
    _ok(f"{name} matches (shape {a.shape}).")


def check_equal(actual: Any, expected: Any, name: str) -> None:
    """Check exact equality (integers, labels, shapes, strings).

    Raises
    ------
    ExerciseError
        When they differ, with the number of differing elements for arrays.
    """
    if isinstance(expected, (str, int, bool, tuple)) and not isinstance(actual, np.ndarray):
        if actual is None:
            raise ExerciseError(f"{name} is None: {TODO_HINT}.")
        if actual != expected:
            raise ExerciseError(f"{name} is {actual!r}, expected {expected!r}.")
        _ok(f"{name} is {expected!r}.")
        return
    a = _to_numpy(actual, name)
    e = _to_numpy(expected, "the expected value")
    if a.shape != e.shape:
        raise ExerciseError(f"{name} has shape {a.shape}, expected {e.shape}.")
    wrong = int(np.count_nonzero(a != e))
    if wrong:
        raise ExerciseError(f"{name}: {wrong} of {a.size} elements differ from the expected ones.")
    _ok(f"{name} is right (shape {a.shape}).")


def check_true(condition: Any, message: str) -> None:
    """Check a condition; ``message`` says what should hold (``"the loss decreased"``).

    Raises
    ------
    ExerciseError
        When the condition is false or None.
    """
    if condition is None:
        raise ExerciseError(f"not yet checked ({message}): {TODO_HINT}.")
    if not bool(condition):
        raise ExerciseError(f"expected that {message}, but it does not hold.")
    _ok(message)
