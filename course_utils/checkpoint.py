"""Checkpoints of ``train.fit``: save, resume exactly, describe the network, load safely.

A checkpoint (``last.pt``, ``best.pt``) holds the model, optimizer, scheduler and
gradient-scaler states, the epoch, the history and the random states, and a ``meta`` record
that describes it: the network's class and constructor arguments, the method, the training
data, the mode and the course version, and a sha256 checksum of the weights. The network can
therefore be rebuilt from the file alone (``course_utils.methods.load_model``), and a file whose
weights changed by a single byte is refused. Files are written to a unique temporary name and
renamed into place, so an interruption never leaves a half-written checkpoint and no other
file is overwritten; a lock keeps two runs from writing into one folder at once.

``load_checkpoint`` and ``checkpoint_dir`` are public through ``course_utils.train``.

Introduced in notebook 03.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import random
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._shared.files import check_writable, unwritable_error
from .history import History
from .models.registry import network_config

__all__ = [
    "CheckpointError",
    "atomic_save",
    "checkpoint_dir",
    "load_checkpoint",
    "read_checkpoint",
    "repair_best",
    "training_lock",
    "weights_checksum",
]

#: Version of the ``meta`` record; 1 = the first self-describing checkpoints.
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupted, foreign, old or for another network."""


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) random states, as plain types for ``torch.save``."""
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


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs: restore those this one has.
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def weights_checksum(weights: Mapping[str, torch.Tensor]) -> str:
    """sha256 of a ``state_dict``: every name, dtype, shape and byte, in order."""
    digest = hashlib.sha256()
    for name, tensor in weights.items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def describe(model: nn.Module, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``meta`` record of a checkpoint of ``model``: format, course version, mode, network
    class and constructor arguments (``None`` for a network outside ``course_utils.models``),
    and the caller's ``meta`` (method, data, ...)."""
    from . import __version__
    from .mode import mode_name

    described = network_config(model)
    record = {
        "format": FORMAT,
        "course_version": __version__,
        "mode": mode_name(),
        "network": None if described is None else described[0],
        "network_args": None if described is None else described[1],
    }
    for key, value in dict(meta or {}).items():
        if key in record:
            raise ValueError(f"meta may not set {key!r}: fit writes it itself")
        record[key] = value
    return record


#: The names ``atomic_save`` gives its temporary files (``tempfile.mkstemp``'s 8 characters).
_TEMPORARY = re.compile(r"^\.(last|best)\.pt\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files a run killed while saving left in ``directory`` (only names
    that ``fit`` itself makes; call it while holding :func:`training_lock`)."""
    stale = [p for p in directory.iterdir() if p.is_file() and _TEMPORARY.match(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_save(obj: Any, target: Path) -> None:
    """``torch.save`` into a unique temporary file beside ``target``, then rename it there."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise unwritable_error(target.parent, err) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, target)
    except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError
        raise unwritable_error(target.parent, err, target.name) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def save_training_state(directory: Path, state: dict[str, Any], *, best: bool) -> None:
    """Write ``state`` (see ``train.fit``) as ``last.pt``, and as ``best.pt`` when ``best``.

    The weights' checksum goes into ``state["meta"]["weights_sha256"]``.
    """
    state["meta"] = {**state.get("meta", {}), "weights_sha256": weights_checksum(state["model"])}
    atomic_save(state, directory / "last.pt")
    if best:
        atomic_save(state, directory / "best.pt")


def read_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """Read a ``.pt`` file written by ``fit`` (or a plain ``state_dict``) safely.

    Never unpickles code (``weights_only=True``). Raises :class:`CheckpointError` naming the file
    when it is not a checkpoint (truncated, corrupted, another kind of file), and, with
    ``verify``, when the weights do not match the checksum stored beside them. A plain
    ``state_dict`` comes back as ``{"model": state_dict, "meta": {}}``.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a .pt file (or use load_checkpoint)")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        # torch's own message suggests weights_only=False, which would run code from the file.
        reason = "the file ends early" if isinstance(err, EOFError) else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({reason}: truncated, corrupted, or not "
            "written by torch.save of weights). Delete it and train again."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), Mapping):
        state.setdefault("meta", {})
    elif isinstance(state, Mapping) and state and all(torch.is_tensor(v) for v in state.values()):
        state = {"model": dict(state), "meta": {}}
    else:
        raise CheckpointError(f"{path} holds no model weights (a {type(state).__name__})")
    odd = [k for k, v in state["model"].items() if not torch.is_tensor(v)]
    if odd:
        raise CheckpointError(
            f"{path} is not a checkpoint of weights: its model entry {odd[0]!r} holds a "
            f"{type(state['model'][odd[0]]).__name__}, not a tensor ({len(odd)} such entries). "
            "Save weights with torch.save(model.state_dict(), path) or train.fit."
        )
    expected = state["meta"].get("weights_sha256")
    if verify and expected is not None and weights_checksum(state["model"]) != expected:
        raise CheckpointError(
            f"the weights in {path} do not match their checksum: the file was changed or "
            "damaged after it was written. Delete it and train again (or restore a copy)."
        )
    return state


def check_state_fits(model: nn.Module, weights: Mapping, path: Path, meta: Mapping) -> None:
    """Raise before loading: ``load_state_dict`` would half-load a file that does not fit."""
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
    if not found:
        return
    differs = ""
    described, network = network_config(model), meta.get("network")
    if described is not None and network is not None:
        theirs = meta.get("network_args") or {}
        diff = [
            f"{k}={theirs.get(k)!r} there, {v!r} here"
            for k, v in described[1].items()
            if theirs.get(k) != v
        ]
        if network != described[0]:
            diff.insert(0, f"network {network} there, {described[0]} here")
        differs = f" It was written for {'; '.join(diff)}." if diff else ""
    raise CheckpointError(
        f"the checkpoint {path} does not fit this model ({'; '.join(found)}).{differs} Use "
        "another checkpoint_dir, rebuild the network from the file "
        "(course_utils.methods.load_model), or delete the file if unneeded."
    )


def restore_training_state(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    resume: bool,
    history: History,
) -> tuple[int, History]:
    """Load ``directory/last.pt`` into the training objects; ``(epochs done, history)``.

    ``(0, history)`` when there is no ``last.pt``. Refuses (leaving the files alone) a folder
    with ``best.pt`` but no ``last.pt``, an existing ``last.pt`` with ``resume=False``, and a
    file that is not a ``fit`` checkpoint or does not fit the model.
    """
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
    state = read_checkpoint(last)
    if not {"model", "optimizer", "epoch", "history"} <= set(state):
        raise CheckpointError(f"{last} was not written by course_utils.train.fit; it is left alone")
    check_state_fits(model, state["model"], last, state["meta"])
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"the optimizer state in {last} does not fit this optimizer") from err
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):  # empty when written without fp16 loss scaling
        scaler.load_state_dict(state["scaler"])
    if "rng" in state:
        set_rng_state(state["rng"])
    return int(state["epoch"]), History(history.monitor, history.mode, state["history"]["records"])


def repair_best(directory: Path, best_epoch: int | None, last_epoch: int) -> bool:
    """Make ``best.pt`` hold the best epoch again when a run was killed while writing it.

    ``last.pt`` (holding ``last_epoch`` epochs) is written before ``best.pt``; a run killed
    between the two leaves a ``best.pt`` one improvement behind the history. When the
    history's best epoch is the last one and ``best.pt`` holds another (or cannot be read),
    ``last.pt`` is copied over it (atomically). Reads nothing in any other case. Returns
    whether ``best.pt`` was repaired.
    """
    last, best = directory / "last.pt", directory / "best.pt"
    if best_epoch is None or best_epoch != last_epoch or not last.exists():
        return False
    if best.exists():
        try:
            if int(read_checkpoint(best, verify=False).get("epoch", -1)) == best_epoch:
                return False
        except CheckpointError:
            pass  # a damaged best.pt: replaced below
    atomic_save(read_checkpoint(last), best)
    return True


@contextlib.contextmanager
def training_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on a checkpoint folder while a run writes into it.

    A second run into the same folder gets a clear ``RuntimeError`` at once, instead of two
    runs overwriting each other's checkpoints. The lock is the operating system's (``flock`` on
    the folder), so a run killed with SIGKILL leaves no stale lock behind.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one run per folder is then the user's to keep
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another training run is writing checkpoints into {directory} right now: wait "
                "for it to finish, or give this run another checkpoint_dir"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def prepare_checkpoint_dir(path: str | os.PathLike | None) -> Path | None:
    """The checkpoint folder of a run, created if needed (by rank 0 under torchrun); a clear
    ``NotADirectoryError`` when it is a file."""
    from . import distributed

    if path is None:
        return None
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"checkpoint_dir {directory} is a file, not a folder")
    if distributed.is_main_process():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise unwritable_error(directory, err) from None
        check_writable(directory)
    distributed.barrier()
    return directory


def checkpoint_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """Folder where a notebook keeps the checkpoints of one model: ``checkpoints/<mode>/<name>``.

    The mode is part of the path, so that a fast-mode model is never mistaken for a full-mode
    one. ``root`` defaults to ``COURSE_CHECKPOINTS`` or ``checkpoints/`` in the current folder
    (git-ignored). A later notebook (07b) finds the earlier notebooks' models here.

    Introduced in notebook 03.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"checkpoint name must be a plain folder name, got {name!r}")
    from .mode import mode_name

    base = Path(root or os.environ.get("COURSE_CHECKPOINTS") or "checkpoints")
    return base / mode_name() / name


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or for a folder its ``best.pt`` (else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        return path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    return path


def load_checkpoint(model: nn.Module, path: str | os.PathLike, map_location="cpu") -> dict:
    """Load the weights of a :func:`fit` checkpoint (or a plain ``state_dict`` file) into ``model``.

    ``path`` is a ``.pt`` file or a checkpoint directory (its ``best.pt``, else ``last.pt``).
    Returns the whole checkpoint dict (``epoch``, ``history``, ``meta``, ...). Raises
    ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (a ``ValueError``),
    loading nothing, for a corrupted file or weights that do not fit the model; every message
    names the file. ``map_location`` is kept for compatibility: weights are read on the CPU and
    copied to the model's device by ``load_state_dict``. Introduced in notebook 05.
    """
    path = checkpoint_file(path)
    state = read_checkpoint(path)
    check_state_fits(model, state["model"], path, state["meta"])
    model.load_state_dict(state["model"])
    return state
