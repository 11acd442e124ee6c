"""What every augmentation shares: the checks, ranges, the named callable, ``compose``, and
the exact symmetries ``flip_rot90``. See :mod:`course_utils.data.augment`.

Introduced in notebook 04.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from ..._shared.validate import check_image, check_labels

__all__ = ["compose", "flip_rot90"]

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
Range = float | Sequence[float]
MODES = ("reflect", "constant")
INT32_MAX, INT64_MAX = int(np.iinfo(np.int32).max), int(np.iinfo(np.int64).max)


def check_pair(image: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Image as float32 (C, H, W), labels as an integer array, and whether the image was 2-D.

    Ids above ``2**63 - 1`` (uint64) are refused: no int64 output could hold them.
    """
    x = check_image(image)
    y = check_labels(labels, "labels", allow_bool=True)
    if y.shape != x.shape[-2:]:
        raise ValueError(f"labels have shape {y.shape}, expected the image's (H, W) {x.shape[-2:]}")
    if y.dtype == np.uint64 and int(y.max()) > INT64_MAX:
        raise ValueError(
            f"labels has ids above 2**63 - 1 (max {int(y.max())}), which int64 cannot hold; "
            "relabel them first (skimage.segmentation.relabel_sequential)."
        )
    return np.asarray(x if x.ndim == 3 else x[None], np.float32), y, x.ndim == 2


def check_rng(rng: Any) -> np.random.Generator:
    """``rng`` itself when it is a ``numpy.random.Generator``; else ``TypeError``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def check_mode(mode: str) -> str:
    """``mode`` when it is one of :data:`MODES`; else ``ValueError``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def parse_span(value: Any, name: str, kind: str) -> tuple[float, float]:
    """Parse a range. A number ``v`` means ``(-v, v)`` for kind "sym", ``(1/v, v)`` for
    "ratio" and ``(v, v)`` for "fixed"; a pair (low, high) is taken as it is."""
    if np.ndim(value) == 0:
        v = float(value)
        if not math.isfinite(v) or v < (1.0 if kind == "ratio" else 0.0):
            raise ValueError(f"{name} must be {'>= 1' if kind == 'ratio' else '>= 0'}: {value!r}")
        return (-v, v) if kind == "sym" else (1.0 / v, v) if kind == "ratio" else (v, v)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number or a pair (low, high), got {value!r}") from err
    positive = {"sym": -math.inf, "ratio": 1e-12, "fixed": 0.0}[kind]
    if not (math.isfinite(lo) and math.isfinite(hi) and positive <= lo <= hi):
        raise ValueError(
            f"{name} must be a finite range low <= high (low >= 0 for widths and "
            f"> 0 for ratios), got {value!r}"
        )
    return lo, hi


def draw(rng: np.random.Generator, span: tuple[float, float], *, log: bool = False) -> float:
    """One number from ``span``, uniform (or log-uniform with ``log``)."""
    lo, hi = span
    if log:  # zooming in by 2 is then as likely as zooming out by 2
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


class Named:
    """An augmentation that prints as the call that made it; picklable, so that DataLoader
    workers started with "spawn" (macOS, Windows) can receive it."""

    def __init__(self, fn: Augment, text: str) -> None:
        self.fn, self.text = fn, text

    def __call__(self, image, labels, rng):
        return self.fn(image, labels, rng)

    def __repr__(self) -> str:
        return self.text


def labels_dtype(y: np.ndarray) -> type:
    """``np.int32`` when every id of ``y`` (>= 0, <= 2**63 - 1) fits it, else ``np.int64``."""
    if y.dtype == bool or np.can_cast(y.dtype, np.int32) or not y.size:
        return np.int32
    return np.int32 if int(y.max()) <= INT32_MAX else np.int64


def as_output(x: np.ndarray, y: np.ndarray, was_2d: bool) -> tuple[np.ndarray, np.ndarray]:
    """The image as float32 in the caller's layout; the labels as int32 when every id fits,
    else int64 (ids are never wrapped)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return (x[0] if was_2d else x), np.ascontiguousarray(y, dtype=labels_dtype(y))


def flip_rot90(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries of the square: ``k`` quarter turns, then maybe a left-right flip.

    Exact (no resampling, ids unchanged). A non-square input comes back with H and W swapped
    after an odd ``k``.

    Parameters
    ----------
    image : np.ndarray, float, (H, W) or (C, H, W)
    labels : np.ndarray, integer, (H, W)
    rng : np.random.Generator
        Draws ``k = rng.integers(4)``, then ``flip = rng.integers(2)``.

    Returns
    -------
    image : np.ndarray, float32, same layout
    labels : np.ndarray, int32 (int64 when an id does not fit int32)

    Introduced in notebook 04.
    """
    x, y, was_2d = check_pair(image, labels)
    rng = check_rng(rng)
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k)
    if flip:
        x, y = x[..., ::-1], y[:, ::-1]
    return as_output(x, y, was_2d)


def compose(*augments: Augment, p: float | Sequence[float] = 1.0) -> Augment:
    """Chain augmentations; each runs with probability ``p`` (one number, or one per augment).

    For each augment in turn one ``rng.random()`` decides whether it runs, so the same
    generator state gives the same result. Returns an augment.

    Introduced in notebook 04.
    """
    if not augments:
        raise ValueError("compose needs at least one augmentation")
    for k, aug in enumerate(augments):
        if not callable(aug):
            raise TypeError(f"augmentation {k} is not callable: {aug!r}")
    probs = [float(p)] * len(augments) if np.ndim(p) == 0 else [float(q) for q in p]
    if len(probs) != len(augments):
        raise ValueError(f"got {len(probs)} probabilities for {len(augments)} augmentations")
    if not all(0.0 <= q <= 1.0 for q in probs):
        raise ValueError(f"probabilities must be in [0, 1], got {p!r}")
    names = ", ".join(a.__name__ if hasattr(a, "__name__") else repr(a) for a in augments)
    return Named(partial(_chain, steps=tuple(zip(augments, probs))), f"compose({names}, p={p!r})")


def _chain(image, labels, rng, *, steps):
    rng = check_rng(rng)
    for aug, q in steps:
        if rng.random() < q:
            image, labels = aug(image, labels, rng)
    return image, labels
