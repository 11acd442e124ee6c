"""Mask R-CNN (He et al. 2017) for cells: torchvision's detector, sized and built from scratch.

The *top-down* family: a backbone with a feature pyramid (FPN) computes features; a region
proposal network (RPN, from Faster R-CNN, Ren et al. 2015) scores anchor boxes of several
sizes and shapes at every position and keeps the best *proposals* after a box NMS; RoIAlign
crops the features of each proposal; a box head classifies and refines it (and a second box
NMS removes duplicates); a mask head predicts a 28 x 28 mask inside each kept box.

:class:`MaskRCNNNet` wraps ``torchvision.models.detection.MaskRCNN`` so that it keeps its
constructor arguments in ``.config`` (a checkpoint then rebuilds it, as every course network),
takes images with any number of channels, never resizes them (torchvision would scale every
image to 800 pixels; our cells must keep the size they were trained at), and never downloads
anything: every weight starts random (``weights=None``).

Introduced in notebook 10b.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .._shared.validate import check_int, check_model_input, check_real

__all__ = ["MaskRCNNNet"]

_BACKBONES = {"resnet18": (resnet18, 64), "resnet34": (resnet34, 64), "resnet50": (resnet50, 256)}


class _KeepSize(GeneralizedRCNNTransform):
    """torchvision's batching and normalisation, without its resizing."""

    def resize(self, image, target=None):
        return image, target


def _backbone(name: str, in_channels: int, channels: int) -> BackboneWithFPN:
    """A ResNet (random weights) with its first convolution for ``in_channels``, and an FPN of
    ``channels`` on layers 1-3 (strides 4, 8, 16) plus a max-pooled level (stride 32)."""
    make, width = _BACKBONES[name]
    body = make(weights=None)
    body.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    widths = [width, 2 * width, 4 * width]
    return BackboneWithFPN(
        body,
        {"layer1": "0", "layer2": "1", "layer3": "2"},
        widths,
        channels,
        extra_blocks=LastLevelMaxPool(),
    )


class MaskRCNNNet(nn.Module):
    """Mask R-CNN for one class ("cell"), from scratch, on images of ``in_channels`` channels.

    Parameters
    ----------
    in_channels : int
        Channels of the input images (1 for phase contrast, 2 for [cytoplasm, nucleus]).
    backbone : {"resnet18", "resnet34", "resnet50"}
        The ResNet under the feature pyramid (random weights; He et al. 2017 used ResNet-50).
    channels : int
        Width of the feature pyramid and of the mask head (torchvision's default: 256); the
        box head's hidden layer has ``4 * channels`` units.
    mask_layers : int
        3 x 3 convolutions of the mask head (torchvision's default: 4).
    anchor_sizes : sequence of 4 int
        Anchor side (pixels) on each of the 4 pyramid levels; each with aspect ratios 0.5, 1
        and 2. Choose them around the size of the cells.
    max_detections : int
        Detections kept per image.
    box_nms_thresh : float
        IoU above which the box head's NMS deletes the weaker of two boxes (0.5, as
        torchvision); the RPN's own NMS keeps torchvision's 0.7.
    rois_per_image : int
        Proposals per image that train the box head in each step (torchvision: 512, a quarter
        of them positive; the mask head trains on the positive ones). Fewer train faster; the
        RPN keeps 4 times as many proposals after its NMS in training (1000 at prediction).

    ``forward(images, targets=None)``: ``images`` a (B, C, H, W) tensor or a list of (C, H, W)
    tensors, normalised (no other normalisation or resizing happens). In training mode with
    ``targets`` (one dict per image: ``boxes`` float (N, 4) as (x0, y0, x1, y1), ``labels``
    int64 (N,) of ones, ``masks`` uint8 (N, H, W)) it returns the dict of losses; in eval mode
    a list of dicts with ``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,) and ``masks``
    float (N, 1, H, W), the mask probabilities pasted into the image.

    Introduced in notebook 10b.
    """

    #: Parameter-name prefixes of the contracting path (what fine-tuning may freeze).
    ENCODER: tuple[str, ...] = ("net.backbone.body.",)

    def __init__(
        self,
        in_channels: int = 1,
        backbone: str = "resnet18",
        channels: int = 64,
        mask_layers: int = 2,
        anchor_sizes: Sequence[int] = (16, 32, 64, 128),
        max_detections: int = 200,
        box_nms_thresh: float = 0.5,
        rois_per_image: int = 512,
    ) -> None:
        super().__init__()
        in_channels = check_int(in_channels, "in_channels", minimum=1)
        if backbone not in _BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(_BACKBONES)}, got {backbone!r}")
        channels = check_int(channels, "channels", minimum=1)
        mask_layers = check_int(mask_layers, "mask_layers", minimum=1)
        sizes = tuple(check_int(s, "anchor_sizes", minimum=1) for s in anchor_sizes)
        if len(sizes) != 4:
            raise ValueError(f"anchor_sizes must give 4 sizes (one per level), got {sizes}")
        max_detections = check_int(max_detections, "max_detections", minimum=1)
        box_nms_thresh = check_real(box_nms_thresh, "box_nms_thresh", minimum=0, maximum=1)
        rois = check_int(rois_per_image, "rois_per_image", minimum=1)
        #: The constructor arguments: a checkpoint stores them to rebuild this network.
        self.config = {
            "in_channels": in_channels,
            "backbone": backbone,
            "channels": channels,
            "mask_layers": mask_layers,
            "anchor_sizes": list(sizes),
            "max_detections": max_detections,
            "box_nms_thresh": box_nms_thresh,
            "rois_per_image": rois,
        }
        self.in_channels = in_channels
        levels = ["0", "1", "2"]
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * 4)
        self.net = MaskRCNN(
            _backbone(backbone, in_channels, channels),
            num_classes=None,
            rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
            box_head=TwoMLPHead(channels * 7 * 7, 4 * channels),
            box_predictor=FastRCNNPredictor(4 * channels, 2),
            mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2),
            mask_head=MaskRCNNHeads(channels, [channels] * mask_layers, 1),
            mask_predictor=MaskRCNNPredictor(channels, channels, 2),
            box_detections_per_img=max_detections,
            box_nms_thresh=box_nms_thresh,
            box_score_thresh=0.05,
            box_batch_size_per_image=rois,
            rpn_pre_nms_top_n_train=8 * rois,
            rpn_post_nms_top_n_train=4 * rois,
        )
        zeros, ones = [0.0] * in_channels, [1.0] * in_channels
        self.net.transform = _KeepSize(1, 1, zeros, ones)  # sizes unused: never resized

    def _as_list(self, images: Any) -> list[torch.Tensor]:
        if torch.is_tensor(images):
            check_model_input(images, self.in_channels, 1)
            return list(images)
        if not isinstance(images, list | tuple) or not images:
            raise TypeError(
                "images must be a (B, C, H, W) tensor or a non-empty list of "
                f"(C, H, W) tensors, got {type(images).__name__}"
            )
        for x in images:
            check_model_input(
                x[None] if torch.is_tensor(x) and x.ndim == 3 else x, self.in_channels, 1
            )
        return list(images)

    def forward(self, images: Any, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        return self.net(self._as_list(images), targets)
