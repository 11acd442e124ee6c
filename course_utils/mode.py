"""Fast vs full mode: the one switch between a CI-sized run and a real one.

Every notebook reads its epochs, image counts and patch sizes through :func:`pick`, so that the
same code runs in two minutes on a laptop CPU (``fast``) and gives real results on a GPU
(``full``). The choice comes from one environment variable, ``COURSE_MODE``:

- ``fast``: small data and few epochs (CI, a laptop without a GPU);
- ``full``: the real experiment;
- ``auto`` (default): ``full`` when a CUDA GPU is available, ``fast`` otherwise.

A second variable, ``COURSE_DRYRUN=1`` (full mode only), makes a *dry run* of full mode on any
machine: every size stays the full one (data, networks, patches, tiles, evaluation over the full
test splits, every method), and only training is cut short: ``train.fit`` (and so every run of
a budget, which keeps its full length) and ``topdown.train_maskrcnn`` train at most
:data:`DRYRUN_STEPS` epochs of :data:`DRYRUN_STEPS` batches, and :func:`pick_steps` caps the
length of a loop a notebook writes by hand. ``fit`` still sees the full run's epochs and
batches, and logs them (:mod:`course_utils.dryrun`) for the estimates of
``scripts/dryrun.py``. Every full-mode code path then runs on a CPU (minutes to hours a
notebook: full test splits are predicted there), so that a shape, memory or data error on a
path only full mode takes shows up before a class meets it. A dry run cannot reach full-mode
scores: :func:`course_utils.checks.check_result` reports the score claims it cannot check
instead of asserting them.

Introduced in notebook 00.
"""

from __future__ import annotations

import os
from typing import Literal, TypeVar

Mode = Literal["fast", "full"]
T = TypeVar("T")

ENV_VAR = "COURSE_MODE"
DRYRUN_VAR = "COURSE_DRYRUN"
_CHOICES = ("fast", "full", "auto")
_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

#: Epochs, steps and batches an epoch that a dry run keeps of each training run.
DRYRUN_STEPS = 2


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


def is_dryrun() -> bool:
    """``True`` in a dry run of full mode (``COURSE_MODE=full COURSE_DRYRUN=1``).

    Raises
    ------
    ValueError
        If ``COURSE_DRYRUN`` is not a yes/no value, or asks for a dry run outside full mode
        (a dry run keeps full mode's sizes: it has nothing to do in fast mode).
    """
    raw = os.environ.get(DRYRUN_VAR, "").strip().lower()
    if raw not in _YES + _NO:
        raise ValueError(f"{DRYRUN_VAR}={raw!r} is not a yes/no value; use 1 or 0.")
    if raw in _NO:
        return False
    if get_mode() != "full":
        raise ValueError(
            f"{DRYRUN_VAR}=1 is a dry run of full mode, but the mode is fast: set "
            f"{ENV_VAR}=full too (or unset {DRYRUN_VAR})."
        )
    return True


def mode_name() -> str:
    """``"fast"``, ``"full"`` or ``"full-dryrun"``: the mode as checkpoints and results name it,
    so that a dry run's barely trained models are never taken for full-mode ones."""
    return "full-dryrun" if is_dryrun() else get_mode()


def pick_steps(fast: int, full: int) -> int:
    """Like :func:`pick`, for the length of a training loop written by hand (optimiser steps).

    In a dry run it returns ``min(full, DRYRUN_STEPS)``: training is the one thing a dry run cuts
    short. Epochs given to ``train.fit`` or a budget take :func:`pick`: ``fit`` caps them
    itself, and logs the full run's length. Use :func:`pick` for every size (images, patches,
    channels, rays, thresholds).

    Examples
    --------
    >>> import os; os.environ["COURSE_MODE"] = "fast"
    >>> pick_steps(fast=5, full=60)
    5

    Introduced in notebook 03.
    """
    chosen = pick(fast, full)
    return min(chosen, DRYRUN_STEPS) if is_dryrun() else chosen
