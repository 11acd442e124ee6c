"""Input checks shared by the modules: label images and torch-or-numpy arrays.

Private and at the bottom of the import chain (numpy only; torch is never imported here), so
that every module may use it. Each public function validates its own arguments through these
helpers and names the argument in the message, as CONTRIBUTING asks.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_tensor(x: Any) -> bool:
    """``True`` for a ``torch.Tensor``, without importing torch when it is not loaded."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def to_numpy(x: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as a numpy array.

    Tensors are detached and copied to the CPU; bfloat16 and float16 tensors become float32
    (numpy has no bfloat16, and a half-precision network output is usually compared in float32).
    """
    if is_tensor(x):
        x = x.detach()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def check_labels(
    labels: Any,
    name: str = "labels",
    *,
    ndim: tuple[int, ...] = (2,),
    allow_bool: bool = False,
    allow_empty: bool = False,
    bool_hint: str = "label it first (skimage.measure.label)",
) -> np.ndarray:
    """Return an instance label image as a numpy array, or raise a clear error.

    Parameters
    ----------
    labels : numpy.ndarray or torch.Tensor
        Integer ids, 0 = background (a tensor is copied to the CPU).
    name : str
        The argument's name, used in the messages.
    ndim : tuple of int
        Accepted numbers of dimensions: ``(2,)`` for ``(H, W)``, ``(2, 3)`` to allow volumes.
    allow_bool : bool
        Accept a boolean mask (returned as is).
    allow_empty : bool
        Accept an array with no element.
    bool_hint : str
        What to do with a boolean mask when it is refused.

    Returns
    -------
    numpy.ndarray
        The labels, not copied when already a numpy array.

    Raises
    ------
    TypeError
        Float, complex or (unless ``allow_bool``) boolean dtype.
    ValueError
        Wrong number of dimensions, empty (unless ``allow_empty``) or negative ids.
    """
    arr = to_numpy(labels)
    if arr.dtype == bool:
        if not allow_bool:
            raise TypeError(f"{name} is a boolean mask: {bool_hint}.")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer labels (0 = background), got dtype {arr.dtype}"
            + ("; threshold probabilities first (prob > 0.5)." if allow_bool else ".")
        )
    if arr.ndim not in ndim:
        dims = " or ".join(f"{d}D" for d in ndim)
        layout = " (H, W)" if ndim == (2,) else ""
        raise ValueError(f"{name} must be a {dims}{layout} label image, got shape {arr.shape}.")
    if arr.size == 0:
        if allow_empty:
            return arr
        raise ValueError(f"{name} is empty (shape {arr.shape}).")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
        raise ValueError(
            f"{name} has negative ids (min {arr.min()}); ids must be >= 0 (0 = background)."
        )
    return arr


def check_image(image: Any, name: str = "image", *, hint: str = "") -> np.ndarray:
    """Return an ``(H, W)`` or ``(C, H, W)`` image of real numbers as a numpy array.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor
        Any real dtype (bool, int, float); a tensor is copied to the CPU.
    name : str
        The argument's name, used in the messages.
    hint : str
        Appended to the message about a wrong number of dimensions.

    Raises
    ------
    TypeError
        Complex, string or object dtype.
    ValueError
        Not 2D or 3D, or empty.
    """
    arr = to_numpy(image)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be (H, W) or (C, H, W), got shape {arr.shape}{hint}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    return arr
