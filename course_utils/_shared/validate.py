"""Input checks shared by the modules: numbers, label images, images and tensors.

Private and at the bottom of the import chain (numpy only; torch is never imported here), so
that every module may use it. Each public function validates its own arguments through these
helpers and names the argument in the message, as CONTRIBUTING asks. One rule for each kind of
input, written once:

- integers (:func:`check_int`): Python or NumPy integers, never ``bool``;
- real numbers (:func:`check_real`): finite unless asked otherwise, never ``bool``;
- arrays of real numbers (:func:`check_finite`): NaN or infinity is refused with the count and
  the position of the first bad value, never treated as background or propagated;
- label images (:func:`check_labels`) and images (:func:`check_image`).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def check_int(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as a Python ``int``, or a clear error naming ``name``.

    Accepts ``int`` and NumPy integers (``np.int64(3)``); refuses ``bool``, floats (also
    ``3.0``) and anything else with ``TypeError``, and values outside ``[minimum, maximum]``
    with ``ValueError``.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}.")
    return value


def check_real(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    allow_inf: bool = False,
) -> float:
    """``value`` as a Python ``float``, or a clear error naming ``name``.

    Accepts Python and NumPy reals (integers too); refuses ``bool``, NaN, infinity (unless
    ``allow_inf``) and values outside ``[minimum, maximum]``.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if value != value or (not allow_inf and value in (float("inf"), float("-inf"))):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}.")
    return value


def check_finite(arr: np.ndarray, name: str) -> np.ndarray:
    """Return ``arr`` unchanged when it holds no NaN or infinity; else raise ``ValueError``
    with how many values are bad and where the first one is (the course's one NaN rule)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fc":
        return arr
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        value = arr[first]
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s) of {arr.size}; the first is "
            f"{value} at index {first}. Find where they come from (a division by zero, a "
            "corrupted file) or replace them first, e.g. np.nan_to_num."
        )
    return arr


def check_grid(grid: Any, name: str = "grid") -> tuple[int, int]:
    """A StarDist output grid as ``(gy, gx)`` of positive ints; an int means both axes."""
    pair = (grid, grid) if isinstance(grid, numbers.Integral) else grid
    try:
        gy, gx = pair
        return check_int(gy, name, minimum=1), check_int(gx, name, minimum=1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of positive ints, got {grid!r}") from None


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
    allow_unknown: bool = False,
    bool_hint: str = "label it first (skimage.measure.label)",
) -> np.ndarray:
    """Return an instance label image as a numpy array, or raise a clear error.

    Parameters
    ----------
    labels : numpy.ndarray or torch.Tensor
        Integer ids, 0 = background (a tensor is copied to the CPU); with ``allow_unknown``
        also -1 = unknown (sparse annotations, ``course_utils.sparse``).
    name : str
        The argument's name, used in the messages.
    ndim : tuple of int
        Accepted numbers of dimensions: ``(2,)`` for ``(H, W)``, ``(2, 3)`` to allow volumes.
    allow_bool : bool
        Accept a boolean mask (returned as is).
    allow_empty : bool
        Accept an array with no element.
    allow_unknown : bool
        Accept -1, the "unknown" value of sparse labels (ids below -1 are still refused). Only
        for the callers that treat -1 as unknown; everywhere else a negative id is an error.
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
        Wrong number of dimensions, empty (unless ``allow_empty``) or negative ids (below
        -1 with ``allow_unknown``).
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
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < (-1 if allow_unknown else 0):
        if allow_unknown:
            raise ValueError(
                f"{name} has ids below -1 (min {arr.min()}); sparse labels hold -1 (unknown), "
                "0 (background) and ids > 0 (objects)."
            )
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


def check_model_input(x: Any, in_channels: int, multiple: int) -> None:
    """Raise a clear error unless ``x`` is a (B, in_channels, H, W) tensor with H and W
    divisible by ``multiple``. Shared by the networks of ``course_utils.models``."""
    if not is_tensor(x):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    if str(x.dtype) not in ("torch.float32", "torch.float16", "torch.bfloat16"):
        raise TypeError(
            f"the network takes float32 images, got a {str(x.dtype).removeprefix('torch.')} "
            "tensor: convert it with x.float() (numpy float64 arrays become float64 tensors; "
            "use torch.from_numpy(image.astype(np.float32)))."
        )
    if x.ndim == 4 and x.shape[1] != in_channels:
        raise ValueError(
            f"the network takes {in_channels} input channel(s), got {x.shape[1]} (input shape "
            f"{tuple(x.shape)}). Give it images with {in_channels} channel(s), or build one for "
            f"{x.shape[1]} (in_channels={x.shape[1]})."
        )
    if x.ndim != 4:
        raise ValueError(f"x must have shape (B, {in_channels}, H, W), got {tuple(x.shape)}.")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ValueError(
            f"height and width must be divisible by {multiple}, got {tuple(x.shape[-2:])}; "
            "pad or crop the input (e.g. to a multiple of 2**depth)."
        )


def check_label_pair(y_true: Any, y_pred: Any, *, allow_bool: bool = False):
    """Two label images (or, with ``allow_bool``, binary masks) of the same shape, 2D or 3D,
    as numpy arrays; shared by ``overlap`` and ``metrics``."""
    t = check_labels(y_true, "y_true", ndim=(2, 3), allow_bool=allow_bool)
    p = check_labels(y_pred, "y_pred", ndim=(2, 3), allow_bool=allow_bool)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} have different shapes.")
    return t, p


def refuse_binary_masks(labels: np.ndarray, name: str = "labels", *, min_parts: int = 3) -> None:
    """Raise when an integer label image is a binary mask saved as integers (0/1 or 0/255).

    Many tools save a foreground mask, not instance labels: every nucleus then has the same id,
    and a median "diameter" or a training target built from it describes the union of all
    nuclei. The sign: at most two ids, one of which covers ``min_parts`` or more separate
    components (8-connectivity). A genuine instance label image has one component per id, or
    a few for a fragmented object among many ids. ``-1`` (unknown) is ignored.
    """
    from scipy import ndimage as ndi  # scipy is imported only for this check

    ids = np.unique(labels[labels > 0]) if labels.size else np.zeros(0)
    if ids.size == 0 or ids.size > 2:
        return
    for value in ids:
        parts = ndi.label(labels == value, structure=np.ones((3,) * labels.ndim))[1]
        if parts >= min_parts:
            raise ValueError(
                f"{name} looks like a binary mask, not instance labels: id {int(value)} covers "
                f"{parts} separate objects. Give each object its own id, e.g. "
                f"labels = skimage.measure.label({name} > 0) (touching objects stay merged "
                "that way: split them first, or annotate them as instances)."
            )
