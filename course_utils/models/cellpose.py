"""A Cellpose-style network: a residual U-Net with summed skips and a style vector.

The shape of the idea follows Stringer 2021 (Cellpose): every level of the encoder is a stack
of residual blocks of pre-activated convolutions (norm -> ReLU -> conv); skips are *added* to
the upsampled features instead of concatenated; and a "style" vector, the global average of
the bottleneck features scaled to unit length, is mapped by a linear layer at every decoder
convolution and added to its input, so that image-wide context (cell size, brightness, kind
of image) reaches every pixel. The network predicts three maps per pixel: the vertical and
horizontal flow and the logit of being inside a cell.

Introduced in notebook 05.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._shared.validate import check_int, check_model_input

__all__ = ["CellposeNet"]


def _preact_conv(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Sequential:
    """BatchNorm -> ReLU -> same-padded convolution (pre-activation ordering)."""
    return nn.Sequential(
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
    )


class _ResDown(nn.Module):
    """Encoder level: two residual units of two pre-activated 3x3 convolutions each."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, out_ch, 1))
        self.unit1 = nn.Sequential(_preact_conv(in_ch, out_ch), _preact_conv(out_ch, out_ch))
        self.unit2 = nn.Sequential(_preact_conv(out_ch, out_ch), _preact_conv(out_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.unit1(x)
        return x + self.unit2(x)


class _StyleConv(nn.Module):
    """Add a linear map of the style vector to every pixel, then a pre-activated conv."""

    def __init__(self, in_ch: int, out_ch: int, style_ch: int, use_style: bool) -> None:
        super().__init__()
        self.style_map = nn.Linear(style_ch, in_ch) if use_style else None
        self.conv = _preact_conv(in_ch, out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.style_map is not None:
            x = x + self.style_map(style)[:, :, None, None]
        return self.conv(x)


class _ResUp(nn.Module):
    """Decoder level: sum the skip in, two residual units whose convs receive the style."""

    def __init__(self, in_ch: int, out_ch: int, style_ch: int, use_style: bool) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, out_ch, 1))
        self.first = _preact_conv(in_ch, out_ch)
        self.convs = nn.ModuleList(
            [_StyleConv(out_ch, out_ch, style_ch, use_style) for _ in range(3)]
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        # The skip joins by addition, after the first conv has brought x to the skip's width.
        y = self.convs[0](self.first(x) + skip, style)
        x = self.proj(x) + y
        return x + self.convs[2](self.convs[1](x, style), style)


class CellposeNet(nn.Module):
    """Cellpose-style U-Net predicting flows and cell probability (Stringer 2021).

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the input image.
    base_channels : int, default 32
        Channels of the first level, doubled at each pooling.
    depth : int, default 4
        Number of 2x2 max poolings (as for ``UNet``); H and W must be divisible by
        ``2**depth``. The published Cellpose network has 3 (32, 64, 128, 256 channels).
    style : bool, default True
        Add the style vector in the decoder. ``False`` removes it (an ablation); the style
        vector is still computed and returned.

    Input (B, in_channels, H, W) float32. ``forward(x)`` returns (B, 3, H, W): flow y,
    flow x, cell-probability logit. ``forward(x, return_style=True)`` returns
    ``(output, style)`` with style (B, base_channels * 2**depth), of unit L2 norm.

    Introduced in notebook 05.
    """

    #: Parameter-name prefixes of the contracting path (what fine-tuning may freeze).
    ENCODER: tuple[str, ...] = ("down.",)

    def __init__(
        self, in_channels: int = 1, base_channels: int = 32, depth: int = 4, style: bool = True
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        base_channels = check_int(base_channels, "base_channels", minimum=1)
        depth = check_int(depth, "depth", minimum=0)
        #: The constructor arguments: a checkpoint stores them to rebuild this network.
        self.config = {
            "in_channels": in_channels,
            "base_channels": base_channels,
            "depth": depth,
            "style": bool(style),
        }
        self.in_channels, self.depth, self.use_style = in_channels, depth, bool(style)
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            _ResDown(c_in, c_out) for c_in, c_out in zip([in_channels, *widths], widths)
        )
        style_ch = widths[-1]
        # The deepest decoder level works on the bottleneck itself (its own skip), the others
        # on the upsampled features of the level below.
        self.up = nn.ModuleList(
            _ResUp(widths[min(level + 1, depth)], widths[level], style_ch, self.use_style)
            for level in range(depth + 1)
        )
        self.output = _preact_conv(widths[0], 3, kernel_size=1)

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def forward(
        self, x: torch.Tensor, return_style: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_model_input(x, self.in_channels, self.input_multiple)
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        style = skips[-1].mean(dim=(-2, -1))
        # Unit length: the style then says what kind of image this is, not how bright it is.
        style = style / style.norm(dim=1, keepdim=True).clamp_min(1e-12)
        x = self.up[-1](skips[-1], skips[-1], style)
        for level in reversed(range(self.depth)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.up[level](x, skips[level], style)
        out = self.output(x)
        return (out, style) if return_style else out
