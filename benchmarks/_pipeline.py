"""The input-pipeline part of ``train_throughput.py``: is data loading the bottleneck?

- ``sync(device)``: ``torch.cuda.synchronize`` on CUDA, nothing elsewhere;
- ``to_device(batch, device, channels_last)``: a batch (list of tensors) on the device, the
  input in channels_last when asked;
- ``time_pipeline(dataset, batch_size, step_s, *, step, model, loss_fn, workers, device,
  channels_last) -> dict``: one item in the main process (``sample_ms``), the ``DataLoader``
  alone (``data_ms``), a fit-like loop of loader and ``step`` (``loop_ms``), and
  ``course_utils.train.fit`` itself with its defaults on the fresh network ``model``
  (``fit_img_s``, its second epoch); see ``benchmarks/README.md`` for the columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from course_utils.train import fit


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(batch, device: torch.device, channels_last: bool) -> list[torch.Tensor]:
    moved = [b.to(device, non_blocking=True) for b in batch]
    if channels_last:
        moved[0] = moved[0].contiguous(memory_format=torch.channels_last)
    return moved


def time_pipeline(
    dataset: Dataset,
    batch_size: int,
    step_s: float,
    *,
    step: Callable,
    model: torch.nn.Module,
    loss_fn: Callable,
    workers: int,
    device: torch.device,
    channels_last: bool,
) -> dict:
    """Data time per batch (loader alone), fit-like loop time per step, and fit's own epoch.

    ``step(batch)`` is a training step in fit's default setting, ``step_s`` its time on a batch
    kept on the device; ``model`` (fresh) and ``loss_fn`` go to ``fit``."""
    loader = DataLoader(
        dataset,
        batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    start = time.perf_counter()
    for i in range(3):  # one item in the main process, targets included
        dataset[i]
    sample_s = (time.perf_counter() - start) / 3
    n = len(loader) - 1

    def loop(step=None) -> float:
        batches = iter(loader)
        next(batches)  # worker start-up is not part of the steady state
        sync(device)
        start = time.perf_counter()
        for batch in batches:
            batch = to_device(batch, device, channels_last)
            if step is not None:
                step(batch)
        sync(device)
        return (time.perf_counter() - start) / n

    data_s = loop()
    step(to_device(next(iter(loader)), device, channels_last))  # warm-up
    loop_s = loop(step)
    # fit's defaults; its epoch 2 (epoch 1 warms up), worker start-up included as in real use.
    history = fit(model, loader, loss_fn=loss_fn, epochs=2, device=device, progress=False, lr=1e-4)
    return {
        "workers": workers,
        "sample_ms": 1e3 * sample_s,
        "data_ms": 1e3 * data_s,
        "step_ms": 1e3 * step_s,
        "loop_ms": 1e3 * loop_s,
        "data_over_step": data_s / step_s,
        "gpu_idle": max(0.0, 1.0 - step_s / loop_s) if device.type == "cuda" else None,
        "workers_needed": sample_s * batch_size / step_s,
        "fit_img_s": len(loader) * batch_size / history.records[-1]["seconds"],
    }
