"""Object size in pixels: measure it, and rescale images so that objects have a given size.

A network learns objects of the sizes it was trained on: its receptive field and its learned
shapes are in pixels. Cellpose therefore rescales every image so that its cells have the
diameter the model was trained at (30 px for its cytoplasm model, 17 px for nuclei); the course
does the same with the nucleus diameter written in each zoo model's card.

- :func:`object_diameters`, :func:`median_diameter`: equivalent-circle diameters of labelled
  objects, ``2 * sqrt(area / pi)``.
- :func:`rescale_image`, :func:`rescale_labels`: resize by a factor (bilinear for images,
  nearest neighbour for labels), and back to a given shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ._shared.validate import check_finite, check_image, check_labels, check_real

__all__ = [
    "median_diameter",
    "object_diameters",
    "rescale_image",
    "rescale_labels",
    "to_diameter",
]

_BAND = 256  # output rows interpolated at once by rescale_image (memory, not speed)


def object_diameters(labels: Any) -> np.ndarray:
    """Equivalent-circle diameters ``2 * sqrt(area / pi)`` (float64, pixels) of the objects of
    an (H, W) integer label image (0 = background), in increasing order of their ids."""
    lab = check_labels(labels)
    areas = np.unique(lab[lab > 0], return_counts=True)[1]
    return 2.0 * np.sqrt(areas / np.pi)


def median_diameter(labels: Any | Sequence[Any]) -> float:
    """Median equivalent-circle diameter (pixels) of the objects of one label image or of a
    list of them (pooled); ``nan`` when there is no object. Introduced in notebook 08.
    """
    one = hasattr(labels, "ndim") and labels.ndim == 2  # else a list, of any shapes
    images = [labels] if one else list(labels)
    found = [object_diameters(lab) for lab in images]
    values = np.concatenate(found) if found else np.zeros(0)
    return float(np.median(values)) if values.size else float("nan")


def _zoom_factors(shape: tuple[int, ...], factor: float, out_shape) -> tuple[float, ...]:
    if out_shape is not None:
        return tuple(o / s for o, s in zip(out_shape, shape[-2:]))
    return (factor, factor)


def _target_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    return tuple(max(1, int(round(s * factor))) for s in shape)  # type: ignore[return-value]


def rescale_image(
    image: Any, factor: float = 1.0, *, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """An (H, W) or (C, H, W) image resized by ``factor`` (or to ``shape`` = (h, w)), bilinear.

    Shrinking first smooths with a Gaussian (sigma ``(1/factor - 1) / 2``), so that fine
    structure does not alias. Returns float32 of (round(H * factor), round(W * factor)).
    Introduced in notebook 08.
    """
    x = check_finite(np.asarray(check_image(image), np.float32), "image")
    factor = check_real(factor, "factor", minimum=1e-3)
    out = shape if shape is not None else _target_shape(x.shape[-2:], factor)
    zoom = _zoom_factors(x.shape, factor, out)
    if min(zoom) < 1:
        sigma = [max(0.0, (1 / z - 1) / 2) for z in zoom]
        x = ndi.gaussian_filter(x, ([0.0] if x.ndim == 3 else []) + sigma, mode="reflect")
    rows, cols = ((np.arange(o) + 0.5) / z - 0.5 for o, z in zip(out, zoom))
    channels = x if x.ndim == 3 else x[None]
    result = np.empty((len(channels), *out), np.float32)
    for top in range(0, out[0], _BAND):  # a band of rows at a time: coordinates stay small
        coords = np.stack(np.meshgrid(rows[top : top + _BAND], cols, indexing="ij"))
        for c, channel in enumerate(channels):
            result[c, top : top + _BAND] = ndi.map_coordinates(
                channel, coords, order=1, mode="reflect"
            )
    return result if x.ndim == 3 else result[0]


def rescale_labels(
    labels: Any, factor: float = 1.0, *, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """An (H, W) label image resized by ``factor`` (or to ``shape``) by nearest neighbour:
    ids are never interpolated. Same dtype; objects that shrink below a pixel may vanish.
    Introduced in notebook 08.
    """
    lab = check_labels(labels)
    factor = check_real(factor, "factor", minimum=1e-3)
    out = shape if shape is not None else _target_shape(lab.shape, factor)
    zoom = _zoom_factors(lab.shape, factor, out)
    rows = np.clip(((np.arange(out[0]) + 0.5) / zoom[0]).astype(np.int64), 0, lab.shape[0] - 1)
    cols = np.clip(((np.arange(out[1]) + 0.5) / zoom[1]).astype(np.int64), 0, lab.shape[1] - 1)
    return lab[np.ix_(rows, cols)]


def to_diameter(image: Any, labels: Any, diameter: float) -> tuple[np.ndarray, np.ndarray, float]:
    """An (H, W) or (C, H, W) image and its (H, W) labels rescaled so that the median object
    diameter becomes ``diameter`` pixels, as Cellpose prepares its training images: images of
    many magnifications then show objects of one size, and zoom augmentation spreads them
    around it. Returns ``(image, labels, factor)``; labels without objects are left as they
    are (factor 1). Used by the zoo's generalist training (``scripts/train_zoo.py``).
    """
    diameter = check_real(diameter, "diameter", minimum=1e-3)
    found = median_diameter(labels)
    if not np.isfinite(found):
        return np.asarray(image, np.float32), check_labels(labels), 1.0
    factor = diameter / found
    x = rescale_image(image, factor)
    return x, rescale_labels(labels, shape=x.shape[-2:]), factor
