"""Training on several processes (``torchrun``) with ``DistributedDataParallel``.

``train.fit`` calls these helpers, so that a training script runs unchanged on one process or
under ``torchrun --nproc_per_node=N script.py`` (one process per GPU, or N CPU processes):

- the process group starts from torchrun's environment (``WORLD_SIZE``, ``RANK``,
  ``LOCAL_RANK``, ``MASTER_ADDR``): NCCL on CUDA, gloo on the CPU;
- each process trains on its own shard of every epoch (a ``DistributedSampler`` that keeps the
  loader's shuffling and the run's seed), with ``batch_size / N`` items per step, so that the
  loader's ``batch_size`` is the **global** batch and the learning rate is the one of that
  global batch, as on one process;
- gradients are averaged by DDP, so the weights stay identical on every process;
- only rank 0 writes checkpoints and prints; the others wait for it.

Batch normalisation computes its statistics per process (over ``batch_size / N`` items); on
CUDA ``fit`` turns it into ``SyncBatchNorm``, which computes them over the global batch
(PyTorch has no SyncBatchNorm on the CPU).

Used by ``train.fit`` and ``scripts/train_zoo.py``; not called in the notebooks.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

__all__ = [
    "all_reduce_sum",
    "barrier",
    "is_main_process",
    "rank",
    "setup",
    "shard_loader",
    "world_size",
]


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Number of training processes: 1 unless started by torchrun (``WORLD_SIZE``)."""
    if _initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 on one process)."""
    if _initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """``True`` on rank 0, the process that writes files and prints."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Start the process group when torchrun asked for several processes; the device to use.

    On CUDA each process takes the GPU of its ``LOCAL_RANK``. Returns ``device`` unchanged on
    one process.
    """
    if world_size() <= 1:
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not _initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return device


def shard_loader(loader: Any, seed: int) -> DataLoader:
    """``loader`` with a ``DistributedSampler`` for this process and ``batch_size / N`` items.

    Keeps the dataset, shuffling (a shuffling loader shuffles with ``seed`` and the epoch),
    workers, collate function, pinning and ``drop_last``. Raises ``ValueError`` when the loader
    is not a ``DataLoader`` with a batch size that the number of processes divides.
    """
    n = world_size()
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise ValueError("under torchrun, fit needs DataLoaders with a batch_size to shard")
    if loader.batch_size % n:
        raise ValueError(
            f"the global batch size {loader.batch_size} must be divisible by the {n} processes"
        )
    sampler = DistributedSampler(
        loader.dataset,
        num_replicas=n,
        rank=rank(),
        seed=seed,
        shuffle=isinstance(loader.sampler, RandomSampler),
        drop_last=loader.drop_last,
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size // n,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers if loader.num_workers else False,
    )


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over all processes (itself on one process)."""
    if _initialized() and world_size() > 1:
        tensor = tensor.clone()
        torch.distributed.all_reduce(tensor)
    return tensor


def barrier() -> None:
    """Wait until every process arrives here (nothing on one process)."""
    if _initialized() and world_size() > 1:
        torch.distributed.barrier()
