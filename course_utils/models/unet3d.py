"""The 3-D U-Net (Cicek 2016) with anisotropic pooling, and a StarDist-3D head on it.

A 3-D U-Net is the U-Net with every 3x3 convolution, 2x2 pooling and up-convolution made 3-D.
In a confocal stack the z step is often 2-5 times the in-plane pixel; pooling z as often as y
and x would make the first levels see far along z and little in-plane. ``pooling_plan`` does
what nnU-Net does: it pools z only once the voxels have become (roughly) isotropic, so that
each level's voxels are as close to cubes as possible. ``memory_per_sample`` does the
arithmetic of 3-D: the activations a forward and backward pass keep, per sample.

``UNet3D`` uses group normalisation (batches of 1-2 volumes are common in 3-D, too small for
batch statistics). ``StarDist3DNet`` puts StarDist-3D's heads (Weigert 2020) on it: the object
probability and ``n_rays`` distances per voxel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._shared.validate import check_int, check_real

__all__ = ["StarDist3DNet", "UNet3D", "memory_per_sample", "pooling_plan"]


def pooling_plan(anisotropy: float, depth: int) -> list[tuple[int, int, int]]:
    """Pooling factors (z, y, x) per level: pool z only where its step is <= 1.5x in-plane.

    Parameters
    ----------
    anisotropy : float
        z step / in-plane pixel, >= 1 (1: isotropic voxels).
    depth : int
        Number of poolings.

    Returns
    -------
    list of (int, int, int)
        E.g. ``pooling_plan(2.2, 3) == [(1, 2, 2), (2, 2, 2), (2, 2, 2)]``: after the first
        in-plane-only pooling the voxels are 2.2 / 2 = 1.1 times as deep as wide.

    Introduced in notebook 11.
    """
    ratio = check_real(anisotropy, "anisotropy", minimum=1.0)
    plan = []
    for _ in range(check_int(depth, "depth", minimum=0)):
        if ratio <= 1.5:
            plan.append((2, 2, 2))
        else:
            plan.append((1, 2, 2))
            ratio /= 2
    return plan


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    groups = math.gcd(8, out_ch)
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.GroupNorm(groups, out_ch),
        nn.ReLU(inplace=True),
        nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.GroupNorm(groups, out_ch),
        nn.ReLU(inplace=True),
    )


class UNet3D(nn.Module):
    """A 3-D U-Net: same padding, group norm, anisotropic pooling, transposed up-convolutions.

    Parameters
    ----------
    in_channels : int
    out_channels : int
        Logits per voxel (3 for background / interior / boundary).
    base_channels : int
        Channels of the first level, doubled at each pooling.
    pooling : list of (z, y, x) ints
        One pooling per level (:func:`pooling_plan`); its length is the depth.

    Input (B, in_channels, Z, Y, X) float32 with each axis divisible by the product of its
    pooling factors; output (B, out_channels, Z, Y, X).

    Introduced in notebook 11.
    """

    ENCODER: tuple[str, ...] = ("encoder.",)

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        base_channels: int = 16,
        pooling: list[tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__()
        pooling = [(1, 2, 2), (2, 2, 2)] if pooling is None else [tuple(p) for p in pooling]
        if any(len(p) != 3 or min(p) < 1 for p in pooling):
            raise ValueError(f"pooling must be (z, y, x) factors >= 1 per level, got {pooling}")
        channels = [
            check_int(base_channels, "base_channels", minimum=1) * 2**k
            for k in range(len(pooling) + 1)
        ]
        self.config = {
            "in_channels": check_int(in_channels, "in_channels", minimum=1),
            "out_channels": check_int(out_channels, "out_channels", minimum=1),
            "base_channels": base_channels,
            "pooling": [list(p) for p in pooling],
        }
        self.pooling = pooling
        self.encoder = nn.ModuleList([_block(in_channels, channels[0])])
        self.encoder.extend(_block(channels[k], channels[k + 1]) for k in range(len(pooling)))
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(channels[k + 1], channels[k], p, stride=p)
            for k, p in enumerate(pooling)
        )
        self.decoder = nn.ModuleList(
            _block(2 * channels[k], channels[k]) for k in range(len(pooling))
        )
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    def divisor(self) -> tuple[int, int, int]:
        """What each axis of the input must be divisible by."""
        return tuple(math.prod(p[a] for p in self.pooling) for a in range(3))  # type: ignore[return-value]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last decoder level's features (B, base_channels, Z, Y, X)."""
        if x.ndim != 5 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(
                f"expected input (B, {self.config['in_channels']}, Z, Y, X), got {tuple(x.shape)}"
            )
        bad = [s for s, d in zip(x.shape[2:], self.divisor()) if s % d]
        if bad:
            raise ValueError(
                f"input (Z, Y, X) {tuple(x.shape[2:])} must be divisible by {self.divisor()}"
            )
        skips = []
        for k, block in enumerate(self.encoder):
            x = block(x)
            if k < len(self.pooling):
                skips.append(x)
                x = F.max_pool3d(x, self.pooling[k])
        for k in reversed(range(len(self.pooling))):
            x = self.decoder[k](torch.cat([skips[k], self.up[k](x)], dim=1))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class StarDist3DNet(nn.Module):
    """StarDist-3D: a 3-D U-Net with an object-probability head and ``n_rays`` distances.

    ``forward`` returns ``(prob_logits (B, 1, Z, Y, X), dist (B, n_rays, Z, Y, X))``, the
    distances in voxels along each ray (rays in voxel units, as ``star_distances_3d`` measures
    them), made non-negative by a softplus as in the 2-D ``StarDistNet``.

    Introduced in notebook 11.
    """

    ENCODER: tuple[str, ...] = ("backbone.encoder.",)

    def __init__(
        self,
        in_channels: int = 1,
        n_rays: int = 64,
        base_channels: int = 16,
        pooling: list[tuple[int, int, int]] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = UNet3D(in_channels, 1, base_channels, pooling)
        self.n_rays = check_int(n_rays, "n_rays", minimum=4)
        self.config = {**self.backbone.config, "n_rays": self.n_rays}
        del self.config["out_channels"]
        self.prob = nn.Conv3d(base_channels, 1, 1)
        self.dist = nn.Conv3d(base_channels, self.n_rays, 1)

    def start_distances(self, mean_distance: float) -> None:
        """Start the distance head at ``mean_distance`` voxels (``softplus(bias) = mean``).

        A fresh head predicts softplus(0) = 0.7 voxels; polyhedra that small score nothing,
        and the first hundreds of steps would only grow them (the 2-D ``StarDistNet`` does the
        same, ``methods.outputs.init_stardist_distances``).
        """
        mean = check_real(mean_distance, "mean_distance", minimum=1e-3)
        with torch.no_grad():
            self.dist.bias.fill_(math.log(math.expm1(mean)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone.features(x)
        return self.prob(f), F.softplus(self.dist(f))


def memory_per_sample(
    patch: tuple[int, int, int], base_channels: int, pooling: list[tuple[int, int, int]]
) -> int:
    """Bytes of float32 activations one sample keeps for the backward pass (an estimate).

    Each level keeps about 6 tensors of its width (two convolutions, two norms, two ReLUs) on
    the way down and 8 on the way up (the concatenation too); the widths double and the
    voxels shrink by the pooling. Weights and the optimiser's state are small beside them.

    Introduced in notebook 11.
    """
    voxels = math.prod(patch)
    total = 0
    for k in range(len(pooling) + 1):
        width = base_channels * 2**k
        per_level = 6 if k == len(pooling) else 14
        total += per_level * width * voxels
        if k < len(pooling):
            voxels //= math.prod(pooling[k])
    return 4 * total
