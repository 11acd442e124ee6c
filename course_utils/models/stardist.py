"""A StarDist-style network: a U-Net backbone with a probability head and a distance head.

For every pixel, StarDist (Schmidt 2018) predicts the probability of being the centre of an
object and the distances from that pixel to the object's boundary along ``n_rays`` directions
(a star-convex polygon). Optionally the outputs are predicted on a coarser grid (every 2nd or
4th pixel), which saves time and memory on large images: a few convolutions and a 2x2 max
pooling per factor 2 run before the U-Net, as in the StarDist paper's implementation.

Introduced in notebook 06.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._shared.validate import check_int, check_model_input
from .unet import UNet

__all__ = ["StarDistNet"]

_GRIDS = (1, 2, 4)


class StarDistNet(nn.Module):
    """StarDist-style network: probability logits and non-negative ray distances.

    Parameters
    ----------
    in_channels : int, default 1
        Channels of the input image.
    n_rays : int, default 32
        Number of radial directions (distances per pixel).
    base_channels : int, default 32
        Channels of the backbone's first level.
    depth : int, default 3
        Number of 2x2 poolings in the U-Net backbone.
    grid : {1, 2, 4}, default 1
        Output subsampling: the outputs are (H / grid, W / grid).

    Input (B, in_channels, H, W) float32, H and W divisible by ``grid * 2**depth``.
    ``forward`` returns ``(prob_logits, dist)``: prob_logits (B, 1, H/grid, W/grid), to be
    passed through ``torch.sigmoid`` for the object probability (``BCEWithLogitsLoss`` takes
    the logits); dist (B, n_rays, H/grid, W/grid), in pixels of the *input* image, >= 0.

    Distances are made non-negative by a softplus: it keeps a gradient everywhere (a ReLU has
    none below 0, so a ray that starts negative never learns), and unlike ``exp`` it grows
    linearly, which suits distances of tens of pixels.

    Introduced in notebook 06.
    """

    #: Parameter-name prefixes of the contracting path (what fine-tuning may freeze).
    ENCODER: tuple[str, ...] = ("backbone.encoder.", "backbone.bottleneck.")

    def __init__(
        self,
        in_channels: int = 1,
        n_rays: int = 32,
        base_channels: int = 32,
        depth: int = 3,
        grid: int = 1,
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        n_rays = check_int(n_rays, "n_rays", minimum=1)
        base_channels = check_int(base_channels, "base_channels", minimum=1)
        if grid not in _GRIDS or isinstance(grid, bool):
            raise ValueError(f"grid must be one of {_GRIDS}, got {grid!r}.")
        depth = check_int(depth, "depth", minimum=0)
        #: The constructor arguments: a checkpoint stores them to rebuild this network.
        self.config = {
            "in_channels": in_channels,
            "n_rays": n_rays,
            "base_channels": base_channels,
            "depth": depth,
            "grid": int(grid),
        }
        self.in_channels, self.grid, self.n_rays = in_channels, int(grid), n_rays
        stem: list[nn.Module] = []
        channels = in_channels
        for _ in range(self.grid.bit_length() - 1):  # one conv pair and pooling per factor 2
            stem += [
                nn.Conv2d(channels, base_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(base_channels, base_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = base_channels
        self.stem = nn.Sequential(*stem)
        self.backbone = UNet(channels, out_channels=None, depth=depth, base_channels=base_channels)
        self.depth = self.backbone.depth
        # A wider 3x3 layer shared by both heads, as StarDist does after its U-Net.
        features = 4 * base_channels
        self.neck = nn.Sequential(
            nn.Conv2d(base_channels, features, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.prob_head = nn.Conv2d(features, 1, 1)
        self.dist_head = nn.Conv2d(features, n_rays, 1)

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (``grid * 2**depth``)."""
        return self.grid * 2**self.depth

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_model_input(x, self.in_channels, self.input_multiple)
        features = self.neck(self.backbone.forward_features(self.stem(x)))
        return self.prob_head(features), F.softplus(self.dist_head(features))
