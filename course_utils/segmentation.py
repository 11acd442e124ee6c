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
from ._shared.images import as_image as _as_image
from ._shared.validate import check_real
from .blockwise import BLOCK, segment_blocks
from .data import normalize_percentile
from .methods import Method, get
from .scale import object_diameters, rescale_image, rescale_labels
from .sizing import predict_diameter

__all__ = ["estimate_diameter", "labels_at", "model_facts", "segment", "trusted_range"]

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
#: Fewer whole objects than this in the passes of ``estimate_diameter``: no estimate.
MIN_OBJECTS = 3
#: The objects a pass finds may correct the size model's estimate by at most this factor
#: either way (its validation errors stay within about 1.4x); beyond it they are fragments or
#: merges, not nuclei, and a pass at their scale would make more of them (``segment`` warns).
MAX_CORRECTION = 2.0


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


def labels_at(
    record: Method, net: nn.Module, image: np.ndarray, factor: float, options: dict, bar=None
) -> np.ndarray:
    """Labels of the normalised (H, W) ``image`` rescaled by ``factor``, in the rescaled
    image's pixels (int32): the network and ``record``'s post-processing with ``options``,
    block by block for large images; ``bar`` (tqdm) counts the passes. Also used by
    :func:`course_utils.diameter.estimate_by_scales`."""
    x = image if abs(factor - 1) < 1e-6 else rescale_image(image, factor)
    return _labels(record, net, x, options, bar)


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


def estimate_diameter(
    image: Any,
    method: str = "cellpose",
    *,
    model: nn.Module | None = None,
    how: str = "auto",
    train_diameter: float | None = None,
    factors: Sequence[float] = (0.5, 1.0, 2.0),
    max_side: int | None = 512,
    **options: Any,
) -> float:
    """The median nucleus diameter (pixels) of an image without labels, from the model itself.

    Two ways (``how``):

    - ``"size_model"``: one pass of the network over the central window gives its style, and
      the model's size model (``model.meta["size_model"]``, :mod:`course_utils.sizing`) a first
      estimate; the image is then segmented at that estimate (rescaled only when it lies outside
      the diameters the model was trained at), and the median diameter of the whole objects
      found is the answer: what ``segment(diameter=None)`` does, for one pass more than the
      segmentation itself. Falls back to the style's estimate when fewer than three whole
      objects are found.
    - ``"scales"``: segment the image at each of ``factors`` and refine
      (:func:`course_utils.diameter.estimate_by_scales`; ``train_diameter``, ``max_side`` are
      its arguments): for networks without a size model, at a few passes' cost.

    ``"auto"`` (default) takes the size model when the model has one. ``image``: a (H, W)
    image; ``model``: default the zoo's; ``options`` go to the post-processing. Returns ``nan``
    when no estimate can be made.

    Introduced in notebook 08.
    """
    record = get(method)
    x = _as_image(image)
    net = _model(record, model)
    if how not in ("auto", "size_model", "scales"):
        raise ValueError(f"how must be 'auto', 'size_model' or 'scales', got {how!r}")
    size_model = _meta(net).get("size_model")
    if how == "size_model" and size_model is None:
        raise ValueError(
            "this model has no size model (model.meta['size_model']): fit one with "
            "course_utils.sizing.fit_size_model, or use how='scales'"
        )
    if how == "scales" or size_model is None:
        from .diameter import estimate_by_scales

        return estimate_by_scales(record, net, x, train_diameter, factors, max_side, options)
    params, trained_at = model_facts(record, net)
    params.update(options)
    return _sized(record, net, normalize_percentile(x), None, trained_at, params, None)[2]


def _meta(net: nn.Module) -> Mapping[str, Any]:
    meta = getattr(net, "meta", None)
    return meta if isinstance(meta, Mapping) else {}


def trusted_range(net: nn.Module) -> tuple[float, float] | None:
    """The nucleus diameters (pixels) at which ``net`` segments an image as it is, without
    rescaling it (``model.meta["diameter_range_px"]``: the range it was trained at, narrowed
    to where rescaling was measured not to help); ``None`` when the model does not say."""
    found = _meta(net).get("diameter_range_px")
    if found is None:
        return None
    try:
        low, high = (float(v) for v in found)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not 0 < low <= high < math.inf:
        raise ValueError(f"model.meta['diameter_range_px'] must be [low, high] px, got {found!r}")
    return low, high


def _sized(record, net, x, diameter, trained_at, post, bar):
    """``(labels at the processed scale, factor, diameter)``: the image segmented at the scale
    its diameter asks for. The diameter is given, or estimated by the size model from one
    pass over the central window and checked against the objects found: when these show a
    scale outside the trusted range, the image is segmented once more at theirs."""
    trusted = trusted_range(net)
    estimated = diameter is None
    if estimated:
        if bar is not None:
            bar.set_postfix_str("estimating the diameter")
        diameter = _within_fit(predict_diameter(net, x, _meta(net)["size_model"]), net, trained_at)
    factor = _scale_for(diameter, trained_at, trusted, x.shape, clamp=estimated)
    labels = labels_at(record, net, x, factor, dict(post), bar)
    if not estimated:
        return labels, factor, diameter
    sizes = object_diameters(clear_border(labels))
    if len(sizes) < MIN_OBJECTS:
        warnings.warn(
            f"segment: the estimated object diameter ({diameter:.3g} px) could not be checked "
            f"(fewer than {MIN_OBJECTS} whole objects found); if the result looks wrong, give "
            "diameter= (pixels)",
            stacklevel=4,
        )
        return labels, factor, diameter
    found = float(np.median(sizes)) / factor
    if abs(math.log(found / diameter)) > math.log(MAX_CORRECTION):
        warnings.warn(
            f"segment: the objects found (median diameter {found:.3g} px) disagree with the "
            f"size model's estimate ({diameter:.3g} px) by more than {MAX_CORRECTION:g}x; the "
            "estimate is kept. If the result looks wrong, give diameter= (pixels)",
            stacklevel=4,
        )
        return labels, factor, diameter
    again = _scale_for(found, trained_at, trusted, x.shape, clamp=True)
    if abs(math.log(again / factor)) > math.log(1.25):  # the pass shows another scale
        labels, factor = labels_at(record, net, x, again, dict(post), bar), again
        sizes = object_diameters(clear_border(labels))
        found = float(np.median(sizes)) / factor if len(sizes) else found
    return labels, factor, found


def _within_fit(diameter: float, net: nn.Module, trained_at: float | None) -> float:
    """The size model's estimate, kept within the diameters it was fitted on (the training
    diameter times its ``zooms``): a style unlike any it saw can extrapolate to 0 px."""
    zooms = _meta(net)["size_model"].get("zooms")
    if trained_at is None or not zooms:
        return diameter
    low, high = trained_at * float(zooms[0]), trained_at * float(zooms[1])
    if low <= diameter <= high:
        return diameter
    kept = min(max(diameter, low), high)
    warnings.warn(
        f"segment: the size model's estimate ({diameter:.3g} px) lies outside the diameters "
        f"it was fitted on ({low:.3g}-{high:.3g} px); {kept:.3g} px is used. If the result "
        "looks wrong, give diameter= (pixels)",
        stacklevel=5,
    )
    return kept


def _scale_for(diameter, trained_at, trusted, shape, *, clamp: bool) -> float:
    """The rescaling factor for nuclei of ``diameter`` px: 1 inside the trusted range, else
    the one that brings them to ``trained_at``; an estimate is kept in the usable range."""
    if trusted is not None and trusted[0] <= diameter <= trusted[1]:
        return 1.0
    factor = trained_at / diameter
    if clamp:
        low, high = _factor_range(shape)
        return min(max(factor, low), high)
    _check_scale(factor, shape, trained_at, diameter)
    return factor


def _factor(record, net, x, diameter, trained_at, post, bar) -> tuple[float, float]:
    """The rescaling factor for a model without a size model (or a given diameter): the one
    that brings the nuclei to the model's training diameter; estimated by passes at several
    scales (:func:`course_utils.diameter.estimate_by_scales`) when not given."""
    if trained_at is None:
        if diameter is not None:
            raise ValueError(
                "the model does not record the nucleus diameter it was trained at "
                "(model.meta['train_diameter_px']), so diameter= cannot be honoured: segment "
                "with diameter=None (the image as it is), or train it with fine_tune or "
                "methods.train_method, which record it"
            )
        return 1.0, float("nan")
    if diameter is not None:
        return _scale_for(diameter, trained_at, trusted_range(net), x.shape, clamp=False), diameter
    from .diameter import estimate_by_scales

    bar.set_postfix_str("estimating the diameter")
    diameter = estimate_by_scales(record, net, x, None, (0.5, 1.0, 2.0), 512, post)
    if not math.isfinite(diameter):
        warnings.warn(
            f"segment: no diameter could be estimated (fewer than {MIN_OBJECTS} whole objects "
            f"found at any scale); the image is segmented as it is, for nuclei of about "
            f"{trained_at:g} px. Give diameter= if yours differ.",
            stacklevel=3,
        )
        return 1.0, diameter
    return _scale_for(diameter, trained_at, trusted_range(net), x.shape, clamp=True), diameter


def segment(
    image: Any,
    method: str = "cellpose",
    diameter: float | None = None,
    *,
    model: nn.Module | None = None,
    channel: int | None = None,
    progress: bool = True,
    return_diameter: bool = False,
    **options: Any,
) -> np.ndarray | tuple[np.ndarray, float]:
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
        Median nucleus diameter in pixels. ``None``: estimated. A model with a size model (the
        zoo's: ``meta["size_model"]``, :mod:`course_utils.sizing`) estimates it from one pass
        over the central window and checks it against the nuclei it then finds (one more pass
        only when these disagree); others segment at several scales
        (:func:`estimate_diameter`). When the estimate cannot be made or checked, a warning
        says so. The image is rescaled so that nuclei get the diameter the model was trained
        at (``meta["train_diameter_px"]``), unless the diameter lies in the range where the
        model segments as well as it is (``meta["diameter_range_px"]``, measured for the zoo:
        rescaling there only costs time and accuracy); labels come back at the input's size.
    model : torch.nn.Module, optional
        Your own network of ``method`` (from :func:`course_utils.fine_tune`,
        ``methods.train_method`` or ``methods.load_model``) instead of the zoo's; it must be a
        network of that method (a ``ValueError`` otherwise).
    channel : int, optional
        The channel to segment of a multi-channel image ((H, W, C) or (C, H, W), C <= 4).
    progress : bool
        A progress bar (diameter estimate, then the blocks of ``course_utils.blockwise``) for
        images of more than half a megapixel.
    return_diameter : bool
        Also return the diameter used (given, or estimated; ``nan`` when none).
    **options
        Post-processing options over the model's tuned ones (e.g. ``cellprob_threshold``,
        ``prob_thresh``), and ``tile_size``/``overlap`` of the tiling.

    Returns
    -------
    numpy.ndarray, int32, (H, W)
        0 = background, nuclei 1..N. With ``return_diameter``: ``(labels, diameter)``.

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
    sized = trained_at is not None and diameter is None and "size_model" in _meta(net)
    with tqdm(
        total=0,
        desc=f"segment ({record.name})",
        unit="step",
        leave=False,
        disable=not progress or x.size < PROGRESS_PIXELS,
    ) as bar:
        if sized:  # one pass for the diameter, one (rarely two) to segment
            labels, _, diameter = _sized(record, net, x, None, trained_at, params, bar)
        else:
            factor, diameter = _factor(record, net, x, diameter, trained_at, post, bar)
            labels = labels_at(record, net, x, factor, params, bar)
    if labels.shape != x.shape:
        labels = rescale_labels(labels, shape=x.shape)
    labels = labels.astype(np.int32, copy=False)
    return (labels, float(diameter)) if return_diameter else labels
