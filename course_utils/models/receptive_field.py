"""Receptive field of a stack of convolution, pooling and upsampling layers.

The receptive field of an output pixel is the set of input pixels that can change its value.
For a stack of layers we describe it along one image axis by three numbers:

- ``size``: the extent of the receptive field in input pixels (first to last pixel it touches,
  holes from dilation included);
- ``jump``: the distance in input pixels between the receptive fields of two neighbouring output
  pixels (the *effective stride*; below 1 after upsampling);
- ``start``: the input coordinate of the centre of the receptive field of output pixel 0
  (negative when padding moves it off the image). Without upsampling, output pixel ``i`` is
  centred on ``start + i * jump``; after upsampling the centres of neighbouring output pixels
  need not be evenly spaced.

The computation follows every layer backwards as a map from an output index to the interval of
input indices it reads, on an infinite line (so image borders never clip it). For convolutions and
pooling this gives the classic recurrence ``size += (dilation * (kernel - 1)) * jump``,
``jump *= stride``, ``start += ((dilation * (kernel - 1)) / 2 - padding) * jump``; for upsampling
and transposed convolutions the size can differ from one output pixel to the next (the
checkerboard pattern), and ``size`` is the largest one, ``size_min`` the smallest.

Introduced in notebook 02.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from torch import nn

from .._shared.validate import check_int

__all__ = ["ReceptiveField", "receptive_field"]

# Layers that act on each pixel independently (or mix only channels): they leave the receptive
# field unchanged.
_POINTWISE = (
    nn.Identity,
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softmax,
    nn.LogSoftmax,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.Dropout,
    nn.Dropout2d,
)

_SPEC_FIELDS = {
    "conv": ("kernel", "stride", "padding", "dilation"),
    "pool": ("kernel", "stride", "padding", "dilation"),
    "convtranspose": ("kernel", "stride", "padding", "dilation"),
    "upsample": ("scale", "mode"),
    "pointwise": (),
}

# A layer, seen backwards: output index -> (first, last) input index it reads.
_IntervalMap = Callable[[int], tuple[int, int]]


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a layer stack along one axis, in input pixels.

    Attributes
    ----------
    size : int
        Largest extent (first to last input pixel) of the receptive field of an output pixel.
    jump : float
        Input pixels between the receptive fields of neighbouring output pixels (effective
        stride; 0.5 after a 2x upsampling of a full-resolution map).
    start : float
        Input coordinate of the centre of the receptive field of output pixel 0.
    size_min : int
        Smallest extent over output positions; equal to ``size`` for stacks of convolutions and
        pooling, smaller where upsampling makes neighbouring output pixels see different amounts.
    """

    size: int
    jump: float
    start: float
    size_min: int


def _as_pair(value: Any, axis: int) -> Any:
    if isinstance(value, (tuple, list)):
        return value[axis]
    return value


def _conv_map(kernel: int, stride: int, padding: int, dilation: int) -> _IntervalMap:
    def backward(i: int) -> tuple[int, int]:
        first = i * stride - padding
        return first, first + dilation * (kernel - 1)

    return backward


def _transposed_map(kernel: int, stride: int, padding: int, dilation: int) -> _IntervalMap:
    # A transposed convolution writes input i to outputs i * stride - padding + dilation * t,
    # t = 0..kernel-1; output o therefore reads the inputs for which o + padding - dilation * t
    # is a multiple of the stride (one or two of them for kernel 3, stride 2: the checkerboard).
    def backward(o: int) -> tuple[int, int]:
        hits = [
            (o + padding - dilation * t) // stride
            for t in range(kernel)
            if (o + padding - dilation * t) % stride == 0
        ]
        if not hits:
            raise ValueError(
                f"transposed convolution (kernel {kernel}, stride {stride}, dilation {dilation}) "
                f"leaves output pixel {o} unconnected; it has no receptive field"
            )
        return min(hits), max(hits)

    return backward


def _upsample_map(scale: int, mode: str) -> _IntervalMap:
    if mode == "nearest":
        return lambda i: (i // scale, i // scale)
    if mode == "bilinear":
        # align_corners=False: output i samples input coordinate (i + 0.5) / scale - 0.5 and
        # reads the two pixels around it (one when it falls on a pixel centre).
        def backward(i: int) -> tuple[int, int]:
            x = Fraction(2 * i + 1, 2 * scale) - Fraction(1, 2)
            return math.floor(x), math.ceil(x)

        return backward
    raise ValueError(f"upsample mode must be 'nearest' or 'bilinear', got {mode!r}")


def _check_ints(kind: str, **values: Any) -> None:
    for name, value in values.items():
        check_int(value, f"{kind} {name}")
    minimum = {"kernel": 1, "stride": 1, "dilation": 1, "padding": 0, "scale": 1}
    for name, value in values.items():
        if value < minimum[name]:
            raise ValueError(f"{kind} {name} must be >= {minimum[name]}, got {value}")


def _spec_to_map(spec: Mapping[str, Any] | Sequence[Any]) -> tuple[_IntervalMap | None, Fraction]:
    """Turn a dict or tuple spec into (interval map or None for pointwise, jump factor)."""
    if isinstance(spec, Mapping):
        params = dict(spec)
        kind = params.pop("type", None)
    else:
        kind, *values = spec
        fields = _SPEC_FIELDS.get(kind, ())
        if len(values) > len(fields):
            raise ValueError(f"too many values in layer spec {tuple(spec)!r}")
        params = dict(zip(fields, values))
    if kind not in _SPEC_FIELDS:
        raise ValueError(f"layer type must be one of {sorted(_SPEC_FIELDS)}, got {kind!r}")
    unknown = set(params) - set(_SPEC_FIELDS[kind])
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} for a {kind!r} layer")
    if kind == "pointwise":
        return None, Fraction(1)
    if kind == "upsample":
        scale, mode = params.get("scale"), params.get("mode", "nearest")
        _check_ints(kind, scale=scale)
        return _upsample_map(scale, mode), Fraction(1, scale)
    kernel = params.get("kernel")
    # Pooling's stride defaults to its kernel, as in PyTorch.
    stride = params.get("stride", kernel if kind == "pool" else 1)
    padding, dilation = params.get("padding", 0), params.get("dilation", 1)
    _check_ints(kind, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    if kind == "convtranspose":
        return _transposed_map(kernel, stride, padding, dilation), Fraction(1, stride)
    return _conv_map(kernel, stride, padding, dilation), Fraction(stride)


def _module_to_spec(module: nn.Module, axis: int) -> dict[str, Any]:
    """Read the geometry of one torch layer along ``axis`` (0 = height, 1 = width)."""
    if isinstance(module, _POINTWISE):
        return {"type": "pointwise"}
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        kernel = _as_pair(module.kernel_size, axis)
        dilation = _as_pair(module.dilation, axis)
        padding = module.padding
        if padding == "valid":
            padding = 0
        elif padding == "same":
            # PyTorch puts the smaller half of the padding on the left/top.
            padding = dilation * (kernel - 1) // 2
        kind = "convtranspose" if isinstance(module, nn.ConvTranspose2d) else "conv"
        return {
            "type": kind,
            "kernel": kernel,
            "stride": _as_pair(module.stride, axis),
            "padding": _as_pair(padding, axis),
            "dilation": dilation,
        }
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return {
            "type": "pool",
            "kernel": _as_pair(module.kernel_size, axis),
            "stride": _as_pair(module.stride, axis),
            "padding": _as_pair(module.padding, axis),
            "dilation": _as_pair(getattr(module, "dilation", 1), axis),
        }
    if isinstance(module, nn.Upsample):
        scale = _as_pair(module.scale_factor, axis)
        if scale is None or float(scale) != int(scale):
            raise ValueError("nn.Upsample needs an integer scale_factor (not a fixed size)")
        if module.mode not in ("nearest", "bilinear") or module.align_corners:
            raise ValueError(
                "only nn.Upsample(mode='nearest') and mode='bilinear' with align_corners=False "
                f"are supported, got mode={module.mode!r}, align_corners={module.align_corners}"
            )
        return {"type": "upsample", "scale": int(scale), "mode": module.mode}
    raise TypeError(
        f"cannot compute the receptive field of {type(module).__name__}; use conv, pool, "
        "upsample, transposed conv or pointwise layers (a residual block is not a plain stack)"
    )


def _flatten(layers: Any) -> list[Any]:
    if isinstance(layers, (nn.Sequential, nn.ModuleList)):
        return [leaf for child in layers for leaf in _flatten(child)]
    if isinstance(layers, (nn.Module, Mapping, tuple)):
        return [layers]
    if isinstance(layers, Iterable) and not isinstance(layers, str):
        return [leaf for item in layers for leaf in _flatten(item)]
    raise TypeError(f"a layer must be an nn.Module, a dict or a tuple spec, got {layers!r}")


def receptive_field(layers: Any, axis: int = 0) -> ReceptiveField:
    """Compute the receptive field of a stack of layers, in pixels of the stack's input.

    Parameters
    ----------
    layers : nn.Sequential, nn.Module or sequence of layers
        The layers in the order the data flows through them. Each is an ``nn.Module``
        (``Conv2d``, ``ConvTranspose2d``, ``MaxPool2d``, ``AvgPool2d``, ``Upsample`` with an
        integer ``scale_factor``, activations, normalisation, dropout; nested ``nn.Sequential``
        are flattened), a dict such as ``{"type": "conv", "kernel": 3, "padding": 1}``, or a
        tuple with the same values in order: ``("conv", kernel, stride, padding, dilation)``,
        ``("pool", kernel, stride, padding, dilation)`` (stride defaults to the kernel),
        ``("convtranspose", kernel, stride, padding, dilation)``, ``("upsample", scale, mode)``
        (mode ``"nearest"`` or ``"bilinear"``), ``("pointwise",)``.
    axis : int
        Which image axis to read from 2D layers with non-square kernels: 0 = height, 1 = width.

    Returns
    -------
    ReceptiveField
        ``size`` (int), ``jump`` (float), ``start`` (float) and ``size_min`` (int), in input pixels.

    Raises
    ------
    TypeError
        For a layer that is not a plain stack element (e.g. a residual block) or a non-int size.
    ValueError
        For an unknown spec type or key, a kernel/stride/scale below 1, negative padding, or an
        ``nn.Upsample`` with a fixed output size or ``align_corners=True``.

    Examples
    --------
    >>> receptive_field([("conv", 3), ("conv", 3)]).size
    5
    >>> rf = receptive_field([("conv", 3), ("pool", 2), ("conv", 3)])
    >>> rf.size, rf.jump
    (8, 2.0)

    Introduced in notebook 02.
    """
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 (height) or 1 (width), got {axis!r}")
    maps: list[_IntervalMap] = []
    jump, period = Fraction(1), 1
    for layer in _flatten(layers):
        spec = _module_to_spec(layer, axis) if isinstance(layer, nn.Module) else layer
        backward, factor = _spec_to_map(spec)
        if backward is not None:
            maps.append(backward)
            jump *= factor
            # Shifting the output by `period` pixels shifts every intermediate map by a whole
            # number of pixels, so the pattern of sizes repeats with this period.
            period *= factor.denominator
    intervals = [_input_interval(maps, i) for i in range(period)]
    sizes = [hi - lo + 1 for lo, hi in intervals]
    start = Fraction(sum(intervals[0]), 2)
    return ReceptiveField(
        size=max(sizes), jump=float(jump), start=float(start), size_min=min(sizes)
    )


def _input_interval(maps: list[_IntervalMap], i: int) -> tuple[int, int]:
    """First and last input pixel read by output pixel ``i``, going back through ``maps``."""
    # Every map is non-decreasing in its argument, so the first input pixel comes from the
    # first pixel of each intermediate interval and the last from the last.
    lo, hi = i, i
    for backward in reversed(maps):
        lo, hi = backward(lo)[0], backward(hi)[1]
    return lo, hi
