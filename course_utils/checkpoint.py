"""Checkpoints of ``train.fit``: save, resume exactly, and load weights into a model.

A checkpoint holds the model, optimizer, scheduler and gradient-scaler states, the epoch, the
history and the random states, written atomically; ``fit`` never overwrites one silently.
``load_checkpoint`` and ``checkpoint_dir`` are public through ``course_utils.train``.

Introduced in notebook 02.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .history import History

__all__ = ["checkpoint_dir", "load_checkpoint"]


def _rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    # Plain Python types, so that torch.load(weights_only=True) can read the file back.
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs: restore those this one has.
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def _save_checkpoint(run: Any, directory: Path, epoch: int, history: History, best: bool):
    state = {
        "epoch": epoch,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "history": {"monitor": history.monitor, "mode": history.mode, "records": history.records},
        "rng": _rng_state(),
    }
    # Write, then rename: an interruption mid-write never leaves a truncated last.pt.
    torch.save(state, directory / "last.pt.tmp")
    os.replace(directory / "last.pt.tmp", directory / "last.pt")
    if best:
        shutil.copyfile(directory / "last.pt", directory / "best.pt.tmp")
        os.replace(directory / "best.pt.tmp", directory / "best.pt")


def _check_state_fits(model: nn.Module, weights: Mapping, path: Path) -> None:
    """Raise before loading: load_state_dict would half-load a file that does not fit."""
    ours = model.state_dict()
    problems = {
        "missing": [k for k in ours if k not in weights],
        "unexpected": [k for k in weights if k not in ours],
        "other shape": [
            f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
            for k, v in ours.items()
            if k in weights and tuple(weights[k].shape) != tuple(v.shape)
        ],
    }
    found = [f"{what}: {', '.join(keys[:3])}" for what, keys in problems.items() if keys]
    if found:
        raise ValueError(
            f"the checkpoint {path} does not fit this model ({'; '.join(found)}). It was written "
            "for another architecture: use another checkpoint_dir, or delete it if unneeded."
        )


def _resume(run: Any, directory: Path, resume: bool, history: History) -> tuple[int, History]:
    last = directory / "last.pt"
    if not last.exists():
        if (directory / "best.pt").exists():
            raise FileExistsError(f"{directory} has a best.pt but no last.pt; fit won't touch it")
        return 0, history
    if not resume:
        raise FileExistsError(
            f"{last} exists and resume=False: fit never overwrites a checkpoint. Pass "
            "resume=True to continue that run, or use another checkpoint_dir."
        )
    state = torch.load(last, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "history"} <= set(state):
        raise ValueError(f"{last} was not written by course_utils.train.fit; it is left alone")
    _check_state_fits(run.model, state["model"], last)
    run.model.load_state_dict(state["model"])
    try:
        run.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:
        raise ValueError(f"the optimizer state in {last} does not fit this optimizer") from err
    if run.scheduler is not None and state.get("scheduler") is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # empty when written without fp16 loss scaling
        run.scaler.load_state_dict(state["scaler"])
    if "rng" in state:
        _set_rng_state(state["rng"])
    return int(state["epoch"]), History(history.monitor, history.mode, state["history"]["records"])


def checkpoint_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Folder where a notebook keeps the checkpoints of one model: ``checkpoints/<mode>/<name>``.

    The mode is part of the path, so that a fast-mode model is never mistaken for a full-mode
    one. ``root`` defaults to ``COURSE_CHECKPOINTS`` or ``checkpoints/`` in the current folder
    (git-ignored). A later notebook (07) finds the earlier notebooks' models here.

    Introduced in notebook 03.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"checkpoint name must be a plain folder name, got {name!r}")
    from .mode import get_mode

    base = Path(root or os.environ.get("COURSE_CHECKPOINTS") or "checkpoints")
    return base / get_mode() / name


def load_checkpoint(model: nn.Module, path: str | os.PathLike, map_location="cpu") -> dict:
    """Load the weights of a :func:`fit` checkpoint (or a plain ``state_dict`` file) into ``model``.

    ``path`` is a ``.pt`` file or a checkpoint directory (its ``best.pt``, else ``last.pt``).
    Returns the whole checkpoint dict (``epoch``, ``history``, ...). Raises ``ValueError``,
    loading nothing, when the weights do not fit the model. Introduced in notebook 02.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location=map_location, weights_only=True)
    is_fit_file = isinstance(state, dict) and isinstance(state.get("model"), Mapping)
    weights = state["model"] if is_fit_file else state
    _check_state_fits(model, weights, path)
    model.load_state_dict(weights)
    return state
