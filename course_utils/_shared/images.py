"""One 2-D image from what a user hands over: (H, W), (H, W, 1), (1, H, W), grey saved as
RGB(A), or one channel of a multi-channel image. Used by ``course_utils.segment``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .validate import check_finite, check_int, to_numpy

__all__ = ["as_image", "one_channel"]


def as_image(image: Any, channel: int | None = None) -> np.ndarray:
    """A 2-D float32 image from what a user may hand over: (H, W); (H, W, 1) or (1, H, W);
    grey stored as RGB(A); one ``channel`` of a multi-channel image."""
    arr = to_numpy(image)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise TypeError(
            f"image must be an array of numbers, got dtype {arr.dtype}"
            + (" (a mask? segment takes the microscopy image)" if arr.dtype == bool else "")
        )
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]) and min(arr.shape[:2]) > 1:
        arr = arr[0] if arr.shape[0] == 1 else arr[..., 0]
    if arr.ndim == 3:
        arr = one_channel(arr, channel)
    elif channel is not None:
        raise ValueError(f"channel={channel} but the image has one channel (shape {arr.shape})")
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ValueError(
            f"image must be a 2-D (H, W) image of at least 8 x 8 pixels, got shape "
            f"{arr.shape}; give one channel of a multi-channel image"
        )
    return check_finite(arr.astype(np.float32, copy=False), "image")


def one_channel(arr: np.ndarray, channel: int | None) -> np.ndarray:
    last = arr.shape[-1] <= 4 < arr.shape[0]  # (H, W, C) as files store colour
    planes = np.moveaxis(arr, -1, 0) if last else arr
    if len(planes) > 4:
        raise ValueError(
            f"image must be 2-D, got shape {arr.shape}: segment takes one plane "
            "(a volume or a time series: call it on each plane)"
        )
    if channel is not None:
        index = check_int(channel, "channel", minimum=0)
        if index >= len(planes):
            raise ValueError(f"channel={index} but the image has {len(planes)} channels")
        return planes[index]
    colour = planes[:3] if last and len(planes) == 4 else planes  # RGBA: alpha is no stain
    if all(np.array_equal(colour[0], c) for c in colour[1:]):
        return colour[0]  # grey saved as colour, as many PNGs are
    layout = "(H, W, C)" if last else "(C, H, W)"
    raise ValueError(
        f"image has {len(planes)} channels that differ (shape {arr.shape}, read as {layout}): "
        "choose the nuclear stain with channel= (e.g. channel=2 for the blue DAPI/Hoechst "
        "channel of an RGB image)"
    )
