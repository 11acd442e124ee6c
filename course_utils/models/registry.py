"""The course's networks by name, so that a checkpoint can rebuild the one it was trained for.

Every network of ``course_utils.models`` keeps its constructor arguments in ``.config`` (a
dict of plain values); a checkpoint stores the class name and that dict beside the weights
(as nanoGPT keeps ``model_args``), and :func:`build_network` rebuilds the network from them.

Introduced in notebook 07.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .cellpose import CellposeNet
from .maskrcnn import MaskRCNNNet
from .stardist import StarDistNet
from .unet import UNet, UNetOriginal
from .unet3d import StarDist3DNet, UNet3D

__all__ = ["NETWORKS", "build_network", "network_config"]

#: Class name -> class, for every network a checkpoint may describe.
NETWORKS: dict[str, type[nn.Module]] = {
    cls.__name__: cls
    for cls in (UNetOriginal, UNet, CellposeNet, StarDistNet, MaskRCNNNet, UNet3D, StarDist3DNet)
}


def network_config(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """``(class name, constructor arguments)`` of a course network; ``None`` for other modules."""
    name = type(model).__name__
    config = getattr(model, "config", None)
    if NETWORKS.get(name) is not type(model) or not isinstance(config, Mapping):
        return None
    return name, dict(config)


def build_network(name: str, config: Mapping[str, Any]) -> nn.Module:
    """A fresh network of class ``name`` (a key of :data:`NETWORKS`) with arguments ``config``.

    Raises ``ValueError`` naming the known classes when ``name`` is not one, and when the
    arguments do not fit the class.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; the course has {sorted(NETWORKS)}")
    try:
        return NETWORKS[name](**dict(config))
    except TypeError as err:
        raise ValueError(f"the arguments {dict(config)} do not fit {name}: {err}") from None
