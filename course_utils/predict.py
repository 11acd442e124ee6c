"""Overlap-tile prediction for images of any size: ``predict_tiled`` and ``tile_grid``.

A network sees one tile at a time, so an image of any size fits in memory. Two kinds of model:

* **valid convolutions** (the original U-Net, Ronneberger 2015): the output is smaller than the
  input by a margin on each side. The image is mirror-padded by that margin, and the tiles'
  outputs are laid edge to edge, so every output pixel sees its full context.
* **same padding**: output and input have the same size, but pixels near a tile edge see the
  zero padding instead of their neighbours. Neighbouring tiles overlap by ``overlap`` pixels and
  each keeps the half of the overlap nearest to its own centre.

Introduced in notebook 03.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ._shared.device import amp_dtype, model_device
from ._shared.validate import check_finite, check_image, check_int
from .mode import is_dryrun
from .models import UNetOriginal, unet_output_size

__all__ = ["network_outputs", "predict_tiled", "tile_grid"]

PAD_MODES = ("reflect", "symmetric", "edge", "constant", "wrap")


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _axis_spans(n: int, tile: int, out: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(input start, input stop, kept start, kept stop) along one axis, in image coordinates."""
    if out < tile:  # valid convolutions: outputs laid edge to edge, inputs reach into the margin
        margin = (tile - out) // 2
        return [(s - margin, s - margin + tile, s, min(s + out, n)) for s in range(0, n, out)]
    if n <= tile:  # one tile, padded past the end of the image
        return [(0, tile, 0, n)]
    starts = [*range(0, n - tile, tile - overlap), n - tile]  # the last tile ends at the edge
    # Neighbours split their overlap in the middle: each keeps the part nearer its own centre.
    cuts = [0, *((a + tile + b) // 2 for a, b in zip(starts, starts[1:], strict=False)), n]
    return [(s, s + tile, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def tile_grid(
    image_shape: Sequence[int],
    tile_size: int | Sequence[int],
    out_size: int | Sequence[int] | None = None,
    *,
    overlap: int = 0,
) -> list[dict]:
    """The tiles that :func:`predict_tiled` feeds to the model, e.g. to draw them.

    Parameters
    ----------
    image_shape : sequence of int
        ``(H, W)`` or ``(C, H, W)``; only the last two are used.
    tile_size : int or (int, int)
        Input size of a tile.
    out_size : int or (int, int), optional
        The model's output size for one tile; default ``tile_size`` (same padding). Smaller
        means valid convolutions, with a margin of ``(tile_size - out_size) / 2`` per side.
    overlap : int
        Overlap of neighbouring tiles for same-padded models (ignored with valid convolutions,
        whose margin already gives the context).

    Returns
    -------
    list of dict
        Row-major, one per tile: ``index`` ``(row, col)``; ``input`` ``(y0, x0, y1, x1)``, the
        tile's input box in image coordinates (it may reach outside the image, into the
        mirrored border); ``output`` ``(y0, x0, y1, x1)``, the part of the image whose
        prediction comes from this tile. The ``output`` boxes cover the image exactly once.

    Examples
    --------
    >>> [(t["input"], t["output"]) for t in tile_grid((30, 20), 24, 20)]
    [((-2, -2, 22, 22), (0, 0, 20, 20)), ((18, -2, 42, 22), (20, 0, 30, 20))]

    Introduced in notebook 03.
    """
    if len(image_shape) not in (2, 3) or min(image_shape[-2:]) < 1:
        raise ValueError(f"image_shape must be (H, W) or (C, H, W), got {tuple(image_shape)}")
    tile = _pair(tile_size, "tile_size")
    out = tile if out_size is None else _pair(out_size, "out_size")
    for t, o in zip(tile, out, strict=True):
        if o > t or (t - o) % 2:
            raise ValueError(
                f"out_size {out} must not exceed tile_size {tile}, and the difference must be "
                "even (the same margin on both sides)"
            )
        if o == t and not 0 <= overlap < t:
            raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for tiles {tile}")
    rows = _axis_spans(int(image_shape[-2]), tile[0], out[0], overlap)
    cols = _axis_spans(int(image_shape[-1]), tile[1], out[1], overlap)
    return [
        {"index": (i, j), "input": (r[0], c[0], r[1], c[1]), "output": (r[2], c[2], r[3], c[3])}
        for i, r in enumerate(rows)
        for j, c in enumerate(cols)
    ]


def _as_chw(image) -> np.ndarray:
    if not (torch.is_tensor(image) or isinstance(image, np.ndarray)):
        raise TypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")
    image = check_image(image, hint="; call predict_tiled once per image of a batch")
    check_finite(image, "image")  # a NaN pixel spreads over its receptive field in the outputs
    return np.asarray(image[None] if image.ndim == 2 else image, dtype=np.float32)


def _autocast(amp, device: torch.device):
    # A dry run of full mode predicts as the GPU it stands for does: under bfloat16 autocast,
    # where this CPU computes it natively (its scores are those of untrained networks anyway).
    dtype = amp_dtype(amp, device, cpu_bf16=is_dryrun())
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _forward(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Model output as one float32 (B, C_out, h, w) tensor; tuple outputs join along channels."""
    out = model(batch)
    parts = list(out) if isinstance(out, tuple | list) else [out]
    if not all(torch.is_tensor(p) and p.ndim == 4 for p in parts):
        raise ValueError("the model must return a (B, C, H, W) tensor or a tuple of them")
    return torch.cat([p.float() for p in parts], dim=1)


def _probe(model: nn.Module, channels: int, tile: tuple[int, int], device) -> tuple[int, int]:
    """The output size for one tile, from one forward pass on zeros."""
    try:
        out = _forward(model, torch.zeros((1, channels, *tile), device=device))
    except (RuntimeError, ValueError) as err:
        raise ValueError(
            f"the model fails on a {tile[0]}x{tile[1]} tile with {channels} channel(s): "
            f"{str(err).rstrip('.')}. "
            "Images are (C, H, W); the tile must be larger than what the model's valid "
            "convolutions remove, and of a size the model accepts (see models.unet_output_size)"
        ) from err
    size = tuple(out.shape[-2:])
    if any(o > t or (t - o) % 2 for t, o in zip(tile, size, strict=True)):
        raise ValueError(
            f"the model turns a {tile} tile into a {size} output: predict_tiled needs an output "
            "no larger than the input, smaller by the same margin on both sides"
        )
    return size


def predict_tiled(
    model: nn.Module,
    image,
    *,
    tile_size: int | Sequence[int] = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device=None,
    pad_mode: str = "reflect",
    amp: bool | str = "auto",
) -> np.ndarray:
    """Predict a whole image tile by tile, with mirrored borders (overlap-tile strategy).

    One forward pass on a blank tile measures the model's output size. If it is smaller than
    the tile (valid convolutions), the image is padded with ``pad_mode`` by the margin
    ``(tile - out) / 2`` (and as much more as the last tiles need) and the outputs are laid
    edge to edge: the result equals the model applied once to the padded image when the model is
    shift-equivariant; a U-Net's poolings see a shifted grid in each tile unless the output size
    is a multiple of ``2**depth``, so its tiles agree with one pass only approximately (as in
    Ronneberger 2015, where tiles of 388 are not multiples of 16 either). If it is the
    same size (same padding), tiles overlap by ``overlap`` and each keeps the half of every
    overlap nearest its own centre. The result then equals the model applied to the whole
    image (up to float rounding) when the model's receptive field reaches at most
    ``overlap // 2`` pixels from its centre and the model is shift-equivariant (no pooling or
    striding whose phase a tile shift could change). An image smaller than a tile is padded
    with ``pad_mode`` at its bottom/right to a full tile.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(B, C, h, w)`` to ``(B, C_out, h', w')`` or a tuple of such tensors (joined
        along channels, in order). Run in eval mode; its training flag is restored after.
    image : numpy.ndarray or torch.Tensor
        ``(C, H, W)`` or ``(H, W)``, any real dtype (converted to float32), any size; NaN or
        infinity raises ``ValueError``.
    tile_size : int or (int, int)
        Input size of one tile; it must be a size the model accepts.
    overlap : int
        Overlap of neighbouring tiles for same-padded models, in ``[0, tile_size)``.
    batch_size : int
        Tiles per forward pass.
    device : str or torch.device, optional
        Moves the model there. Default: the model's own device (CPU without parameters).
    pad_mode : str
        ``numpy.pad`` mode for the border: ``"reflect"`` (mirror, as in Ronneberger 2015),
        ``"symmetric"``, ``"edge"``, ``"constant"`` (zeros) or ``"wrap"``; margins larger than
        the image are handled by repeated mirroring.
    amp : "auto", bool, "bf16" or "fp16"
        Mixed precision; ``"auto"`` is on for CUDA only (bfloat16 on Ampere or newer, else
        float16). Unlike ``train.fit`` it stays off on the CPU: predictions there are float32,
        as the notebooks' checks against reference packages expect; only a dry run of full
        mode (:func:`course_utils.mode.is_dryrun`) predicts in bfloat16 on a CPU that computes
        it natively, as the GPU it stands for does.

    Returns
    -------
    numpy.ndarray
        float32 ``(C_out, H, W)``, on the CPU, also for a tensor ``image`` (tiles are
        gathered in host memory, so a whole-slide output need not fit on the GPU).

    Introduced in notebook 03.
    """
    img = _as_chw(image)
    tile = _pair(tile_size, "tile_size")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if device is not None:
        model.to(device)
    device = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(amp, device):
            return _predict(model, img, tile, overlap, batch_size, device, pad_mode)
    finally:
        model.train(was_training)


def _predict(model, img, tile, overlap, batch_size, device, pad_mode) -> np.ndarray:
    out_size = _probe(model, img.shape[0], tile, device)
    tiles = tile_grid(img.shape, tile, out_size, overlap=overlap)
    height, width = img.shape[1:]
    top = max(0, -min(t["input"][0] for t in tiles))
    left = max(0, -min(t["input"][1] for t in tiles))
    bottom = max(0, max(t["input"][2] for t in tiles) - height)
    right = max(0, max(t["input"][3] for t in tiles) - width)
    padded = np.pad(img, ((0, 0), (top, bottom), (left, right)), mode=pad_mode)
    # Output pixel (0, 0) of a tile sits a margin inside its input box (zero for same padding).
    margin = ((tile[0] - out_size[0]) // 2, (tile[1] - out_size[1]) // 2)
    result = None
    for first in range(0, len(tiles), batch_size):
        chunk = tiles[first : first + batch_size]
        batch = np.stack(
            [
                padded[:, y0 + top : y1 + top, x0 + left : x1 + left]
                for y0, x0, y1, x1 in (t["input"] for t in chunk)
            ]
        )
        out = _forward(model, torch.from_numpy(batch).to(device)).cpu().numpy()
        if result is None:
            result = np.empty((out.shape[1], height, width), dtype=np.float32)
        for t, pred in zip(chunk, out, strict=True):
            (iy, ix), (oy0, ox0, oy1, ox1) = t["input"][:2], t["output"]
            sy, sx = oy0 - iy - margin[0], ox0 - ix - margin[1]
            result[:, oy0:oy1, ox0:ox1] = pred[:, sy : sy + oy1 - oy0, sx : sx + ox1 - ox0]
    return result


def network_outputs(
    model: nn.Module,
    image,
    *,
    tile_size: int | None = None,
    overlap: int = 32,
    device=None,
    amp: bool | str = "auto",
) -> np.ndarray:
    """Raw outputs of a network on a whole image: float32 numpy ``(C_out, H', W')``.

    ``image`` (H, W) or (C, H, W), normalised. With ``tile_size=None`` the network runs once on
    the image reflect-padded at its bottom/right to a size it accepts (a multiple of
    ``grid * 2**depth``), and the output is cropped back: (C_out, H, W), or for StarDist
    (1 + n_rays, ceil(H / grid), ceil(W / grid)), its tuple output joined along channels.
    Otherwise, and always for ``UNetOriginal`` (valid convolutions; default tile: the smallest
    valid input with an output of >= 256 pixels), overlap-tile prediction with
    :func:`predict_tiled`. ``device``: default the model's; ``amp`` as in ``predict_tiled``.

    Introduced in notebook 07b.
    """
    img = _as_chw(image)
    dtype = image.dtype if torch.is_tensor(image) else np.asarray(image).dtype
    if dtype in (np.bool_, torch.bool):
        raise TypeError("image is boolean: give the microscopy image, not a mask")
    if isinstance(model, UNetOriginal):
        if tile_size is None:
            sizes = model.valid_sizes(64, 2048)
            tile_size = next(s for s in sizes if unet_output_size(s, model.depth) >= 256)
        return predict_tiled(model, img, tile_size=tile_size, overlap=0, device=device, amp=amp)
    if tile_size is not None:
        return predict_tiled(
            model, img, tile_size=tile_size, overlap=overlap, device=device, amp=amp
        )
    grid = getattr(model, "grid", 1)  # StarDist's outputs are on a coarser grid
    multiple = int(getattr(model, "input_multiple", 1))  # the network says what it takes
    h, w = img.shape[1:]
    mode = "reflect" if min(h, w) > 1 else "edge"
    padded = np.pad(img, ((0, 0), (0, -h % multiple), (0, -w % multiple)), mode=mode)
    if device is not None:
        model.to(device)
    dev = torch.device(device) if device is not None else model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(amp, dev):
            out = _forward(model, torch.from_numpy(padded)[None].to(dev))
    finally:
        model.train(was_training)
    return out[0, :, : -(-h // grid), : -(-w // grid)].cpu().numpy()
