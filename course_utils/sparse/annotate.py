"""Sparse annotations from dense ones: keep some objects, mark some background, the rest unknown.

The convention of every sparse label image of the course (int32, (H, W)):

- ``-1`` (:data:`UNKNOWN`): nobody said what is there (an unlabelled nucleus, or background);
- ``0``: annotated background;
- ``id > 0``: an annotated object, always **whole**: every one of its pixels carries its id.

:func:`sparsify` simulates an annotator who outlines a few objects and marks background, as in
Sugawara (2023): ``k`` objects per image (or a fraction of them), chosen at random, as the
dimmest, the brightest, or both by mean intensity, with background marked everywhere, in a
band around the annotated objects, or nowhere.

Introduced in notebook 09.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._shared.validate import check_finite, check_image, check_int, check_labels, check_real
from ..data.augment import UNKNOWN

__all__ = ["BACKGROUNDS", "SELECTIONS", "UNKNOWN", "sparsify"]

SELECTIONS = ("random", "dim", "bright", "dimbright")
BACKGROUNDS = ("band", "none", "all")
INT32_MAX = int(np.iinfo(np.int32).max)


def sparsify(
    labels: Any,
    fraction: float | None = None,
    *,
    k: int | None = None,
    select: str = "random",
    background: str = "band",
    image: Any = None,
    band: float = 10.0,
    seed: int = 0,
) -> np.ndarray:
    """A sparse annotation of a dense label image: some objects kept whole, the rest unknown.

    Parameters
    ----------
    labels : numpy.ndarray or torch.Tensor, integer, (H, W)
        Dense instance labels, 0 = background, ids >= 0 that fit int32.
    fraction : float, optional
        Share of the image's objects to keep, in [0, 1]: ``round(fraction * n)`` objects, at
        least one when ``fraction > 0`` and the image has any. Give ``fraction`` or ``k``.
    k : int, optional
        Number of objects to keep (all of them when the image has fewer).
    select : {"random", "dim", "bright", "dimbright"}
        Which objects: drawn at random (by ``seed``), the dimmest or the brightest by mean
        intensity in ``image``, or half of each (the dim half gets the odd one). Ties in
        intensity go to the smaller id.
    background : {"band", "none", "all"}
        Annotated background (0): the background pixels within ``band`` pixels (Euclidean
        distance) of a kept object, no background at all, or every background pixel. Pixels
        of objects that are not kept are never background: they stay unknown.
    image : numpy.ndarray, (H, W) or (C, H, W), real, optional
        Needed by ``"dim"``, ``"bright"`` and ``"dimbright"`` (the mean over channels is used).
    band : float
        Width of the background band in pixels (>= 0).
    seed : int
        Seeds the random selection; the other selections do not use it.

    Returns
    -------
    numpy.ndarray, int32, (H, W)
        -1 unknown, 0 annotated background, and the kept objects with their ids unchanged (no
        id is ever made up: every id > 0 of the output is an id of ``labels``, with all of its
        pixels). The same arguments always give the same output.

    Raises
    ------
    TypeError
        Float or boolean labels, or arguments of the wrong type.
    ValueError
        Bad labels (not 2-D, negative or too large ids), neither or both of ``fraction`` and
        ``k``, an unknown ``select`` or ``background``, or a missing or mismatched ``image``.

    Examples
    --------
    >>> labels = np.array([[1, 1, 0, 0, 2, 2],
    ...                    [1, 1, 0, 0, 2, 2]])
    >>> sparsify(labels, k=1, background="band", band=1, seed=0)
    array([[-1, -1, -1,  0,  2,  2],
           [-1, -1, -1,  0,  2,  2]], dtype=int32)

    Introduced in notebook 09.
    """
    lab = check_labels(labels, "labels")
    if lab.dtype == bool:
        raise TypeError("labels is a boolean mask: label it first (skimage.measure.label).")
    if int(lab.max()) > INT32_MAX:
        raise ValueError(
            f"labels has ids above 2**31 - 1 (max {int(lab.max())}), which the int32 output "
            "cannot keep unchanged: relabel them first (skimage.segmentation.relabel_sequential)."
        )
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    band = check_real(band, "band", minimum=0.0)
    seed = check_int(seed, "seed", minimum=0)
    ids = np.unique(lab[lab > 0])
    n_keep = _count(len(ids), fraction, k)
    kept = _choose(ids, n_keep, select, _intensity(image, lab, ids, select), seed)
    keep = np.isin(lab, kept)
    out = np.full(lab.shape, UNKNOWN, np.int32)
    out[keep] = lab[keep]
    if background == "all":
        out[lab == 0] = 0
    elif background == "band" and keep.any():
        near = ndi.distance_transform_edt(~keep) <= band
        out[(lab == 0) & near] = 0
    return out


def _count(n: int, fraction: float | None, k: int | None) -> int:
    """How many of ``n`` objects to keep."""
    if (fraction is None) == (k is None):
        raise ValueError("give either fraction= or k= (exactly one of them)")
    if k is not None:
        return min(check_int(k, "k", minimum=0), n)
    fraction = check_real(fraction, "fraction", minimum=0.0, maximum=1.0)
    if fraction == 0 or n == 0:
        return 0
    return min(n, max(1, int(np.floor(fraction * n + 0.5))))


def _intensity(image: Any, lab: np.ndarray, ids: np.ndarray, select: str) -> np.ndarray | None:
    """Mean intensity of each object of ``ids`` (float64), or None for a random selection."""
    if image is None:
        if select != "random":
            raise ValueError(f"select={select!r} ranks objects by intensity: pass image=")
        return None
    img = np.asarray(check_image(image, "image"), dtype=np.float64)
    if img.shape[-2:] != lab.shape:
        raise ValueError(f"image has shape {img.shape}, expected (H, W) = {lab.shape} or (C, H, W)")
    check_finite(img, "image")
    if select == "random":
        return None
    plane = img if img.ndim == 2 else img.mean(axis=0)
    return np.asarray(ndi.mean(plane, labels=lab, index=ids), dtype=np.float64).reshape(-1)


def _choose(
    ids: np.ndarray, n_keep: int, select: str, means: np.ndarray | None, seed: int
) -> np.ndarray:
    """The ids to keep, sorted."""
    if n_keep == 0:
        return ids[:0]
    if select == "random":
        return np.sort(np.random.default_rng(seed).choice(ids, n_keep, replace=False))
    dim_first = ids[np.lexsort((ids, means))]  # by intensity, ties to the smaller id
    bright_first = ids[np.lexsort((ids, -means))]
    if select == "dim":
        chosen = dim_first[:n_keep]
    elif select == "bright":
        chosen = bright_first[:n_keep]
    else:
        dim = dim_first[: n_keep - n_keep // 2]
        rest = bright_first[~np.isin(bright_first, dim)]  # ties must not pick one object twice
        chosen = np.concatenate([dim, rest[: n_keep // 2]])
    return np.sort(chosen)
