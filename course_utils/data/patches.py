"""``PatchDataset``: random training crops from a few large images, reproducible per item.

Kept apart from ``loaders`` because it needs torch, which ``course_utils.data`` only imports
when ``PatchDataset`` is first used.

Introduced in notebook 00.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .._shared.jit import one_thread_in_workers
from .._shared.relabel import relabel_consecutive
from .._shared.validate import check_image, check_int, check_labels
from .augment import UNKNOWN, with_unknown

__all__ = ["PatchDataset"]

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
#: Largest id kept as given: mirror padding adds up to 8 x max id, and patches are int32.
MAX_KEPT_ID = np.iinfo(np.int32).max // 9
CROPS = ("uniform", "objects")


def _as_pair(patch_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(patch_size, (int, np.integer)):
        patch_size = (patch_size, patch_size)
    size = tuple(int(s) for s in patch_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"patch_size must be a positive int or (h, w), got {patch_size!r}")
    return size  # type: ignore[return-value]


def _check_images(images: Sequence[Any], labels: Sequence[Any], unknown: bool = False):
    """Images as float32 (C, H, W), labels as int32 (H, W); clear errors for bad input.

    Labels with an id above :data:`MAX_KEPT_ID` are relabelled 1..n (in increasing order);
    with ``unknown``, -1 is accepted and kept.
    """
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} label images")
    if len(images) == 0:
        raise ValueError("images is empty")
    out_x, out_y = [], []
    for k, (image, lab) in enumerate(zip(images, labels)):
        x = check_image(image, f"images[{k}]")
        # A boolean mask would make every nucleus one instance before target_fn runs.
        hint = "each nucleus needs its own id, label the mask first (skimage.measure.label)"
        y = check_labels(lab, f"labels[{k}]", bool_hint=hint, allow_unknown=unknown)
        if y.shape != x.shape[-2:]:
            raise ValueError(
                f"labels[{k}] has shape {y.shape}, expected the image's (H, W) = {x.shape[-2:]}"
            )
        if int(y.max()) > MAX_KEPT_ID:  # ids only need to be distinct within a patch
            y = _relabel_known(y) if unknown else relabel_consecutive(y)[0]
        out_x.append(np.asarray(x if x.ndim == 3 else x[None], dtype=np.float32))
        out_y.append(y.astype(np.int32, copy=False))
    channels = {x.shape[0] for x in out_x}
    if len(channels) > 1:
        raise ValueError(f"all images need the same number of channels, got {sorted(channels)}")
    return out_x, out_y


def _relabel_known(y: np.ndarray) -> np.ndarray:
    """Ids > 0 relabelled 1..n; background 0 and unknown -1 kept."""
    ids, _ = relabel_consecutive(np.where(y > 0, y, 0))
    return np.where(y < 0, UNKNOWN, ids)


def _pad_to(x: np.ndarray, y: np.ndarray, size: tuple[int, int]):
    """Mirror-pad an image smaller than the patch; mirrored objects get new label ids.

    A reflected nucleus is a different object from the original (they touch at the edge), so
    each of the 8 padded margins adds its own multiple of ``max id`` to the labels it copies.
    Background (0) and unknown (-1) are mirrored as they are.
    """
    h, w = y.shape
    pads = [(max(0, s - d) // 2, max(0, s - d) - max(0, s - d) // 2) for s, d in zip(size, (h, w))]
    if not any(a or b for a, b in pads):
        return x, y
    mode = "reflect" if min(h, w) > 1 else "edge"  # reflect needs two pixels to mirror
    x = np.pad(x, [(0, 0), *pads], mode=mode)
    # Region code 0 for the original, 1..8 for the margins (row code * 3 + column code).
    rows = np.pad(np.zeros(h, np.int32), pads[0], constant_values=(1, 2))
    cols = np.pad(np.zeros(w, np.int32), pads[1], constant_values=(1, 2))
    region = rows[:, None] * 3 + cols[None, :]
    y = np.pad(y, pads, mode=mode)
    y = np.where(y > 0, y + region * max(int(y.max()), 0), y).astype(np.int32)
    return x, y


def _object_windows(y: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """Flat indices (int32) of the crop positions (top, left) whose window holds an object
    pixel (id > 0), in a (H - h + 1, W - w + 1) table; ``None`` when every position does, or
    none does (then crops are uniform)."""
    ph, pw = size
    inside = np.pad(np.cumsum(np.cumsum(y > 0, axis=0), axis=1), ((1, 0), (1, 0)))
    count = inside[ph:, pw:] - inside[:-ph, pw:] - inside[ph:, :-pw] + inside[:-ph, :-pw]
    valid = count > 0
    if valid.all() or not valid.any():
        return None
    return np.flatnonzero(valid).astype(np.int32)


class PatchDataset(Dataset):
    """Random (image, target) crops for training; item ``i`` depends only on (seed, epoch, i).

    Parameters
    ----------
    images : sequence of array_like, (H, W) or (C, H, W), real-valued
        All with the same channel count; stored as float32 (C, H, W).
    labels : sequence of array_like, integer, (H, W)
        Instance labels matching the images' spatial shapes; 0 = background. Boolean masks are
        refused (label them first). Ids up to :data:`MAX_KEPT_ID` (about 2.4e8) are kept; an
        image with larger ids (e.g. 64-bit ids) is relabelled 1..n in increasing id order
        before cropping, so its patch ids are then not the caller's ids (they only need to be
        distinct within a patch). With ``unknown=True`` also -1 = unknown (sparse labels).
    patch_size : int or (int, int)
        Crop size (h, w). Smaller images are mirror-padded (mirrored objects get new ids;
        background and unknown pixels are mirrored as they are).
    length : int, optional
        Number of items per epoch; default ``len(images)``. Item ``i`` crops image
        ``i % len(images)`` at a random position.
    augment : callable, optional
        ``augment(image, labels, rng) -> (image, labels)`` on the crop: image float32
        (C, h, w), labels int32 (h, w), rng a ``np.random.Generator``. Geometric transforms must
        act on the last two axes of both.
    target_fn : callable, optional
        ``target_fn(labels) -> target`` (or a tuple of targets), called after ``augment`` so that
        flows, distances or weight maps follow the transformed labels.
    seed : int
        Base seed. With ``set_epoch`` every (seed, epoch, i) gives its own crop, the same in any
        DataLoader worker and after resuming.
    unknown : bool
        The labels are sparse (``course_utils.sparse``): -1 = unknown, 0 = annotated
        background, ids > 0 = annotated objects. -1 is kept through cropping, padding and
        ``augment`` (which runs through ``augment.with_unknown``: never an id, never
        interpolated, unknown beyond the border), and reaches ``target_fn`` as -1. Without it
        a negative id is an error, as everywhere else.
    weights : sequence of float, optional
        How often each image is cropped, relatively (normalised here): item ``i`` then crops
        an image drawn with these probabilities, so that a few images of one dataset are not
        drowned by many of another (the zoo's generalist training). Default: item ``i`` crops
        image ``i % len(images)``.
    crop : {"uniform", "objects"}
        ``"uniform"``: every position equally likely. ``"objects"``: only positions whose crop
        holds at least one object pixel (id > 0), as StarDist draws most of its patches
        (``train_foreground_only``); with few annotated objects, uniform crops would mostly
        hold nothing to learn from. An image without objects is cropped uniformly.

    Returns (``__getitem__``)
    -------------------------
    x : torch.Tensor, float32, (C, h, w)
    y : torch.Tensor
        ``torch.as_tensor(target_fn(labels))``, or the labels as int64 (h, w) without
        ``target_fn``. A tuple of targets gives ``(x, *targets)``.

    Examples
    --------
    >>> from course_utils.data import load_split
    >>> images, labels = load_split("synthetic", "train", n=2)
    >>> ds = PatchDataset(images, labels, 64, length=10)
    >>> x, y = ds[0]
    >>> tuple(x.shape), x.dtype, tuple(y.shape), y.dtype
    ((1, 64, 64), torch.float32, (64, 64), torch.int64)

    Introduced in notebook 00.
    """

    def __init__(
        self,
        images: Sequence[Any],
        labels: Sequence[Any],
        patch_size: int | Sequence[int],
        *,
        length: int | None = None,
        augment: Augment | None = None,
        target_fn: Callable[[np.ndarray], Any] | None = None,
        seed: int = 0,
        unknown: bool = False,
        crop: str = "uniform",
        weights: Sequence[float] | None = None,
    ) -> None:
        self.patch_size = _as_pair(patch_size)
        if not isinstance(unknown, bool | np.bool_):
            raise TypeError(f"unknown must be True or False, got {unknown!r}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        images, labels = _check_images(images, labels, bool(unknown))
        padded = [_pad_to(x, y, self.patch_size) for x, y in zip(images, labels)]
        self.images = [x for x, _ in padded]
        self.labels = [y for _, y in padded]
        self.unknown, self.crop = bool(unknown), crop
        self._windows = [
            _object_windows(y, self.patch_size) if crop == "objects" else None for y in self.labels
        ]
        if length is None:
            length = len(self.images)
        length = check_int(length, "length", minimum=1)
        if augment is not None and not callable(augment):
            raise TypeError("augment must be callable(image, labels, rng) or None")
        if target_fn is not None and not callable(target_fn):
            raise TypeError("target_fn must be callable(labels) or None")
        self.length = int(length)
        self.weights = None if weights is None else _probabilities(weights, len(self.images))
        self.augment = with_unknown(augment) if self.unknown and augment is not None else augment
        self.target_fn = target_fn
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw other crops for this epoch (call before iterating; persistent workers keep
        their own copy, so re-create the DataLoader iterator after changing it)."""
        epoch = check_int(epoch, "epoch", minimum=0)
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _crop(self, index: int, rng: np.random.Generator):
        if self.weights is None:
            k = index % len(self.images)
        else:
            k = int(rng.choice(len(self.images), p=self.weights))
        x, y = self.images[k], self.labels[k]
        ph, pw = self.patch_size
        windows = self._windows[k]
        if windows is None:
            top = int(rng.integers(0, y.shape[0] - ph + 1))
            left = int(rng.integers(0, y.shape[1] - pw + 1))
        else:
            top, left = divmod(int(windows[rng.integers(len(windows))]), y.shape[1] - pw + 1)
        # Copies: augment may work in place, and the stored images must not change.
        return x[:, top : top + ph, left : left + pw].copy(), y[
            top : top + ph, left : left + pw
        ].copy()

    def __getitem__(self, index: int):
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} patches")
        index %= self.length
        one_thread_in_workers()  # the targets' numba kernels
        rng = np.random.default_rng([self.seed, self.epoch, index])
        x, y = self._crop(index, rng)
        if self.augment is not None:
            x, y = self.augment(x, y, rng)
            x, y = np.asarray(x), np.asarray(y)
            if x.ndim != 3 or y.shape != x.shape[-2:]:
                raise ValueError(
                    f"augment returned image {x.shape} and labels {y.shape}; "
                    "expected (C, h, w) and (h, w)"
                )
        # Flips give negative strides, which torch.as_tensor cannot wrap.
        x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if self.target_fn is None:
            return x_t, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        target = self.target_fn(np.ascontiguousarray(y))
        if isinstance(target, tuple):
            return (x_t, *(_tensor(t) for t in target))
        return x_t, _tensor(target)


def _probabilities(weights: Sequence[float], n: int) -> np.ndarray:
    """``weights`` as probabilities (float64, summing to 1); a clear error for bad ones."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must hold one number per image ({n}), got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w / w.sum()


def _tensor(value: Any) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value)
    return torch.as_tensor(value)
