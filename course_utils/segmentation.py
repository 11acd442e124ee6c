"""Use the course on your own images: ``segment`` in one call, and the nucleus diameter of an
image estimated without labels.

``course_utils.segment(image)`` takes a 2-D image of any numeric dtype, normalises it, rescales
it so that its nuclei have the diameter the model was trained at (given in pixels, or
estimated), runs the network block by block, post-processes with the thresholds tuned for that
model, and returns int32 labels at the input's size. What a model was trained at (its
thresholds, its nucleus diameter) is read from the model itself (``model.meta``, written into
its checkpoint): the zoo's models, a model of ``fine_tune`` and one of ``train_method`` all
carry it. The steps are those of notebook 08, where each one is shown and measured.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from skimage.segmentation import clear_border
from torch import nn
from tqdm.auto import tqdm

from . import zoo
from ._shared.validate import check_finite, check_int, check_real, to_numpy
from .blockwise import BLOCK, segment_blocks
from .data import normalize_percentile
from .methods import Method, get
from .scale import object_diameters, rescale_image, rescale_labels

__all__ = ["estimate_diameter", "model_facts", "segment"]

_LOADED: dict[str, nn.Module] = {}
#: The rescaled image may hold at most this many pixels (a diameter far below the model's
#: would otherwise blow a whole-slide image up to terabytes).
MAX_PIXELS = 64_000_000
#: ``segment`` shows a progress bar (diameter estimate, then blocks) for images of this
#: many pixels or more: a few seconds of work on a CPU.
PROGRESS_PIXELS = 500_000
#: Block side for networks that run on a whole block at once (StarDist's record: no tiles),
#: whose activations for a 1024^2 block alone take about 400 MB.
WHOLE_PASS_BLOCK = 512
#: ``estimate_diameter`` falls back to the whole image up to this size; a larger one (where the
#: 2x pass alone would cost minutes) is sampled at up to 9 windows instead.
WHOLE_PIXELS = 4_000_000
#: Fewer whole objects than this in the passes of ``estimate_diameter``: no estimate.
MIN_OBJECTS = 3


def _as_image(image: Any, channel: int | None = None) -> np.ndarray:
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
        arr = _one_channel(arr, channel)
    elif channel is not None:
        raise ValueError(f"channel={channel} but the image has one channel (shape {arr.shape})")
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ValueError(
            f"image must be a 2-D (H, W) image of at least 8 x 8 pixels, got shape "
            f"{arr.shape}; give one channel of a multi-channel image"
        )
    return check_finite(arr.astype(np.float32, copy=False), "image")


def _one_channel(arr: np.ndarray, channel: int | None) -> np.ndarray:
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


def _model(record: Method, model: Any) -> nn.Module:
    if model is not None:
        return record.check_network(model).eval()
    if record.name not in _LOADED:
        _LOADED[record.name] = zoo.load(record.name)
    return _LOADED[record.name]


def model_facts(method: str | Method, model: nn.Module) -> tuple[dict[str, Any], float | None]:
    """``(post-processing options, training diameter in pixels or None)`` of a network, from
    its own description (``model.meta``: a checkpoint's, or what ``fine_tune`` and
    ``train_method`` record); the options not tuned for it are the record's defaults."""
    record = get(method)
    meta = getattr(model, "meta", None)
    meta = meta if isinstance(meta, Mapping) else {}
    options = {
        k: v for k, v in dict(meta.get("postprocess") or {}).items() if k in record.postprocess
    }
    diameter = meta.get("train_diameter_px")
    if diameter is not None and not (isinstance(diameter, int | float) and diameter > 0):
        raise ValueError(
            f"model.meta['train_diameter_px'] must be a positive number of pixels, got {diameter!r}"
        )
    return options, None if diameter is None else float(diameter)


def _factor_range(shape: tuple[int, int]) -> tuple[float, float]:
    """The rescaling factors an image of ``shape`` allows: at least 16 pixels a side, at most
    8x and :data:`MAX_PIXELS` pixels."""
    low, high = 16 / min(shape), min(8.0, math.sqrt(MAX_PIXELS / (shape[0] * shape[1])))
    return min(low, 1.0), max(high, 1.0)  # an image is always usable as it is


def _check_scale(factor: float, shape: tuple[int, int], trained_at: float, diameter: float):
    """Raise unless rescaling an image of ``shape`` by ``factor`` gives a usable image."""
    low, high = _factor_range(shape)
    if low <= factor <= high:
        return
    raise ValueError(
        f"diameter={diameter:g} px cannot be used: this model was trained on nuclei of "
        f"{trained_at:g} px, so the {shape[0]} x {shape[1]} image would be rescaled by "
        f"{factor:.3g}x (to {shape[0] * factor:.0f} x {shape[1] * factor:.0f} px). For this "
        f"image and model, diameters from {trained_at / high:.3g} to {trained_at / low:.3g} px "
        "are possible; give the median nucleus diameter in pixels (or None to estimate it)."
    )


def _labels_at(record, net, image, factor, options) -> np.ndarray:
    """Labels of ``image`` rescaled by ``factor`` (in the rescaled image's pixels)."""
    x = image if abs(factor - 1) < 1e-6 else rescale_image(image, factor)
    return _labels(record, net, x, options)


def _labels(record: Method, net: nn.Module, x: np.ndarray, options: dict, bar=None):
    """Labels of ``x`` at its own scale: the network, then the record's post-processing; block
    by block (:mod:`course_utils.blockwise`) above ``BLOCK x BLOCK`` pixels."""

    def one(block: np.ndarray) -> np.ndarray:
        return record.segment(net, block, **options)  # tiles from the record or ``options``

    if x.size > BLOCK * BLOCK:
        # a network run on a whole block at once holds its activations for all of it
        tiled = options.get("tile_size", record.tiles().get("tile_size"))
        side = BLOCK if tiled else WHOLE_PASS_BLOCK
        return segment_blocks(one, x, block=side, bar=bar)
    if bar is not None:
        bar.total += 1
    labels = one(x)
    if bar is not None:
        bar.update(1)
    return labels


def _windows(shape: tuple[int, int], side: int) -> list[tuple[slice, slice]]:
    """The central ``side`` x ``side`` window, then up to 8 more spread over a larger image."""
    spans = [[(max(0, (n - side) // 2), min(n, max(0, (n - side) // 2) + side))] for n in shape]
    for axis, n in enumerate(shape):
        if n >= 2 * side:
            spans[axis] += [(0, side), (n - side, n)]
    windows = [(slice(*r), slice(*c)) for r in spans[0] for c in spans[1]]
    return windows[:9]


def estimate_diameter(
    image: Any,
    method: str = "cellpose",
    *,
    model: nn.Module | None = None,
    train_diameter: float | None = None,
    factors: Sequence[float] = (0.5, 1.0, 2.0),
    max_side: int | None = 512,
    **options: Any,
) -> float:
    """The median nucleus diameter (pixels) of an image without labels, from the model itself.

    A first pass segments the image rescaled by each of ``factors``; the pass whose objects are
    closest in size to the model's training diameter is the most trustworthy (a network finds
    the objects it was trained on best), and gives a first estimate ``d0`` (the median
    equivalent diameter of its objects not cut by the border, in the image's pixels). A second
    pass at the scale that brings ``d0`` to the training diameter refines it. ``image``: a
    (H, W) image; ``model``: default the zoo's; ``train_diameter``: default the model's own
    (``model.meta``); ``options`` go to the post-processing. ``max_side``: the passes look at
    the central ``max_side x max_side`` window of a larger image (a median needs a few dozen
    nuclei, not all of them, and the 2x pass costs four times the image); when no pass finds
    three whole nuclei there, at the whole image up to :data:`WHOLE_PIXELS` pixels, and at 8
    more windows spread over a larger one (never at a whole large image). ``None`` looks at the
    whole image. Returns ``nan`` when no pass finds three objects.

    Introduced in notebook 08.
    """
    record = get(method)
    x = _as_image(image)
    net = _model(record, model)
    params, trained_at = model_facts(record, net)
    if train_diameter is not None:
        trained_at = check_real(train_diameter, "train_diameter", minimum=1e-3)
    if trained_at is None:
        raise ValueError(
            "the model does not record the nucleus diameter it was trained at "
            "(model.meta['train_diameter_px']): pass train_diameter= (pixels)"
        )
    params.update(options)
    if max_side is None:
        return _estimate(record, net, [normalize_percentile(x)], factors, trained_at, params)
    side = check_int(max_side, "max_side", minimum=16)
    windows = _windows(x.shape, side)
    found = _estimate(
        record, net, [normalize_percentile(x[windows[0]])], factors, trained_at, params
    )
    if math.isfinite(found) or x[windows[0]].shape == x.shape:
        return found
    if x.size <= WHOLE_PIXELS:  # too few whole nuclei in the window: look at everything
        return _estimate(record, net, [normalize_percentile(x)], factors, trained_at, params)
    crops = [normalize_percentile(x[w]) for w in windows]  # each normalised on its own
    return _estimate(record, net, crops, factors, trained_at, params)


def _estimate(record, net, crops, factors, trained_at, params) -> float:
    found = []
    for f in factors:
        sizes = np.concatenate([_whole_object_sizes(record, net, c, f, params) for c in crops])
        if len(sizes) >= MIN_OBJECTS:
            found.append((abs(math.log(np.median(sizes) / trained_at)), np.median(sizes) / f))
    if not found:
        return float("nan")
    first = min(found)[1]
    factor = trained_at / first
    sizes = np.concatenate([_whole_object_sizes(record, net, c, factor, params) for c in crops])
    return float(np.median(sizes) / factor) if len(sizes) >= MIN_OBJECTS else float(first)


def _whole_object_sizes(record, net, x, factor, params) -> np.ndarray:
    """Diameters of the objects found at one scale, those cut by the border left out. A pass at
    a scale the model was not trained for may fail Cellpose's flow check: that is what the
    passes measure, so its warning is not shown."""
    if min(x.shape) * factor < 16:
        return np.zeros(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flows_to_masks: the flow check")
        labels = _labels_at(record, net, x, factor, dict(params))
    return object_diameters(clear_border(labels))


def _factor(record, net, x, diameter, trained_at, post, bar) -> float:
    """The rescaling factor of ``x`` that brings its nuclei to the model's training diameter."""
    if trained_at is None:
        if diameter is not None:
            raise ValueError(
                "the model does not record the nucleus diameter it was trained at "
                "(model.meta['train_diameter_px']), so diameter= cannot be honoured: segment "
                "with diameter=None (the image as it is), or train it with fine_tune or "
                "methods.train_method, which record it"
            )
        return 1.0
    if diameter is not None:
        _check_scale(trained_at / diameter, x.shape, trained_at, diameter)
        return trained_at / diameter
    bar.set_postfix_str("estimating the diameter")
    diameter = estimate_diameter(x, record.name, model=net, **post)
    if not math.isfinite(diameter):
        warnings.warn(
            f"segment: no diameter could be estimated (fewer than {MIN_OBJECTS} whole nuclei "
            f"found at any scale); the image is segmented as it is, for nuclei of about "
            f"{trained_at:g} px. Give diameter= if yours differ.",
            stacklevel=3,
        )
        return 1.0
    low, high = _factor_range(x.shape)
    return min(max(trained_at / diameter, low), high)  # an estimate stays in range


def segment(
    image: Any,
    method: str = "cellpose",
    diameter: float | None = None,
    *,
    model: nn.Module | None = None,
    channel: int | None = None,
    progress: bool = True,
    **options: Any,
) -> np.ndarray:
    """Instance labels of a 2-D image with the course's pretrained model: the one call.

    Parameters
    ----------
    image : array, (H, W), any numeric dtype (raw or normalised)
        Percentile-normalised here (1st and 99.8th percentiles), as the models were trained.
        (H, W, 1) and (1, H, W) are taken as (H, W), and so is grey saved as RGB(A) (equal
        colour channels); of other multi-channel images give ``channel``.
    method : str
        ``"cellpose"`` (default), ``"stardist"``, ``"unet_3class"``, ``"unet_weighted"``.
    diameter : float, optional
        Median nucleus diameter in pixels. ``None``: estimated (:func:`estimate_diameter`);
        when no estimate can be made a warning says so and the image is segmented as it is.
        The image is rescaled so that nuclei get the diameter the model was trained at (its
        ``meta["train_diameter_px"]``), and the labels are brought back to the input's size.
    model : torch.nn.Module, optional
        Your own network of ``method`` (from :func:`course_utils.fine_tune`,
        ``methods.train_method`` or ``methods.load_model``) instead of the zoo's; it must be a
        network of that method (a ``ValueError`` otherwise).
    channel : int, optional
        The channel to segment of a multi-channel image ((H, W, C) or (C, H, W), C <= 4).
    progress : bool
        A progress bar (diameter estimate, then the blocks of ``course_utils.blockwise``) for
        images of more than half a megapixel.
    **options
        Post-processing options over the model's tuned ones (e.g. ``cellprob_threshold``,
        ``prob_thresh``), and ``tile_size``/``overlap`` of the tiling.

    Returns
    -------
    numpy.ndarray, int32, (H, W)
        0 = background, nuclei 1..N.

    Raises
    ------
    TypeError, ValueError
        A non-numeric or boolean image, not 2-D, smaller than 8 x 8, or with NaN/infinite
        values; an unknown method; a model that is not a network of ``method``; a diameter
        that is not a positive number or that would rescale the image to an unusable size
        (the message gives the possible range).

    Introduced in notebook 08.
    """
    record = get(method)
    x = normalize_percentile(_as_image(image, channel))
    net = _model(record, model)
    params, trained_at = model_facts(record, net)
    params.update(options)
    post = {k: v for k, v in params.items() if k not in ("tile_size", "overlap")}
    if diameter is not None:
        diameter = check_real(diameter, "diameter", minimum=1e-3)
    with tqdm(
        total=0,
        desc=f"segment ({record.name})",
        unit="step",
        leave=False,
        disable=not progress or x.size < PROGRESS_PIXELS,
    ) as bar:
        factor = _factor(record, net, x, diameter, trained_at, post, bar)
        shape = x.shape
        if abs(factor - 1) >= 1e-6:
            x = rescale_image(x, factor)  # the normalised image is no longer needed
        labels = _labels(record, net, x, params, bar)
    if labels.shape != shape:
        labels = rescale_labels(labels, shape=shape)
    return labels.astype(np.int32, copy=False)
