"""What a dry run of full mode measures of each training run, to estimate the real run.

In a dry run (``COURSE_MODE=full COURSE_DRYRUN=1``, see :mod:`course_utils.mode`) ``train.fit``
trains each full-size network for a few steps only. Before that, it profiles one training step
of the full-size batch with :func:`profile_step`: the floating-point operations of the forward
and backward passes (``torch.utils.flop_counter``), the bytes of the activations kept for the
backward pass, and the bytes of the weights. With the steps the full run would take, these
estimate its time on a GPU and its GPU memory (``scripts/dryrun.py`` does the sums).

When ``COURSE_TRAINING_LOG`` names a file, every run of ``fit`` and of
``topdown.train_maskrcnn`` (dry or not) appends one JSON line to it (:func:`log_run`): the
profile, the steps asked for, the seconds a step measured, and on CUDA the peak memory;
``scripts/gpu_run.sh`` records a real full-mode run this way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "LOG_VAR",
    "InferenceClock",
    "log_run",
    "logging_requested",
    "profile_step",
    "timing_fields",
    "training_memory",
]

LOG_VAR = "COURSE_TRAINING_LOG"


def logging_requested() -> bool:
    """Whether ``$COURSE_TRAINING_LOG`` names a file for ``fit`` to log its runs into."""
    return bool(os.environ.get(LOG_VAR, "").strip())


def profile_step(
    model: nn.Module, x: torch.Tensor, y: Any, extra: list, loss_fn: Callable
) -> dict[str, float]:
    """FLOPs, saved activations and weights of one training step of ``model`` on ``x``.

    The step runs in float32 on ``x``'s device; its gradients are discarded (the optimiser
    does not step) and the buffers (batch-norm statistics) restored, so that the model leaves
    as it came. Activations are the tensors autograd keeps for the backward
    pass, counted once each (a tensor kept by two operations is one allocation), the weights
    apart.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor
        One batch, e.g. ``(B, C, H, W)`` float32.
    y, extra
        The targets and extra loss arguments of that batch.
    loss_fn : callable
        ``loss_fn(model(x), y, *extra) -> scalar tensor``.

    Returns
    -------
    dict
        ``flops`` (forward + backward), ``forward_flops``, ``activation_bytes``,
        ``parameter_bytes``, ``parameters`` and ``seconds`` (of this profiled step, counters
        included: an upper bound of a plain step).
    """
    from torch.utils.flop_counter import FlopCounterMode

    saved: dict[int, int] = {}
    params = list(model.parameters())
    weights = {p.untyped_storage().data_ptr() for p in params}  # counted as weights, not here

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    was_training = model.training
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}  # batch-norm stats
    model.train()
    counter = FlopCounterMode(display=False)
    start = time.perf_counter()
    with counter, torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        out = model(x)
        forward = counter.get_total_flops()
        loss = loss_fn(out, y, *extra)
        loss.backward()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    with torch.no_grad():  # the profiled step leaves the model as it found it
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    model.train(was_training)
    return {
        "flops": float(counter.get_total_flops()),
        "forward_flops": float(forward),
        "activation_bytes": float(sum(saved.values())),
        "parameter_bytes": float(sum(p.numel() * p.element_size() for p in params)),
        "parameters": float(sum(p.numel() for p in params)),
        "seconds": seconds,
    }


def training_memory(profile: dict[str, float], batch_bytes: float = 0.0) -> float:
    """Bytes a training step of ``profile`` needs on a device with Adam in float32.

    Weights, gradients and Adam's two moments (4x the weights), the activations kept for the
    backward pass (measured in float32: bfloat16 autocast keeps many of them at half the size,
    so this is an upper bound of the run with it), and the batch itself.
    """
    return 4 * profile["parameter_bytes"] + profile["activation_bytes"] + batch_bytes


def timing_fields(
    profile: dict[str, float], step_seconds: list[float], fetch_seconds: list[float], device: Any
) -> dict[str, Any]:
    """The measured part of a logged run: seconds a step and a batch's wait (the first of each
    left out: it warms up, or starts the loader's workers), steps run, training seconds with
    the profiled step, the device and, on CUDA, the peak memory."""
    timed = step_seconds[1:] or step_seconds
    fetched = fetch_seconds[1:] or fetch_seconds
    cuda = torch.device(device).type == "cuda"
    return {
        "seconds_per_step": sum(timed) / len(timed) if timed else None,
        "data_seconds_per_step": sum(fetched) / len(fetched) if fetched else None,
        "steps_run": len(step_seconds),
        "train_seconds": profile["seconds"] + sum(step_seconds),
        "device": str(device),
        "cuda_peak_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
    }


def log_run(record: dict[str, Any]) -> Path | None:
    """Append ``record`` as one JSON line to ``$COURSE_TRAINING_LOG``; ``None`` when unset."""
    target = os.environ.get(LOG_VAR, "").strip()
    if not target:
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return path


class InferenceClock:
    """Seconds spent in the outermost ``forward`` of any module while gradients are off.

    Installed in a notebook's kernel by ``scripts/dryrun.py`` (global module hooks of PyTorch):
    with the FLOP rate this CPU reaches in training steps, it turns the time the networks spent
    predicting into FLOPs, and those into GPU time, for the estimate of the full run.
    """

    def __init__(self) -> None:
        from torch.nn.modules import module

        self.seconds, self.calls, self._depth, self._start = 0.0, 0, 0, 0.0
        self._handles = [
            module.register_module_forward_pre_hook(self._enter),
            module.register_module_forward_hook(self._leave),
        ]

    def _enter(self, mod, args) -> None:
        self._depth += 1
        if self._depth == 1 and not torch.is_grad_enabled():
            self._start = time.perf_counter()

    def _leave(self, mod, args, output) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self._start:
            self.seconds += time.perf_counter() - self._start
            self.calls += 1
            self._start = 0.0

    def close(self) -> dict[str, Any]:
        """Remove the hooks; log and return ``{"inference_seconds", "inference_calls"}``."""
        for handle in self._handles:
            handle.remove()
        record = {"inference_seconds": self.seconds, "inference_calls": self.calls}
        log_run(record)
        return record
