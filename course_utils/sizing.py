"""The nucleus diameter of an image from one network pass: a size model on the network's style.

A network's deepest features, averaged over the image, say what kind of image it is: how
bright, how textured, and how large its objects are. Cellpose uses its style vector this way
(Stringer 2021: a linear regression from the style to the log of the diameter, fitted on the
training images). This module does the same for every course network: the *style* of a
network is the spatial mean of its deepest encoder features (Cellpose-style networks: their
own style vector; U-Nets and StarDist-style networks: their bottleneck), divided by its length,
plus the log of that length. A ridge regression of ``log(diameter)`` on it is fitted on
training images shown at many zooms (:func:`fit_size_model`), and kept in the model's own
description (``model.meta["size_model"]``, so in its checkpoint). :func:`predict_diameter`
then costs one pass of the network over a window of at most ``window x window`` pixels.

Introduced in notebook 08.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._shared.validate import check_int, check_real
from .scale import median_diameter, rescale_image

__all__ = ["fit_size_model", "predict_diameter", "style_features", "style_layer"]

#: Side of the central window whose style :func:`predict_diameter` reads (pixels).
WINDOW = 256
#: Ridge penalties tried by :func:`fit_size_model` (on standardised features).
ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0)


def style_layer(net: nn.Module) -> nn.Module:
    """The module whose output, averaged over space, is ``net``'s style: a Cellpose-style
    network's deepest encoder level, a U-Net's (or a StarDist-style network's) bottleneck."""
    for name in ("bottleneck", "backbone.bottleneck"):
        try:
            return net.get_submodule(name)
        except AttributeError:
            pass
    down = getattr(net, "down", None)
    if isinstance(down, nn.ModuleList) and len(down):
        return down[-1]
    raise ValueError(
        f"a {type(net).__name__} has no bottleneck or encoder the size model knows: the course's "
        "networks (UNet, UNetOriginal, CellposeNet, StarDistNet) have one"
    )


def _input_side(net: nn.Module, side: int) -> int:
    """The smallest input side >= ``side`` that ``net`` accepts."""
    if hasattr(net, "valid_sizes"):  # valid convolutions: only some sizes
        return next(s for s in net.valid_sizes(side, max(4 * side, 1024)) if s >= side)
    multiple = int(getattr(net, "input_multiple", 1))
    return -(-side // multiple) * multiple


def _window(image: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` window (all of a smaller side)."""
    top = [max(0, (n - side) // 2) for n in image.shape]
    return image[top[0] : top[0] + side, top[1] : top[1] + side]


def style_features(net: nn.Module, image: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The style of ``net`` on the central window of an (H, W) normalised image: float64
    (C + 1,), the unit-length spatial mean of the deepest features and the log of its length.
    The window is reflect-padded to a side the network accepts."""
    x = _window(np.asarray(image, np.float32), check_int(window, "window", minimum=16))
    sides = [_input_side(net, n) for n in x.shape]
    pads = [(0, s - n) for s, n in zip(sides, x.shape)]
    x = np.pad(x, pads, mode="reflect" if min(x.shape) > 1 else "edge")
    found: list[torch.Tensor] = []
    hook = style_layer(net).register_forward_hook(lambda m, i, out: found.append(out))
    device = next(net.parameters()).device
    try:
        with torch.inference_mode():
            net(torch.from_numpy(x)[None, None].to(device))
    finally:
        hook.remove()
    mean = found[0].float().mean(dim=(-2, -1))[0].cpu().numpy().astype(np.float64)
    length = float(np.linalg.norm(mean))
    return np.concatenate([mean / max(length, 1e-12), [math.log(max(length, 1e-12))]])


def _samples(net, images, labels, zooms, per_image, window, rng):
    """Styles and log diameters of windows of ``images`` zoomed by log-uniform factors."""
    features, targets = [], []
    for image, lab in zip(images, labels):
        diameter = median_diameter(lab)
        if not math.isfinite(diameter):
            continue
        for _ in range(per_image):
            zoom = math.exp(rng.uniform(math.log(zooms[0]), math.log(zooms[1])))
            side = min(int(math.ceil(window / zoom)), *image.shape)  # crop, then zoom it
            top = [int(rng.integers(0, n - side + 1)) for n in image.shape]
            crop = image[top[0] : top[0] + side, top[1] : top[1] + side]
            if min(crop.shape) * zoom < 16:
                continue
            features.append(style_features(net, rescale_image(crop, zoom), window))
            targets.append(math.log(diameter * zoom))
    return np.array(features), np.array(targets)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Coefficients and intercept of a ridge regression on standardised ``x``."""
    gram = x.T @ x + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, x.T @ (y - y.mean()))
    return coef, float(y.mean())


def fit_size_model(
    net: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    zooms: tuple[float, float] = (0.25, 4.0),
    per_image: int = 4,
    window: int = WINDOW,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the size model of a trained network: ``log(diameter) ~ style`` (ridge regression).

    Each (H, W) normalised training image (int labels beside it, 0 = background) gives
    ``per_image`` windows zoomed by factors log-uniform in ``zooms``; the target is the median
    object diameter of its labels times the zoom. The ridge penalty is chosen on windows of
    ``val_images`` (default: a fifth of the training images, held out). Returns a dict of plain
    numbers for ``model.meta["size_model"]``: ``mean``, ``scale``, ``coef``, ``intercept``,
    ``alpha``, ``window``, ``samples`` and ``val_error`` (median ``|log(estimate / true)|``).
    """
    zooms = (check_real(zooms[0], "zooms", minimum=1e-2), check_real(zooms[1], "zooms"))
    rng = np.random.default_rng(seed)
    if val_images is None:
        held = set(rng.permutation(len(images))[: max(1, len(images) // 5)].tolist())
        val_images = [x for k, x in enumerate(images) if k in held]
        val_labels = [y for k, y in enumerate(labels) if k in held]
        images = [x for k, x in enumerate(images) if k not in held]
        labels = [y for k, y in enumerate(labels) if k not in held]
    net = net.eval()
    x, y = _samples(net, images, labels, zooms, per_image, window, rng)
    vx, vy = _samples(net, val_images, val_labels or [], zooms, per_image, window, rng)
    if len(y) < 10 or len(vy) < 2:
        raise ValueError(f"too few images with objects to fit a size model ({len(y)} windows)")
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    errors = {}
    for alpha in ALPHAS:
        coef, intercept = _ridge((x - mean) / scale, y, alpha)
        errors[alpha] = float(np.median(np.abs((vx - mean) / scale @ coef + intercept - vy)))
    alpha = min(errors, key=errors.get)
    allx, ally = np.concatenate([x, vx]), np.concatenate([y, vy])
    coef, intercept = _ridge((allx - mean) / scale, ally, alpha)
    return {
        "window": int(window),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "coef": [round(float(v), 6) for v in coef],
        "intercept": round(intercept, 6),
        "alpha": alpha,
        "zooms": list(zooms),
        "samples": int(len(ally)),
        "val_error": round(errors[alpha], 4),
    }


def predict_diameter(net: nn.Module, image: np.ndarray, size_model: Mapping[str, Any]) -> float:
    """The median object diameter (pixels) of a normalised (H, W) image, from one pass of
    ``net`` over its central window and the network's size model (``model.meta
    ["size_model"]``, from :func:`fit_size_model`)."""
    try:
        mean, scale, coef = (np.asarray(size_model[k], float) for k in ("mean", "scale", "coef"))
        intercept, window = float(size_model["intercept"]), int(size_model["window"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a size model (model.meta['size_model']): {err}") from None
    features = style_features(net, image, window)
    if features.shape != mean.shape:
        raise ValueError(
            f"the size model was fitted on {mean.size} style features, this network has "
            f"{features.size}: it belongs to another network"
        )
    return float(math.exp((features - mean) / scale @ coef + intercept))
