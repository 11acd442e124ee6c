"""Fast vs full mode: the one switch between a CI-sized run and a real one.

Every notebook reads its epochs, image counts and patch sizes through :func:`pick`, so that the
same code runs in two minutes on a laptop CPU (``fast``) and gives real results on a GPU
(``full``). The choice comes from one environment variable, ``COURSE_MODE``:

- ``fast``: small data and few epochs (CI, a laptop without a GPU);
- ``full``: the real experiment;
- ``auto`` (default): ``full`` when a CUDA GPU is available, ``fast`` otherwise.

Introduced in notebook 00.
"""

from __future__ import annotations

import os
from typing import Literal, TypeVar

Mode = Literal["fast", "full"]
T = TypeVar("T")

ENV_VAR = "COURSE_MODE"
_CHOICES = ("fast", "full", "auto")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # the mode must be readable without torch
        return False
    return bool(torch.cuda.is_available())


def get_mode() -> Mode:
    """Return the current mode, ``"fast"`` or ``"full"``.

    Reads ``COURSE_MODE`` (``fast``, ``full`` or ``auto``; case-insensitive, default ``auto``)
    each time it is called, so a notebook can change it with ``os.environ`` before a cell.

    Raises
    ------
    ValueError
        If ``COURSE_MODE`` holds anything else.

    Introduced in notebook 00.
    """
    raw = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if raw not in _CHOICES:
        raise ValueError(
            f"{ENV_VAR}={raw!r} is not a mode; use one of {', '.join(_CHOICES)} "
            "(auto = full on a CUDA GPU, fast otherwise)."
        )
    if raw == "auto":
        return "full" if _cuda_available() else "fast"
    return raw  # type: ignore[return-value]


def is_fast() -> bool:
    """``True`` in fast mode."""
    return get_mode() == "fast"


def pick(fast: T, full: T) -> T:
    """Return ``fast`` or ``full`` depending on the current mode.

    Examples
    --------
    >>> import os; os.environ["COURSE_MODE"] = "fast"
    >>> pick(fast=2, full=100)
    2

    Introduced in notebook 00.
    """
    return fast if get_mode() == "fast" else full
