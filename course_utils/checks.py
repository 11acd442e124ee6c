"""Checks for the exercise cells: they tell a student in plain words what is right or wrong.

Every exercise in a notebook is followed by a cell that calls one of these. A check passes with a
short ``✓`` line and fails with an :class:`ExerciseError` (an ``AssertionError``) whose message
says what to look at, never with an obscure error from deep inside a library.

Introduced in notebook 00.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._shared.validate import to_numpy
from .mode import is_dryrun

TODO_HINT = "complete the TODO in the exercise cell above, then run it again"


class ExerciseError(AssertionError):
    """An exercise check failed; the message says why and what to do."""


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise ExerciseError(f"{name} is None: {TODO_HINT}.")
    if value is Ellipsis:
        raise ExerciseError(f"{name} is `...`: {TODO_HINT}.")
    try:
        return to_numpy(value)  # torch tensors too, without importing torch here
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

    Introduced in notebook 00.
    """
    a = _to_numpy(actual, name)
    e = _to_numpy(expected, "the expected value")
    if a.shape != e.shape:
        raise ExerciseError(f"{name} has shape {a.shape}, expected {e.shape}.")
    if a.dtype.kind not in "biuf":
        raise ExerciseError(f"{name} has dtype {a.dtype}, expected real numbers.")
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    nan_mismatch = np.isnan(a64) != np.isnan(e64)
    if nan_mismatch.any():
        # The largest difference below would skip these places and point elsewhere.
        where = tuple(int(i) for i in np.argwhere(nan_mismatch)[0])
        raise ExerciseError(
            f"{name} has NaN where the expected value has none (or the other way round): "
            f"{int(nan_mismatch.sum())} place(s), the first at index {where} "
            f"(got {float(a64[where]):.6g}, expected {float(e64[where]):.6g})."
        )
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

    Introduced in notebook 01.
    """
    # Scalars and tuples compare directly; arrays and tensors (getattr ndim > 0) element-wise.
    if isinstance(expected, (str, int, bool, tuple)) and getattr(actual, "ndim", 0) == 0:
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

    Introduced in notebook 05.
    """
    if condition is None:
        raise ExerciseError(f"not yet checked ({message}): {TODO_HINT}.")
    if getattr(condition, "ndim", 0) > 0 and int(np.prod(condition.shape)) != 1:
        raise ExerciseError(
            f"the check of '{message}' got an array of shape {tuple(condition.shape)}, not one "
            "True/False: reduce it with .all() or .any()."
        )
    if not bool(condition):
        raise ExerciseError(f"expected that {message}, but it does not hold.")
    _ok(message)


def check_result(condition: Any, claim: str) -> bool:
    """Check a claim about what *training reached* (a score floor, a ranking of trained models).

    Asserted like :func:`check_true`, except in a dry run of full mode
    (``COURSE_MODE=full COURSE_DRYRUN=1``), where training is cut to a few steps and no score
    can be reached: there the condition is still computed (the code that scores runs), and the
    claim is printed as not checked, with what the run gave. Checks of anything else (parity
    with a reference, shapes, a hand-built piece equal to the library's) stay plain asserts.

    Returns
    -------
    bool
        Whether the claim holds in this run.

    Raises
    ------
    ExerciseError
        Outside a dry run, when the claim does not hold.

    Introduced in notebook 02b.
    """
    if condition is None:
        raise ExerciseError(f"not yet checked ({claim}): {TODO_HINT}.")
    holds = bool(np.asarray(condition).all())
    if is_dryrun():
        print(f"- not checked in a dry run (training was cut short): {claim} [here: {holds}]")
        return holds
    check_true(holds, claim)
    return True
