"""The training loop: ``fit`` (mixed precision, checkpoints, exact resume) and ``History``.

Notebook 02 builds the loop by hand, then switches to ``fit``. The same ``fit`` runs on one
process or, unchanged, on several under ``torchrun`` (``course_utils.distributed``).
Introduced in notebook 02.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from ._shared.device import amp_dtype, resolve_device
from ._shared.validate import check_int
from .checkpoint import (
    checkpoint_dir,
    describe,
    load_checkpoint,
    prepare_checkpoint_dir,
    remove_stale_temporaries,
    repair_best,
    restore_training_state,
    rng_state,
    save_training_state,
    training_lock,
)
from .history import BOOKKEEPING, History, format_value

__all__ = ["History", "checkpoint_dir", "fit", "load_checkpoint"]

# Stepped after every batch instead of every epoch (their schedule is counted in batches).
_PER_BATCH_SCHEDULERS = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (batch norm synchronised on CUDA)."""
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


class _Run:
    """The resolved pieces of one training run (device, optimizer, AMP, ...)."""

    def __init__(self, model, *, optimizer, lr, scheduler, device, amp, channels_last, loss_fn,
                 metrics, grad_clip, seed, monitor):  # fmt: skip
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.device = distributed.setup(resolve_device(device))
        self.module = model  # the network itself; self.model may be its DDP wrapper
        if channels_last == "auto":
            channels_last = self.device.type == "cuda"  # only tensor cores profit from NHWC
        elif not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be 'auto', True or False, got {channels_last!r}")
        self.model, self.channels_last = model.to(self.device), channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if distributed.world_size() > 1:
            self.model = _wrap_ddp(model, self.device)
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
        self.amp_dtype = amp_dtype(amp, self.device)
        # Loss scaling only for float16: bfloat16 has the exponent range of float32.
        use_scaler = self.amp_dtype == torch.float16
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
        # Asynchronous copies only from pinned memory to CUDA; elsewhere they gain nothing
        # (and MPS has had wrong results with them).
        non_blocking = self.device.type == "cuda"
        moved = [
            b.to(self.device, non_blocking=non_blocking) if torch.is_tensor(b) else b for b in batch
        ]
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
    # One process: itself. Under torchrun: the mean over the global batches of the epoch.
    counted = torch.tensor(float(count), device=total.device)
    summed = distributed.all_reduce_sum(torch.stack([total, counted]))
    return float(summed[0] / summed[1])


def _validate(run: _Run, loader) -> dict[str, float]:
    run.model.eval()
    sums, count = dict.fromkeys(["val_loss", *run.metrics], 0.0), 0
    with torch.inference_mode(), run.autocast():
        for batch in loader:
            x, y, extra = run.to_device(batch)
            out = run.model(x)
            sums["val_loss"] += float(run.loss_fn(out, y, *extra)) * x.shape[0]
            out = _to_float32(out)  # metrics in full precision, also for (prob, dist) outputs
            for name, fn in run.metrics.items():
                sums[name] += float(fn(out, y)) * x.shape[0]
            count += x.shape[0]
    if count == 0:
        raise ValueError("val_loader yielded no batches")
    # Weighted by batch size, so that a short last batch counts for what it holds.
    return {k: v / count for k, v in sums.items()}


def _to_float32(out: Any) -> Any:
    if torch.is_tensor(out):
        return out.float()
    if isinstance(out, tuple | list):
        return type(out)(_to_float32(o) for o in out)
    return out


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
    meta: Mapping[str, Any] | None = None,
    time_limit: float | None = None,
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
        Mixed precision. ``"auto"``: on CUDA bfloat16 on GPUs that have it natively (Ampere
        or newer), else float16 with a gradient scaler (e.g. a T4); off on CPU and MPS.
        ``True`` or a dtype name forces it (a scaler only ever for float16).
    channels_last : "auto" or bool
        NHWC memory layout (faster convolutions on CUDA); ``"auto"``: on CUDA only.
    checkpoint_dir : path, optional
        ``last.pt`` every epoch, ``best.pt`` when ``monitor`` improves (model, optimizer,
        scheduler and scaler states, epoch, history, RNG states, and ``meta``; written to a
        unique temporary file and renamed, so nothing is ever half-written or overwritten by
        accident). A second run into the same folder at the same time is refused.
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
    meta : dict, optional
        What the checkpoints should say about the run, e.g. ``{"method": "cellpose", "data":
        "bbbc039/train"}`` (plain values only). ``fit`` adds the network's class and constructor
        arguments (for the networks of ``course_utils.models``), the mode, the course version
        and a checksum of the weights, so that ``course_utils.methods.load_model`` rebuilds
        the network from a checkpoint alone.

    time_limit : float, optional
        Seconds: stop after the first epoch that ends past this budget (its checkpoint is
        written), so that a long run can be spread over sessions; the same call resumes it.
        The history then holds fewer than ``epochs`` records.

    Under ``torchrun --nproc_per_node=N`` (``course_utils.distributed``) each process trains
    on ``1/N`` of every global batch of the loaders (``batch_size`` is the global batch, and
    ``lr`` is the rate for it), the model is wrapped in ``DistributedDataParallel``, and only
    rank 0 writes checkpoints and prints.

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
    epochs = check_int(epochs, "epochs", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    metrics = dict(metrics or {})
    monitor = "train_loss" if monitor == "val_loss" and val_loader is None else monitor
    known = ["train_loss"] + (["val_loss", *metrics] if val_loader is not None else [])
    if monitor not in known:
        raise ValueError(f"monitor must be one of {known} (metrics need val_loader): {monitor!r}")
    history = History(monitor, monitor_mode)
    directory = prepare_checkpoint_dir(checkpoint_dir)
    record_meta = describe(model, meta)  # refuses bad meta before any training
    run = _Run(model, optimizer=optimizer, lr=lr, scheduler=scheduler, device=device, amp=amp,
               channels_last=channels_last, loss_fn=loss_fn, metrics=metrics,
               grad_clip=grad_clip, seed=seed, monitor=monitor)  # fmt: skip
    if distributed.world_size() > 1:
        train_loader = distributed.shard_loader(train_loader, seed)
    main = distributed.is_main_process()
    progress = progress and main
    with contextlib.ExitStack() as stack:
        if directory is not None and main:
            stack.enter_context(training_lock(directory))
            remove_stale_temporaries(directory)  # left by a run killed while saving
        start = 0
        if directory is not None:
            start, history = restore_training_state(
                directory, model=model, optimizer=run.optimizer, scheduler=run.scheduler,
                scaler=run.scaler, resume=resume, history=history,
            )  # fmt: skip
            if main and repair_best(directory, history.best_epoch, start) and progress:
                tqdm.write(f"{directory / 'best.pt'} was behind the history (a run stopped "
                           f"while writing it): restored from last.pt")  # fmt: skip
        if start >= epochs and progress:
            tqdm.write(f"{directory / 'last.pt'} already holds {start} epochs: nothing to train")
        started = time.perf_counter()
        for epoch in range(start, epochs):
            record = _run_epoch(run, epoch, epochs, train_loader, val_loader, progress)
            history.append(record)
            improved = history.best_epoch == record["epoch"]
            _step_scheduler(run, record)
            if directory is not None and main:
                state = _training_state(run, epoch + 1, history, record_meta)
                save_training_state(directory, state, best=improved)
            distributed.barrier()  # the others wait until rank 0 has written
            if progress:
                tqdm.write(_summary(record, epochs, improved))
            if _out_of_time(time_limit, started):
                if progress and epoch + 1 < epochs:
                    tqdm.write(f"time limit of {time_limit:.0f} s reached after epoch "
                               f"{epoch + 1}: run again to resume")  # fmt: skip
                break
    model.eval()
    return history


def _training_state(run: _Run, epoch: int, history: History, meta: dict) -> dict[str, Any]:
    """Everything a checkpoint holds after ``epoch`` epochs (weights of the bare network)."""
    return {
        "epoch": epoch,
        "model": run.module.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "history": {"monitor": history.monitor, "mode": history.mode, "records": history.records},
        "rng": rng_state(),
        "meta": dict(meta),
    }


def _out_of_time(limit: float | None, started: float) -> bool:
    """Past the time limit? Under torchrun every process stops when one of them is."""
    late = limit is not None and time.perf_counter() - started > limit
    return bool(distributed.all_reduce_sum(torch.tensor(float(late))).item() > 0)


def _summary(record: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{k} {format_value(v)}" for k, v in record.items() if k not in BOOKKEEPING]
    parts += [f"lr {record['lr']:.3g}", f"{record['seconds']:.1f} s"]
    return "  ".join(parts) + ("  (best)" if improved else "")
