"""Random 3-D training crops, augmented and turned into targets on the fly.

A 100^3 stack holds about 30 nuclei: a few stacks give hundreds of different crops once they
are flipped and turned in-plane. Only rotations about z keep an anisotropic voxel's shape, so
the crops are flipped along any axis but rotated by 90 degrees in (y, x) only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._shared.jit import one_thread_in_workers
from .._shared.validate import check_int

__all__ = ["VolumePatches"]


class VolumePatches(torch.utils.data.Dataset):
    """``n`` random (Z, Y, X) crops of volumes, with their targets.

    Parameters
    ----------
    images : list of np.ndarray, float32, shape (Z, Y, X)
        Normalised volumes (e.g. ``data.load_volumes``).
    labels : list of np.ndarray, integer, shape (Z, Y, X)
        Their instance labels.
    patch : (int, int, int)
        Crop size; no larger than the smallest volume.
    targets : callable
        ``targets(label_crop) -> tuple of arrays``, e.g. ``lambda l: (boundary_classes_3d(l),)``
        or ``lambda l: stardist3d_targets(l, rays, anisotropy)``; computed after augmentation.
    n : int
        Crops per epoch.
    seed : int
        Crop ``i`` of epoch ``e`` depends only on ``(seed, e, i)``.
    augment : bool
        Random flips along every axis and 90-degree turns in (y, x).

    Items are ``(image (1, Z, Y, X) float32 tensor, *targets as tensors)``; integer targets
    become int64 (class ids for the cross-entropy).

    Introduced in notebook 11.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        patch: tuple[int, int, int],
        targets: Callable[[np.ndarray], tuple],
        n: int = 64,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError(f"need as many volumes as labels (>= 1): {len(images)}, {len(labels)}")
        self.patch = tuple(check_int(p, "patch", minimum=1) for p in patch)
        for k, (x, y) in enumerate(zip(images, labels)):
            if x.ndim != 3 or x.shape != y.shape:
                raise ValueError(
                    f"volume {k}: image {x.shape} and labels {y.shape} must be (Z, Y, X)"
                )
            if any(s < p for s, p in zip(x.shape, self.patch)):
                raise ValueError(f"volume {k} {x.shape} is smaller than the patch {self.patch}")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"volume {k} holds NaN or infinite values")
        if augment and self.patch[1] != self.patch[2]:
            raise ValueError("in-plane turns need a square patch (Y == X); or augment=False")
        self.images, self.labels = list(images), list(labels)
        self.targets, self.n, self.seed, self.augment = (
            targets,
            check_int(n, "n", minimum=1),
            seed,
            augment,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by ``fit`` before each epoch: new crops every epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        one_thread_in_workers()  # the targets' numba kernels
        rng = np.random.default_rng((self.seed, self.epoch, int(i)))
        k = int(rng.integers(len(self.images)))
        image, labels = self.images[k], self.labels[k]
        start = [int(rng.integers(s - p + 1)) for s, p in zip(image.shape, self.patch)]
        box = tuple(slice(a, a + p) for a, p in zip(start, self.patch))
        x, y = image[box], labels[box]
        if self.augment:
            for axis in range(3):
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, axis)
            turns = int(rng.integers(4))
            x, y = np.rot90(x, turns, (1, 2)), np.rot90(y, turns, (1, 2))
        x, y = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y)
        out = [torch.from_numpy(x[None])]
        for t in self.targets(y):
            t = np.ascontiguousarray(t)
            out.append(torch.from_numpy(t.astype(np.int64) if t.dtype.kind in "iub" else t))
        return tuple(out)
