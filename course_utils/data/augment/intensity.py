"""Intensity augmentations: gamma, contrast, brightness, noise and blur; labels untouched.

Introduced in notebook 04.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy import ndimage as ndi

from .core import Augment, Named, Range, as_output, check_pair, check_rng, draw, parse_span

__all__ = ["gaussian_blur", "gaussian_noise", "intensity"]


def intensity(brightness: Range = 0.1, contrast: Range = 0.2, gamma: Range = 1.25) -> Augment:
    """Factory: gamma, then contrast about the mean, then a brightness offset; labels untouched.

    ``x -> lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g`` with each channel's min ``lo`` and
    max ``hi`` (defined for normalised images that dip below 0), then
    ``(x - mean) * c + mean + b``. Numbers mean ``b`` in ``±brightness``, ``c`` in
    ``1 ± contrast``, ``g`` log-uniform in ``(1/gamma, gamma)``; pairs give the ranges of
    ``b``, ``c`` and ``g`` directly. One draw per call for all channels.

    Introduced in notebook 04.
    """
    b_span, g_span = (
        parse_span(brightness, "brightness", "sym"),
        parse_span(gamma, "gamma", "ratio"),
    )
    c_span = parse_span(contrast, "contrast", "sym")
    c_span = (1.0 + c_span[0], 1.0 + c_span[1]) if np.ndim(contrast) == 0 else c_span
    if c_span[0] <= 0:
        raise ValueError(f"contrast must keep the factor above 0, got {contrast!r}")
    text = f"intensity(brightness={brightness!r}, contrast={contrast!r}, gamma={gamma!r})"
    return Named(partial(_intensity, spans=(g_span, c_span, b_span)), text)


def _intensity(image, labels, rng, *, spans):
    x, y, was_2d = check_pair(image, labels)
    rng = check_rng(rng)
    g, c, b = draw(rng, spans[0], log=True), draw(rng, spans[1]), draw(rng, spans[2])
    lo = x.min(axis=(-2, -1), keepdims=True)
    width = x.max(axis=(-2, -1), keepdims=True) - lo
    width = np.where(width > 0, width, 1.0)
    x = lo + width * ((x - lo) / width) ** g
    mean = x.mean(axis=(-2, -1), keepdims=True)
    return as_output((x - mean) * c + mean + b, y, was_2d)


def gaussian_noise(sigma: Range = 0.05) -> Augment:
    """Factory: add Gaussian noise of standard deviation ``sigma`` (a pair: drawn uniformly).

    Introduced in notebook 04.
    """
    fn = partial(_noise, span=parse_span(sigma, "sigma", "fixed"))
    return Named(fn, f"gaussian_noise(sigma={sigma!r})")


def _noise(image, labels, rng, *, span):
    x, y, was_2d = check_pair(image, labels)
    rng = check_rng(rng)
    std = draw(rng, span)
    return as_output(x + rng.normal(0.0, std, size=x.shape), y, was_2d)


def gaussian_blur(sigma: Range = (0.0, 1.0)) -> Augment:
    """Factory: blur every channel by a Gaussian of width ``sigma`` pixels (a pair: drawn).

    Introduced in notebook 04.
    """
    fn = partial(_blur, span=parse_span(sigma, "sigma", "fixed"))
    return Named(fn, f"gaussian_blur(sigma={sigma!r})")


def _blur(image, labels, rng, *, span):
    x, y, was_2d = check_pair(image, labels)
    s = draw(check_rng(rng), span)
    return as_output(ndi.gaussian_filter(x, (0.0, s, s), mode="mirror"), y, was_2d)
