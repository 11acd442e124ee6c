"""3-D methods as records: the 3-D U-Net, StarDist-3D and Cellpose-3D, through ``train_method``.

A :class:`VolumeMethod` holds what a 2-D :class:`~course_utils.methods.Method` holds (the
network and its arguments per mode, the targets, the loss, the step from outputs to labels and
its thresholds) and what a volume adds: the crop size, and the voxel's *anisotropy* (z step /
in-plane step). The anisotropy fixes the network's pooling (``models.pooling_plan``: z is pooled
only where it is not already coarse) and StarDist-3D's rays (``targets.rays_golden_spiral``);
it is kept in the network's ``meta["anisotropy"]`` as (z, y, x) factors, so a checkpoint carries
it and the targets and post-processing of a saved network are rebuilt from the network alone.

=============  =================  ===================================  ========================
method         network            targets -> loss                      outputs -> instances
=============  =================  ===================================  ========================
``unet3d``     ``UNet3D``         background / interior / boundary     interior grown over the
                                  (``boundary_classes_3d``) -> CE       foreground
``stardist3d`` ``StarDist3DNet``  probability + distances along rays   3-D NMS, polyhedra
                                  -> BCE + weighted MAE                (``stardist3d_to_labels``)
``cellpose3d`` ``UNet3D``         3-D flows (z, y, x) + cell           flows followed
               (4 outputs)        probability -> MSE + BCE             (``flows_to_masks_3d``)
=============  =================  ===================================  ========================

``course_utils.methods.train_method("stardist3d", stacks, labels, anisotropy=2.2)`` trains one
(:func:`~course_utils.volumes.training.train_volume_method` does the work);
:meth:`VolumeMethod.segment` segments a stack.

Introduced in notebook 11.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import losses
from .._shared.frozen import frozen
from ..mode import get_mode
from .predict import classes_to_labels_3d, predict_volume, stardist3d_to_labels
from .targets import boundary_classes_3d, cellpose3d_targets, stardist3d_targets

__all__ = [
    "VOLUME_METHODS",
    "VolumeMethod",
    "anisotropy_of",
    "get_volume_method",
    "is_volume_method",
    "rays_of",
    "voxel_factors",
]


def anisotropy_of(model: nn.Module) -> tuple[float, float, float]:
    """The (z, y, x) voxel factors a 3-D network was built for, from ``model.meta``."""
    value = (getattr(model, "meta", None) or {}).get("anisotropy")
    if value is None:
        raise ValueError(
            "this 3-D network has no meta['anisotropy']: build it with VolumeMethod.build or "
            "train it with train_method(..., anisotropy=z_step / xy_step)"
        )
    return voxel_factors(value)


def voxel_factors(anisotropy: Any) -> tuple[float, float, float]:
    """(z, y, x) voxel factors from a number (z step / in-plane step) or three numbers with
    y == x; a ``ValueError`` for anything else (zero, negative, NaN, a bool, two numbers,
    text, y != x)."""
    try:
        values = np.atleast_1d(np.asarray(anisotropy, dtype=float))
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if isinstance(anisotropy, bool) or np.asarray(anisotropy).dtype == bool:
        values = np.array([np.nan])
    if values.shape == (1,):
        values = np.array([values[0], 1.0, 1.0])
    if values.shape != (3,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"anisotropy must be a positive number or (z, y, x), got {anisotropy!r}")
    if values[1] != values[2]:
        raise ValueError(f"anisotropy {anisotropy!r}: y and x must be equal (square pixels)")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def rays_of(model: nn.Module) -> np.ndarray:
    """StarDist-3D's (n_rays, 3) rays of ``model``: its ``n_rays`` and anisotropy."""
    from ..targets import rays_golden_spiral

    return rays_golden_spiral(model.config["n_rays"], anisotropy_of(model))


def _unet_targets(labels: np.ndarray, model: nn.Module) -> tuple[np.ndarray]:
    return (boundary_classes_3d(labels),)


def _stardist_targets(labels: np.ndarray, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    return stardist3d_targets(labels, rays_of(model), anisotropy_of(model))


def _cellpose_targets(labels: np.ndarray, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    return cellpose3d_targets(labels)


def _unet_labels(outputs: Any, model: nn.Module, **postprocess: Any) -> np.ndarray:
    return classes_to_labels_3d(outputs, **postprocess)


def _stardist_labels(outputs: Any, model: nn.Module, **postprocess: Any) -> np.ndarray:
    logits, dist = outputs
    anisotropy = anisotropy_of(model)
    return stardist3d_to_labels(logits, dist, rays_of(model), anisotropy=anisotropy, **postprocess)


def _cellpose_labels(outputs: Any, model: nn.Module, **postprocess: Any) -> np.ndarray:
    from ..postprocess.flows3d import flows_to_masks_3d

    return flows_to_masks_3d(outputs[:3], outputs[3], **postprocess)  # on CUDA where there is one


def _start_distances(model: nn.Module, labels: Sequence[np.ndarray]) -> None:
    """Start StarDist-3D's distance head at the mean distance of the first labelled stacks."""
    from ..targets import star_distances_3d

    rays = rays_of(model)
    found = [star_distances_3d(y, rays)[y > 0] for y in labels[:4] if np.any(y > 0)]
    if not found:
        raise ValueError("the label stacks hold no object: nothing to train StarDist-3D on")
    model.start_distances(float(np.concatenate(found).mean()))


@dataclass(frozen=True)
class VolumeMethod:
    """The recipe of one 3-D method (see the table of :mod:`course_utils.volumes.methods`).

    Attributes
    ----------
    name, title, network : str
        Key in :data:`VOLUME_METHODS`, a name for tables, a class of ``models.NETWORKS``.
    configs : mapping of mode to mapping
        Network arguments in ``"fast"`` and ``"full"`` mode; ``depth`` becomes the pooling.
    targets : callable
        ``targets(label_crop (z, y, x), model) -> tuple of arrays``.
    loss : callable
        ``loss(output, *targets) -> scalar tensor``.
    to_labels : callable
        ``to_labels(outputs, model, **postprocess) -> int32 (Z, Y, X)`` from
        ``volumes.predict_volume``'s outputs.
    postprocess : mapping
        Default keyword arguments of ``to_labels``.
    patches : mapping of mode to (z, y, x)
        Training crop of each mode.
    prepare : callable or None
        ``prepare(model, labels)`` before a fresh network trains (StarDist-3D's distances).
    """

    name: str
    title: str
    network: str
    configs: Mapping[str, Mapping[str, Any]]
    targets: Callable[[np.ndarray, nn.Module], tuple]
    loss: Callable[..., torch.Tensor]
    to_labels: Callable[..., np.ndarray]
    postprocess: Mapping[str, Any]
    patches: Mapping[str, tuple[int, int, int]]
    prepare: Callable[[nn.Module, Sequence[np.ndarray]], None] | None = None
    notebook: str = "11"

    def config(self, mode: str | None = None, **overrides: Any) -> dict[str, Any]:
        """The network's arguments in ``mode`` (default: the current one), with ``overrides``."""
        mode = mode or get_mode()
        if mode not in self.configs:
            raise ValueError(f"mode must be one of {tuple(self.configs)}, got {mode!r}")
        return {**self.configs[mode], **overrides}

    def patch(self, mode: str | None = None) -> tuple[int, int, int]:
        """The training crop (z, y, x) in ``mode``."""
        return tuple(self.patches[mode or get_mode()])  # type: ignore[return-value]

    def build(
        self, anisotropy: Any, *, seed: int = 0, mode: str | None = None, **overrides: Any
    ) -> nn.Module:
        """A fresh network for voxels of ``anisotropy`` (z step / in-plane step, or (z, y, x))."""
        from ..models import build_network, pooling_plan

        factors = voxel_factors(anisotropy)
        config = self.config(mode, **overrides)
        depth = int(config.pop("depth"))
        config["pooling"] = pooling_plan(factors[0] / factors[1], depth)
        torch.manual_seed(seed)
        model = build_network(self.network, config)
        model.meta = {"method": self.name, "anisotropy": list(factors)}
        return model

    def check_network(self, model: Any, name: str = "model") -> nn.Module:
        """``model`` if it is this method's network (class and outputs) with an anisotropy; a
        ``ValueError`` else."""
        if type(model).__name__ != self.network:
            raise ValueError(
                f"{name} is a {type(model).__name__}, not the {self.network} of {self.name!r}"
            )
        outputs = self.configs["fast"].get("out_channels")  # UNet3D serves two records
        if outputs is not None and model.config.get("out_channels") != outputs:
            raise ValueError(
                f"{name} has {model.config.get('out_channels')} outputs; {self.name!r} needs "
                f"{outputs} (is it another method's network?)"
            )
        anisotropy_of(model)
        return model

    def segment(self, model: nn.Module, image: Any, **postprocess: Any) -> np.ndarray:
        """Instance labels (Z, Y, X) int32 of a normalised float (Z, Y, X) stack."""
        self.check_network(model)
        image = np.asarray(image)
        if image.ndim != 3:
            raise ValueError(f"image must be a (Z, Y, X) stack, got shape {image.shape}")
        if not np.all(np.isfinite(image)):
            raise ValueError("image holds NaN or infinite values")
        unknown = set(postprocess) - set(self.postprocess)
        if unknown:
            raise ValueError(f"{self.name} has no post-processing option(s) {sorted(unknown)}")
        was_training = model.training
        outputs = predict_volume(model.eval(), image.astype(np.float32))
        model.train(was_training)
        return self.to_labels(outputs, model, **{**self.postprocess, **postprocess})


VOLUME_METHODS: Mapping[str, VolumeMethod] = MappingProxyType(
    {
        "unet3d": VolumeMethod(
            name="unet3d",
            title="3-D U-Net (3 classes)",
            network="UNet3D",
            configs=frozen(
                {
                    "fast": {"in_channels": 1, "out_channels": 3, "base_channels": 8, "depth": 2},
                    "full": {"in_channels": 1, "out_channels": 3, "base_channels": 32, "depth": 2},
                }
            ),
            targets=_unet_targets,
            loss=losses.unet_3class_loss,  # the 2-D record's: cross-entropy works in 3-D
            to_labels=_unet_labels,
            postprocess=frozen({"expand": 2, "min_size": 20}),
            patches=frozen({"fast": (16, 64, 64), "full": (32, 96, 96)}),
        ),
        "stardist3d": VolumeMethod(
            name="stardist3d",
            title="StarDist-3D",
            network="StarDist3DNet",
            configs=frozen(
                {
                    "fast": {"in_channels": 1, "n_rays": 64, "base_channels": 8, "depth": 2},
                    "full": {"in_channels": 1, "n_rays": 64, "base_channels": 32, "depth": 2},
                }
            ),
            targets=_stardist_targets,
            loss=losses.stardist_loss,
            to_labels=_stardist_labels,
            postprocess=frozen({"prob_thresh": 0.5, "nms_thresh": 0.4}),
            patches=frozen({"fast": (16, 64, 64), "full": (32, 96, 96)}),
            prepare=_start_distances,
        ),
        "cellpose3d": VolumeMethod(
            name="cellpose3d",
            title="Cellpose-3D",
            network="UNet3D",
            configs=frozen(
                {
                    "fast": {"in_channels": 1, "out_channels": 4, "base_channels": 8, "depth": 2},
                    "full": {"in_channels": 1, "out_channels": 4, "base_channels": 32, "depth": 2},
                }
            ),
            targets=_cellpose_targets,
            loss=losses.cellpose_loss,  # the 2-D record's, with a third flow
            to_labels=_cellpose_labels,
            postprocess=frozen({"cellprob_threshold": 0.0, "min_size": 15}),
            patches=frozen({"fast": (16, 64, 64), "full": (32, 96, 96)}),
        ),
    }
)


def get_volume_method(method: str | VolumeMethod) -> VolumeMethod:
    """The record of ``method`` (a name of :data:`VOLUME_METHODS`, or a record as is).

    Introduced in notebook 11.
    """
    if isinstance(method, VolumeMethod):
        return method
    if method not in VOLUME_METHODS:
        raise ValueError(f"method must be one of {tuple(VOLUME_METHODS)}, got {method!r}.")
    return VOLUME_METHODS[method]


def is_volume_method(method: Any) -> bool:
    """Whether ``method`` names (or is) a 3-D record."""
    return isinstance(method, VolumeMethod) or (
        isinstance(method, str) and method in VOLUME_METHODS
    )
