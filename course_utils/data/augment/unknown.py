"""Augmentations for sparse labels, in which -1 means "unknown" (``course_utils.sparse``).

Every augmentation of this package refuses negative ids: in dense labels a negative id is a
mistake. Sparse labels hold three kinds of pixels, -1 (nobody said what is there), 0
(annotated background) and ids > 0 (annotated objects). :func:`with_unknown` runs any
augmentation on them so that -1 stays what it means:

- -1 is never an id: no mirrored copy of it is renumbered, and no id is ever made from it;
- -1 is never interpolated: labels are resampled by nearest neighbour, as always;
- what comes from outside the input is unknown: ``mode="constant"`` fills the image with
  ``cval`` and the labels with -1, not with background (nobody annotated it); ``"reflect"``
  mirrors the known and the unknown pixels alike.

How: the augmentation runs twice from the same generator state, once on the "known" mask
(1 = annotated, 0 = unknown, so a constant border reads 0 = unknown) and once on the ids with
-1 replaced by 0; the result is the ids where the mask says known, -1 elsewhere. This needs
what every augmentation here does: its random draws depend on ``rng`` and the image's shape,
never on the label values.

Introduced in notebook 09.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..._shared.validate import check_image, check_labels
from .core import Augment, Named, check_rng, labels_dtype

__all__ = ["UNKNOWN", "with_unknown"]

#: The label value of an unknown pixel in sparse labels.
UNKNOWN = -1


def with_unknown(augment: Augment) -> Augment:
    """The augmentation ``augment`` for sparse labels that hold -1 (unknown).

    Parameters
    ----------
    augment : callable
        ``augment(image, labels, rng) -> (image, labels)`` of this package (or any other
        whose random draws do not depend on the label values).

    Returns
    -------
    callable
        ``augment(image, labels, rng) -> (image, labels)``: image float32 as ``augment``
        returns it; labels int32 (int64 when an id does not fit) (H', W') with -1 where the
        output pixel comes from an unknown pixel or from outside the input, the ids of
        ``augment`` (mirrored copies renumbered as the module says) elsewhere. Labels without
        any -1 give exactly what ``augment`` gives. Wrapping twice changes nothing.

    Examples
    --------
    >>> from course_utils.data import augment as aug
    >>> rotate = with_unknown(aug.random_rotation((45, 45), mode="constant"))
    >>> labels = np.zeros((9, 9), np.int32)
    >>> _, out = rotate(np.zeros((9, 9), np.float32), labels, np.random.default_rng(0))
    >>> int(out[0, 0]), int(out[4, 4])  # a corner from outside the input: unknown
    (-1, 0)

    Introduced in notebook 09.
    """
    if not callable(augment):
        raise TypeError(f"augment must be callable(image, labels, rng), got {augment!r}")
    if _is_wrapped(augment):
        return augment
    return Named(partial(_keep_unknown, augment=augment), f"with_unknown({augment!r})")


def _is_wrapped(augment: Augment) -> bool:
    fn = getattr(augment, "fn", None)
    return isinstance(fn, partial) and fn.func is _keep_unknown


def _keep_unknown(image, labels, rng, *, augment):
    rng = check_rng(rng)
    check_image(image)
    y = check_labels(labels, "labels", allow_unknown=True)
    known = (y >= 0).astype(np.int32)  # 1 = annotated; 0 is also what a constant border gives
    ids = np.where(y > 0, y, 0)
    state = rng.bit_generator.state
    # A copy: an augmentation may work in place, and the second call needs the same image.
    _, known_out = augment(np.array(image, copy=True), known, rng)
    rng.bit_generator.state = state
    x, ids_out = augment(image, ids, rng)
    known_out, ids_out = np.asarray(known_out), np.asarray(ids_out)
    if known_out.shape != ids_out.shape:
        raise ValueError(
            f"augment gave labels of shape {known_out.shape} and then {ids_out.shape} from the "
            "same random state: with_unknown needs draws that do not depend on the labels"
        )
    out = np.where(known_out > 0, ids_out, UNKNOWN)
    return x, out.astype(labels_dtype(np.maximum(ids_out, 0)), copy=False)
