"""The training loop: ``fit`` (mixed precision, checkpoints, exact resume) and ``History``.

Notebook 02b builds the loop by hand, then switches to ``fit``. The same ``fit`` runs on one
process or, unchanged, on several under ``torchrun`` (``course_utils.distributed``).
Introduced in notebook 02b.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from . import train_steps as steps
from ._shared.validate import check_int
from .checkpoint import (
    checkpoint_dir,
    describe,
    load_checkpoint,
    prepare_checkpoint_dir,
    remove_stale_temporaries,
    repair_best,
    restore_training_state,
    save_training_state,
    training_lock,
)
from .dryrun import logging_requested
from .history import BOOKKEEPING, History, format_value
from .mode import DRYRUN_STEPS, is_dryrun

__all__ = ["History", "checkpoint_dir", "fit", "load_checkpoint"]


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
    amp : "auto", "gpu", bool, "bf16" or "fp16"
        Mixed precision. ``"auto"``: on CUDA bfloat16 on GPUs that have it natively (Ampere
        or newer), else float16 with a gradient scaler (e.g. a T4); bfloat16 on CPUs that
        compute it natively (``course_utils.env.cpu_has_bf16``: 1.3-1.6x faster for the four
        methods, scores within the seed spread, ``benchmarks/bench_fit_bf16.py``); off on
        other CPUs and MPS.
        ``"gpu"``: as ``"auto"`` on CUDA, float32 on every CPU.
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

    In a dry run of full mode (``COURSE_MODE=full COURSE_DRYRUN=1``, see
    :mod:`course_utils.mode`) ``epochs`` and the batches of each epoch, training and validation,
    are capped at ``mode.DRYRUN_STEPS``: every full-size path runs, and training is short.

    Returns
    -------
    History
        One record per epoch; ``history.plot()`` draws it.

    Examples
    --------
    >>> history = fit(model, train_loader, val_loader, loss_fn=nn.BCEWithLogitsLoss(),
    ...               epochs=20, checkpoint_dir="runs/unet")  # doctest: +SKIP
    >>> history.plot()  # doctest: +SKIP

    Introduced in notebook 02b.
    """
    epochs = check_int(epochs, "epochs", minimum=1)
    planned, logged = epochs, logging_requested()
    if is_dryrun():
        epochs = min(epochs, DRYRUN_STEPS)
    seed = check_int(seed, "seed", minimum=0)
    metrics = dict(metrics or {})
    monitor = _check_monitor(monitor, metrics, has_val=val_loader is not None)
    history = History(monitor, monitor_mode)
    directory = prepare_checkpoint_dir(checkpoint_dir)
    record_meta = describe(model, meta)  # refuses bad meta before any training
    run = steps.Run(
        model,
        optimizer=optimizer,
        lr=lr,
        scheduler=scheduler,
        device=device,
        amp=amp,
        channels_last=channels_last,
        loss_fn=loss_fn,
        metrics=metrics,
        grad_clip=grad_clip,
        seed=seed,
        monitor=monitor,
    )
    if distributed.world_size() > 1:
        train_loader = distributed.shard_loader(train_loader, seed)
    main = distributed.is_main_process()
    progress = progress and main
    with contextlib.ExitStack() as stack:
        if directory is not None and main:
            stack.enter_context(training_lock(directory))
            remove_stale_temporaries(directory)  # left by a run killed while saving
        start, history = _restore(
            directory, run, history, resume=resume, main=main, progress=progress
        )
        if start >= epochs and progress:
            tqdm.write(f"{directory / 'last.pt'} already holds {start} epochs: nothing to train")
        if logged and start < epochs:
            profile = steps.run_record(run, train_loader, val_loader, planned, record_meta)
        _train_epochs(
            run,
            start,
            epochs,
            (train_loader, val_loader),
            history,
            record_meta,
            directory=directory,
            main=main,
            progress=progress,
            time_limit=time_limit,
        )
        if logged and start < epochs and main:
            _log_run(profile, run)
    model.eval()
    return history


def _train_epochs(
    run: steps.Run,
    start: int,
    epochs: int,
    loaders: tuple,
    history: History,
    meta: dict,
    *,
    directory,
    main: bool,
    progress: bool,
    time_limit: float | None,
) -> None:
    """Epochs ``start`` to ``epochs``: train, validate, step the scheduler, checkpoint, report;
    stop early past ``time_limit`` seconds."""
    started = time.perf_counter()
    for epoch in range(start, epochs):
        record = steps.run_epoch(run, epoch, epochs, *loaders, progress)
        history.append(record)
        improved = history.best_epoch == record["epoch"]
        steps.step_scheduler(run, record)
        if directory is not None and main:
            state = steps.training_state(run, epoch + 1, history, meta)
            save_training_state(directory, state, best=improved)
        distributed.barrier()  # the others wait until rank 0 has written
        if progress:
            tqdm.write(_summary(record, epochs, improved))
        if steps.out_of_time(time_limit, started):
            if progress and epoch + 1 < epochs:
                tqdm.write(
                    f"time limit of {time_limit:.0f} s reached after epoch "
                    f"{epoch + 1}: run again to resume"
                )
            break


def _log_run(profile: dict, run: steps.Run) -> None:
    """One JSON line for this run in ``$COURSE_TRAINING_LOG`` (course_utils.dryrun)."""
    from .dryrun import log_run, timing_fields

    timing = timing_fields(profile, run.step_seconds or [], run.fetch_seconds or [], run.device)
    amp = None if run.amp_dtype is None else str(run.amp_dtype).removeprefix("torch.")
    log_run({**profile, **timing, "amp": amp})


def _check_monitor(monitor: str, metrics: Mapping, *, has_val: bool) -> str:
    """The record key that picks the best epoch (``train_loss`` without validation)."""
    monitor = "train_loss" if monitor == "val_loss" and not has_val else monitor
    known = ["train_loss"] + (["val_loss", *metrics] if has_val else [])
    if monitor not in known:
        raise ValueError(f"monitor must be one of {known} (metrics need val_loader): {monitor!r}")
    return monitor


def _restore(
    directory, run: steps.Run, history: History, *, resume: bool, main: bool, progress: bool
):
    """The epoch to start from and the history so far: from ``directory/last.pt`` when there is
    one (a ``best.pt`` left behind by a kill is repaired from it), else 0 and ``history``."""
    if directory is None:
        return 0, history
    start, history = restore_training_state(
        directory,
        model=run.module,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        resume=resume,
        history=history,
    )
    if main and repair_best(directory, history.best_epoch, start) and progress:
        tqdm.write(
            f"{directory / 'best.pt'} was behind the history (a run stopped while writing "
            "it): restored from last.pt"
        )
    return start, history


def _summary(record: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{k} {format_value(v)}" for k, v in record.items() if k not in BOOKKEEPING]
    parts += [f"lr {record['lr']:.3g}", f"{record['seconds']:.1f} s"]
    return "  ".join(parts) + ("  (best)" if improved else "")
