"""The parts of one training run that ``fit`` puts together: the resolved run (device,
optimiser, mixed precision), one training epoch, validation, the scheduler step and what a
checkpoint holds.

``course_utils.train.fit`` is the entry point; these are its pieces, one concern each.
Introduced in notebook 02b.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from ._shared.device import amp_dtype, resolve_device
from .checkpoint import rng_state
from .dryrun import logging_requested
from .history import History
from .mode import DRYRUN_STEPS, is_dryrun

__all__ = [
    "Run",
    "out_of_time",
    "run_epoch",
    "run_record",
    "seed_epoch",
    "step_scheduler",
    "train_epoch",
    "training_state",
    "validate",
]

# Stepped after every batch instead of every epoch (their schedule is counted in batches).
PER_BATCH_SCHEDULERS = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (batch norm synchronised on CUDA)."""
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


class Run:
    """The resolved pieces of one training run (device, optimizer, AMP, ...)."""

    def __init__(
        self,
        model,
        *,
        optimizer,
        lr,
        scheduler,
        device,
        amp,
        channels_last,
        loss_fn,
        metrics,
        grad_clip,
        seed,
        monitor,
    ):
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
            self.model = wrap_ddp(model, self.device)
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
        self.per_batch = isinstance(scheduler, PER_BATCH_SCHEDULERS)
        self.amp_dtype = amp_dtype(amp, self.device, cpu_bf16=True)
        # Loss scaling only for float16: bfloat16 has the exponent range of float32.
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.loss_fn, self.metrics, self.grad_clip = loss_fn, metrics, grad_clip
        self.seed, self.monitor = seed, monitor
        # A dry run of full mode (course_utils.mode) keeps a few batches of every epoch.
        self.max_batches = DRYRUN_STEPS if is_dryrun() else None
        # Seconds of each training step, when the run is logged (course_utils.dryrun).
        self.step_seconds: list[float] | None = [] if logging_requested() else None
        self.fetch_seconds: list[float] | None = [] if logging_requested() else None  # data

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


def seed_epoch(seed: int, epoch: int) -> None:
    """Make data order, augmentation and dropout a function of (seed, epoch) only."""
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)  # noqa: NPY002 - datasets may draw from the legacy global RNG
    torch.manual_seed(state)  # also seeds every CUDA device


def train_epoch(run: Run, loader, desc: str, progress: bool) -> float:
    run.model.train()
    total, count = torch.zeros((), device=run.device), 0
    n_batches = len(loader) if hasattr(loader, "__len__") else None
    if run.max_batches is not None and n_batches is not None:
        n_batches = min(n_batches, run.max_batches)
    bar = tqdm(total=n_batches, desc=desc, leave=False, unit="batch", disable=not progress)
    waited = time.perf_counter()
    for step, batch in enumerate(itertools.islice(loader, run.max_batches)):
        started = time.perf_counter()
        if run.fetch_seconds is not None:
            run.fetch_seconds.append(started - waited)  # the loader's time for this batch
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
        if run.step_seconds is not None:
            run.step_seconds.append(time.perf_counter() - started)
        bar.update(1)
        if progress and step % 10 == 0:  # .item() waits for the GPU: not every batch
            bar.set_postfix(loss=f"{(total / count).item():.4g}")
        waited = time.perf_counter()
    bar.close()
    if count == 0:
        raise ValueError("train_loader yielded no batches")
    # One process: itself. Under torchrun: the mean over the global batches of the epoch.
    counted = torch.tensor(float(count), device=total.device)
    summed = distributed.all_reduce_sum(torch.stack([total, counted]))
    return float(summed[0] / summed[1])


def validate(run: Run, loader) -> dict[str, float]:
    run.model.eval()
    sums, count = dict.fromkeys(["val_loss", *run.metrics], 0.0), 0
    with torch.inference_mode(), run.autocast():
        for batch in itertools.islice(loader, run.max_batches):
            x, y, extra = run.to_device(batch)
            out = run.model(x)
            sums["val_loss"] += float(run.loss_fn(out, y, *extra)) * x.shape[0]
            out = to_float32(out)  # metrics in full precision, also for (prob, dist) outputs
            for name, fn in run.metrics.items():
                sums[name] += float(fn(out, y)) * x.shape[0]
            count += x.shape[0]
    if count == 0:
        raise ValueError("val_loader yielded no batches")
    # Weighted by batch size, so that a short last batch counts for what it holds.
    return {k: v / count for k, v in sums.items()}


def to_float32(out: Any) -> Any:
    if torch.is_tensor(out):
        return out.float()
    if isinstance(out, tuple | list):
        return type(out)(to_float32(o) for o in out)
    return out


def run_epoch(run: Run, epoch: int, epochs: int, train_loader, val_loader, progress) -> dict:
    start = time.perf_counter()
    for owner in (getattr(train_loader, "dataset", None), getattr(train_loader, "sampler", None)):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)
    seed_epoch(run.seed, epoch)
    lr = float(run.optimizer.param_groups[0]["lr"])
    train_loss = train_epoch(run, train_loader, f"epoch {epoch + 1}/{epochs}", progress)
    if not math.isfinite(train_loss):
        raise FloatingPointError(
            f"the training loss became {train_loss} in epoch {epoch + 1}: lower the learning "
            "rate or look for NaN in the inputs (the last checkpoint is from the epoch before)"
        )
    record = {"epoch": epoch + 1, "train_loss": train_loss}
    if val_loader is not None:
        record.update(validate(run, val_loader))
    return {**record, "lr": lr, "seconds": time.perf_counter() - start}


def step_scheduler(run: Run, record: dict) -> None:
    if run.scheduler is None or run.per_batch:
        return
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.scheduler.step(record[run.monitor])
    else:
        run.scheduler.step()


def training_state(run: Run, epoch: int, history: History, meta: dict) -> dict[str, Any]:
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


def out_of_time(limit: float | None, started: float) -> bool:
    """Past the time limit? Under torchrun every process stops when one of them is."""
    late = limit is not None and time.perf_counter() - started > limit
    return bool(distributed.all_reduce_sum(torch.tensor(float(late))).item() > 0)


def run_record(run: Run, train_loader, val_loader, epochs: int, meta: dict) -> dict[str, Any]:
    """What a logged run records before it trains (``course_utils.dryrun``): one profiled step
    of its first batch, and the steps it is asked for (in a dry run: those of the full run)."""
    from .dryrun import profile_step

    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    x, y, extra = run.to_device(next(iter(train_loader)))
    profile = profile_step(run.module, x, y, extra, run.loss_fn)
    n_train = len(train_loader) if hasattr(train_loader, "__len__") else None
    n_val = len(val_loader) if val_loader is not None and hasattr(val_loader, "__len__") else 0
    return {
        **profile,
        "network": type(run.module).__name__,
        "method": meta.get("method"),
        "batch_shape": list(x.shape),
        "batch_bytes": float(x.numel() * x.element_size()),
        "epochs": epochs,
        "batches_per_epoch": n_train,
        "val_batches_per_epoch": n_val,
    }
