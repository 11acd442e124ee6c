"""U-Nets: the original one (Ronneberger 2015) and one adapted to today's standards.

``UNetOriginal`` follows the paper: unpadded ("valid") 3x3 convolutions, so every convolution
eats a one-pixel rim and the output is smaller than the input (572 -> 388); 2x2 max pooling;
2x2 up-convolutions; skip connections that centre-crop the encoder features and concatenate
them; dropout at the end of the contracting path. ``unet_output_size`` and
``valid_input_sizes`` do the size bookkeeping that the valid convolutions require.

``UNet`` is the version most people train today: "same" padding (output size = input size),
batch or group normalisation, optional residual blocks, bilinear or transposed-convolution
upsampling. Any input whose height and width are divisible by ``2**depth`` works.

Introduced in notebook 03.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._shared.validate import check_int, check_model_input

__all__ = [
    "UNet",
    "UNetOriginal",
    "center_crop",
    "count_parameters",
    "unet_output_size",
    "valid_input_sizes",
]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (those with ``requires_grad``) of ``model``.

    Introduced in notebook 03.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# The original U-Net
# ---------------------------------------------------------------------------------------------


def unet_output_size(input_size: int, depth: int = 4) -> int:
    """Output size of ``UNetOriginal`` for a square input of side ``input_size``.

    Each level applies two valid 3x3 convolutions (-4 pixels) before pooling; every pooling
    needs an even size, and the decoder mirrors the encoder.

    Raises
    ------
    ValueError
        If a pooling would see an odd size, or a size drops below 1.

    Examples
    --------
    >>> unet_output_size(572)
    388

    Introduced in notebook 03.
    """
    input_size = check_int(input_size, "input_size", minimum=1)
    depth = check_int(depth, "depth", minimum=0)
    size = input_size
    for level in range(depth):
        size -= 4
        if size < 2 or size % 2:
            raise ValueError(
                f"input_size={input_size} does not fit depth={depth}: before pooling {level + 1} "
                f"the size is {size}, which must be even and >= 2. See valid_input_sizes()."
            )
        size //= 2
    size -= 4  # bottleneck
    for _ in range(depth):
        size = 2 * size - 4
    if size < 1:
        raise ValueError(f"input_size={input_size} is too small for depth={depth}.")
    return size


def valid_input_sizes(depth: int = 4, min_size: int = 1, max_size: int = 1024) -> list[int]:
    """All input sizes in ``[min_size, max_size]`` that ``UNetOriginal`` accepts.

    Examples
    --------
    >>> 572 in valid_input_sizes()
    True

    Introduced in notebook 03.
    """
    min_size = check_int(min_size, "min_size", minimum=1)
    max_size = check_int(max_size, "max_size", minimum=min_size)
    sizes = []
    for size in range(min_size, max_size + 1):
        try:
            unet_output_size(size, depth)
        except ValueError:
            continue
        sizes.append(size)
    return sizes


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size = (h, w)`` window of ``x`` (..., H, W), as the U-Net skips crop.

    Introduced in notebook 03.
    """
    height, width = x.shape[-2:]
    h, w = size
    if h > height or w > width:
        raise ValueError(f"cannot crop {(height, width)} to the larger {(h, w)}.")
    top, left = (height - h) // 2, (width - w) // 2
    return x[..., top : top + h, left : left + w]


def _valid_double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3),
        nn.ReLU(inplace=True),
    )


class UNetOriginal(nn.Module):
    """The U-Net of Ronneberger 2015, with its design choices as arguments.

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the input image.
    n_classes : int, default 2
        Output channels (class scores, one per class; softmax is left to the loss).
    depth : int, default 4
        Number of 2x2 max poolings (the paper: 4).
    base_channels : int, default 64
        Channels of the first level, doubled at each pooling (the paper: 64 -> 1024).
    dropout : float, default 0.5
        Dropout probability at the end of the contracting path (on the bottleneck features).

    Input (B, in_channels, S, S) with ``S`` in ``valid_input_sizes(depth)``; output
    (B, n_classes, s, s) with ``s = unet_output_size(S, depth)``, the centre of the input.
    Weights start from He-normal initialisation, as in the paper. Non-square inputs work
    when each side is valid.

    Introduced in notebook 03.
    """

    #: Parameter-name prefixes of the contracting path (what fine-tuning may freeze).
    ENCODER: tuple[str, ...] = ("encoder.", "bottleneck.")

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        n_classes = check_int(n_classes, "n_classes", minimum=1)
        depth = check_int(depth, "depth", minimum=0)
        base_channels = check_int(base_channels, "base_channels", minimum=1)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        #: The constructor arguments: a checkpoint stores them to rebuild this network.
        self.config = {
            "in_channels": in_channels,
            "n_classes": n_classes,
            "depth": depth,
            "base_channels": base_channels,
            "dropout": float(dropout),
        }
        self.in_channels, self.depth = in_channels, depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoder.append(_valid_double_conv(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _valid_double_conv(channels, widths[-1])
        self.dropout = nn.Dropout(dropout)
        self.upconvs = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upconvs.append(nn.ConvTranspose2d(2 * width, width, 2, stride=2))
            self.decoder.append(_valid_double_conv(2 * width, width))
        self.head = nn.Conv2d(widths[0], n_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                # Paper: Gaussian with std sqrt(2 / N), N = inputs of one neuron.
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def valid_sizes(self, min_size: int = 1, max_size: int = 1024) -> list[int]:
        """The input sides this network takes (valid convolutions: not every size does), from
        ``min_size`` to ``max_size``: :func:`valid_input_sizes` at its depth."""
        return valid_input_sizes(self.depth, min_size, max_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_model_input(x, self.in_channels, 1)
        for side in x.shape[-2:]:
            unet_output_size(int(side), self.depth)  # raises a clear error for a bad size
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for upconv, block, skip in zip(self.upconvs, self.decoder, reversed(skips), strict=True):
            x = upconv(x)
            # Valid convolutions shrank x more than the skip: keep the skip's centre.
            x = block(torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1))
        return self.head(x)


# ---------------------------------------------------------------------------------------------
# The modern U-Net
# ---------------------------------------------------------------------------------------------

_NORMS = ("batch", "group", "none")
_UPSAMPLES = ("transpose", "bilinear")
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # Groups of channels must divide the channel count; 8 groups is a common default.
        return nn.GroupNorm(math.gcd(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Module):
    """Two same-padded 3x3 conv + norm + ReLU, optionally as a residual block.

    (B, in_ch, H, W) -> (B, out_ch, H, W). With ``residual=True`` the input (projected by a
    1x1 convolution when the channel count changes) is added before the last ReLU.
    """

    def __init__(
        self, in_ch: int, out_ch: int, norm: str, residual: bool, padding_mode: str
    ) -> None:
        super().__init__()
        bias = norm == "none"  # a bias before normalisation is cancelled by it
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode=padding_mode, bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, padding_mode=padding_mode, bias=bias),
            _norm(norm, out_ch),
        )
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


class UNet(nn.Module):
    """A U-Net adapted to today's standards: same padding, normalisation, residual option.

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the input image.
    out_channels : int or None, default 2
        Output channels: 2 (background/cell), 3 (background/interior/boundary), 1 for a
        regression map, ... ``None`` drops the 1x1 head and returns the last decoder features
        (``base_channels`` channels), for use as a backbone.
    depth : int, default 4
        Number of 2x2 max poolings; H and W must be divisible by ``2**depth``.
    base_channels : int, default 32
        Channels of the first level, doubled at each pooling.
    norm : {"batch", "group", "none"}, default "batch"
        Normalisation after each convolution (group norm suits small batches).
    residual : bool, default False
        Use residual blocks (a shortcut around each pair of convolutions).
    upsample : {"transpose", "bilinear"}, default "transpose"
        2x2 transposed convolution, or bilinear interpolation followed by a 1x1 convolution.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}, default "zeros"
        Padding of the 3x3 convolutions.
    dropout : float, default 0.0
        Dropout probability on the bottleneck features.

    Input (B, in_channels, H, W), float32; output (B, out_channels, H, W) (logits for
    classification). Skips are concatenated.

    Introduced in notebook 03.
    """

    #: Parameter-name prefixes of the contracting path (what fine-tuning may freeze).
    ENCODER: tuple[str, ...] = ("encoder.", "bottleneck.")

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = 2,
        depth: int = 4,
        base_channels: int = 32,
        norm: str = "batch",
        residual: bool = False,
        upsample: str = "transpose",
        padding_mode: str = "zeros",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        if out_channels is not None:
            out_channels = check_int(out_channels, "out_channels", minimum=1)
        depth = check_int(depth, "depth", minimum=0)
        base_channels = check_int(base_channels, "base_channels", minimum=1)
        for name, value, choices in (
            ("norm", norm, _NORMS),
            ("upsample", upsample, _UPSAMPLES),
            ("padding_mode", padding_mode, _PADDING_MODES),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        #: The constructor arguments: a checkpoint stores them to rebuild this network.
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "depth": depth,
            "base_channels": base_channels,
            "norm": norm,
            "residual": bool(residual),
            "upsample": upsample,
            "padding_mode": padding_mode,
            "dropout": float(dropout),
        }
        self.in_channels, self.depth = in_channels, depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        block = lambda i, o: ConvBlock(i, o, norm, residual, padding_mode)  # noqa: E731
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoder.append(block(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = block(channels, widths[-1])
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            if upsample == "transpose":
                self.ups.append(nn.ConvTranspose2d(2 * width, width, 2, stride=2))
            else:
                self.ups.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                        nn.Conv2d(2 * width, width, 1),
                    )
                )
            self.decoder.append(block(2 * width, width))
        self.out_features = widths[0]
        self.head = nn.Identity() if out_channels is None else nn.Conv2d(widths[0], out_channels, 1)

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last decoder features, (B, base_channels, H, W)."""
        check_model_input(x, self.in_channels, self.input_multiple)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips), strict=True):
            x = block(torch.cat([skip, up(x)], dim=1))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
