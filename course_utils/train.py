"""The training loop: ``fit`` (mixed precision, checkpoints, exact resume) and ``History``.

Notebook 02 builds the loop by hand, then switches to ``fit``. Introduced in notebook 02.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .env import get_device
from .history import _BOOKKEEPING, History, _fmt

__all__ = ["History", "checkpoint_dir", "fit", "load_checkpoint"]

# Stepped after every batch instead of every epoch (their schedule is counted in batches).
_PER_BATCH_SCHEDULERS = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)


def _resolve_amp(amp: Any, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed)."""
    if amp is False or amp is None or (amp == "auto" and device.type != "cuda"):
        return None, False
    if amp is True or amp == "auto":
        # bf16 has the range of fp32 and needs no loss scaling; older GPUs only have fp16.
        old_gpu = device.type == "cuda" and not torch.cuda.is_bf16_supported()
        amp = "fp16" if old_gpu else "bf16"
    if amp in ("bf16", "fp16"):
        return (torch.bfloat16, False) if amp == "bf16" else (torch.float16, True)
    raise ValueError(f"amp must be 'auto', True, False, 'bf16' or 'fp16', got {amp!r}")


class _Run:
    """The resolved pieces of one training run (device, optimizer, AMP, ...)."""

    def __init__(self, model, *, optimizer, lr, scheduler, device, amp, channels_last, loss_fn,
                 metrics, grad_clip, seed, monitor):  # fmt: skip
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.device = torch.device(device) if device is not None else get_device()
        if channels_last == "auto":
            channels_last = self.device.type == "cuda"  # only tensor cores profit from NHWC
        elif not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be 'auto', True or False, got {channels_last!r}")
        self.model, self.channels_last = model.to(self.device), channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if optimizer is None:
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.optimizer = optimizer
        if scheduler is not None and not hasattr(scheduler, "step") and callable(scheduler):
            scheduler = scheduler(self.optimizer)  # a factory: lambda opt: StepLR(opt, 10)
        if getattr(scheduler, "optimizer", self.optimizer) is not self.optimizer:
            raise ValueError(
                "scheduler is attached to another optimizer: pass that one as optimizer=, or "
                "pass a factory, e.g. scheduler=lambda opt: StepLR(opt, step_size=10)"
            )
        self.scheduler = scheduler
        self.per_batch = isinstance(scheduler, _PER_BATCH_SCHEDULERS)
        self.amp_dtype, use_scaler = _resolve_amp(amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.loss_fn, self.metrics, self.grad_clip = loss_fn, metrics, grad_clip
        self.seed, self.monitor = seed, monitor

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: Any) -> tuple[torch.Tensor, Any, list]:
        if not isinstance(batch, tuple | list) or len(batch) < 2 or not torch.is_tensor(batch[0]):
            raise TypeError(
                "the loader must yield (x, y) or (x, y, *extra) with x a tensor, "
                f"got {type(batch).__name__}"
            )
        moved = [b.to(self.device, non_blocking=True) if torch.is_tensor(b) else b for b in batch]
        x = moved[0]
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, moved[1], moved[2:]


def _seed_epoch(seed: int, epoch: int) -> None:
    """Make data order, augmentation and dropout a function of (seed, epoch) only."""
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)  # noqa: NPY002 - datasets may draw from the legacy global RNG
    torch.manual_seed(state)  # also seeds every CUDA device


def _train_epoch(run: _Run, loader, desc: str, progress: bool) -> float:
    run.model.train()
    total, count = torch.zeros((), device=run.device), 0
    n_batches = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(total=n_batches, desc=desc, leave=False, unit="batch", disable=not progress)
    for step, batch in enumerate(loader):
        x, y, extra = run.to_device(batch)
        with run.autocast():
            loss = run.loss_fn(run.model(x), y, *extra)
        if not torch.is_tensor(loss) or loss.ndim != 0:
            raise ValueError("loss_fn must return a scalar tensor (reduce it with .mean())")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if run.grad_clip is not None:
            run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(run.model.parameters(), run.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.per_batch:
            run.scheduler.step()
        total += loss.detach().float() * x.shape[0]
        count += x.shape[0]
        bar.update(1)
        if progress and step % 10 == 0:  # .item() waits for the GPU: not every batch
            bar.set_postfix(loss=f"{(total / count).item():.4g}")
    bar.close()
    if count == 0:
        raise ValueError("train_loader yielded no batches")
    return float(total / count)


def _validate(run: _Run, loader) -> dict[str, float]:
    run.model.eval()
    sums, count = dict.fromkeys(["val_loss", *run.metrics], 0.0), 0
    with torch.inference_mode(), run.autocast():
        for batch in loader:
            x, y, extra = run.to_device(batch)
            out = run.model(x)
            sums["val_loss"] += float(run.loss_fn(out, y, *extra)) * x.shape[0]
            out = out.float() if torch.is_tensor(out) else out  # metrics in full precision
            for name, fn in run.metrics.items():
                sums[name] += float(fn(out, y)) * x.shape[0]
            count += x.shape[0]
    if count == 0:
        raise ValueError("val_loader yielded no batches")
    # Weighted by batch size, so that a short last batch counts for what it holds.
    return {k: v / count for k, v in sums.items()}


def _run_epoch(run: _Run, epoch: int, epochs: int, train_loader, val_loader, progress) -> dict:
    start = time.perf_counter()
    for owner in (getattr(train_loader, "dataset", None), getattr(train_loader, "sampler", None)):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)
    _seed_epoch(run.seed, epoch)
    lr = float(run.optimizer.param_groups[0]["lr"])
    train_loss = _train_epoch(run, train_loader, f"epoch {epoch + 1}/{epochs}", progress)
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"the training loss became {train_loss} in epoch {epoch + 1}: lower the learning "
            "rate or look for NaN in the inputs (the last checkpoint is from the epoch before)"
        )
    record = {"epoch": epoch + 1, "train_loss": train_loss}
    if val_loader is not None:
        record.update(_validate(run, val_loader))
    return {**record, "lr": lr, "seconds": time.perf_counter() - start}


def _step_scheduler(run: _Run, record: dict) -> None:
    if run.scheduler is None or run.per_batch:
        return
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.scheduler.step(record[run.monitor])
    else:
        run.scheduler.step()


# --- checkpoints ------------------------------------------------------------------------------


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
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(run: _Run, directory: Path, epoch: int, history: History, best: bool):
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


def _resume(run: _Run, directory: Path, resume: bool, history: History) -> tuple[int, History]:
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


def fit(
    model: nn.Module,
    train_loader,
    val_loader=None,
    *,
    loss_fn: Callable,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    scheduler=None,
    metrics: Mapping[str, Callable] | None = None,
    device=None,
    amp: bool | str = "auto",
    channels_last: bool | str = "auto",
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = True,
    seed: int = 0,
    grad_clip: float | None = None,
    progress: bool = True,
    monitor: str = "val_loss",
    monitor_mode: str = "min",
) -> History:
    """Train ``model`` for ``epochs`` epochs, validating and checkpointing after each.

    Loaders yield ``(x, y)`` or ``(x, y, *extra)`` with ``x`` a ``(B, C, H, W)`` tensor; the loss
    is ``loss_fn(output, y, *extra)``, so a weight map can ride along as a third item. Batches
    move with ``non_blocking=True``: on CUDA build the loaders with ``pin_memory=True``.

    Each epoch calls ``set_epoch(epoch)`` (0-based) on the dataset and sampler when they have
    it, then seeds Python, NumPy and torch from ``(seed, epoch)``: data order, augmentation and
    dropout depend on nothing else. That makes runs reproducible on the CPU and resuming exact
    (except with ``persistent_workers=True``, whose workers keep their own random state).

    Parameters
    ----------
    model : torch.nn.Module
        Moved to ``device``; returned in eval mode with the last epoch's weights.
    train_loader, val_loader : iterables of tuples, e.g. ``torch.utils.data.DataLoader``
    loss_fn : callable
        ``loss_fn(output, y, *extra) -> scalar tensor``.
    epochs : int
        Total epochs, counting those already in a resumed checkpoint.
    optimizer : torch.optim.Optimizer, optional
        Default ``Adam(model.parameters(), lr=lr)``.
    scheduler : LR scheduler or callable ``optimizer -> scheduler``, optional
        Stepped after each epoch (``ReduceLROnPlateau`` with the monitored value), or after
        each batch for ``OneCycleLR`` and ``CyclicLR``.
    metrics : dict of str to callable, optional
        ``fn(output, y) -> float`` on validation batches, averaged weighted by batch size.
    device : str or torch.device, optional
        Default :func:`course_utils.env.get_device`.
    amp : "auto", bool, "bf16" or "fp16"
        Mixed precision. ``"auto"``: on CUDA bfloat16 where supported, else float16 with a
        gradient scaler; off on CPU and MPS. ``True`` or a dtype name forces it.
    channels_last : "auto" or bool
        NHWC memory layout (faster convolutions on CUDA); ``"auto"``: on CUDA only.
    checkpoint_dir : path, optional
        ``last.pt`` every epoch, ``best.pt`` when ``monitor`` improves (model, optimizer,
        scheduler and scaler states, epoch, history, RNG states; written atomically).
    resume : bool
        Continue from ``checkpoint_dir/last.pt``; if it holds ``epochs`` epochs already, return
        its history without training (the model gets its weights). A ``last.pt`` that does
        not fit the model raises ``ValueError``; with ``resume=False`` an existing ``last.pt``
        raises ``FileExistsError``. Checkpoints are never silently overwritten.
    seed : int
        Non-negative; seeds each epoch as above.
    grad_clip : float, optional
        Clip the global gradient norm.
    progress : bool
        A ``tqdm`` bar per epoch with the running loss, and a summary line per epoch.
    monitor, monitor_mode : str
        Record key and ``"min"``/``"max"`` for the best epoch. Without ``val_loader`` the
        default ``"val_loss"`` becomes ``"train_loss"``.

    Returns
    -------
    History
        One record per epoch; ``history.plot()`` draws it.

    Examples
    --------
    >>> history = fit(model, train_loader, val_loader, loss_fn=nn.BCEWithLogitsLoss(),
    ...               epochs=20, checkpoint_dir="runs/unet")  # doctest: +SKIP
    >>> history.plot()  # doctest: +SKIP

    Introduced in notebook 02.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    metrics = dict(metrics or {})
    monitor = "train_loss" if monitor == "val_loss" and val_loader is None else monitor
    known = ["train_loss"] + (["val_loss", *metrics] if val_loader is not None else [])
    if monitor not in known:
        raise ValueError(f"monitor must be one of {known} (metrics need val_loader): {monitor!r}")
    history = History(monitor, monitor_mode)
    run = _Run(model, optimizer=optimizer, lr=lr, scheduler=scheduler, device=device, amp=amp,
               channels_last=channels_last, loss_fn=loss_fn, metrics=metrics,
               grad_clip=grad_clip, seed=seed, monitor=monitor)  # fmt: skip
    directory, start = None if checkpoint_dir is None else Path(checkpoint_dir), 0
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        start, history = _resume(run, directory, resume, history)
    if start >= epochs and progress:
        tqdm.write(f"{directory / 'last.pt'} already holds {start} epochs: nothing to train")
    for epoch in range(start, epochs):
        record = _run_epoch(run, epoch, epochs, train_loader, val_loader, progress)
        history.append(record)
        improved = history.best_epoch == record["epoch"]
        _step_scheduler(run, record)
        if directory is not None:
            _save_checkpoint(run, directory, epoch + 1, history, improved)
        if progress:
            tqdm.write(_summary(record, epochs, improved))
    model.eval()
    return history


def _summary(record: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{k} {_fmt(v)}" for k, v in record.items() if k not in _BOOKKEEPING]
    parts += [f"lr {record['lr']:.3g}", f"{record['seconds']:.1f} s"]
    return "  ".join(parts) + ("  (best)" if improved else "")
